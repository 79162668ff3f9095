"""The ``report.html`` of a ``detect`` run: each map over its orthophoto, class areas, confidence, throughput."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio

from flairkit.config.loading import config_to_yaml
from flairkit.config.schema import FlairConfig
from flairkit.detection.summary import DetectionSummary, MapSummary
from flairkit.detection.writing import GDAL_CACHE_BYTES
from flairkit.evaluation.html import (
    OVERVIEW_SIDE,
    REPORT_FILE,
    escape,
    html_section,
    image_tag,
    key_values,
    legend,
    metrics_body,
    run_details,
    swatch,
    write_report,
)
from flairkit.evaluation.renders import STRETCH_NOTE, map_palette, png_bytes, read_natural_colour, read_overview
from flairkit.evaluation.report import METRICS_DIR
from flairkit.nomenclature import Nomenclature, get_nomenclature

HISTOGRAM_BINS = 20
MAP_FILE_SUFFIXES = (".tif", ".tiff")
"""Suffixes with which ``detect``'s output is one map file rather than a folder."""


def detection_report_path(output: Path) -> Path:
    """Where ``detect`` writes its report: ``<map stem>_report.html`` beside a map file, else ``<folder>/report.html``.

    ``output`` is ``detect``'s: a map file (``MAP_FILE_SUFFIXES``) for one input, else a folder of maps.
    """
    output = Path(output)
    if output.suffix.lower() in MAP_FILE_SUFFIXES:
        return output.with_name(f"{output.stem}_report.html")
    return output / REPORT_FILE


def _confidence_band(path: Path) -> int | None:
    with rasterio.open(path) as src:
        for index, description in zip(src.indexes, src.descriptions, strict=True):
            if description == "confidence":
                return index
    return None


