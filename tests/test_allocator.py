"""Retaining freed memory during training: in force within the block only, for CPU training only.

These tests check what flairkit asks of glibc; what glibc then does (page faults, resident memory) is
measured by benchmarks/bench_allocator.py.
"""

from __future__ import annotations

import platform
from types import SimpleNamespace

import lightning as L
import pytest
from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator, MPSAccelerator

from conftest import tiny_config
from flairkit import allocator
from flairkit.allocator import GLIBC_DEFAULTS, RETAINED, USER_SETTINGS, retained_freed_memory
from flairkit.training.run import heap_setting_applies, train


class FakeGlibc:
    """Holds the mallopt values as glibc would, and counts malloc_trim calls."""

    def __init__(self) -> None:
        self.values: dict[int, int] = {}
        self.trims = 0

    def mallopt(self, parameter: int, value: int) -> int:
        self.values[parameter] = value
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.trims += 1
        return 1


@pytest.fixture
def glibc(monkeypatch) -> FakeGlibc:
    fake = FakeGlibc()
    monkeypatch.setattr(allocator, "_glibc", lambda: fake)
    return fake


def test_the_setting_holds_within_the_block_only(glibc):
    with retained_freed_memory() as applied:
        assert applied
        assert glibc.values == RETAINED and glibc.trims == 0
    assert glibc.values == GLIBC_DEFAULTS and glibc.trims == 1
    with pytest.raises(RuntimeError), retained_freed_memory():
        raise RuntimeError("training failed")
    assert glibc.values == GLIBC_DEFAULTS and glibc.trims == 2


def test_leaving_a_nested_block_keeps_what_was_in_force_before_it(glibc):
    with retained_freed_memory():
        with retained_freed_memory() as applied:
            assert applied and glibc.values == RETAINED
        assert glibc.values == RETAINED and glibc.trims == 0  # the enclosing block still retains
        with retained_freed_memory(enabled=False) as applied:
            assert not applied and glibc.values == RETAINED
        assert glibc.values == RETAINED and glibc.trims == 0
    assert glibc.values == GLIBC_DEFAULTS and glibc.trims == 1


def test_the_config_switch_leaves_glibc_alone(glibc):
    with retained_freed_memory(enabled=False) as applied:
        assert not applied
    assert glibc.values == {} and glibc.trims == 0


@pytest.mark.parametrize("variable", USER_SETTINGS)
def test_user_malloc_settings_are_respected(monkeypatch, variable):
    monkeypatch.setenv(variable, "65536")
    assert allocator._glibc() is None
    with retained_freed_memory() as applied:
        assert not applied


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.setattr(platform, "libc_ver", lambda: ("musl", "1.2"))
    with retained_freed_memory() as applied:
        assert not applied


def test_the_setting_applies_to_cpu_training_only(tiny_world, tmp_path):
    # Decided on the accelerator the trainer resolved (train.accelerator=auto may resolve to either).
    config = tiny_config(tiny_world, tmp_path, "train.accelerator=auto")
    assert heap_setting_applies(config, SimpleNamespace(accelerator=CPUAccelerator()))
    for accelerator in (CUDAAccelerator(), MPSAccelerator()):
        assert not heap_setting_applies(config, SimpleNamespace(accelerator=accelerator))
    switched_off = tiny_config(tiny_world, tmp_path, "train.retain_freed_memory=false")
    assert not heap_setting_applies(switched_off, SimpleNamespace(accelerator=CPUAccelerator()))


def test_cpu_training_retains_freed_memory_while_it_runs_and_restores_glibc_after(glibc, tiny_world, tmp_path):
    seen = []

    class SeeGlibc(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(dict(glibc.values))

    settings = ("train.max_epochs=1", "train.limit_train_batches=1", "train.limit_val_batches=1")
    train(tiny_config(tiny_world, tmp_path, *settings), progress=False, callbacks=[SeeGlibc()])
    assert seen == [RETAINED]
    assert glibc.values == GLIBC_DEFAULTS and glibc.trims == 1
