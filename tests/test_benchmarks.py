"""The benchmark scripts run end to end on tiny inputs; their tables hold the rows asked for, and figures that
agree with each other and with direct measurements; they append to BENCHMARKS.md only with --record."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
RECORD = ROOT / "BENCHMARKS.md"
TIMEOUT = 600
"""Seconds before a script counts as hung: the quick GPU check takes about a minute on an idle 2-core CPU, several
when other work shares it."""
GPU_CHECK = ["bash", str(BENCHMARKS / "gpu_check.sh")]


def run_script(
    tmp_path: Path, command: list[str], check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run a benchmark command from the repository root, $FLAIRKIT_BENCHMARKS_MD naming ``tmp_path/BENCHMARKS.md``
    (a copy of the repository's, made on the first call); the repository's own file must not change."""
    copy = tmp_path / "BENCHMARKS.md"
    if not copy.exists():
        copy.write_bytes(RECORD.read_bytes())
    before = RECORD.read_bytes()
    env = {**os.environ, "FLAIRKIT_BENCHMARKS_MD": str(copy), "FLAIRKIT_PYTHON": sys.executable, **(env or {})}
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT, env=env, check=False)
    assert RECORD.read_bytes() == before
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def run_bench(tmp_path: Path, name: str, *args: str) -> str:
    """Run ``benchmarks/<name>`` without --record and return its stdout; the BENCHMARKS.md copy must not change."""
    done = run_script(tmp_path, [sys.executable, str(BENCHMARKS / name), *args])
    assert (tmp_path / "BENCHMARKS.md").read_bytes() == RECORD.read_bytes()
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


def number(cell: str) -> float:
    """A table figure (``1,234``, ``12.5``, ``88%``, ``1.60x``) as a float; fails on anything else."""
    match = re.fullmatch(r"(\d[\d,]*(?:\.\d+)?)(x|%)?", cell)
    assert match, f"not a figure: {cell!r}"
    return float(match.group(1).replace(",", ""))


def load_benchmark(name: str):
    """Import a benchmark script as a module (its folder goes on sys.path for ``common``)."""
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"flairkit_benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_bench_data_reports_every_loader_setting(tmp_path):
    out = run_bench(
        tmp_path, "bench_data.py", "--size", "32", "--patches", "4", "--batch", "2", "--workers", "0", "1",
        "--epochs", "2", "--repeats", "1",
    )  # fmt: skip
    loaders = {r[0]: r for r in table_rows(out, "0") + table_rows(out, "1")}
    assert set(loaders) == {"0", "1"}
    for _, first, best in loaders.values():
        assert 0 < number(first) <= number(best)  # the best of the epochs, the first one included
    stages = [
        r[0] for r in table_rows(out, "") if r[0] in {"read", "normalise", "augment", "uint8 augment + normalise"}
    ]
    assert stages == ["read", "normalise", "augment", "uint8 augment + normalise"]
    assert "4 synthetic patches of 32 px" in out


def test_bench_hub_loader_quick_compares_the_six_modality_loader_with_the_step(tmp_path):
    out = run_bench(tmp_path, "bench_hub_loader.py", "--quick")
    loaders = {r[0]: r for r in table_rows(out, "0") + table_rows(out, "1")}
    assert set(loaders) == {"0", "1"}
    for _, first, best in loaders.values():
        assert 0 < number(first) <= number(best)
    [(_, parameters, seconds, rate, ratio)] = table_rows(out, "tiny")
    rounding = 2 * 0.005 / number(seconds) ** 2  # seconds are printed with 2 decimals
    assert number(parameters) > 0 and number(rate) == pytest.approx(2 / number(seconds), rel=0.02, abs=2e-3 + rounding)
    best_loader = max(number(best) for _, _, best in loaders.values())
    assert number(ratio) == pytest.approx(
        best_loader / number(rate), rel=0.05, abs=0.05
    )  # ratio printed with 1 decimal
    assert "2 train patches of 256 px" in out and "six modalities" in out


def test_bench_model_shares_are_measured_flops_over_the_measured_peak(tmp_path):
    out = run_bench(
        tmp_path, "bench_model.py", "--size", "32", "--batch", "2", "--infer-batch", "1", "--repeats", "1",
        "--backends", "nchw", "folded", "onnx",
    )  # fmt: skip
    rows = [table_rows(out, name)[0] for name in ("nchw", "folded", "onnx")]
    assert [row[1] == "-" for row in rows] == [False, True, True]  # folded and ONNX networks do not train
    peak = float(re.search(r"Measured fp32 matmul peak: ([\d.]+) GFLOP/s", out).group(1))
    for row in rows:
        gflops, share = number(row[3]), number(row[4])
        assert abs(share - 100 * gflops / peak) <= 1, row  # rounding of the printed figures only
    assert "GFLOP/s (best of 1024, 2048, 4096 square products, matmul or 1x1 conv)" in out


