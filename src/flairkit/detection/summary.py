"""What a detection run reports: per-map and total figures, the progress bar and the printed summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text


@dataclass
class MapSummary:
    """What was done for one input."""

    input: Path
    output: Path
    extra_outputs: list[Path]
    width: int
    height: int
    area_km2: float
    computed_km2: float
    """Area of the blocks computed in this run (the rest was resumed or the map already existed)."""
    nodata_km2: float = 0.0
    class_areas_km2: dict[str, float] = field(default_factory=dict)
    blocks: int = 0
    tile_size: int = 0
    """Side of the tiles given to the network (detect.tile_size, or smaller when fitted to the raster)."""
    blocks_resumed: int = 0
    blocks_per_rank: list[int] = field(default_factory=list)
    tiles_per_rank: list[int] = field(default_factory=list)
    seconds: float = 0.0
    metrics: Any = None
    """:class:`flairkit.evaluation.Metrics` of the map against ``evaluate_labels``."""
    skipped: bool = False
    """The map was already complete (resume)."""


@dataclass
class DetectionSummary:
    """What ``detect`` did: one :class:`MapSummary` per input, and totals."""

    maps: list[MapSummary]
    seconds: float
    device: str
    world_size: int
    stitching: str
    backend: str = "torch"
    """What ran the network: torch or ONNX Runtime."""

    @property
    def area_km2(self) -> float:
        return sum(m.area_km2 for m in self.maps)

    @property
    def computed_km2(self) -> float:
        return sum(m.computed_km2 for m in self.maps)

    @property
    def km2_per_hour(self) -> float:
        return self.computed_km2 / self.seconds * 3600 if self.seconds > 0 else 0.0

    @property
    def class_areas_km2(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for summary in self.maps:
            for name, area in summary.class_areas_km2.items():
                total[name] = total.get(name, 0.0) + area
        return total

    def __str__(self) -> str:
        """A short markdown description (maps, throughput, class areas, scores)."""
        lines = []
        for m in self.maps:
            state = "already done" if m.skipped else f"{m.seconds:.1f} s"
            lines.append(
                f"- `{m.input.name}` -> `{m.output}`: {m.width}x{m.height} px, {m.area_km2:.4f} km², "
                f"tiles of {m.tile_size} px, {state}"
            )
            if m.metrics is not None:
                lines.append(f"  - against the labels: mIoU {m.metrics.miou:.2f}, OA {m.metrics.overall_accuracy:.2f}")
        lines.append(
            f"- {self.computed_km2:.4f} km² in {self.seconds:.1f} s = {self.km2_per_hour:.3f} km²/h "
            f"({self.stitching} stitching, {self.backend} on {self.device}, {self.world_size} rank(s))"
        )
        areas = sorted(self.class_areas_km2.items(), key=lambda item: -item[1])
        if areas:
            lines.append("- class areas (km²): " + ", ".join(f"{name} {area:.4f}" for name, area in areas))
        return "\n".join(lines)


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


def print_summary(summary: DetectionSummary, console: Console | None = None) -> None:
    """Print the maps written, the area covered, the throughput and the area of each class."""
    console = console or Console()
    maps = Table(
        title=f"Zone detection ({summary.stitching} stitching, {summary.backend} on {summary.device}, "
        f"{summary.world_size} rank(s))"
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
            from flairkit.evaluation import print_metrics

            console.print(f"Evaluation of {m.output.name}:")
            print_metrics(m.metrics, console)
