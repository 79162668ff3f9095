"""``flair detect``: land-cover maps of orthophotos of any size (zone detection)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from flairkit.cli.common import ConfigOption, OverwriteOption, SetOption, console, guarded
from flairkit.cli.predict import (
    CheckpointOption,
    DeviceOption,
    PrecisionOption,
    TtaOption,
    config_for_weights,
    device_overrides,
    load_models,
)
from flairkit.errors import ConfigError

if TYPE_CHECKING:
    from flairkit.detection.summary import DetectionSummary


class _AreaColumn(ProgressColumn):
    def render(self, task: Any) -> Text:
        return Text(f"{task.completed:.3f}/{task.total:.3f} km²")


class _SpeedColumn(ProgressColumn):
    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- km²/h" if speed is None else f"{speed * 3600:.2f} km²/h")


def make_progress(console: Console) -> Progress:
    """A progress bar showing km² done, km²/h and the time left."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        _AreaColumn(),
        _SpeedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


class DetectionBar:
    """Renders detection progress (a :data:`~flairkit.detection.summary.DetectProgress` callback): a bar per map,
    shown from the first block until :meth:`close`."""

    def __init__(self, console: Console):
        self._progress = make_progress(console)
        self._tasks: dict[str, TaskID] = {}

    def __call__(self, label: str, done: float, total: float) -> None:
        if label not in self._tasks:
            if not self._tasks:
                self._progress.start()
            self._tasks[label] = self._progress.add_task(label, total=total)
        self._progress.update(self._tasks[label], completed=done)

    def close(self) -> None:
        self._progress.stop()

    def __enter__(self) -> DetectionBar:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def print_summary(summary: DetectionSummary, console: Console) -> None:
    """Print the maps written, the area covered, the throughput and the area of each class."""
    maps = Table(
        title=f"Zone detection ({summary.stitching} stitching, {summary.backend} on {summary.device}, "
        f"{summary.world_size} rank(s), {summary.passes} per tile)"
    )
    for column in ("input", "map", "size (px)", "tile (px)", "area (km²)", "computed (km²)", "time (s)", "km²/h"):
        maps.add_column(column, justify="left" if column in ("input", "map") else "right")
    for m in summary.maps:
        speed = m.computed_km2 / m.seconds * 3600 if m.seconds > 0 and m.computed_km2 else 0.0
        maps.add_row(
            m.input.name,
            str(m.output) + (" (already done)" if m.skipped else ""),
            f"{m.width}x{m.height}",
            str(m.tile_size),
            f"{m.area_km2:.3f}",
            f"{m.computed_km2:.3f}",
            f"{m.seconds:.1f}",
            f"{speed:.2f}",
        )
    console.print(maps)
    for m in summary.maps:
        if m.nodata_note:
            console.print(
                f"{m.input.name}: {m.nodata_km2:.4f} km² written as nodata: {m.nodata_note}",
                markup=False,
                highlight=False,
            )
    console.print(
        f"{summary.computed_km2:.3f} km² computed in {summary.seconds:.1f} s: {summary.km2_per_hour:.2f} km²/h"
    )
    areas = summary.class_areas_km2
    if areas:
        classes = Table(title="Class areas")
        classes.add_column("class")
        classes.add_column("km²", justify="right")
        classes.add_column("%", justify="right")
        total = sum(areas.values())
        for name, area in sorted(areas.items(), key=lambda item: -item[1]):
            classes.add_row(name, f"{area:.4f}", f"{100 * area / total:.1f}")
        console.print(classes)
    for m in summary.maps:
        if m.metrics is not None:
            from flairkit.cli.metrics import metrics_view

            console.print(f"Evaluation of {m.output.name}:")
            console.print(metrics_view(m.metrics))


def input_overrides(sources: list[str], allow_resample: bool) -> list[str]:
    """``--input KIND=FILE[:BANDS]`` and ``--allow-resample`` as overrides of ``detect.inputs`` and
    ``detect.allow_resample``; ``--input s2=FILE`` (a Sentinel-2 acquisitions list) sets ``detect.sentinel2``."""
    overrides = ["detect.allow_resample=true"] if allow_resample else []
    for text in sources:
        kind, sep, path = text.partition("=")
        if not sep or not kind.strip() or not path:
            raise ConfigError(f"--input {text!r} must look like KIND=FILE[:BANDS], e.g. --input nir=ortho_irc.vrt:1")
        key = "detect.sentinel2" if kind.strip() == "s2" else f"detect.inputs.{kind.strip()}"
        overrides.append(f"{key}={json.dumps(path)}")
    return overrides


