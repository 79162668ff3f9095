"""Crash recovery: ``kill -9`` during training or prediction, then a rerun, gives what an uninterrupted run gives.

Killed runs are real ``python -m flairkit`` processes (one thread, CPU, ``train.deterministic=true``); the
reruns (``flair ... --resume`` / ``flair predict`` again) and the uninterrupted references run in this process
with the same config.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rasterio
import torch
from typer.testing import CliRunner

from flairkit.cli.main import app
from flairkit.config import load_config
from flairkit.evaluation.predict import predict
from flairkit.models.loader import load_model
from flairkit.training.run import train

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
KILL_TIMEOUT = 120
"""Seconds a subprocess may take (a guard against hangs, far above the few seconds the runs take)."""

DIE_WHILE_WRITING = """
import os, signal, sys
import rasterio

real_open, writes = rasterio.open, 0


def open_then_die(path, mode="r", *args, **kwargs):
    global writes
    if mode == "w":
        writes += 1
        if writes == int(os.environ["FLAIRKIT_TEST_DIE_AT_WRITE"]):
            real_open(path, mode, *args, **kwargs).close()  # a half-made temporary file stays on disk
            os.kill(os.getpid(), signal.SIGKILL)
    return real_open(path, mode, *args, **kwargs)


rasterio.open = open_then_die
from flairkit.cli.main import main

sys.argv = ["flair", *sys.argv[1:]]
main()
"""
"""``flair`` that kills itself with SIGKILL in the middle of its N-th raster write (a deterministic crash point)."""


def settings(world: Path, output_dir: Path) -> list[str]:
    """The same fast deterministic CPU run, for the library and for ``--set`` on the command line."""
    return [
        f"data.root={world}",
        f"output_dir={output_dir}",
        "model.encoder=resnet18",
        "model.encoder_weights=null",
        "data.batch_size=4",
        "data.num_workers=0",
        "evaluate.batch_size=2",
        "train.max_epochs=2",
        "train.accelerator=cpu",
        "train.devices=1",
        "train.deterministic=true",
    ]


def flair_command(*args: str, script: str | None = None) -> list[str]:
    prefix = [sys.executable, "-c", script] if script else [sys.executable, "-m", "flairkit"]
    return [*prefix, *args]


def with_sets(values: list[str]) -> list[str]:
    return [arg for value in values for arg in ("--set", value)]


def summary(run_root: Path) -> dict:
    return json.loads((run_root / "demo" / "train_summary.json").read_text())


@pytest.fixture(scope="module")
def straight(tiny_world, tmp_path_factory) -> Path:
    """An uninterrupted two-epoch run (in this process); returns its output_dir."""
    root = tmp_path_factory.mktemp("straight")
    train(load_config("demo", settings(tiny_world, root)), progress=False)
    return root


def test_training_killed_with_sigkill_resumes_to_the_metrics_of_an_uninterrupted_run(tiny_world, tmp_path, straight):
    root = tmp_path / "killed"
    args = ["train", "-c", "demo", "--no-progress", *with_sets(settings(tiny_world, root))]
    last = root / "demo" / "checkpoints" / "last.ckpt"
    with (tmp_path / "killed.log").open("w") as log:
        process = subprocess.Popen(flair_command(*args), env=ENV, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + KILL_TIMEOUT
        while process.poll() is None and not last.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
    assert not (root / "demo" / "train_summary.json").exists()
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 0  # killed during the 2nd epoch

    resumed = CliRunner().invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output[-3000:]
    expected, got = summary(straight), summary(root)
    assert got["epochs"] == expected["epochs"] == 2
    assert got["val_loss"] == pytest.approx(expected["val_loss"], abs=1e-6)
    assert got["val_miou"] == pytest.approx(expected["val_miou"], abs=1e-6)


def test_same_config_and_seed_give_bit_identical_training(tiny_world, tmp_path, straight):
    train(load_config("demo", settings(tiny_world, tmp_path)), progress=False)
    first, second = summary(straight), summary(tmp_path)
    assert (second["val_loss"], second["val_miou"]) == (first["val_loss"], first["val_miou"])
    weights = [
        torch.load(root / "demo" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
        for root in (straight, tmp_path)
    ]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_predict_killed_mid_way_finishes_on_rerun_with_identical_files(tiny_world, tmp_path, straight):
    checkpoint = straight / "demo" / "checkpoints" / "last.ckpt"
    config = load_config("demo", settings(tiny_world, tmp_path))
    reference = predict(config, load_model(config, checkpoint), tmp_path / "reference")
    assert len(reference.written) == 8

    out = tmp_path / "pred"
    args = ["predict", str(out), "-c", "demo", "--checkpoint", str(checkpoint), "--no-progress"]
    args += with_sets(settings(tiny_world, tmp_path))
    env = {**ENV, "FLAIRKIT_TEST_DIE_AT_WRITE": "6"}  # 4 batches of 2: dies inside the 3rd batch
    killed = subprocess.run(flair_command(*args, script=DIE_WHILE_WRITING), env=env, capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    finished = sorted(out.glob("PRED_*.tif"))
    assert len(finished) == 5  # the 6th was being written: only its temporary file exists
    assert list(out.glob(".PRED_*.part"))
    before = {path.name: path.stat().st_mtime_ns for path in finished}

    rerun = CliRunner().invoke(app, args)
    assert rerun.exit_code == 0, rerun.output[-3000:]
    said = " ".join(rerun.output.split())  # rich wraps lines at 80 columns
    assert "wrote 3 prediction(s)" in said and "(5 already there, kept)" in said
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("PRED_*.tif") if p.name in before} == before
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(("PRED_", ".PRED_"))) == sorted(
        p.name for p in reference.written
    )
    for expected in reference.written:
        got = out / expected.name
        assert got.read_bytes() == expected.read_bytes()
        with rasterio.open(got) as src:
            assert src.count == 1 and src.dtypes[0] == "uint8"