def test_bench_detection_reports_area_fitted_tiles_and_consistent_speeds(tmp_path):
    out = run_bench(
        tmp_path, "bench_detection.py", "--sizes", "200", "--modes", "margin", "blend",
        "--set", "detect.tile_size=512", "detect.margin=16",
    )  # fmt: skip
    rows = table_rows(out, "200x200")
    assert [r[2] for r in rows] == ["margin", "blend"]
    for row in rows:
        assert row[1] == "0.002"  # 200 x 200 px of 0.2 m: 0.0016 km²
        assert row[3] in ("torch", "ONNX Runtime")
        assert row[5] == "256"  # one tile covers 200 px: 200 + 2 * 16 rounded up to 256, not 512
        speed = number(row[9])
        # France in days, from the km²/h printed with 3 decimals: allow that rounding (slow runs print ~0.1)
        rounding = 550_000 / 24 * 0.0005 / speed**2
        assert number(row[11]) == pytest.approx(550_000 / speed / 24, rel=1e-3, abs=1 + rounding)
    assert rows[0][6] == "1"


def test_bench_detection_multimodal_maps_the_area_with_a_flairhub_network_too(tmp_path):
    out = run_bench(
        tmp_path, "bench_detection.py", "--sizes", "300", "600", "--modes", "blend", "--network", "tiny",
        "--multimodal", "--set", "detect.tile_size=512", "detect.margin=128", "detect.fit_tiles=false",
    )  # fmt: skip
    rows = table_rows(out, "300x300") + table_rows(out, "600x600")
    assert [(r[0], r[12]) for r in rows] == [
        ("300x300", "stacked"), ("300x300", "multimodal"), ("600x600", "stacked"), ("600x600", "multimodal"),
    ]  # fmt: skip
    for row in rows:
        assert row[2] == "blend" and row[3] == "torch" and row[5] == "512" and number(row[10]) > 0
    assert rows[0][6] == rows[1][6] and rows[2][6] == rows[3][6]  # the same tiles as the stacked runs'
    assert number(rows[3][6]) > number(rows[1][6])
    growth = re.search(r"blend multimodal ([+-]\d+)%", out)  # of the unrounded peaks
    assert growth and abs(int(growth.group(1)) - 100 * (number(rows[3][10]) / number(rows[1][10]) - 1)) < 1
    assert "SENTINEL2_TS (4 dates with cloud masks, detect.sentinel2)" in out


def test_bench_official_detection_only_without_checkout(tmp_path):
    out = run_bench(
        tmp_path, "bench_official.py", "--size", "32", "--batch", "2", "--ortho-size", "96", "--repeats", "1",
        "--variants", "compat", "compat-torch", "--no-train",
    )  # fmt: skip
    assert [r[0] for r in table_rows(out, "flairkit")] == ["flairkit compat", "flairkit compat-torch"]
    compat, compat_torch = table_rows(out, "flairkit")
    assert compat[1].endswith(", 512 px tiles") and compat_torch[1].endswith(": torch, 512 px tiles")
    assert number(compat[3]) > 0 and number(compat_torch[3]) > 0
    assert len(compat) == 4  # no official run: no ratio or agreement columns
    assert "Training" not in out and "Official code not run." in out


def test_bench_official_training_only(tmp_path):
    out = run_bench(tmp_path, "bench_official.py", "--size", "32", "--batch", "2", "--repeats", "1", "--no-detect")
    rows = table_rows(out, "flairkit")
    assert [r[1] for r in rows] == ["NCHW", "channels_last", "NCHW, freed memory returned to the system"]
    for row in rows:
        data, step, total = (number(cell) for cell in row[2:5])
        assert 1 / total == pytest.approx(1 / data + 1 / step, rel=0.01)  # end to end = load + step
    assert "Zone detection" not in out and "Detection:" not in out


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
def test_bench_official_against_official_code(tmp_path):
    checkout = os.environ["FLAIRKIT_OFFICIAL_CHECKOUT"]
    out = run_bench(
        tmp_path, "bench_official.py", "--size", "32", "--batch", "2", "--ortho-size", "256", "--repeats", "1",
        "--variants", "compat", "--official", checkout,
    )  # fmt: skip
    (official,) = table_rows(out, "official flair-detect")
    (ours,) = table_rows(out, "flairkit compat")
    assert official[4:] == ["1.00x", "100.0000"]  # the reference against itself
    assert number(ours[4]) == pytest.approx(number(official[2]) / number(ours[2]), rel=0.05)  # speed = 1 / time
    assert 95 <= number(ours[5]) <= 100
    assert checkout not in out and "https://github.com/IGNF/FLAIR-1 at " in out


