"""``report.html``: one self-contained page per evaluation, detection map, comparison or demo.

Pictures are embedded as base64 PNG, the page's own CSS and few lines of script are inline and its
Content-Security-Policy forbids any fetch, so the file works from a ``file://`` URL and can be sent as is.
Pages are assembled from sections (:func:`evaluation_section`, ``flairkit.detection.report.detection_section``,
:func:`comparison_section`, :func:`summary_section`) and written atomically by :func:`write_report`.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import platform
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio

from flairkit import __version__
from flairkit.atomic import atomic_path
from flairkit.config.loading import config_to_yaml
from flairkit.config.schema import FlairConfig
from flairkit.data.discovery import PatchRecord
from flairkit.data.rasters import read_raster
from flairkit.evaluation.figures import confusion_figure, figure_png
from flairkit.evaluation.protocols import AVG_METRIC_NAMES, Metrics
from flairkit.evaluation.renders import (
    ERROR_NOTE,
    STRETCH_NOTE,
    error_picture,
    png_bytes,
    read_natural_colour,
    read_overview,
    scored_lookup,
    side_by_side,
    target_palette,
)
from flairkit.evaluation.report import FIGURES, METRICS_DIR, not_averaged
from flairkit.nomenclature import Nomenclature, get_nomenclature

if TYPE_CHECKING:
    from flairkit.evaluation.compare import CompareResult

REPORT_FILE = "report.html"
EXAMPLES = 4
"""Worst and best patches shown (each)."""
PATCH_SIDE = 256
"""Longer side of a patch picture, in pixels (larger patches are sampled)."""
OVERVIEW_SIDE = 1024
"""Longer side of a map overview, in pixels."""
PACKAGES = ("flairkit", "torch", "segmentation-models-pytorch", "lightning", "rasterio", "numpy", "matplotlib")
PREDICTIONS_DIR = "predictions"
PREDICTION_PREFIX = "PRED_"
MANIFEST_FILE = "manifest.json"
"""With ``PREDICTION_PREFIX``: the names of ``flairkit.evaluation.predict`` and ``.manifest``, given again here
because those modules import torch and this one must not (``flair compare`` writes reports)."""

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1d2430;
background:#f4f5f7;margin:0}
main{max-width:1120px;margin:0 auto;padding:16px 24px 48px}
header{background:#1f3b57;color:#fff;padding:18px 24px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.8;font-size:12px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.12);padding:16px 20px;margin:18px 0}
h2{margin:0 0 10px;font-size:19px}h3{font-size:15px;margin:18px 0 8px}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{background:#eef2f7;border-radius:6px;padding:8px 14px;
min-width:110px}.card b{display:block;font-size:22px}.card span{font-size:12px;color:#4a5568}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{padding:3px 8px;border-bottom:1px solid #e2e8f0;
text-align:right}th:first-child,td:first-child{text-align:left}table.kv td{text-align:left}th{background:#f7fafc}
td.bar{min-width:190px;text-align:left}td.bar span{display:inline-block;height:11px;vertical-align:middle;
border:1px solid rgba(0,0,0,.35);margin-right:6px}tr.dim td{color:#8a94a6}
.swatch{display:inline-block;width:13px;height:13px;border:1px solid rgba(0,0,0,.4);vertical-align:-2px;
margin-right:6px}
ul.legend{list-style:none;padding:0;margin:6px 0;display:flex;flex-wrap:wrap;gap:4px 16px;font-size:13px}
.figures{display:flex;flex-wrap:wrap;gap:12px}.figures img{max-width:100%;height:auto}
.figures img.half{max-width:calc(50% - 6px)}
.patches{font-size:12px;max-width:720px}.patches img{width:100%;height:auto;image-rendering:pixelated}
.patches .caption{margin:8px 0 2px;color:#4a5568}
.patches .head{display:grid;grid-template-columns:repeat(4,1fr);column-gap:6px;font-weight:600}
.note{font-size:12px;color:#4a5568}.warn{color:#9c4221}
.overlay{position:relative;max-width:640px;line-height:0}
.overlay img{width:100%;height:auto;image-rendering:pixelated}.overlay img.top{position:absolute;left:0;top:0}
.hist{display:flex;align-items:flex-end;gap:2px;height:120px;border-bottom:1px solid #718096;max-width:520px}
.hist div{flex:1;background:#3182ce;min-height:1px}.axis{display:flex;justify-content:space-between;
max-width:520px;font-size:11px;color:#4a5568}
.pos{color:#276749}.neg{color:#c53030}pre{background:#f7fafc;padding:8px;overflow:auto;font-size:12px}
"""
SCRIPT = """
document.querySelectorAll("input[data-overlay]").forEach(function (slider) {
  var layer = document.getElementById(slider.getAttribute("data-overlay"));
  var shown = document.getElementById(slider.getAttribute("data-overlay") + "-value");
  function apply() {
    layer.style.opacity = slider.value / 100;
    shown.textContent = slider.value + " %";
  }
  slider.addEventListener("input", apply);
  apply();
});
"""


