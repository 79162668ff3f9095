"""Accuracy across domains: each domain-shift technique alone, and the recommended preset, against the baseline.

python benchmarks/domain_gain.py [--seeds 0 1 2] [--epochs 8] [--patch-size 96] [--domain-shift 3]
                                 [--techniques NAME ...] [--threads N] [--quick] [--work DIR] [--out PREFIX]
                                 [--overwrite] [--record]

Writes a synthetic world (flairkit.synth) whose domains differ in radiometry ``--domain-shift`` times more than the
default world's, trains on its 4 train domains and scores every run on its 3 test domains, never seen in training;
the val domain, unseen too, is scored apart: it is what the preset's techniques are chosen on. Every row has the same
budget: the baseline FLAIR-1 preset (flair1-unet-resnet34) scaled down as ``SCALE`` says (U-Net ResNet18 from random
weights, the demo preset's optimiser), the same patches, epochs, batch size and learning-rate schedule, flips and
rotations on; one row per technique added alone, then the recommended preset (flair1-unet-resnet34-domain) under the
same scaling. Rows that only change what happens after training (TTA, BatchNorm recalibration) reuse the baseline's
trainings. The table gives mean, standard deviation and min-max over the seeds of the test mIoU and pixel accuracy
(final weights), the val-domain gain, and the training time (Lightning's fit, wall and CPU seconds measured by a
callback; recalibration and evaluation timed apart). Progress goes to stderr. ``--out PREFIX`` also writes
PREFIX.json (every seed's figures) and PREFIX.md, atomically; existing files need --overwrite.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from common import add_record_option, markdown_table, record
from flairkit.atomic import check_writable, write_text_atomic
from flairkit.config import load_config
from flairkit.config.schema import FlairConfig
from flairkit.evaluation.predict import evaluate
from flairkit.models.loader import load_model
from flairkit.synth.world import SynthOptions, synthesize_world
from flairkit.training.run import train

BASELINE_PRESET = "flair1-unet-resnet34"
DOMAIN_PRESET = "flair1-unet-resnet34-domain"
SCALE = [
    "model.encoder=resnet18",
    "model.encoder_weights=null",
    "model.smp_kwargs={decoder_channels: [128, 64, 32, 16, 16]}",
    "train.optimizer=adamw",
    "train.lr=0.002",
    "train.weight_decay=0.0001",
    "train.scheduler=cosine",
    "train.early_stopping_patience=null",
    "train.accelerator=cpu",
    "train.devices=1",
    "train.log_every_n_steps=1",
    "data.batch_size=8",
    "data.num_workers=0",
    "data.augmentation_probability=0.5",
]
"""What every row shares, applied over both presets: the demo preset's small network and optimiser (a ResNet34 from
ImageNet weights and FLAIR's SGD schedule of 200 epochs do not fit a CPU benchmark), flips and rotations on."""


AFTER_TRAINING = ("evaluate.", "train.recalibrate_batchnorm=")
"""Overrides that change nothing in the fit: rows that differ only by them share their trainings."""


@dataclass(frozen=True)
class Technique:
    """One row: a preset and the overrides of the technique."""

    label: str
    overrides: tuple[str, ...] = ()
    preset: str = BASELINE_PRESET

    def training_key(self) -> tuple[str, tuple[str, ...]]:
        """Rows with the same key share their trainings."""
        return self.preset, tuple(o for o in self.overrides if not o.startswith(AFTER_TRAINING))


TECHNIQUES = {
    "baseline": Technique("baseline (flips/rotations)"),
    "jitter": Technique(
        "radiometric jitter", ("data.radiometric.gain=0.3", "data.radiometric.offset=0.1", "data.radiometric.gamma=0.2")
    ),
    "per_patch": Technique("per-patch standardisation", ("data.normalization.mode=per_patch",)),
    "group_norm": Technique("GroupNorm", ("model.norm=group",)),
    "recalibration": Technique("BatchNorm recalibration", ("train.recalibrate_batchnorm=true",)),
    "tta": Technique("TTA d4", ("evaluate.tta=d4",)),
    "ema": Technique("EMA of weights (0.98)", ("train.ema_decay=0.98",)),
    "dice": Technique("CE + Dice loss", ("train.loss.dice=1",)),
    "class_aware": Technique("class-aware sampling (0.5)", ("data.class_aware_sampling=0.5",)),
    "preset": Technique(f"recommended: {DOMAIN_PRESET}", preset=DOMAIN_PRESET),
}