def _histogram(values: np.ndarray) -> str:
    counts, _ = np.histogram(values, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    top = max(int(counts.max()), 1)
    bars = "".join(
        f'<div style="height:{100 * count / top:.1f}%" title="{low:.2f}&ndash;{low + 1 / HISTOGRAM_BINS:.2f}: '
        f'{100 * count / max(counts.sum(), 1):.1f} %"></div>'
        for count, low in zip(counts, np.linspace(0, 1, HISTOGRAM_BINS, endpoint=False), strict=True)
    )
    return f'<div class="hist">{bars}</div><div class="axis"><span>0</span><span>0.5</span><span>1</span></div>'


def _confidence(summary: MapSummary) -> str:
    scores = [p for p in summary.extra_outputs if p.suffix.lower() in MAP_FILE_SUFFIXES and p.is_file()]
    for path in scores:
        band = _confidence_band(path)
        if band is None:
            continue
        data, valid = read_overview(path, OVERVIEW_SIDE, [band])
        values = data[0][valid].astype(np.float64) / 255.0
        median = f"median {np.median(values):.2f}; " if values.size else ""
        return (
            f'<h3>Confidence</h3>{_histogram(values)}<p class="note">Highest class probability per pixel of '
            f"<code>{escape(path.name)}</code> ({median}{values.size:,} pixels of the overview).</p>"
        )
    if scores:
        return '<p class="note">The scores raster holds no confidence band (set detect.confidence=true).</p>'
    return ""


def _area(km2: float) -> str:
    return (
        f"{km2:,.2f} km&sup2;" if km2 >= 1 else f"{km2 * 100:,.2f} ha" if km2 >= 0.01 else f"{km2 * 1e6:,.0f} m&sup2;"
    )


def _areas(summary: MapSummary, values: np.ndarray, valid: np.ndarray, nomenclature: Nomenclature, codes: bool) -> str:
    areas = dict(summary.class_areas_km2)
    note = ""
    if summary.skipped:
        counts = np.bincount(values[valid].ravel(), minlength=256)
        pixel_km2 = summary.area_km2 / max(values.size, 1)
        for target in nomenclature.targets:
            value = int(nomenclature.map_targets(target.index, codes))
            if target.enabled and counts[value]:
                areas[target.name] = float(counts[value]) * pixel_km2
        note = '<p class="note">Estimated from the overview (the map was finished by an earlier run).</p>'
    total = sum(areas.values()) or 1.0
    colours = {t.name: t.colour for t in nomenclature.targets}
    rows = "".join(
        f"<tr><td>{swatch(colours.get(name, '#000000'))}{escape(name)}</td><td>{_area(area)}</td>"
        f'<td class="bar"><span style="width:{130 * area / total:.1f}px;'
        f'background:{escape(colours.get(name, "#000"))}">'
        f"</span>{100 * area / total:.1f}</td></tr>"
        for name, area in sorted(areas.items(), key=lambda item: -item[1])
    )
    return f"<h3>Class areas</h3><table><tr><th>class</th><th>area</th><th>%</th></tr>{rows}</table>{note}"


def _map_block(index: int, summary: MapSummary, nomenclature: Nomenclature, codes: bool) -> str:
    # Each picture becomes an <img> tag at once: a large overview's arrays never wait in memory together.
    ortho = image_tag(png_bytes(read_natural_colour(summary.input, OVERVIEW_SIDE)), f"orthophoto {summary.input.name}")
    data, valid = read_overview(summary.output, OVERVIEW_SIDE, [1])
    values = data[0]
    layer = map_palette(nomenclature, codes)[values]
    layer[~valid] = 0
    overlay_id = f"map-{index}"
    speed = summary.computed_km2 / summary.seconds * 3600 if summary.seconds > 0 and summary.computed_km2 else 0.0
    state = "finished by an earlier run" if summary.skipped else f"{summary.seconds:.1f} s, {speed:.3f} km²/h"
    metrics = ""
    if summary.metrics is not None:
        folders = [p / METRICS_DIR for p in summary.extra_outputs if (p / METRICS_DIR).is_dir()]
        metrics = f"<h3>Against the labels</h3>{metrics_body(summary.metrics, folders[0] if folders else None)}"
    return (
        f"<h3>{escape(summary.input.name)} &rarr; {escape(summary.output.name)}</h3>"
        f'<p class="note">{summary.width:,} x {summary.height:,} px, {summary.area_km2:.4f} km&sup2;, tiles of '
        f"{summary.tile_size} px, {escape(state)}.</p>"
        f'<div class="overlay">{ortho}'
        f"{image_tag(png_bytes(layer), f'land-cover map {summary.output.name}', 'top', overlay_id)}</div>"
        f'<p><label>map opacity <input type="range" min="0" max="100" value="65" data-overlay="{overlay_id}"> '
        f'<output id="{overlay_id}-value"></output></label></p>'
        f'<p class="note">{escape(STRETCH_NOTE)} (orthophoto); '
        f"overview of {values.shape[1]} x {values.shape[0]} px.</p>"
        f"{legend(nomenclature)}{_areas(summary, values, valid, nomenclature, codes)}{_confidence(summary)}{metrics}"
    )


def detection_section(config: FlairConfig, summary: DetectionSummary) -> str:
    """Each map over its orthophoto (opacity slider, legend), class areas, confidence, throughput and settings."""
    nomenclature = get_nomenclature(config.data.nomenclature)
    codes = config.detect.output_codes == "flair"
    maps = "".join(_map_block(i, m, nomenclature, codes) for i, m in enumerate(summary.maps))
    throughput = [
        ("area computed", f"{summary.computed_km2:.4f} km² of {summary.area_km2:.4f} km²"),
        ("time", f"{summary.seconds:.1f} s"),
        ("throughput", f"{summary.km2_per_hour:.3f} km²/h"),
        ("network", f"{summary.backend} on {summary.device}, {summary.world_size} rank(s)"),
        ("forward passes per tile", summary.passes),
        ("stitching", summary.stitching),
        ("model", config.model.network_label()),
        ("channels", ", ".join(str(c) for c in config.data.channels)),
        ("nomenclature", nomenclature.name),
    ]
    settings = [(f"detect.{key}", value) for key, value in config.detect.model_dump(mode="json").items()]
    body = (
        f"{maps}<h3>Throughput</h3>{key_values(throughput)}<h3>Settings</h3>"
        f"{run_details(config_to_yaml(config), settings)}"
    )
    return html_section("detection", "Zone detection", body)


def write_detection_report(
    config: FlairConfig, summary: DetectionSummary, output: Path, overwrite: bool = False
) -> Path:
    """Write the report of a ``detect`` run whose output was ``output`` (see :func:`detection_report_path`).

    Its pictures are decimated reads that visit every block of the map and of the orthophoto: GDAL's cache is
    bounded as during detection, else it would hold up to 5% of the machine's memory of those blocks.
    """
    path = detection_report_path(output)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
        section = detection_section(config, summary)
    return write_report(path, "Zone detection", [section], overwrite)