def escape(value: object) -> str:
    """``value`` as text escaped for HTML, in ASCII (character references) so that pages stay compact strings."""
    return html.escape(str(value), quote=True).encode("ascii", "xmlcharrefreplace").decode("ascii")


def _fmt(value: float | None, digits: int = 2) -> str:
    return "&ndash;" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def image_tag(png: bytes, alt: str, css: str = "", element_id: str = "") -> str:
    """An ``<img>`` embedding ``png`` as base64."""
    data = base64.b64encode(png).decode("ascii")
    attributes = (f' class="{css}"' if css else "") + (f' id="{element_id}"' if element_id else "")
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}"{attributes}>'


def html_section(anchor: str, title: str, body: str) -> str:
    """A titled ``<section>`` of a page."""
    return f'<section id="{escape(anchor)}"><h2>{escape(title)}</h2>\n{body}\n</section>'


def key_values(rows: Sequence[tuple[str, object]]) -> str:
    """A two-column table of (key, value) rows."""
    cells = "".join(f"<tr><td>{escape(key)}</td><td>{escape(value)}</td></tr>" for key, value in rows)
    return f'<table class="kv">{cells}</table>'


def swatch(colour: str) -> str:
    """A small square of ``colour``."""
    return f'<span class="swatch" style="background:{escape(colour)}"></span>'


def software_versions() -> dict[str, str]:
    """Versions of Python, GDAL and the packages that make the numbers (``PACKAGES``)."""
    versions = {"python": platform.python_version(), "GDAL": rasterio.__gdal_version__}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def page_parts(title: str, sections: Sequence[str], subtitle: str = "") -> list[str]:
    """The whole HTML page in order: a header, the sections, the script of the opacity sliders."""
    written = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    about = f"{subtitle} · " if subtitle else ""
    head = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body><header><h1>{escape(title)}</h1>"
        f"<p>{escape(about)}written {written} by flairkit {escape(__version__)}</p></header>\n"
        "<main>\n"
    )
    return [head, *sections, f"\n</main><script>{SCRIPT}</script></body></html>\n"]


def write_report(path: Path, title: str, sections: Sequence[str], overwrite: bool = False, subtitle: str = "") -> Path:
    """Write the page made of ``sections`` to ``path`` atomically; an existing file is kept unless ``overwrite``.

    Written part by part: the page (megabytes of pictures) is never copied whole in memory.
    """
    with atomic_path(Path(path), overwrite=overwrite) as tmp, tmp.open("w", encoding="utf-8") as handle:
        handle.writelines(page_parts(title, sections, subtitle))
    return Path(path)


def summary_section(title: str, rows: Sequence[tuple[str, object]], anchor: str = "summary") -> str:
    """A section holding a two-column table of ``rows``."""
    return html_section(anchor, title, key_values(rows))


def legend(nomenclature: Nomenclature, extra: Sequence[tuple[str, str]] = ()) -> str:
    """The legend of the nomenclature's learnt classes (colour and name), then ``extra`` (colour, label) entries."""
    items = [(t.colour, t.name) for t in nomenclature.targets if t.enabled] + list(extra)
    entries = "".join(f"<li>{swatch(colour)}{escape(name)}</li>" for colour, name in items)
    return f'<ul class="legend" data-nomenclature="{escape(nomenclature.name)}">{entries}</ul>'


def _headline(metrics: Metrics) -> str:
    cards = "".join(
        f'<div class="card"><b>{_fmt(value)}</b><span>{escape(name)} (%)</span></div>'
        for name, value in zip(AVG_METRIC_NAMES, metrics.averages, strict=True)
    )
    return (
        f'<div class="cards">{cards}</div><p class="note">Protocol <code>{escape(metrics.protocol)}</code>, '
        f"nomenclature <code>{escape(metrics.nomenclature)}</code>, {int(metrics.confmat.sum()):,} labelled pixels.</p>"
    )


