"""Shared helpers of the benchmark scripts: machine description, timing and BENCHMARKS.md records."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import torch

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def machine() -> str:
    """Cores, accelerator and library versions, one line."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{os.cpu_count()} cores, {gpu}, Python {platform.python_version()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads"
    )


def best_of(function: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """The fastest of ``repeats`` timed calls (seconds), after ``warmup`` untimed ones."""
    for _ in range(warmup):
        function()
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        timings.append(time.perf_counter() - start)
    return min(timings)


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def record(title: str, table: str, notes: str = "", write: bool = True) -> None:
    """Print a result table and append it to BENCHMARKS.md with the command and the machine."""
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0]), *sys.argv[1:]])
    section = f"\n## {title} ({date.today().isoformat()})\n\n`{command}`\n\nMachine: {machine()}\n\n{table}\n"
    if notes:
        section += f"\n{notes}\n"
    print(section)
    if write:
        if not BENCHMARKS_MD.exists():
            BENCHMARKS_MD.write_text("# Benchmarks\n\nFigures appended by the scripts in `benchmarks/`.\n")
        with BENCHMARKS_MD.open("a", encoding="utf-8") as handle:
            handle.write(section)


def run_in_child(script: str, args: dict, what: str) -> dict:
    """Run ``script --child <args as JSON>`` in a fresh interpreter; return the JSON of its last output line.

    Exits naming ``what`` with the end of the child's stderr when it fails.
    """
    done = subprocess.run(
        [sys.executable, script, "--child", json.dumps(args)], capture_output=True, text=True, check=False
    )
    if done.returncode:
        sys.exit(f"{what} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
