"""The benchmark scripts run end to end on tiny inputs, print their tables and leave BENCHMARKS.md alone."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
TIMEOUT = 240


def run_script(name: str, *args: str) -> str:
    """Run ``benchmarks/<name>`` with ``--no-write`` and return its stdout; BENCHMARKS.md must not change."""
    record = ROOT / "BENCHMARKS.md"
    before = record.read_bytes() if record.exists() else None
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *args, "--no-write"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (record.read_bytes() if record.exists() else None) == before
    return done.stdout


def table_rows(output: str, first_cell: str) -> list[list[str]]:
    """The cells of the markdown rows of ``output`` whose first cell starts with ``first_cell``."""
    rows = []
    for line in output.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if cells[0].startswith(first_cell):
                rows.append(cells)
    return rows


def positive(cell: str) -> bool:
    match = re.fullmatch(r"([0-9.]+)(x|%)?", cell)
    return match is not None and float(match.group(1)) > 0


def load_benchmark(name: str):
    """Import a benchmark script as a module (its folder goes on sys.path for ``common``)."""
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"flairkit_benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_bench_data_reports_every_loader_setting():
    out = run_script(
        "bench_data.py", "--size", "32", "--patches", "4", "--batch", "2", "--workers", "0", "1", "--epochs", "1"
    )
    rows = {r[0]: r for r in table_rows(out, "0") + table_rows(out, "1")}
    assert set(rows) == {"0", "1"}
    assert all(positive(cell) for row in rows.values() for cell in row[1:])
    stages = [r[0] for r in table_rows(out, "") if r[0] in {"read", "normalise", "augment"}]
    assert stages == ["read", "normalise", "augment"]


def test_bench_model_reports_train_and_inference():
    out = run_script(
        "bench_model.py", "--size", "32", "--batch", "2", "--infer-batch", "1", "--repeats", "1",
        "--backends", "nchw", "folded", "onnx",
    )  # fmt: skip
    nchw, folded, onnx = (table_rows(out, name)[0] for name in ("nchw", "folded", "onnx"))
    assert positive(nchw[1]) and all(positive(row[2]) for row in (nchw, folded, onnx))
    assert folded[1] == onnx[1] == "-"
    assert all(re.fullmatch(r"\d+%", row[4]) for row in (nchw, folded, onnx))
    assert "GFLOP/s (best of 1024, 2048, 4096 square products, matmul or 1x1 conv)" in out


def test_bench_detection_reports_speed_memory_and_fitted_tiles():
    out = run_script(
        "bench_detection.py", "--sizes", "200", "--modes", "margin", "blend",
        "--set", "detect.tile_size=512", "detect.margin=16",
    )  # fmt: skip
    rows = table_rows(out, "200x200")
    assert [r[2] for r in rows] == ["margin", "blend"]
    assert all(r[3] in ("torch", "ONNX Runtime") for r in rows)
    assert all(r[5] == "256" for r in rows)  # one tile covers 200 px: 200 + 2 * 16 rounded up to 256, not 512
    assert all(positive(cell.replace(",", "")) for r in rows for cell in r[6:])  # France in days: 1,234


def test_bench_official_runs_flairkit_side_without_checkout():
    out = run_script(
        "bench_official.py", "--size", "32", "--batch", "2", "--ortho-size", "96", "--repeats", "1",
        "--variants", "compat",
    )  # fmt: skip
    train = table_rows(out, "flairkit")
    assert [r[1] for r in train[:3]] == ["NCHW", "channels_last", "NCHW, freed memory returned to the system"]
    assert all(positive(cell) for row in train[:3] for cell in row[2:])
    (detect,) = [r for r in train if r[0] == "flairkit compat"]
    assert positive(detect[2]) and positive(detect[3])
    assert not table_rows(out, "official") and "official code not run" in out.lower()


def test_bench_official_training_only():
    out = run_script("bench_official.py", "--size", "32", "--batch", "2", "--repeats", "1", "--no-detect")
    settings = [r[1] for r in table_rows(out, "flairkit")]
    assert settings == ["NCHW", "channels_last", "NCHW, freed memory returned to the system"]
    assert "Zone detection" not in out


def test_agreement_reads_flair_codes_and_official_indices(tmp_path):
    from rasterio.transform import from_origin

    from flairkit.data.rasters import LAMBERT93, write_raster

    bench = load_benchmark("bench_official")
    transform = from_origin(0, 0, 0.2, 0.2)
    official = np.arange(16, dtype=np.uint8).reshape(4, 4) % 14  # 0-based target indices
    codes = official + 1
    codes[0, 0] = 3  # one pixel of 16 differs
    write_raster(tmp_path / "off.tif", official, crs=LAMBERT93, transform=transform)
    write_raster(tmp_path / "ours.tif", codes, crs=LAMBERT93, transform=transform)
    write_raster(tmp_path / "ours_index.tif", codes - 1, crs=LAMBERT93, transform=transform)
    assert bench.agreement(tmp_path / "ours.tif", tmp_path / "off.tif", codes=True) == pytest.approx(100 * 15 / 16)
    assert bench.agreement(tmp_path / "ours_index.tif", tmp_path / "off.tif", codes=False) == pytest.approx(
        100 * 15 / 16
    )


def test_training_rows_ratios_are_against_the_official_code():
    bench = load_benchmark("bench_official")
    official = {"load_s_per_batch": 1.0, "step_s": 4.0, "peak_rss_mb": 5000.4}
    ours = {"load_s_per_batch": 0.5, "step_s": 2.0, "peak_rss_mb": 6000.0}
    entries = [("official FLAIR-1", "NCHW", official), ("flairkit", "NCHW", ours)]
    rows = bench.training_rows(entries, official, batch=10)
    assert rows[0][:6] == ["official FLAIR-1", "NCHW", "10.00", "2.500", "2.000", "5000"]
    assert rows[1] == ["flairkit", "NCHW", "20.00", "5.000", "4.000", "6000", "2.00x", "2.00x"]


@pytest.mark.skipif(
    not (os.environ.get("FLAIRKIT_OFFICIAL_CHECKOUT") and os.environ.get("FLAIRKIT_OFFICIAL_PYTHON")),
    reason="needs an IGNF/FLAIR-1 checkout and its environment (FLAIRKIT_OFFICIAL_CHECKOUT, FLAIRKIT_OFFICIAL_PYTHON)",
)
@pytest.mark.slow
def test_bench_official_against_official_code():
    out = run_script(
        "bench_official.py", "--size", "32", "--batch", "2", "--ortho-size", "256", "--repeats", "1",
        "--variants", "compat", "--official", os.environ["FLAIRKIT_OFFICIAL_CHECKOUT"],
    )  # fmt: skip
    (official,) = table_rows(out, "official flair-detect")
    (ours,) = table_rows(out, "flairkit compat")
    assert positive(official[3]) and positive(ours[4])
    assert 0 < float(ours[5]) <= 100


def test_bench_training_times_the_real_training_loop():
    out = run_script(
        "bench_training.py", "--size", "32", "--batch", "2", "--warmup", "1", "--steps", "2", "--workers", "0"
    )
    (row,) = table_rows(out, "cpu")
    assert row[1:4] == ["32", "no", "0"]
    assert all(positive(cell) for cell in row[4:6])
    assert 0 < float(row[7]) <= 100
