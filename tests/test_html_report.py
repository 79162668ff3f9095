"""report.html: content of the evaluation, detection and comparison pages, and a check in a headless Chromium."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from matplotlib.image import imread
from PIL import Image

from conftest import tiny_config
from flairkit.config.loading import save_resolved_config
from flairkit.data.datamodule import split_records
from flairkit.data.rasters import read_raster, write_raster
from flairkit.detection.report import detection_report_path, detection_section
from flairkit.detection.run import detect
from flairkit.detection.summary import DetectionSummary, MapSummary
from flairkit.errors import OutputExistsError
from flairkit.evaluation.compare import CompareResult, RunColumn, compare_runs, write_comparison
from flairkit.evaluation.html import (
    evaluation_section,
    patch_scores,
    worst_and_best,
    write_comparison_report,
    write_evaluation_report,
    write_report,
)
from flairkit.evaluation.pairs import confusion_from_files, pair_predictions
from flairkit.evaluation.predict import evaluate, predict_records
from flairkit.evaluation.protocols import compute_metrics
from flairkit.evaluation.renders import natural_colour
from flairkit.evaluation.report import write_metrics
from flairkit.models.build import build_model
from flairkit.nomenclature import get_nomenclature

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
SCREENSHOT_ENV = "FLAIRKIT_REPORT_SCREENSHOT"
"""Set to a .png path to keep a reduced copy of the screenshot the browser test takes (README's picture)."""
SCREENSHOT_WIDTH = 760
DATA_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
PROBE = """<script>
(function () {
  var errors = [];
  window.addEventListener("error", function (event) {
    var target = event.target;
    errors.push(target && target.tagName ? "cannot load " + target.tagName : String(event.message));
  }, true);
  window.addEventListener("unhandledrejection", function (event) { errors.push("rejection: " + event.reason); });
  document.addEventListener("securitypolicyviolation", function (event) { errors.push("CSP: " + event.blockedURI); });
  ["error", "warn"].forEach(function (level) {
    var original = console[level];
    console[level] = function () {
      errors.push(level + ": " + Array.prototype.join.call(arguments, " "));
      original.apply(console, arguments);
    };
  });
  window.addEventListener("load", function () {
    var images = Array.prototype.slice.call(document.images);
    var slider = document.querySelector("input[data-overlay]");
    var opacity = null;
    if (slider) {
      slider.value = 30;
      slider.dispatchEvent(new Event("input"));
      opacity = document.getElementById(slider.getAttribute("data-overlay")).style.opacity;
    }
    var legend = document.querySelector("ul.legend");
    document.documentElement.setAttribute("data-probe", JSON.stringify({
      errors: errors,
      images: images.length,
      broken: images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).map(function (i) {
        return i.alt;
      }),
      legend: legend ? Array.prototype.map.call(legend.querySelectorAll("li"), function (li) {
        return li.textContent;
      }) : [],
      opacity: opacity
    }));
  });
})();
</script>"""


def corrupt(values: np.ndarray, fraction: float, classes: list[int]) -> np.ndarray:
    """``values`` with a block of errors: in its top ``fraction`` of rows, each of ``classes`` becomes the next one."""
    wrong = np.arange(256, dtype=np.uint8)
    wrong[classes] = np.roll(classes, -1)
    prediction = values.copy()
    rows = round(fraction * values.shape[0])
    prediction[:rows] = wrong[prediction[:rows]]
    return prediction


@pytest.fixture(scope="module")
def evaluation(tiny_world, tmp_path_factory):
    """An evaluation folder as ``evaluate`` leaves it, with predictions made from the masks: patch k has the
    top k/(n-1) of its rows wrong, so the first patch is perfect and the last entirely wrong."""
    out = tmp_path_factory.mktemp("evaluation")
    config = tiny_config(tiny_world, out / "runs")
    nomenclature = get_nomenclature(config.data.nomenclature)
    records = split_records(config, "test")
    enabled = nomenclature.enabled
    for k, record in enumerate(records):
        truth = nomenclature.map_mask(read_raster(record.mask, bands=[1])[0])
        with rasterio.open(record.image) as src:
            crs, transform = src.crs, src.transform
        learnt = np.where(np.isin(truth, enabled), truth, enabled[0])
        prediction = corrupt(learnt, k / (len(records) - 1), enabled)
        write_raster(out / "predictions" / f"PRED_{record.image.stem}.tif", prediction, crs=crs, transform=transform)
    save_resolved_config(config, out)
    pairs = pair_predictions(out / "predictions", [r.mask for r in records])
    metrics = compute_metrics(confusion_from_files(pairs, nomenclature), nomenclature, config.evaluate.protocol)
    write_metrics(metrics, out)
    return config, metrics, out, records


@pytest.fixture(scope="module")
def detection(tiny_world, evaluation, tmp_path_factory):
    """A detection summary of the world's orthophoto whose map is its labels with a block of errors, plus a
    scores raster holding a confidence band."""
    config = evaluation[0]
    out = tmp_path_factory.mktemp("detection")
    ortho = tiny_world / "orthophotos" / "ORTHO_0.tif"
    nomenclature = get_nomenclature(config.data.nomenclature)
    with rasterio.open(tiny_world / "orthophotos" / "LABELS_0.tif") as src:
        labels, profile = src.read(1), src.profile
    codes = corrupt(labels, 0.25, [t.code for t in nomenclature.targets if t.enabled])
    confidence = np.where(codes == labels, 230, 90).astype(np.uint8)
    map_path, scores_path = out / "landcover.tif", out / "landcover_scores.tif"
    with rasterio.open(map_path, "w", **{**profile, "count": 1, "nodata": 0}) as dst:
        dst.write(codes, 1)
    with rasterio.open(scores_path, "w", **{**profile, "count": 1}) as dst:
        dst.write(confidence, 1)
        dst.set_band_description(1, "confidence")
    counts = np.bincount(codes.ravel(), minlength=256)
    pixel = 0.2 * 0.2 / 1e6
    areas = {t.name: float(counts[t.code]) * pixel for t in nomenclature.targets if t.enabled and counts[t.code]}
    maps = [
        MapSummary(
            input=ortho,
            output=map_path,
            extra_outputs=[scores_path],
            width=labels.shape[1],
            height=labels.shape[0],
            area_km2=labels.size * pixel,
            computed_km2=labels.size * pixel,
            class_areas_km2=areas,
            tile_size=128,
            seconds=2.0,
        )
    ]
    return DetectionSummary(maps=maps, seconds=2.5, device="cpu", world_size=1, stitching="margin")


def pngs(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in DATA_URI.findall(page)]


def legend_names(page: str) -> list[str]:
    """The entries of the first legend of a page."""
    found = re.search(r'<ul class="legend"[^>]*>(.*?)</ul>', page)
    assert found, "no legend"
    return [html.unescape(name) for name in re.findall(r"</span>([^<]*)</li>", found[1])]


def test_evaluation_report_is_one_self_contained_page(evaluation):
    config, metrics, out, records = evaluation
    page = write_evaluation_report(config, metrics, out, records).read_text(encoding="utf-8")
    assert not re.search(r"""\b(src|href)=(?!"data:image/png;base64,|"#)""", page), "the page refers to another file"
    assert "<link" not in page and "default-src 'none'" in page
    assert page.isascii()  # character references only: Python holds the page in one byte per character
    images = pngs(page)
    assert len(images) == 2 + 2 * 4  # both confusion matrices, a strip per worst and best patch (4 each)
    assert all(imread(io.BytesIO(png)).size for png in images)
    assert images[0] == (out / "metrics" / "confmat_precision.png").read_bytes()  # embedded, not drawn again
    for name in metrics.class_names:
        assert html.escape(name) in page
    assert f"{metrics.miou:.2f}" in page and "2nd to its 98th percentile" in page
    worst, best = page.index("Worst 4 patches"), page.index("Best 4 patches")
    assert worst < page.index(records[-1].image.name) < best  # the entirely wrong patch is the worst
    assert page.index(records[0].image.name) > best  # the perfect patch is among the best
    assert ": 100.0 % of" in page and ": 0.0 % of" in page
    assert "Versions" in page and "segmentation-models-pytorch" in page and "nomenclature: 15cl" in page


def test_report_is_written_atomically_and_replaced_only_on_request(evaluation):
    config, metrics, out, records = evaluation
    path = out / "report.html"
    if not path.exists():
        write_evaluation_report(config, metrics, out, records)
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_evaluation_report(config, metrics, out, records)
    assert path.read_bytes() == before
    write_evaluation_report(config, metrics, out, records, overwrite=True)
    assert not list(out.glob(".report.html.*"))


def test_patches_are_ranked_by_accuracy_without_overlap(evaluation):
    config, metrics, out, records = evaluation
    scores = patch_scores(records, out / "predictions", get_nomenclature(config.data.nomenclature), metrics.kept)
    assert len(scores) == len(records)
    by_image = {s.record.image: s.accuracy for s in scores}
    assert by_image[records[0].image] == 100.0 and by_image[records[-1].image] == 0.0
    worst, best = worst_and_best(scores[:5])
    assert [s.accuracy for s in worst] == sorted(s.accuracy for s in scores[:5])[:4]
    assert len(best) == 1 and best[0] not in worst
    worst, best = worst_and_best(scores, 4)
    assert worst[0].accuracy == 0.0 and best[0].accuracy == 100.0 and not set(worst) & set(best)


def test_natural_colour_stretches_each_band_between_its_percentiles():
    ramp = np.arange(100, dtype=np.uint16).reshape(1, 10, 10) * 40
    picture = natural_colour(np.concatenate([ramp, ramp + 1000, ramp[:, ::-1]]))
    assert picture.shape == (10, 10, 3) and picture.dtype == np.uint8
    assert picture[0, 0, 0] == 0 and picture[-1, -1, 0] == 255 and picture[..., 1].max() == 255
    assert (picture[0, 0] == natural_colour(np.concatenate([ramp, ramp + 1000, ramp[:, ::-1]]))[0, 0]).all()
    grey = natural_colour(ramp)
    assert (grey[..., 0] == grey[..., 2]).all()
    valid = np.zeros((10, 10), dtype=bool)
    valid[5:] = True
    assert (natural_colour(ramp, valid)[:5] == 0).all()


def test_detection_section_overlays_the_map_with_legend_areas_and_confidence(detection, evaluation):
    config = evaluation[0]
    summary = detection
    section = detection_section(config, summary)
    assert 'type="range"' in section and 'data-overlay="map-0"' in section and 'id="map-0"' in section
    assert len(pngs(section)) == 2  # orthophoto and map overview
    nomenclature = get_nomenclature(config.data.nomenclature)
    assert legend_names(section) == [t.name for t in nomenclature.targets if t.enabled]
    assert "Confidence" in section and "landcover_scores.tif" in section and '<div class="hist">' in section
    assert (
        section.isascii()
        and "km²/h" in html.unescape(section)
        and "detect.tile_size" in section
        and "Estimated from the overview" not in section
    )
    summary.maps[0].skipped, areas = True, summary.maps[0].class_areas_km2
    summary.maps[0].class_areas_km2 = {}
    try:
        assert "Estimated from the overview" in detection_section(config, summary)
    finally:
        summary.maps[0].skipped, summary.maps[0].class_areas_km2 = False, areas


def test_detection_report_sits_beside_a_map_file_or_in_the_folder(tmp_path):
    assert detection_report_path(tmp_path / "zone.tif") == tmp_path / "zone_report.html"
    assert detection_report_path(tmp_path / "maps") == tmp_path / "maps" / "report.html"


def test_comparison_report_shows_differences_to_the_publication(tmp_path):
    run = RunColumn("my-run", "runs/a/metrics.json", "flair1", {"mIoU": 60.0}, {"water": 80.0, "building": 70.5})
    paper = RunColumn("published: paper", "paper", "flair1", {"mIoU": 65.0}, {"Water": 78.0}, published=True)
    page = write_comparison_report(CompareResult([run, paper]), tmp_path / "report.html").read_text(encoding="utf-8")
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", page)
    assert "-5.00" in cells and "+2.00" in cells  # mIoU 60 - 65, water IoU 80 - 78
    assert "difference to <b>published: paper</b>" in page
    assert "different protocols" not in page


def browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def run_browser(executable: str, profile: Path, *arguments: str) -> subprocess.CompletedProcess:
    command = [
        executable,
        "--headless",
        "--no-sandbox",  # root in a container has no user namespace for Chromium's sandbox
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *arguments,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)


@pytest.mark.skipif(browser() is None, reason="no Chromium installed (apt-get install chromium; .ci/run does it)")
def test_report_loads_in_a_headless_browser_without_errors(evaluation, detection, tmp_path):
    config, metrics, out, records = evaluation
    sections = [detection_section(config, detection), evaluation_section(config, metrics, out, records)]
    page = write_report(tmp_path / "report.html", "flairkit report", sections)
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text(encoding="utf-8").replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    executable = browser()
    assert executable is not None
    done = run_browser(executable, tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    found = re.search(r'data-probe="([^"]*)"', done.stdout)
    assert found, f"the page did not finish loading: {done.stderr[-2000:]}"
    probe = json.loads(html.unescape(found[1]))
    assert probe["errors"] == []
    assert [line for line in done.stderr.splitlines() if ":CONSOLE" in line] == []
    assert probe["images"] == len(pngs(page.read_text(encoding="utf-8"))) == 12 and probe["broken"] == []
    nomenclature = get_nomenclature(config.data.nomenclature)
    assert probe["legend"] == [t.name for t in nomenclature.targets if t.enabled]
    assert probe["opacity"] == "0.3"  # the slider drives the map layer

    screenshot = tmp_path / "screenshot.png"
    shot = run_browser(
        executable, tmp_path / "profile", "--window-size=1200,1500", f"--screenshot={screenshot}", page.as_uri()
    )
    assert screenshot.is_file(), shot.stderr[-2000:]
    picture = imread(screenshot)
    assert picture.shape[:2] == (1500, 1200) and picture[..., :3].std() > 0.05  # not a blank page
    target = os.environ.get(SCREENSHOT_ENV)
    if target:
        with Image.open(screenshot) as image:
            small = image.convert("RGB").resize((SCREENSHOT_WIDTH, round(1500 * SCREENSHOT_WIDTH / 1200)))
            small.quantize(colors=256).save(target, optimize=True)


def test_evaluate_detect_and_compare_write_their_reports(tiny_world, tmp_path):
    config = tiny_config(tiny_world, tmp_path / "runs", "detect.margin=16", "detect.confidence=true")
    torch.manual_seed(0)
    model = build_model(config, pretrained_encoder=False)
    refused = tmp_path / "refused"
    refused.mkdir()
    (refused / "report.html").write_text("a page of the user")
    with pytest.raises(OutputExistsError, match=r"report\.html"):
        evaluate(config, model, refused)
    assert not (refused / "predictions").exists()  # refused before predicting

    evaluate(config, model, tmp_path / "eval")
    assert "Worst 4 patches" in (tmp_path / "eval" / "report.html").read_text(encoding="utf-8")

    ortho = tiny_world / "orthophotos" / "ORTHO_0.tif"
    detect(config, model, [ortho], tmp_path / "maps")
    page = (tmp_path / "maps" / "report.html").read_text(encoding="utf-8")
    assert "ORTHO_0_landcover.tif" in page and "ORTHO_0_landcover_scores.tif" in page and 'type="range"' in page
    detect(config, model, [ortho], tmp_path / "zone.tif")
    assert (tmp_path / "zone_report.html").is_file()
    for path in tmp_path.glob("zone*"):
        if path.name != "zone_report.html":
            path.unlink()
    with pytest.raises(OutputExistsError, match=r"zone_report\.html"):
        detect(config, model, [ortho], tmp_path / "zone.tif")
    assert not (tmp_path / "zone.tif").exists()

    files = write_comparison(compare_runs([tmp_path / "eval"], labels=["random"]), tmp_path / "comparison")
    assert files["report"] == tmp_path / "comparison" / "report.html"
    assert "random" in files["report"].read_text(encoding="utf-8")


def test_pixels_counted_while_predicting_agree_with_the_files(tiny_world, tmp_path):
    config = tiny_config(tiny_world, tmp_path / "runs")
    torch.manual_seed(0)
    model = build_model(config, pretrained_encoder=False)
    nomenclature = get_nomenclature(config.data.nomenclature)
    records = split_records(config, "test")
    computed = predict_records(config, model, records, tmp_path / "pred", with_labels=True)
    kept = predict_records(config, model, records, tmp_path / "pred", with_labels=True)  # read back, not predicted
    assert len(kept.skipped) == len(records) and kept.patch_pixels == computed.patch_pixels
    from_files = patch_scores(records, tmp_path / "pred", nomenclature, nomenclature.enabled)
    counted = patch_scores(records, tmp_path / "pred", nomenclature, nomenclature.enabled, computed.patch_pixels)
    assert [(s.record, s.accuracy, s.pixels) for s in counted] == [(s.record, s.accuracy, s.pixels) for s in from_files]
    assert len(counted) == len(records) and sum(s.pixels for s in counted) > 0


def test_report_benchmark_runs_on_tiny_inputs(tmp_path):
    root = Path(__file__).resolve().parent.parent
    record = root / "BENCHMARKS.md"
    before = record.read_bytes()
    command = [sys.executable, str(root / "benchmarks" / "bench_report.py"), "--map-size", "300"]
    command += ["--patch-size", "32", "--patches-per-area", "2", "--repeats", "1"]
    env = {**os.environ, "FLAIRKIT_BENCHMARKS_MD": str(tmp_path / "BENCHMARKS.md")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=root, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith(("| evaluate", "| detect"))]
    assert [row[0].split(",")[0].strip() for row in rows] == ["evaluate", "detect report", "detect report"]
    evaluate_seconds, report_seconds = float(rows[0][1]), float(rows[0][2])
    assert 0 < report_seconds < evaluate_seconds
    share = float(rows[0][3].strip().rstrip("%"))  # of unrounded times: the printed ones agree up to rounding
    assert share == pytest.approx(100 * report_seconds / (evaluate_seconds - report_seconds), abs=0.5)
    assert all(float(row[2]) > 0 for row in rows[1:])
    assert record.read_bytes() == before and not (tmp_path / "BENCHMARKS.md").exists()
