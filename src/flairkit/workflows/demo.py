"""``flair demo``: the whole FLAIR workflow on an embedded synthetic world, in minutes on a CPU.

Generates a FLAIR #2-layout world, checks it, trains a small aerial U-Net (or, with the ``demo-utt`` preset,
a U-T&T fed with the world's Sentinel-2 time series), evaluates it on the test domains with the official
metrics, maps a large synthetic orthophoto with zone detection (aerial models only: detection reads
orthophotos alone), and writes ``report.md`` and ``report.html`` (the whole demo on one page). Nothing is
printed: each step is announced to an ``on_step`` callback (what ``flair demo`` renders) and everything comes
back in a :class:`DemoResult`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flairkit.atomic import write_text_atomic
from flairkit.config import load_config
from flairkit.config.schema import FlairConfig
from flairkit.data.check import check_dataset
from flairkit.data.datamodule import split_records
from flairkit.detection.report import detection_section
from flairkit.detection.summary import DetectionSummary, DetectProgress
from flairkit.errors import DataError, OutputExistsError
from flairkit.evaluation.html import evaluation_section, summary_section, write_report
from flairkit.evaluation.predict import evaluate
from flairkit.evaluation.protocols import Metrics
from flairkit.synth.world import SynthOptions, SynthSummary, synthesize_world
from flairkit.training.run import TrainResult, train

DEMO_PARTS = ("world", "runs", "evaluation", "detection", "report.md", "report.html")
DEMO_STEPS = (
    "synthetic FLAIR world",
    "dataset check",
    "training",
    "evaluation on the test domains",
    "zone detection on a synthetic orthophoto",
)


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
    detection: DetectionSummary | None
    """None when the model also needs Sentinel-2 (zone detection maps orthophotos alone)."""
    report: Path
    seconds: dict[str, float]
    html_report: Path
    """``report.html``: the whole demo on one self-contained page."""


@dataclass(frozen=True)
class DemoStep:
    """A step of the demo starting (``done`` false) or finished, with what it produced."""

    number: int
    """1 to ``len(DEMO_STEPS)``."""
    title: str
    done: bool = False
    result: Any = None
    """Once done: the SynthSummary, the CheckReport, the TrainResult, the test Metrics, the DetectionSummary."""
    note: str | None = None
    """A line for the user: what the check found, why a step was skipped."""


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
    out: Path,
    settings: DemoSettings | None = None,
    *,
    overwrite: bool = False,
    on_step: Callable[[DemoStep], None] | None = None,
    training_progress: bool = False,
    detection_progress: DetectProgress | None = None,
) -> DemoResult:
    """Run the demo into ``out`` and return its results; see the module docstring.

    ``on_step`` is called when each step starts and when it is done; ``training_progress`` shows Lightning's
    progress bar; ``detection_progress`` follows zone detection (see :func:`flairkit.detection.run.detect`).
    """
    from flairkit.detection.run import detect
    from flairkit.models.loader import load_model

    settings = settings or DemoSettings()
    out = Path(out)
    _prepare(out, overwrite)
    seconds: dict[str, float] = {}

    def step(number: int, result: Any = None, note: str | None = None, done: bool = True) -> None:
        if on_step is not None:
            on_step(DemoStep(number, DEMO_STEPS[number - 1], done, result, note))

    start = time.perf_counter()
    step(1, done=False)
    world = synthesize_world(out / "world", settings.world)
    seconds["world"] = time.perf_counter() - start
    step(1, world)

    step(2, done=False)
    report = check_dataset(world.root)
    if not report.ok:
        raise DataError(f"the generated world fails its check: {report.problems[:3]}")
    step(2, report, f"{report.n_patches} patches checked, no problem found")

    start = time.perf_counter()
    step(3, done=False)
    config = demo_config(settings, world.root, out)
    training = train(config, overwrite=True, progress=training_progress)
    seconds["training"] = time.perf_counter() - start
    step(3, training)

    start = time.perf_counter()
    step(4, done=False)
    model = load_model(config, training.best_checkpoint)
    metrics = evaluate(config, model, out / "evaluation", overwrite=True)
    seconds["evaluation"] = time.perf_counter() - start
    step(4, metrics)

    start = time.perf_counter()
    step(5, done=False)
    detection, note = None, None
    if config.model.multimodal:
        note = "skipped: zone detection maps orthophotos alone, and this model also needs Sentinel-2"
    elif world.orthos:
        image, labels = world.orthos[0]
        detection = detect(
            config,
            model,
            [image],
            out / "detection" / "landcover.tif",
            overwrite=True,
            evaluate_labels=labels,
            progress=detection_progress,
        )
    seconds["detection"] = time.perf_counter() - start
    step(5, detection, note)

    report_path = write_text_atomic(out / "report.md", _report(world, training, metrics, detection, seconds))
    html_path = _html_report(out, config, world, training, metrics, detection, seconds)
    return DemoResult(out, world, training, metrics, detection, report_path, seconds, html_path)


def _html_report(
    out: Path,
    config: FlairConfig,
    world: SynthSummary,
    training: TrainResult,
    metrics: Metrics,
    detection: DetectionSummary | None,
    seconds: dict[str, float],
) -> Path:
    rows = [
        ("world", f"{world.root} ({', '.join(f'{split}: {n}' for split, n in world.counts.items())} patches)"),
        ("training", f"{training.epochs} epochs, best checkpoint {training.best_checkpoint}"),
        ("zone detection", "done" if detection is not None else "not run: this model also needs Sentinel-2"),
        *((f"time: {step}", f"{value:.1f} s") for step, value in seconds.items()),
    ]
    sections = [
        summary_section("Demo", rows),
        evaluation_section(config, metrics, out / "evaluation", split_records(config, "test")),
    ]
    if detection is not None:
        sections.append(detection_section(config, detection))
    return write_report(out / "report.html", f"flairkit demo: {config.name}", sections, overwrite=True)


def _report(
    world: SynthSummary,
    training: TrainResult,
    metrics: Metrics,
    detection: DetectionSummary | None,
    seconds: dict[str, float],
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