def _hub_models(cfg: Any, weights: list[str]) -> list[Any]:
    """The FLAIR-HUB networks of ``weights`` (files, or IGN's released model names), loaded strictly."""
    from flairkit.models import zoo
    from flairkit.models.build import build_model
    from flairkit.models.hub import load_hub_weights

    networks = []
    for source in weights:
        if source in zoo.released_hub_models() and not Path(source).exists():
            networks.append(zoo.load_released_hub_model(source)[0])
            continue
        network = build_model(cfg, pretrained_encoder=False)
        load_hub_weights(network, source)
        networks.append(network.eval())
    return networks


@guarded
def detect_command(
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="Map file (.tif) for one input, else a folder receiving <stem>_landcover.tif."
        ),
    ],
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(help="Orthophotos (GeoTIFF/VRT) or folders of them (or --input to assemble bands)."),
    ] = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
    checkpoint: CheckpointOption = None,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="A released model's preset name: its config, and its weights by default."),
    ] = None,
    overwrite: OverwriteOption = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue interrupted maps (byte-identical result); skip finished ones.")
    ] = False,
    evaluate: Annotated[
        Path | None,
        typer.Option("--evaluate", help="Label raster (FLAIR codes) on the input's grid: write FLAIR metrics."),
    ] = None,
    device: DeviceOption = None,
    precision: PrecisionOption = None,
    tta: TtaOption = None,
    block_size: Annotated[
        int | None, typer.Option("--block-size", help="Side in pixels of the unit of work and resume (default ~2048).")
    ] = None,
    rank: Annotated[
        int | None, typer.Option("--rank", help="This process's rank (default: RANK / SLURM_PROCID, else 0).")
    ] = None,
    world_size: Annotated[
        int | None, typer.Option("--world-size", help="Number of ranks (default: WORLD_SIZE / SLURM_NTASKS, else 1).")
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show the progress bar.")] = True,
    sources: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            help="KIND=FILE[:BANDS] assembled into the model's bands (rgb, nir, dsm, dtm), e.g. nir=irc.vrt:1; "
            "repeat per kind (detect.inputs); s2=LIST.json|csv: a U-T&T or FLAIR-HUB model's Sentinel-2 "
            "acquisitions (detect.sentinel2); FLAIR-HUB models also dsm=, dtm=, spot=FILE, s1asc=, s1desc=LIST.",
        ),
    ] = None,
    allow_resample: Annotated[
        bool,
        typer.Option("--allow-resample", help="Warp --input imagery on another grid onto the model's (0.2 m)."),
    ] = False,
) -> None:
    """Map land cover over orthophotos of any size: streamed, resumable, shareable between GPUs.

    Settings (tile size, margin, margin|blend stitching, outputs) come from the config's detect section,
    e.g. --set detect.stitching=blend --set detect.confidence=true --set detect.cog=true.
    """
    from flairkit.detection.distributed import env_rank_and_world_size
    from flairkit.detection.report import detection_report_path
    from flairkit.detection.run import detect

    if config is not None and model is not None:
        raise ConfigError("give either --config or --model (a preset), not both; add changes with --set")
    overrides = [
        *(overrides or []),
        *device_overrides("detect", device, precision, tta),
        *input_overrides(sources or [], allow_resample),
    ]
    cfg = config_for_weights(config or model, overrides, checkpoint[0] if checkpoint else None)
    weights = checkpoint or ([model] if model else [str(cfg.evaluate.checkpoint)] if cfg.evaluate.checkpoint else [])
    if not weights:
        raise ConfigError("no weights given: pass --checkpoint FILE, or --model NAME for a released model")
    env_rank, env_world = env_rank_and_world_size()
    network = _hub_models(cfg, weights) if cfg.model.hub is not None else load_models(cfg, weights)
    rank = env_rank if rank is None else rank
    shown = progress and rank == 0
    with DetectionBar(Console(stderr=True)) if shown else contextlib.nullcontext() as bar:
        summary = detect(
            cfg,
            network,
            inputs or [],
            output,
            overwrite=overwrite,
            resume=resume,
            evaluate_labels=evaluate,
            rank=rank,
            world_size=env_world if world_size is None else world_size,
            progress=bar,
            block_size=block_size,
        )
    if rank == 0:
        print_summary(summary, console)
        console.print(f"report: {detection_report_path(output)}")