def test_bench_training_times_the_real_training_loop(tmp_path):
    out = run_bench(
        tmp_path, "bench_training.py", "--size", "32", "--batch", "2", "--warmup", "1", "--steps", "2",
        "--workers", "0",
    )  # fmt: skip
    (row,) = table_rows(out, "cpu")
    assert row[1:6] == ["1", "32", "NCHW", "no", "0"]
    rate, step_ms, wait_ms, busy = (number(cell) for cell in row[6:10])
    # Patches/s and busy share come from the same mean step and wait (printed rounded to the millisecond).
    assert rate == pytest.approx(2000 / (step_ms + wait_ms), rel=0.02)
    assert busy == pytest.approx(100 * step_ms / (step_ms + wait_ms), abs=1)
    assert row[10] == "-"  # no GPU memory on the CPU


def test_recorded_commands_carry_no_machine_paths():
    common = load_benchmark("common")
    arguments = ["--official", "/home/me/FLAIR-1", "--workdir", "/tmp/x/run", "--set", "data.root=/data/flair"]
    arguments += ["detect.margin=16", "--size", "512", "two words"]
    assert common.recorded_command("python benchmarks/bench_official.py", arguments) == (
        "python benchmarks/bench_official.py --official path/to/FLAIR-1 --workdir path/to/run "
        "--set data.root=path/to/flair detect.margin=16 --size 512 'two words'"
    )


def test_gpu_check_refuses_cuda_without_a_gpu_and_an_existing_output(tmp_path):
    out = tmp_path / "gpu.md"
    hidden = run_script(
        tmp_path, [*GPU_CHECK, "--quick", "--out", str(out)], check=False, env={"CUDA_VISIBLE_DEVICES": ""}
    )
    assert hidden.returncode != 0
    assert "--device cuda, but torch sees no CUDA GPU" in hidden.stderr and "--device cpu" in hidden.stderr
    assert not out.exists()
    out.write_text("kept")
    existing = run_script(tmp_path, [*GPU_CHECK, "--device", "cpu", "--quick", "--out", str(out)], check=False)
    assert existing.returncode != 0 and "already exists; pass --overwrite" in existing.stderr
    assert out.read_text() == "kept"
    assert (tmp_path / "BENCHMARKS.md").read_bytes() == RECORD.read_bytes()


TRAIN_ROWS = [
    ("train", "32", "NCHW"),
    ("train", "bf16-mixed", "NCHW"),
    ("train", "bf16-mixed", "channels_last"),
    ("train", "bf16-mixed", "channels_last, torch.compile"),
    ("train", "bf16-mixed", "channels_last, DDP on 2 GPUs"),
]
DETECT_ROWS = [
    ("margin", "32", None),
    ("blend", "32", "margin"),
    ("margin", "bf16", "margin"),
    ("blend", "bf16", "blend"),
]
"""(stitching, precision, stitching of the fp32 map it is compared with)."""
AGREEMENT_MARGIN_BLEND, AGREEMENT_BF16 = 70.0, 97.0
"""Lowest share (%) of pixels agreeing in the quick check: its network, trained 20 steps, gave 84.2 (margin vs
blend, 256 px tiles with 32 px margins: many tile edges) and 99.3 (bf16 vs fp32) on a 2-core AVX2 CPU."""


