"""What a detection run reports: its progress as it goes, then per-map and total figures."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DetectProgress = Callable[[str, float, float], None]
"""Called as ``(map, km² done, km² to compute)`` when rank 0 starts a map and after each block it writes;
``map`` names the input (and the rank when several share the work)."""


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
    nodata_note: str | None = None
    """Which pixels the map marks as nodata that the input itself does not declare missing (when there are some)."""
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
    passes: str = "tta none x 1 model = 1 pass"
    """Test-time augmentation, models and forward passes per tile (detect.tta and the ensemble)."""

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
            if m.nodata_note:
                lines.append(f"  - {m.nodata_km2:.4f} km² written as nodata: {m.nodata_note}")
            if m.metrics is not None:
                lines.append(f"  - against the labels: mIoU {m.metrics.miou:.2f}, OA {m.metrics.overall_accuracy:.2f}")
        lines.append(
            f"- {self.computed_km2:.4f} km² in {self.seconds:.1f} s = {self.km2_per_hour:.3f} km²/h "
            f"({self.stitching} stitching, {self.backend} on {self.device}, {self.world_size} rank(s), "
            f"{self.passes} per tile)"
        )
        areas = sorted(self.class_areas_km2.items(), key=lambda item: -item[1])
        if areas:
            lines.append("- class areas (km²): " + ", ".join(f"{name} {area:.4f}" for name, area in areas))
        return "\n".join(lines)
