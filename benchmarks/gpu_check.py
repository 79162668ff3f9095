"""The GPU figures users ask for, in one table: `flair train` and `flair detect` per precision, peak GPU memory, DDP.

bash benchmarks/gpu_check.sh [--device cuda|cpu] [--quick] [--out FILE [--overwrite]] [--workdir DIR] [--record]

Training (``bench_training.py``'s timed `flair train`, each row in its own process): U-Net ResNet34, 5 bands
(RGBIE), 512 px patches of a synthetic world (``flairkit.synth``), batch 10, random weights, the default
loader workers; ``train.precision=32``, then ``bf16-mixed``, then bf16-mixed with ``train.channels_last``,
then that under ``train.compile``. Patches/s counts the wait for data; busy = step / (step + wait), the share
of the time the device computes. With two GPUs visible the bf16-mixed channels_last setting also runs DDP on
2 GPUs (batch 10 per GPU, patches/s over both, figures of rank 0).

Detection (``bench_detection.py``'s timed `flair detect`, each row in its own process): a synthetic
orthophoto of 8192 x 8192 px at 0.2 m (``flairkit.synth``), the `flair detect` defaults with the torch
network, margin and blend stitching, ``detect.precision`` 32 and bf16. The network is trained for 100 steps
(20 with ``--quick``) on the world's patches first (``bench_official.make_weights``), so that its maps have
structure.
Pixels agreeing: the share of pixels with the same class as a reference map of this run: blend fp32
against margin fp32, each bf16 map against the fp32 map of the same stitching.

Peak GPU memory is ``torch.cuda.max_memory_allocated`` in the process that ran the row. ``--quick`` shrinks
everything (128 px patches, batch 2, 1 + 2 steps, a 512 px orthophoto in 256 px tiles): with ``--device
cpu`` the whole check runs in about a minute on a 2-core CPU, which tests the script, not the hardware.
Rows that only make sense on GPUs (torch.compile, DDP) say why they did not run. The table is printed,
written to ``--out`` and, with ``--record``, appended to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from bench_detection import run_detection
from bench_official import agreement, make_weights
from bench_training import run_training
from common import ChildFailed, add_record_option, markdown_table, record

HEADER = ["run", "precision", "settings", "patches/s", "busy (%)", "km²/h", "peak GPU memory (MiB)"]
HEADER += ["pixels agreeing (%)", "notes"]
PROGRAM = "bash benchmarks/gpu_check.sh"
WEIGHTS_PATCHES = 20
"""Patches the detection network is trained on (the first ones of the world)."""


@dataclass(frozen=True)
class Sizes:
    """How big the check is: training patches and steps, orthophoto, detection tiling."""

    patch: int
    batch: int
    warmup: int
    steps: int
    ortho: int
    weight_steps: int
    detect_overrides: tuple[str, ...] = ()


FULL = Sizes(patch=512, batch=10, warmup=5, steps=50, ortho=8192, weight_steps=100)
QUICK = Sizes(
    patch=128,
    batch=2,
    warmup=1,
    steps=2,
    ortho=512,
    weight_steps=20,
    detect_overrides=("detect.tile_size=256", "detect.margin=32"),
)


@dataclass(frozen=True)
class TrainRow:
    """One training setting."""

    precision: str
    channels_last: bool = False
    compile: bool = False
    devices: int = 1

    @property
    def settings(self) -> str:
        parts = ["channels_last" if self.channels_last else "NCHW"]
        if self.compile:
            parts.append("torch.compile")
        if self.devices > 1:
            parts.append(f"DDP on {self.devices} GPUs")
        return ", ".join(parts)


TRAIN_ROWS = (
    TrainRow("32"),
    TrainRow("bf16-mixed"),
    TrainRow("bf16-mixed", channels_last=True),
    TrainRow("bf16-mixed", channels_last=True, compile=True),
    TrainRow("bf16-mixed", channels_last=True, devices=2),
)
DETECT_ROWS = (("margin", "32"), ("blend", "32"), ("margin", "bf16"), ("blend", "bf16"))
"""(stitching, detect.precision); the reference of each map's agreement is in :func:`reference_of`."""


