"""Shared helpers of the benchmark scripts: machine description, timing and BENCHMARKS.md records."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

import torch

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
BENCHMARKS_HEADER = (
    "# Benchmarks\n\nFigures appended by the scripts in `benchmarks/` when run with `--record` (without it they "
    "only print).\n"
)
BENCHMARKS_MD_ENV = "FLAIRKIT_BENCHMARKS_MD"
"""Environment variable naming another file for ``--record`` to append to (the tests use a copy)."""


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


def add_record_option(parser: argparse.ArgumentParser) -> None:
    """The ``--record`` flag shared by the scripts: without it they only print."""
    parser.add_argument(
        "--record", action="store_true", help=f"also append the result to BENCHMARKS.md (or ${BENCHMARKS_MD_ENV})"
    )


def benchmarks_md() -> Path:
    """The file ``--record`` appends to: $FLAIRKIT_BENCHMARKS_MD, or the repository's BENCHMARKS.md."""
    return Path(os.environ.get(BENCHMARKS_MD_ENV) or BENCHMARKS_MD)


def _portable(argument: str) -> str:
    """``argument`` with an absolute path (alone or as ``KEY=PATH``) replaced by ``path/to/<its name>``."""
    key, sep, value = argument.rpartition("=")
    if os.path.isabs(value):
        return f"{key}{sep}path/to/{Path(value).name}"
    return argument


def recorded_command(program: str, arguments: Sequence[str]) -> str:
    """The command line as anyone can run it from the repository root: no path of this machine in it."""
    return " ".join([program, *(shlex.quote(_portable(a)) for a in arguments)])


def record(title: str, table: str, notes: str = "", write: bool = False, program: str | None = None) -> str:
    """Print a result section (title, command, machine, table, notes) and return it.

    With ``write`` the section is also appended to :func:`benchmarks_md`. ``program`` is how the command
    starts (default: ``python benchmarks/<this script>``).
    """
    from flairkit.atomic import write_text_atomic

    program = program or f"python benchmarks/{Path(sys.argv[0]).name}"
    command = recorded_command(program, sys.argv[1:])
    section = f"\n## {title} ({date.today().isoformat()})\n\n`{command}`\n\nMachine: {machine()}\n\n{table}\n"
    if notes:
        section += f"\n{notes}\n"
    print(section, flush=True)
    if write:
        path = benchmarks_md()
        before = path.read_text(encoding="utf-8") if path.exists() else BENCHMARKS_HEADER
        write_text_atomic(path, before + section)
    return section


class ChildFailed(SystemExit):
    """A child run failed. Uncaught, it ends the script with its message, as ``sys.exit`` does."""


def run_in_child(script: str, args: dict, what: str) -> dict:
    """Run ``script --child <args as JSON>`` in a fresh interpreter; return the JSON of its last output line.

    Raises :class:`ChildFailed` naming ``what``, with the end of the child's stderr, when it fails.
    """
    done = subprocess.run(
        [sys.executable, script, "--child", json.dumps(args)], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise ChildFailed(f"{what} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