def class_table(metrics: Metrics) -> str:
    """Per-class IoU (as bars in the class colours), F-score, precision, recall and support."""
    colours = metrics.colours if len(metrics.colours) == len(metrics.class_names) else ["#4c72b0"] * len(metrics.kept)
    rows = []
    for colour, (name, iou, fscore, precision, recall, support, used) in zip(
        colours, metrics.class_rows(), strict=True
    ):
        width = 0.0 if math.isnan(iou) else max(0.0, min(iou, 100.0))
        bar = f'<span style="width:{width * 1.3:.1f}px;background:{escape(colour)}"></span>{_fmt(iou)}'
        rows.append(
            f"<tr{'' if used else ' class=dim'}><td>{swatch(colour)}{escape(name)}{'' if used else ' *'}</td>"
            f'<td class="bar">{bar}</td><td>{_fmt(fscore)}</td><td>{_fmt(precision)}</td><td>{_fmt(recall)}</td>'
            f"<td>{support:,}</td></tr>"
        )
    excluded = not_averaged(metrics)
    note = (
        f'<p class="note">* left out of the averages by the {escape(metrics.protocol)} protocol: '
        f"{escape(', '.join(excluded))}</p>"
        if excluded
        else ""
    )
    return (
        "<table><tr><th>class</th><th>IoU (%)</th><th>F-score</th><th>precision</th><th>recall</th>"
        f"<th>support (px)</th></tr>{''.join(rows)}</table>{note}"
    )


def _confusion_pngs(metrics: Metrics, metrics_dir: Path | None) -> dict[str, bytes]:
    """Both normalised confusion matrices: the PNGs ``write_metrics`` saved, else drawn now."""
    pngs = {}
    for normalize in ("precision", "recall"):
        saved = metrics_dir / FIGURES[f"confusion_{normalize}"] if metrics_dir is not None else None
        if saved is not None and saved.is_file():
            pngs[normalize] = saved.read_bytes()
        else:
            cleaned = metrics.kept_confmat
            pngs[normalize] = figure_png(confusion_figure(cleaned, metrics.class_names, normalize))
    return pngs


def metrics_body(metrics: Metrics, metrics_dir: Path | None = None) -> str:
    """Headline metrics, the per-class table and both normalised confusion matrices."""
    pngs = _confusion_pngs(metrics, metrics_dir)
    figures = "".join(
        image_tag(png, f"confusion matrix normalised by {normalize}", "half") for normalize, png in pngs.items()
    )
    return (
        f"{_headline(metrics)}<h3>Per class</h3>{class_table(metrics)}"
        f'<h3>Confusion matrices (rows: truth)</h3><div class="figures">{figures}</div>'
    )


@dataclass(frozen=True)
class PatchScore:
    """How well one patch was predicted: the share of its scored pixels predicted right."""

    record: PatchRecord
    prediction: Path
    accuracy: float
    """Percent of the scored pixels (truth in a scored class) predicted right."""
    pixels: int
    """Scored pixels of the patch."""


def _score(record: PatchRecord, prediction: Path, nomenclature: Nomenclature, scored: np.ndarray) -> PatchScore:
    assert record.mask is not None
    truth = nomenclature.map_mask(read_raster(record.mask, bands=[1])[0])
    predicted = read_raster(prediction, bands=[1])[0]
    counted = scored[truth]
    pixels = int(counted.sum())
    right = int((predicted[counted] == truth[counted]).sum())
    return PatchScore(record, prediction, 100.0 * right / pixels if pixels else math.nan, pixels)


def patch_scores(
    records: Sequence[PatchRecord],
    pred_dir: Path,
    nomenclature: Nomenclature,
    scored_targets: Sequence[int],
    patch_pixels: Mapping[Path, tuple[int, int]] | None = None,
) -> list[PatchScore]:
    """The accuracy of every labelled patch whose ``PRED_<image>.tif`` is in ``pred_dir``.

    ``patch_pixels``: (pixels right, pixels scored) by prediction file, as ``predict_records`` counts them while
    predicting (``scored_targets`` must then be the learnt targets); else the files are read (in threads).
    """
    jobs = []
    for record in records:
        prediction = Path(pred_dir) / f"{PREDICTION_PREFIX}{Path(record.image).stem}.tif"
        if record.mask is not None and prediction.is_file():
            jobs.append((record, prediction))
    if patch_pixels is not None:
        counted = [(record, prediction, patch_pixels.get(prediction, (0, 0))) for record, prediction in jobs]
        return [PatchScore(r, p, 100.0 * right / pixels, pixels) for r, p, (right, pixels) in counted if pixels]
    scored = scored_lookup(scored_targets)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        scores = list(pool.map(lambda job: _score(*job, nomenclature, scored), jobs))
    return [score for score in scores if score.pixels]


