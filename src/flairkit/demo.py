"""``flair demo``: the whole FLAIR workflow on an embedded synthetic world, in minutes on a CPU.

Generates a FLAIR #2-layout world, checks it, trains a small aerial U-Net (or, with the ``demo-utt`` preset,
a U-T&T fed with the world's Sentinel-2 time series), evaluates it on the test domains with the official
metrics, maps a large synthetic orthophoto with zone detection (aerial models only: detection reads
orthophotos alone), and writes a markdown report beside the figures.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from flairkit.atomic import write_text_atomic
from flairkit.config import load_config
from flairkit.config.schema import FlairConfig
from flairkit.data.check import check_dataset
from flairkit.data.synth import SynthOptions, SynthSummary, synthesize_world
from flairkit.errors import DataError, OutputExistsError
from flairkit.evaluation.predict import evaluate
from flairkit.evaluation.protocols import Metrics
from flairkit.training.run import TrainResult, train

DEMO_PARTS = ("world", "runs", "evaluation", "detection", "report.md")


@dataclass
class DemoSettings:
    """Sizes of the demo; the defaults finish in under 10 minutes on 2 CPU cores."""

    world: SynthOptions = field(
        default_factory=lambda: SynthOptions(
            n_domains=6,
            areas_per_domain=3,
            patches_per_area=12,
            patch_size=128,
            seed=2022,
            sentinel=True,
            n_orthos=1,
            ortho_size=2048,
            test_domains=1,
            val_domains=1,
        )
    )
    preset: str = "demo"
    """``demo`` (aerial U-Net) or ``demo-utt`` (U-T&T with Sentinel-2), or any preset the world can feed."""
    overrides: list[str] = field(default_factory=list)


@dataclass
class DemoResult:
    """Everything the demo produced."""

    out: Path
    world: SynthSummary
    training: TrainResult
    metrics: Metrics
    detection: Any
    report: Path
    seconds: dict[str, float]


def _prepare(out: Path, overwrite: bool) -> None:
    existing = [out / part for part in DEMO_PARTS if (out / part).exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"{out} already holds a demo ({existing[0].name}); pass --overwrite or another --out")
    for path in existing:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def demo_config(settings: DemoSettings, world: Path, out: Path) -> FlairConfig:
    """The training config of the demo on ``world``."""
    return load_config(settings.preset, [f"data.root={world}", f"output_dir={out / 'runs'}", *settings.overrides])


def run_demo(
    out: Path, settings: DemoSettings | None = None, *, overwrite: bool = False, console: Console | None = None
) -> DemoResult:
    """Run the demo into ``out`` and return its results; see the module docstring."""
    from flairkit.detection.run import detect
    from flairkit.models.checkpoints import load_model

    settings = settings or DemoSettings()
    console = console or Console()
    out = Path(out)
    _prepare(out, overwrite)
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    console.rule("1/5 synthetic FLAIR world")
    world = synthesize_world(out / "world", settings.world)
    seconds["world"] = time.perf_counter() - start

    console.rule("2/5 dataset check")
    report = check_dataset(world.root)
    if not report.ok:
        raise DataError(f"the generated world fails its check: {report.problems[:3]}")
    console.print(f"{report.n_patches} patches checked, no problem found")

    start = time.perf_counter()
    console.rule("3/5 training")
    config = demo_config(settings, world.root, out)
    training = train(config, overwrite=True, progress=console.is_terminal)
    seconds["training"] = time.perf_counter() - start

    start = time.perf_counter()
    console.rule("4/5 evaluation on the test domains")
    model = load_model(config, training.best_checkpoint)
    metrics = evaluate(config, model, out / "evaluation", overwrite=True, progress=False, console=console)
    seconds["evaluation"] = time.perf_counter() - start

    start = time.perf_counter()
    console.rule("5/5 zone detection on a synthetic orthophoto")
    detection = None
    if config.model.multimodal:
        console.print("skipped: zone detection maps orthophotos alone, and this model also needs Sentinel-2")
    elif world.orthos:
        image, labels = world.orthos[0]
        detection = detect(
            config,
            model,
            [image],
            out / "detection" / "landcover.tif",
            overwrite=True,
            evaluate_labels=labels,
            progress=console.is_terminal,
        )
    seconds["detection"] = time.perf_counter() - start

    report_path = write_text_atomic(out / "report.md", _report(world, training, metrics, detection, seconds))
    console.print(f"[green]demo finished[/]: test mIoU {metrics.miou:.2f}; report at {report_path}")
    return DemoResult(out, world, training, metrics, detection, report_path, seconds)


def _report(
    world: SynthSummary, training: TrainResult, metrics: Metrics, detection: Any, seconds: dict[str, float]
) -> str:
    lines = [
        "# flairkit demo report",
        "",
        f"- world: `{world.root}` ({world.counts})",
        f"- training: {training.epochs} epochs, best checkpoint `{training.best_checkpoint}`",
        f"- test mIoU ({metrics.protocol} protocol): **{metrics.miou:.2f}**, overall accuracy "
        f"{metrics.overall_accuracy:.2f}",
        "",
        "| class | IoU | F-score | precision | recall |",
        "|---|---|---|---|---|",
    ]
    for name, iou, fscore, precision, recall in zip(
        metrics.class_names,
        metrics.per_class_iou,
        metrics.per_class_fscore,
        metrics.per_class_precision,
        metrics.per_class_recall,
        strict=True,
    ):
        lines.append(f"| {name} | {iou:.2f} | {fscore:.2f} | {precision:.2f} | {recall:.2f} |")
    lines += ["", "Figures: `evaluation/metrics/*.png`.", ""]
    if detection is not None:
        lines += ["## Zone detection", "", f"{detection}", ""]
    else:
        lines += ["Zone detection: not run (it maps orthophotos alone; this model also needs Sentinel-2).", ""]
    lines += ["## Timings (s)", ""] + [f"- {k}: {v:.1f}" for k, v in seconds.items()]
    return "\n".join(lines) + "\n"