@dataclass
class Outcome:
    """The scores and times of one row for one seed."""

    miou: float
    accuracy: float
    val_miou: float
    """mIoU on the val domain (unseen too): what the recommended combination is chosen on, never the test domains."""
    fit_seconds: float
    fit_cpu_seconds: float
    recalibration_seconds: float
    evaluation_seconds: float


@dataclass
class Row:
    """One technique over every seed."""

    name: str
    label: str
    outcomes: list[Outcome] = field(default_factory=list)


class FitTimer(L.Callback):
    """Times Lightning's fit (wall and this process's CPU seconds) and reports each finished epoch."""

    def __init__(self, report: Callable[[str], None], what: str):
        self.report, self.what = report, what
        self.start = self.end = self.seconds = self.cpu_start = self.cpu_seconds = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start, self.cpu_start = time.perf_counter(), time.process_time()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loss = trainer.callback_metrics.get("train_loss")
        shown = f", train loss {float(loss):.3f}" if loss is not None else ""
        self.report(f"{self.what}: epoch {trainer.current_epoch + 1}/{trainer.max_epochs}{shown}")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.end = time.perf_counter()
        self.seconds = self.end - self.start
        self.cpu_seconds = time.process_time() - self.cpu_start


def world_options(args: argparse.Namespace) -> SynthOptions:
    """The benchmark's world: 4 train, 1 val and 3 test domains, no Sentinel-2 and no orthophoto."""
    return SynthOptions(
        n_domains=8,
        areas_per_domain=args.areas,
        patches_per_area=args.patches_per_area,
        patch_size=args.patch_size,
        seed=args.world_seed,
        sentinel=False,
        n_orthos=0,
        test_domains=3,
        val_domains=1,
        domain_shift=args.domain_shift,
    )


def row_config(technique: Technique, world: Path, work: Path, name: str, seed: int, epochs: int) -> FlairConfig:
    """The config of run ``name`` of ``technique``: its preset, the shared scaling, its own overrides."""
    overrides = [
        *(f"data.{split}_csv={world / f'{split}.csv'}" for split in ("train", "val", "test")),
        *SCALE,
        f"train.max_epochs={epochs}",
        f"train.seed={seed}",
        f"output_dir={work / 'runs'}",
        f"name={name}",
        *technique.overrides,
    ]
    return load_config(technique.preset, overrides)


def run_all(
    names: list[str], seeds: list[int], world: Path, work: Path, epochs: int, report: Callable[[str], None]
) -> list[Row]:
    """Train and evaluate every technique of ``names`` for every seed on ``world``; ``report`` receives progress."""
    rows = [Row(name, TECHNIQUES[name].label) for name in names]
    groups: dict[tuple, list[Row]] = {}
    for row in rows:
        groups.setdefault(TECHNIQUES[row.name].training_key(), []).append(row)
    for seed in seeds:
        for k, members in enumerate(groups.values()):
            name = f"{members[0].name}-{seed}"
            configs = [row_config(TECHNIQUES[r.name], world, work, name, seed, epochs) for r in members]
            config = configs[0].model_copy(deep=True)
            config.train.recalibrate_batchnorm = any(c.train.recalibrate_batchnorm for c in configs)
            timer = FitTimer(
                report, f"seed {seed}, training {k + 1}/{len(groups)} ({', '.join(r.name for r in members)})"
            )
            result = train(config, overwrite=True, progress=False, callbacks=[timer])
            after_fit = time.perf_counter() - timer.end
            for row, row_cfg in zip(members, configs, strict=True):
                recalibrated = row_cfg.train.recalibrate_batchnorm
                start = time.perf_counter()
                model = load_model(row_cfg, result.recalibrated_checkpoint if recalibrated else result.last_checkpoint)
                metrics = evaluate(row_cfg, model, work / "evaluation" / f"{row.name}-{seed}", overwrite=True)
                evaluation = time.perf_counter() - start
                val = evaluate(row_cfg, model, work / "validation" / f"{row.name}-{seed}", split="val", overwrite=True)
                outcome = Outcome(
                    miou=metrics.miou,
                    accuracy=metrics.overall_accuracy,
                    val_miou=val.miou,
                    fit_seconds=timer.seconds,
                    fit_cpu_seconds=timer.cpu_seconds,
                    recalibration_seconds=after_fit if recalibrated else 0.0,
                    evaluation_seconds=evaluation,
                )
                row.outcomes.append(outcome)
                report(f"seed {seed}, {row.label}: test mIoU {outcome.miou:.2f}, pixel accuracy {outcome.accuracy:.2f}")
    return rows


