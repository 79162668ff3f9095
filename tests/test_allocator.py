"""Retaining freed memory during training: no page faults when a large block is allocated again."""

from __future__ import annotations

import os
import platform
import resource

import pytest
import torch

from flairkit.allocator import retained_freed_memory

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="the setting applies to glibc"
)

BLOCK_FLOATS = 16 * 2**20
"""64 MB: above glibc's largest mmap threshold, like a training activation."""
BLOCK_PAGES = BLOCK_FLOATS * 4 // os.sysconf("SC_PAGE_SIZE")


def faults_of_a_large_block() -> int:
    """Minor page faults of allocating, filling and freeing a 64 MB tensor."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.empty(BLOCK_FLOATS).fill_(1.0)
    del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@glibc_only
def test_a_freed_block_is_reused_without_page_faults_and_handed_back_on_exit(monkeypatch):
    for name in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    assert faults_of_a_large_block() > BLOCK_PAGES // 2  # glibc maps fresh pages for every large block
    with retained_freed_memory() as applied:
        assert applied
        # As training steps do, again and again: after the first rounds the heap serves the blocks it kept.
        rounds = [faults_of_a_large_block() for _ in range(4)]
        assert min(rounds[1:]) < BLOCK_PAGES // 20, rounds
        retained = resident_bytes()
    assert retained - resident_bytes() > BLOCK_FLOATS * 4 // 2  # returned to the system on exit
    assert faults_of_a_large_block() > BLOCK_PAGES // 2  # glibc's defaults are back


@glibc_only
def test_user_malloc_settings_and_the_config_switch_are_respected(monkeypatch):
    with retained_freed_memory(enabled=False) as applied:
        assert not applied
        assert faults_of_a_large_block() > BLOCK_PAGES // 2
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "65536")
    with retained_freed_memory() as applied:
        assert not applied


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.setattr(platform, "libc_ver", lambda: ("musl", "1.2"))
    with retained_freed_memory() as applied:
        assert not applied