def worst_and_best(scores: Sequence[PatchScore], count: int = EXAMPLES) -> tuple[list[PatchScore], list[PatchScore]]:
    """The ``count`` worst patches (lowest accuracy first) and the ``count`` best of the others (best first)."""
    ranked = sorted(scores, key=lambda score: score.accuracy)
    worst = ranked[:count]
    best = ranked[max(count, len(ranked) - count) :][::-1]
    return worst, best


def _patch_rows(scores: Sequence[PatchScore], nomenclature: Nomenclature, scored: np.ndarray) -> str:
    palette = target_palette(nomenclature)
    rows = []
    for score in scores:
        assert score.record.mask is not None
        image = read_natural_colour(score.record.image, PATCH_SIDE)
        truth = nomenclature.map_mask(read_overview(score.record.mask, PATCH_SIDE, [1])[0][0])
        prediction = read_overview(score.prediction, PATCH_SIDE, [1])[0][0]
        strip = side_by_side(
            [image, palette[truth], palette[prediction], error_picture(image, truth, prediction, scored)]
        )
        name = Path(score.record.image).name
        where = " / ".join(part for part in (score.record.domain, score.record.zone) if part)
        rows.append(
            f'<div class="caption"><b>{escape(name)}</b> {escape(where)}: {score.accuracy:.1f} % of '
            f"{score.pixels:,} scored pixels right</div>"
            + image_tag(png_bytes(strip), f"{name}: image, truth, prediction, error")
        )
    head = "".join(f"<span>{label}</span>" for label in ("image", "truth", "prediction", "error"))
    return f'<div class="patches"><div class="head">{head}</div>{"".join(rows)}</div>'


def gallery(scores: Sequence[PatchScore], nomenclature: Nomenclature, scored_targets: Sequence[int]) -> str:
    """The worst and best patches as image | truth | prediction | error rows, with the legend and the stretch."""
    if not scores:
        return '<p class="note">No labelled patch with a prediction to show.</p>'
    scored = scored_lookup(scored_targets)
    worst, best = worst_and_best(scores)
    return (
        f"{legend(nomenclature, [('#000000', 'not scored (no label, or a class left out)')])}"
        f'<p class="note">{escape(STRETCH_NOTE)}; {escape(ERROR_NOTE)}. Accuracy: share of the scored pixels predicted '
        f"right, over {len(scores):,} patches.</p>"
        f"<h3>Worst {len(worst)} patches</h3>{_patch_rows(worst, nomenclature, scored)}"
        f"<h3>Best {len(best)} patches</h3>{_patch_rows(best, nomenclature, scored)}"
    )


