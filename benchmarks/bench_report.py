"""What report.html costs: its share of ``evaluate`` on the demo world, and its time on a large map.

python benchmarks/bench_report.py [--map-size 8192] [--repeats 3] [--record]

1. Evaluation: the demo's world (``flair demo``'s settings, without its orthophoto) and the demo's U-Net with
   random weights (the time does not depend on them). ``evaluate`` (prediction of the test split, metrics,
   figures and the report, as ``flair evaluate`` runs it after loading the model) is timed, and the report
   inside it; the share is report / (evaluate - report), of the fastest of ``--repeats`` runs (after one
   warm-up run). The command adds its start and the model's loading: the share of ``flair evaluate`` is lower.
2. Detection: the report of a ``--map-size`` px map over its 5-band orthophoto, with a confidence band
   (detection itself is not run: the report reads the files ``flair detect`` leaves, which are written here).
   Timed on the files as ``flair detect`` writes them (no overviews: every block is read once) and again once
   the three rasters have internal overviews (what a country-size map needs to cost seconds).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_detection import write_ortho
from common import add_record_option, best_of, markdown_table, record

OVERVIEW_FACTORS = [2, 4, 8, 16, 32, 64]


def write_map(path: Path, ortho: Path, confidence: Path) -> None:
    """A class map of FLAIR codes (LZW, 512 px tiles, nodata 0, as ``flair detect`` writes it) on ``ortho``'s
    grid, and a scores raster holding a confidence band."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(ortho) as src:
        profile = {
            "driver": "GTiff",
            "width": src.width,
            "height": src.height,
            "dtype": "uint8",
            "crs": src.crs,
            "transform": src.transform,
            "tiled": True,
            "blockxsize": 512,
            "blockysize": 512,
            "compress": "lzw",
        }
    size = profile["width"]
    with (
        rasterio.open(path, "w", count=1, nodata=0, **profile) as classes,
        rasterio.open(confidence, "w", count=1, **profile) as scores,
    ):
        scores.set_band_description(1, "confidence")
        for top in range(0, size, 512):
            rows = min(512, size - top)
            y, x = np.mgrid[top : top + rows, 0:size]
            field = np.sin(x / 300.0) * np.cos(y / 410.0) + np.sin((x + y) / 170.0)
            window = Window(0, top, size, rows)
            classes.write((1 + (np.floor((field + 2) * 3.2) % 13)).astype(np.uint8), 1, window=window)
            scores.write((150 + 100 * np.abs(np.sin(field * 3))).astype(np.uint8), 1, window=window)


def add_overviews(*paths: Path) -> None:
    """Internal overviews (nearest, factors 2 to 64), as ``gdaladdo`` or ``detect.cog=true`` give."""
    import rasterio
    from rasterio.enums import Resampling

    for path in paths:
        with rasterio.open(path, "r+") as dst:
            dst.build_overviews(OVERVIEW_FACTORS, Resampling.nearest)


def evaluation_rows(folder: Path, patch_size: int, patches_per_area: int, repeats: int) -> list[list[object]]:
    import torch

    import flairkit.evaluation.predict as predict_module
    from flairkit.config import load_config
    from flairkit.evaluation.predict import evaluate
    from flairkit.models.build import build_model
    from flairkit.synth.world import synthesize_world
    from flairkit.workflows.demo import DemoSettings

    options = dataclasses.replace(
        DemoSettings().world, n_orthos=0, patch_size=patch_size, patches_per_area=patches_per_area
    )
    world = synthesize_world(folder / "world", options)
    config = load_config("demo", [f"data.root={world.root}", f"output_dir={folder / 'runs'}"])
    torch.manual_seed(0)
    model = build_model(config, pretrained_encoder=False).eval()
    out = folder / "evaluation"
    report_seconds: list[float] = []
    write_report = predict_module.write_evaluation_report

    def timed_report(*args, **kwargs):  # the report as evaluate writes it, timed inside evaluate
        start = time.perf_counter()
        try:
            return write_report(*args, **kwargs)
        finally:
            report_seconds.append(time.perf_counter() - start)

    predict_module.write_evaluation_report = timed_report
    try:
        evaluate(config, model, out, overwrite=True)  # warm-up: worker start, first allocations
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            evaluate(config, model, out, overwrite=True)
            runs.append((time.perf_counter() - start, report_seconds[-1]))
    finally:
        predict_module.write_evaluation_report = write_report
    total, report = min(runs)
    share = 100 * report / (total - report)
    size = (out / "report.html").stat().st_size / 1e6
    patches = len(list((out / "predictions").glob("PRED_*.tif")))
    what = f"evaluate, demo world ({patches} test patches of {patch_size} px)"
    return [[what, f"{total:.2f}", f"{report:.3f}", f"{share:.1f}%", f"{size:.1f}"]]


def detection_rows(folder: Path, size: int, repeats: int) -> list[list[object]]:
    from flairkit.config import load_config
    from flairkit.detection.report import detection_report_path, write_detection_report
    from flairkit.detection.summary import DetectionSummary, MapSummary

    ortho, classes, scores = folder / "ortho.tif", folder / "map.tif", folder / "map_scores.tif"
    write_ortho(ortho, size)
    write_map(classes, ortho, scores)
    area = size * size * 0.2 * 0.2 / 1e6
    summary = DetectionSummary(
        maps=[
            MapSummary(
                input=ortho,
                output=classes,
                extra_outputs=[scores],
                width=size,
                height=size,
                area_km2=area,
                computed_km2=area,
                tile_size=512,
                seconds=1.0,
            )
        ],
        seconds=1.0,
        device="cpu",
        world_size=1,
        stitching="margin",
    )
    config = load_config("FLAIR-INC_rgbie_15cl_resnet34-unet", ["detect.confidence=true"])
    rows = []
    for label in ("no overviews (as flair detect writes it)", "with internal overviews"):
        if label.startswith("with"):
            add_overviews(ortho, classes, scores)
        seconds = best_of(
            lambda: write_detection_report(config, summary, classes, overwrite=True), repeats=repeats, warmup=0
        )
        megabytes = detection_report_path(classes).stat().st_size / 1e6
        rows.append([f"detect report, {size}x{size} px map, {label}", "", f"{seconds:.3f}", "", f"{megabytes:.1f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--map-size", type=int, default=8192, help="side of the detection map in pixels")
    parser.add_argument("--patch-size", type=int, default=128, help="patch side of the demo world (demo: 128)")
    parser.add_argument("--patches-per-area", type=int, default=12, help="patches per area (demo: 12)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each measure (the best is kept)")
    add_record_option(parser)
    options = parser.parse_args()

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        rows = evaluation_rows(Path(folder), options.patch_size, options.patches_per_area, options.repeats)
        for row in rows:
            print(" | ".join(str(v) for v in row), flush=True)
        rows += detection_rows(Path(folder), options.map_size, options.repeats)
    header = ["measure", "evaluate (s)", "report (s)", "report / rest of evaluate", "report.html (MB)"]
    notes = (
        "evaluate (s): the library call with its report (prediction, metrics, figures, report.html; not the "
        "command's start and model loading); report (s): the report within it. Detection: the report of a map "
        "(LZW) over its 5-band orthophoto (uncompressed), 1024 px overview, class areas, confidence histogram; "
        "detection itself is not included. Best of "
        f"{options.repeats}; load average (1 min) {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the "
        f"end; {time.perf_counter() - started:.0f} s in all."
    )
    record("HTML report cost (report.html)", markdown_table(header, rows), notes, write=options.record)


if __name__ == "__main__":
    main()