def read_map(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        return src.read(1)


@pytest.mark.slow
def test_gpu_check_quick_on_cpu_reports_every_row_and_records_it_once(tmp_path):
    out, work = tmp_path / "gpu.md", tmp_path / "work"
    command = [*GPU_CHECK, "--device", "cpu", "--quick", "--out", str(out), "--workdir", str(work), "--record"]
    done = run_script(tmp_path, command)
    section = out.read_text()
    assert section.strip() in done.stdout
    rows = {tuple(r[:3]): r for r in table_rows(section, "train")}
    rows |= {(r[0], r[1], r[2].split(",")[0]): r for r in table_rows(section, "detect")}
    assert list(rows) == TRAIN_ROWS + [("detect", precision, mode) for mode, precision, _ in DETECT_ROWS]

    for key in TRAIN_ROWS[:3]:
        row = rows[key]
        assert number(row[3]) > 0 and 0 < number(row[4]) <= 100, row
        assert row[5:8] == ["-", "-", "-"] and row[8].startswith("mean of 2 steps"), row  # no GPU memory on a CPU
    assert rows[TRAIN_ROWS[3]][3:] == ["-"] * 5 + [
        "not run: torch.compile is timed on GPUs only (on a CPU it compiles for minutes)"
    ]
    assert rows[TRAIN_ROWS[4]][3:] == ["-"] * 5 + ["not run: needs 2 GPUs (--device cpu)"]

    agreeing = {}
    for mode, precision, reference in DETECT_ROWS:
        row = rows["detect", precision, mode]
        assert row[2] == f"{mode}, 256 px tiles" and number(row[5]) > 0 and row[6] == "-", row
        if reference is None:
            assert row[7:] == ["-", "reference map"]
            continue
        assert row[8] == f"against detect 32 {reference}"
        ours, theirs = read_map(work / f"map_{mode}_{precision}.tif"), read_map(work / f"map_{reference}_32.tif")
        assert number(row[7]) == pytest.approx(100 * np.mean(ours == theirs), abs=5e-4)
        agreeing[mode, precision] = number(row[7])
    assert agreeing["blend", "32"] >= AGREEMENT_MARGIN_BLEND
    assert min(agreeing["margin", "bf16"], agreeing["blend", "bf16"]) >= AGREEMENT_BF16

    # --record appended this section once to the BENCHMARKS.md copy, with a command anyone can run.
    original, recorded = RECORD.read_text(), (tmp_path / "BENCHMARKS.md").read_text()
    assert recorded.startswith(original)
    appended = recorded[len(original) :]
    assert appended.strip() == section.strip() and appended.count("\n## ") == 1
    assert (
        "`bash benchmarks/gpu_check.sh --device cpu --quick --out path/to/gpu.md --workdir path/to/work --record`"
        in appended
    )
    assert str(tmp_path) not in appended


def test_gpu_check_rows_report_a_failed_run_and_keep_the_others(tmp_path, monkeypatch, capsys):
    from rasterio.transform import from_origin

    from flairkit.data.rasters import LAMBERT93, write_raster

    gpu_check = load_benchmark("gpu_check")
    oom = "Traceback (most recent call last):\n  ...\ntorch.OutOfMemoryError: CUDA out of memory | tried 2 GiB"
    maps = {
        ("blend", "32"): [[1, 2], [3, 4]],
        ("margin", "bf16"): [[1, 1], [1, 1]],
        ("blend", "bf16"): [[1, 2], [3, 5]],
    }

    def detection(args: dict) -> dict:
        key = (args["mode"], args["overrides"][0].removeprefix("detect.precision="))
        if key not in maps:
            raise gpu_check.ChildFailed(f"detection run failed:\n{oom}")
        array = np.array(maps[key], dtype=np.uint8)
        write_raster(Path(args["output"]), array, crs=LAMBERT93, transform=from_origin(0, 0, 0.2, 0.2))
        return {"tile": 256, "km2": 2.0, "seconds": 3600.0, "peak_gpu_mib": 512.4}

    def training(args: dict) -> dict:
        if args["compile"]:
            raise gpu_check.ChildFailed(f"training run failed:\n{oom}")
        return {"patches_per_s": 12.345, "busy_percent": 91.25, "peak_gpu_mib": 2048.0, "timed_steps": 50, "workers": 8}

    monkeypatch.setattr(gpu_check, "run_detection", detection)
    monkeypatch.setattr(gpu_check, "run_training", training)
    failure = "failed: torch.OutOfMemoryError: CUDA out of memory / tried 2 GiB"
    rows = gpu_check.detect_rows(tmp_path / "ortho.tif", tmp_path / "w.pth", tmp_path, gpu_check.FULL, "cuda")
    orphan = "detect 32 margin failed: nothing to compare with"
    assert rows == [
        ["detect", "32", "margin", "-", "-", "-", "-", "-", failure],
        ["detect", "32", "blend, 256 px tiles", "-", "-", "2.00", "512", "-", orphan],
        ["detect", "bf16", "margin, 256 px tiles", "-", "-", "2.00", "512", "-", orphan],
        ["detect", "bf16", "blend, 256 px tiles", "-", "-", "2.00", "512", "75.000", "against detect 32 blend"],
    ]
    rows = gpu_check.train_rows(tmp_path / "train.csv", tmp_path, gpu_check.FULL, "cuda", gpus=1)
    done = ["12.35", "91.2", "-", "2048", "-", "mean of 50 steps, loader workers: 8"]
    assert [row[3:] for row in rows] == [
        done, done, done, ["-"] * 5 + [failure], ["-"] * 5 + ["not run: needs 2 GPUs (1 visible)"]
    ]  # fmt: skip
    assert "CUDA out of memory | tried 2 GiB" in capsys.readouterr().err  # the whole error, for the user


def test_domain_gain_quick_shares_trainings_and_writes_its_table(tmp_path):
    out = tmp_path / "gain"
    args = ["--quick", "--threads", "1", "--seeds", "0", "--techniques", "tta", "recalibration", "preset"]
    args += ["--out", str(out)]
    text = run_bench(tmp_path, "domain_gain.py", *args)
    labels = [r[0] for r in table_rows(text, "")][1:]
    assert labels == [
        "baseline (flips/rotations)", "TTA d4", "BatchNorm recalibration", "recommended: flair1-unet-resnet34-domain"
    ]  # fmt: skip
    result = json.loads(out.with_name("gain.json").read_text())
    rows = {row["technique"]: row for row in result["rows"]}
    assert rows["baseline"]["miou_gain"] == 0 and rows["baseline"]["fit_cpu_ratio"] == 1
    # TTA and recalibration reuse the baseline's training: same fit, other evaluation or statistics.
    assert rows["tta"]["fit_seconds"] == rows["recalibration"]["fit_seconds"] == rows["baseline"]["fit_seconds"]
    assert rows["recalibration"]["recalibration_seconds"] > 0 == rows["baseline"]["recalibration_seconds"]
    assert rows["preset"]["fit_seconds"] != rows["baseline"]["fit_seconds"]  # a training of its own
    assert result["world"]["options"]["domain_shift"] == 3.0
    assert max(max(d["gain"]) for d in result["world"]["domains"]) > 1.2  # stronger than the default world's 1.18
    assert (tmp_path / "gain.md").read_text().startswith("| technique |")
    again = run_script(tmp_path, [sys.executable, str(BENCHMARKS / "domain_gain.py"), *args], check=False)
    assert again.returncode != 0 and "already exists" in again.stderr


def test_domain_gain_calls_a_gain_beyond_seed_noise_only_when_it_exceeds_both_spreads():
    bench = load_benchmark("domain_gain")

    def row(name: str, mious: list[float], fit: float) -> object:
        outcomes = [bench.Outcome(m, 50.0, m, fit, fit, 0.0, 1.0) for m in mious]
        return bench.Row(name, name, outcomes)

    summaries = bench.summarise([row("baseline", [10, 12, 14], 10), row("a", [15, 16, 17], 15), row("b", [13, 14], 20)])
    assert [s["miou_gain"] for s in summaries] == [0, 4, 1.5]
    assert [s["beyond_seed_noise"] for s in summaries] == [False, True, False]  # 4 > 2 + 1, 1.5 < 2 + 0.71
    assert [s["fit_cpu_ratio"] for s in summaries] == [1, 1.5, 2]


def test_domain_preset_is_the_baseline_preset_plus_the_techniques_it_documents():
    from flairkit.config import load_config

    def flat(values: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in values.items():
            out |= flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
        return out

    base = flat(load_config("flair1-unet-resnet34").model_dump())
    domain = flat(load_config("flair1-unet-resnet34-domain").model_dump())
    changed = {key: domain.get(key) for key in base.keys() | domain.keys() if base.get(key) != domain.get(key)}
    # The paper's figures are the baseline's.
    changed = {k: v for k, v in changed.items() if k.split(".")[0] not in ("name", "description", "published")}
    assert load_config("flair1-unet-resnet34-domain").published is None
    assert changed == {
        "data.augmentation_probability": 0.5,
        "data.normalization.mode": "per_patch",
        "data.normalization.means": None,
        "data.normalization.stds": None,
    }
    bench = load_benchmark("domain_gain")
    assert "data.augmentation_probability=0.5" in bench.SCALE  # every row has the flips and rotations
    assert bench.TECHNIQUES["per_patch"].overrides == ("data.normalization.mode=per_patch",)