def spread(values: list[float]) -> dict[str, float]:
    """Mean, standard deviation (0 for one value), min and max."""
    return {
        "mean": statistics.mean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def summarise(rows: list[Row]) -> list[dict[str, Any]]:
    """Per row: the spreads of mIoU and pixel accuracy, mean times, and the differences to the first row."""
    summaries = []
    for row in rows:
        summaries.append(
            {
                "technique": row.name,
                "label": row.label,
                "miou": spread([o.miou for o in row.outcomes]),
                "accuracy": spread([o.accuracy for o in row.outcomes]),
                "val_miou": spread([o.val_miou for o in row.outcomes]),
                "fit_seconds": statistics.mean(o.fit_seconds for o in row.outcomes),
                "fit_cpu_seconds": statistics.mean(o.fit_cpu_seconds for o in row.outcomes),
                "recalibration_seconds": statistics.mean(o.recalibration_seconds for o in row.outcomes),
                "evaluation_seconds": statistics.mean(o.evaluation_seconds for o in row.outcomes),
                "per_seed": [vars(o) for o in row.outcomes],
            }
        )
    base = summaries[0]
    for summary in summaries:
        gain = summary["miou"]["mean"] - base["miou"]["mean"]
        summary["miou_gain"] = gain
        summary["accuracy_gain"] = summary["accuracy"]["mean"] - base["accuracy"]["mean"]
        summary["beyond_seed_noise"] = abs(gain) > summary["miou"]["sd"] + base["miou"]["sd"]
        summary["val_miou_gain"] = summary["val_miou"]["mean"] - base["val_miou"]["mean"]
        summary["fit_ratio"] = summary["fit_seconds"] / base["fit_seconds"]
        summary["fit_cpu_ratio"] = summary["fit_cpu_seconds"] / base["fit_cpu_seconds"]
    return summaries


def table(summaries: list[dict[str, Any]]) -> str:
    """The markdown table of :func:`summarise`'s rows."""
    header = [
        "technique",
        "unseen mIoU (mean ± sd)",
        "mIoU min-max",
        "mIoU gain",
        "beyond seed noise",
        "unseen pixel acc. (mean ± sd)",
        "val-domain mIoU gain",
        "fit s",
        "fit CPU s",
        "fit CPU vs baseline",
        "recalibration s",
        "evaluation s",
    ]
    rows = []
    for s in summaries:
        m, a = s["miou"], s["accuracy"]
        rows.append(
            [
                s["label"],
                f"{m['mean']:.2f} ± {m['sd']:.2f}",
                f"{m['min']:.2f}-{m['max']:.2f}",
                f"{s['miou_gain']:+.2f}",
                "yes" if s["beyond_seed_noise"] else "no",
                f"{a['mean']:.2f} ± {a['sd']:.2f}",
                f"{s['val_miou_gain']:+.2f}",
                f"{s['fit_seconds']:.0f}",
                f"{s['fit_cpu_seconds']:.0f}",
                f"{s['fit_cpu_ratio']:.2f}x",
                f"{s['recalibration_seconds']:.1f}",
                f"{s['evaluation_seconds']:.1f}",
            ]
        )
    return markdown_table(header, rows)


def write_outputs(prefix: Path, result: dict[str, Any], markdown: str, overwrite: bool) -> None:
    """PREFIX.json and PREFIX.md, atomically; existing files only with ``overwrite``."""
    paths = (prefix.with_name(prefix.name + ".json"), prefix.with_name(prefix.name + ".md"))
    for path in paths:
        check_writable(path, overwrite)
    write_text_atomic(paths[0], json.dumps(result, indent=1) + "\n")
    write_text_atomic(paths[1], markdown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (every row)")
    parser.add_argument("--epochs", type=int, default=8, help="epochs of every run")
    parser.add_argument("--patch-size", type=int, default=96)
    parser.add_argument("--areas", type=int, default=2, help="areas per domain")
    parser.add_argument("--patches-per-area", type=int, default=4)
    parser.add_argument("--world-seed", type=int, default=0, help="seed of the synthetic world (its domains)")
    parser.add_argument("--domain-shift", type=float, default=3.0, help="SynthOptions.domain_shift of the world")
    parser.add_argument(
        "--techniques",
        nargs="+",
        default=list(TECHNIQUES),
        choices=list(TECHNIQUES),
        help="rows besides the baseline",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 32 px patches, 1 area of 2, 1 epoch")
    parser.add_argument("--work", type=Path, default=None, help="folder for the world and runs (default: temporary)")
    parser.add_argument("--out", type=Path, default=None, help="also write OUT.json and OUT.md")
    parser.add_argument("--overwrite", action="store_true", help="replace existing --out files")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    add_record_option(parser)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.patch_size, args.areas, args.patches_per_area, args.epochs = 32, 1, 2, 1
    names = ["baseline", *(n for n in args.techniques if n != "baseline")]
    if args.out is not None:
        for suffix in (".json", ".md"):
            check_writable(args.out.with_name(args.out.name + suffix), args.overwrite)

    def report(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="domain-gain-") as tmp:
        work = args.work or Path(tmp)
        options = world_options(args)
        world = synthesize_world(work / "world", options, overwrite=True)
        domains = json.loads((world.root / "world.json").read_text(encoding="utf-8"))["domains"]
        report(f"world: {world.counts} patches, domains {world.domains}")
        rows = run_all(names, args.seeds, world.root, work, args.epochs, report)

    summaries = summarise(rows)
    markdown = table(summaries)
    n = world.counts
    notes = (
        f"Synthetic world (seed {args.world_seed}, `SynthOptions.domain_shift={args.domain_shift:g}`: per-domain "
        f"band gains {min(min(d['gain']) for d in domains):.2f}-{max(max(d['gain']) for d in domains):.2f}, offsets "
        f"{min(min(d['offset']) for d in domains):.0f} to {max(max(d['offset']) for d in domains):+.0f} DN): "
        f"{args.patch_size} px patches, {n['train']} train patches from {len(world.domains['train'])} domains, "
        f"{n['val']} val from 1, scores on the {n['test']} test patches of {len(world.domains['test'])} domains never "
        f"seen in training. Every row: {BASELINE_PRESET} scaled down (U-Net ResNet18 from random weights, AdamW "
        f"lr 0.002 cosine, batch 8, flips/rotations p=0.5, RGBIE, 15 classes), {args.epochs} epochs, seeds "
        f"{args.seeds}, final weights, {torch.get_num_threads()} torch thread(s). mIoU gain = mean minus the "
        "baseline's mean; beyond seed noise = the gain is "
        "larger than the two rows' standard deviations added. Fit = Lightning's fit (measured by a callback); "
        "recalibration and evaluation (prediction of the test split and metrics) are timed apart."
    )
    result = {
        "command": sys.argv,
        "world": {"options": vars(options), "counts": n, "domains": domains},
        "epochs": args.epochs,
        "seeds": args.seeds,
        "rows": summaries,
        "notes": notes,
    }
    if args.out is not None:
        write_outputs(args.out, result, f"{markdown}\n\n{notes}\n", args.overwrite)
    record("Accuracy across domains", markdown, notes, write=args.record)


if __name__ == "__main__":
    main()