def reference_of(mode: str, precision: str) -> tuple[str, str] | None:
    """The detection row whose map another row's map is compared with (None: the reference itself)."""
    if precision != "32":
        return mode, "32"
    return None if mode == "margin" else ("margin", "32")


def skip_reason(row: TrainRow, device: str, gpus: int) -> str | None:
    """Why a training row cannot run here, or None."""
    if row.devices > 1 and gpus < row.devices:
        seen = "--device cpu" if device == "cpu" else f"{gpus} visible"
        return f"not run: needs {row.devices} GPUs ({seen})"
    if row.compile and device == "cpu":
        return "not run: torch.compile is timed on GPUs only (on a CPU it compiles for minutes)"
    return None


def failed(failure: ChildFailed) -> str:
    """The notes cell of a row whose process failed (the whole error goes to stderr): its last line."""
    print(failure, file=sys.stderr, flush=True)
    lines = [line.strip() for line in str(failure).splitlines() if line.strip()]
    return "failed: " + lines[-1].replace("|", "/")[:200]


def make_world(folder: Path, sizes: Sizes, patches: int):
    """A one-domain synthetic world of ``patches`` patches and one orthophoto; large worlds in parallel areas."""
    from flairkit.synth.world import SynthOptions, synthesize_world

    areas = max(1, min(8, os.cpu_count() or 1, patches // 64))
    options = SynthOptions(
        n_domains=1,
        test_domains=0,
        val_domains=0,
        areas_per_domain=areas,
        patches_per_area=math.ceil(patches / areas),
        patch_size=sizes.patch,
        sentinel=False,
        n_orthos=1,
        ortho_size=sizes.ortho,
        workers=areas,
    )
    return synthesize_world(folder / "world", options)


def train_rows(csv: Path, folder: Path, sizes: Sizes, device: str, gpus: int) -> list[list[str]]:
    """The training rows of the table, each setting timed in its own process."""
    rows = []
    for row in TRAIN_ROWS:
        cells = ["train", row.precision, row.settings]
        reason = skip_reason(row, device, gpus)
        if reason:
            rows.append([*cells, "-", "-", "-", "-", "-", reason])
            continue
        args = {
            "csv": str(csv),
            "batch": sizes.batch,
            "device": device,
            "devices": row.devices,
            "precision": row.precision,
            "compile": row.compile,
            "channels_last": row.channels_last,
            "workers": None,
            "warmup": sizes.warmup,
            "steps": sizes.steps,
            "out": str(folder / f"train-{len(rows)}"),
        }
        try:
            figures = run_training(args)
        except ChildFailed as failure:
            rows.append([*cells, "-", "-", "-", "-", "-", failed(failure)])
            continue
        peak = figures["peak_gpu_mib"]
        rows.append(
            [
                *cells,
                f"{figures['patches_per_s']:.2f}",
                f"{figures['busy_percent']:.1f}",
                "-",
                "-" if peak is None else f"{peak:.0f}",
                "-",
                f"mean of {figures['timed_steps']} steps, loader workers: {figures['workers']}",
            ]
        )
        print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    return rows


def detect_rows(ortho: Path, weights: Path, folder: Path, sizes: Sizes, device: str) -> list[list[str]]:
    """The detection rows: each (stitching, precision) in its own process, then the maps compared."""
    maps: dict[tuple[str, str], Path] = {}
    rows = []
    for mode, precision in DETECT_ROWS:
        output = folder / f"map_{mode}_{precision}.tif"
        args = {
            "input": str(ortho),
            "output": str(output),
            "mode": mode,
            "device": device,
            "weights": str(weights),
            "overrides": [f"detect.precision={precision}", "detect.backend=torch", *sizes.detect_overrides],
        }
        try:
            figures = run_detection(args)
        except ChildFailed as failure:
            rows.append(["detect", precision, mode, "-", "-", "-", "-", "-", failed(failure)])
            continue
        maps[mode, precision] = output
        peak = figures["peak_gpu_mib"]
        reference = reference_of(mode, precision)
        if reference is None:
            agreeing, note = "-", "reference map"
        elif reference not in maps:
            agreeing, note = "-", f"detect {reference[1]} {reference[0]} failed: nothing to compare with"
        else:
            agreeing = f"{agreement(output, maps[reference], codes=False):.3f}"
            note = f"against detect {reference[1]} {reference[0]}"
        settings = f"{mode}, {figures['tile']} px tiles"
        rows.append(
            [
                "detect",
                precision,
                settings,
                "-",
                "-",
                f"{figures['km2'] / figures['seconds'] * 3600:.2f}",
                "-" if peak is None else f"{peak:.0f}",
                agreeing,
                note,
            ]
        )
        print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: tests the script (about a minute on a CPU)")
    parser.add_argument("--out", type=Path, help="also write the table (with command, machine and notes) here")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--workdir", type=Path, help="keep the world, weights, runs and maps in this new folder")
    add_record_option(parser)
    options = parser.parse_args()
    if options.out is not None and options.out.exists() and not options.overwrite:
        parser.error(f"--out {options.out} already exists; pass --overwrite to replace it or choose another file")
    if options.workdir is not None and options.workdir.exists():
        parser.error(f"--workdir {options.workdir} already exists; give a new folder")

    import torch

    if options.device == "cuda" and not torch.cuda.is_available():
        sys.exit(
            "gpu_check: --device cuda, but torch sees no CUDA GPU (torch.cuda.is_available() is false); "
            "run it on a GPU host, or pass --device cpu --quick to test the script"
        )
    gpus = torch.cuda.device_count() if options.device == "cuda" else 0
    sizes = QUICK if options.quick else FULL
    ddp = any(row.devices > 1 and skip_reason(row, options.device, gpus) is None for row in TRAIN_ROWS)
    patches = sizes.batch * (sizes.warmup + sizes.steps) * (2 if ddp else 1)
    start = time.perf_counter()
    with ExitStack() as stack:
        if options.workdir is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flairkit-gpu-check-")))
        else:
            folder = options.workdir
            folder.mkdir(parents=True)
        world = make_world(folder, sizes, patches)
        csv = world.csv["train"]
        weights_csv = csv.with_name("weights.csv")
        weights_csv.write_text("".join(csv.read_text().splitlines(keepends=True)[:WEIGHTS_PATCHES]))
        weights = folder / "weights.pth"
        make_weights(weights_csv, weights, sizes.weight_steps, device=options.device)
        rows = train_rows(csv, folder, sizes, options.device, gpus)
        rows += detect_rows(world.orthos[0][0], weights, folder, sizes, options.device)
    seconds = time.perf_counter() - start
    notes = (
        f"U-Net ResNet34, 5 bands (RGBIE), 19 logits. Training: `flair train` on {patches} synthetic patches of "
        f"{sizes.patch} px, batch {sizes.batch} per device, random weights, SGD, the first {sizes.warmup} step(s) "
        f"untimed; patches/s includes the wait for data, busy = step / (step + wait). Detection: `flair detect` "
        f"defaults, torch network, on a synthetic orthophoto of {sizes.ortho}x{sizes.ortho} px at 0.2 m "
        f"({sizes.ortho**2 * 0.04 / 1e6:.2f} km²), time from the loaded network to the closed map; the network "
        f"was trained {sizes.weight_steps} steps on the world's patches; pixels agreeing: same class as the "
        "map named in the notes column. Peak GPU memory: torch.cuda.max_memory_allocated in the process of the "
        f"row. Device: {options.device}, {gpus} GPU(s) visible. Whole check: {seconds:.0f} s."
    )
    if sizes.detect_overrides:
        notes += f" Quick run: {' '.join(sizes.detect_overrides)}; figures test the script, not the hardware."
    failures = sum(row[-1].startswith("failed: ") for row in rows)
    table = markdown_table(HEADER, rows)
    section = record("GPU check", table, notes, write=options.record and not failures, program=PROGRAM)
    if options.out is not None:
        from flairkit.atomic import write_text_atomic

        write_text_atomic(options.out, section.lstrip("\n"), overwrite=options.overwrite)
    if failures:
        unrecorded = "; nothing was appended to BENCHMARKS.md" if options.record else ""
        sys.exit(f"gpu_check: {failures} row(s) failed (their errors are above){unrecorded}")


if __name__ == "__main__":
    main()
