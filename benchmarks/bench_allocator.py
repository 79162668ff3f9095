"""What ``train.retain_freed_memory`` changes in glibc's malloc: page faults and time of large blocks.

python benchmarks/bench_allocator.py [--mb 64] [--blocks 3] [--rounds 6] [--record]

Each round stands for a training step: it allocates ``--blocks`` float32 tensors of ``--mb`` MB (above
glibc's largest mmap threshold, 32 MB, like the activations of a 512 px batch), fills them, frees them, and
counts the minor page faults of the process (``getrusage``) and the time it took. Rounds run with glibc as
the process started, inside ``retained_freed_memory()`` (the setting ``flair train`` applies on CPUs), and
after that block; the table gives the faults of every round. glibc maps fresh zero-filled pages for every
such block and unmaps them on free; within the block the heap grows over the first rounds until its freed
blocks, merged, serve a whole round (one block freed and asked for again is often not enough: torch's
aligned request asks glibc for a little more than the block it freed). Resident memory is read from
``/proc/self/statm`` at the end of the block and after it (the block hands the retained memory back).
Linux with glibc's malloc only, without ``MALLOC_*_`` or ``GLIBC_TUNABLES`` variables (then flairkit leaves
malloc alone: nothing to measure).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

import torch

from common import add_record_option, markdown_table, record
from flairkit.allocator import retained_freed_memory

PAGE = os.sysconf("SC_PAGE_SIZE")


def one_round(floats: int, blocks: int) -> tuple[int, float]:
    """Minor page faults and seconds of allocating and filling ``blocks`` tensors of ``floats`` float32, then
    freeing them."""
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    tensors = [torch.empty(floats).fill_(1.0) for _ in range(blocks)]
    del tensors
    seconds = time.perf_counter() - start
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults, seconds


def resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE / 2**20


def row(phase: str, rounds: list[tuple[int, float]], pages: int) -> list[object]:
    """The faults of each round as a share of the round's pages, and the median milliseconds of ``rounds``."""
    faults = " ".join(f"{100 * f / pages:.0f}%" for f, _ in rounds)
    return [phase, faults, f"{statistics.median(s for _, s in rounds) * 1000:.1f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=64, help="block size in MB (above 32 MB: always mapped by glibc)")
    parser.add_argument("--blocks", type=int, default=3, help="blocks alive together in a round")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per phase")
    add_record_option(parser)
    options = parser.parse_args()
    if min(options.mb, options.blocks, options.rounds) < 1:
        parser.error("--mb, --blocks and --rounds must be at least 1")
    floats = options.mb * 2**20 // 4
    pages = options.blocks * floats * 4 // PAGE
    started = [one_round(floats, options.blocks) for _ in range(options.rounds)]
    with retained_freed_memory() as applied:
        if not applied:
            sys.exit(
                "bench_allocator: flairkit leaves malloc alone here (not glibc, or MALLOC_*_ / GLIBC_TUNABLES "
                "variables set), so there is nothing to measure; run it on Linux without those variables"
            )
        retained = [one_round(floats, options.blocks) for _ in range(options.rounds)]
        resident_within = resident_mb()
    resident_after = resident_mb()
    after = [one_round(floats, options.blocks) for _ in range(options.rounds)]
    table = markdown_table(
        ["phase", "minor page faults of each round, share of its pages", "median ms per round"],
        [
            row("glibc as the process started", started, pages),
            row("within retained_freed_memory()", retained, pages),
            row("after the block", after, pages),
        ],
    )
    notes = (
        f"Rounds of {options.blocks} blocks of {options.mb} MB ({pages} pages of {PAGE} bytes). Resident memory "
        f"at the end of the block {resident_within:.0f} MB, after it {resident_after:.0f} MB "
        f"({resident_within - resident_after:.0f} MB handed back). After the block glibc's limits are back, but "
        "glibc looks for a free chunk before mapping new pages: chunks the heap kept below live allocations "
        "may still serve some blocks (their pages, handed back by malloc_trim, fault in once)."
    )
    record("glibc heap setting (train.retain_freed_memory)", table, notes, write=options.record)


if __name__ == "__main__":
    main()