def _manifest_rows(pred_dir: Path) -> list[tuple[str, object]]:
    """The weights and forward passes per patch (test-time augmentation x ensemble) of the predictions' manifest."""
    try:
        manifest = json.loads((pred_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(manifest, dict):
        return [("weights", "not recorded")]
    passes = [("forward passes per patch", manifest["passes"])] if manifest.get("passes") else []
    if not manifest.get("weights"):
        return [("weights", "not recorded"), *passes]
    return [("weights", manifest["weights"]), ("weights sha256", manifest.get("weights_sha256")), *passes]


def run_details(config_text: str, rows: Sequence[tuple[str, object]] = ()) -> str:
    """The run's settings (``rows``), the software versions and the resolved config."""
    versions = list(software_versions().items())
    return (
        f"{key_values(rows) if rows else ''}<h3>Versions</h3>{key_values(versions)}"
        f"<details><summary>Resolved config</summary><pre>{escape(config_text)}</pre></details>"
    )


def evaluation_section(
    config: FlairConfig,
    metrics: Metrics,
    out_dir: Path,
    records: Sequence[PatchRecord],
    split: str = "test",
    patch_pixels: Mapping[Path, tuple[int, int]] | None = None,
) -> str:
    """The section of an evaluation folder written by ``evaluate`` (``predictions/``, ``metrics/``, config) for
    the patches ``records`` of ``split``; ``patch_pixels`` as for :func:`patch_scores`."""
    out_dir = Path(out_dir)
    nomenclature = get_nomenclature(config.data.nomenclature)
    pred_dir = out_dir / PREDICTIONS_DIR
    scores = patch_scores(records, pred_dir, nomenclature, metrics.kept, patch_pixels)
    saved_config = out_dir / "config.yaml"
    config_text = saved_config.read_text(encoding="utf-8") if saved_config.is_file() else config_to_yaml(config)
    rows = [
        ("split", split),
        ("output folder", out_dir),
        ("evaluate.tta", config.evaluate.tta),
        *_manifest_rows(pred_dir),
    ]
    body = (
        f"{metrics_body(metrics, out_dir / METRICS_DIR)}<h3>Worst and best patches</h3>"
        f"{gallery(scores, nomenclature, metrics.kept)}<h3>Run</h3>{run_details(config_text, rows)}"
    )
    return html_section("evaluation", f"Evaluation ({split} split)", body)


def write_evaluation_report(
    config: FlairConfig,
    metrics: Metrics,
    out_dir: Path,
    records: Sequence[PatchRecord],
    *,
    split: str = "test",
    patch_pixels: Mapping[Path, tuple[int, int]] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``out_dir/report.html`` for an evaluation folder of the patches ``records``; return its path.

    ``patch_pixels`` as for :func:`patch_scores`."""
    section = evaluation_section(config, metrics, out_dir, records, split, patch_pixels)
    return write_report(Path(out_dir) / REPORT_FILE, f"Evaluation of {config.name}", [section], overwrite)


def _reference(result: CompareResult) -> int | None:
    """The column every other is compared with: the first publication, else the first run (None if alone)."""
    if len(result.columns) < 2:
        return None
    return next((i for i, column in enumerate(result.columns) if column.published), 0)


def _delta(value: float | None, reference: float | None) -> str:
    if value is None or reference is None or math.isnan(value) or math.isnan(reference):
        return "<td>&ndash;</td>"
    delta = value - reference
    return f'<td class="{"pos" if delta >= 0 else "neg"}">{delta:+.2f}</td>'


def comparison_section(result: CompareResult, figure: Path | None = None) -> str:
    """Runs side by side (and against published figures) with the differences to the reference column."""
    reference = _reference(result)
    others = [i for i in range(len(result.columns)) if i != reference] if reference is not None else []
    head = "".join(f"<th>{escape(label)}</th>" for label in result.labels)
    head += "".join(f"<th>&Delta; {escape(result.labels[i])}</th>" for i in others)
    rows = ["<tr><td>protocol</td>" + "".join(f"<td>{escape(p or '?')}</td>" for p in result.protocols)]
    rows[0] += "<td></td>" * len(others) + "</tr>"
    lines = [*result.average_rows(), *((f"IoU {name}", values) for name, values in result.iou_rows())]
    for name, values in lines:
        known = [v for v in values if v is not None and not math.isnan(v)]
        best = max(known) if len(known) > 1 else None
        cells = "".join(
            f"<td>{'<b>' + _fmt(v) + '</b>' if v is not None and v == best else _fmt(v)}</td>" for v in values
        )
        deltas = "".join(_delta(values[i], values[reference]) for i in others) if reference is not None else ""
        rows.append(f"<tr><td>{escape(name)}</td>{cells}{deltas}</tr>")
    notes = []
    if reference is not None:
        label = result.labels[reference]
        notes.append(f"&Delta;: difference to <b>{escape(label)}</b>, in points; the best value of each row in bold.")
    if result.mixed_protocols:
        notes.append(
            '<span class="warn">The columns use different protocols: their averages are not comparable.</span>'
        )
    sources = "".join(f"<li>{escape(c.label)}: <code>{escape(c.source)}</code></li>" for c in result.columns)
    picture = image_tag(figure.read_bytes(), "per-class IoU by run") if figure is not None and figure.is_file() else ""
    body = (
        f"<table><tr><th>metric (%)</th>{head}</tr>{''.join(rows)}</table>"
        f'<p class="note">{" ".join(notes)}</p><div class="figures">{picture}</div><h3>Sources</h3><ul>{sources}</ul>'
    )
    return html_section("comparison", "Comparison", body)


def write_comparison_report(
    result: CompareResult, path: Path, figure: Path | None = None, overwrite: bool = False
) -> Path:
    """Write the comparison page to ``path`` (with the bar chart ``figure`` when given); return the path."""
    return write_report(path, "Comparison of runs", [comparison_section(result, figure)], overwrite)
