"""Zone detection under stress, in separate processes: flat memory, resume after kill -9, two ranks."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from flairkit.config import load_config
from flairkit.detection.resume import WorkDir
from flairkit.detection.run import detect
from flairkit.errors import DataError

SCRIPT = """
import json, os, sys, time
from pathlib import Path

import torch
from torch import nn

from flairkit.config import load_config
from flairkit.detection.run import detect


class TinyNet(nn.Module):
    def __init__(self, bands, delay):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(bands, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 19, 1))
        self.delay = delay

    def forward(self, x):
        time.sleep(self.delay)
        return self.net(x)


def status_kb(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])


def run(args):
    torch.set_num_threads(1)
    config = load_config(None, args["overrides"])
    model = TinyNet(len(config.data.channels), args.get("delay", 0.0))
    # Forget the peak of the imports: measure the peak while detecting only.
    Path("/proc/self/clear_refs").write_text("5")
    before = status_kb("VmHWM")
    summary = detect(
        config,
        model,
        [Path(args["input"])],
        Path(args["output"]),
        resume=args.get("resume", False),
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        block_size=args["block"],
    )
    report = summary.maps[0]
    return {
        "rss_before_kb": before,
        "peak_rss_kb": status_kb("VmHWM"),
        "blocks": report.blocks,
        "blocks_per_rank": report.blocks_per_rank,
        "resumed": report.blocks_resumed,
    }


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))))
"""

COMMON = ["data.channels=[1,2,3]", "detect.tile_size=64", "detect.margin=16", "detect.batch_size=8"]
SCENE = [*COMMON, "detect.stitching=blend", "detect.probabilities=[building,water]", "detect.confidence=true"]


def write_ortho(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    height, width = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    data = np.stack([np.sin(x / (7 + b)) * np.cos(y / (5 + b)) for b in range(3)]) * 100 + 128
    data = np.clip(data + rng.normal(0, 10, data.shape), 0, 255).astype(np.uint8)
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:2154",
        "transform": from_origin(843_000.0, 6_519_000.0, 0.2, 0.2),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scripts") / "run_detect.py"
    path.write_text(SCRIPT)
    return path


def load_script(script: Path):
    """The script as a module of this process."""
    spec = importlib.util.spec_from_file_location("run_detect", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def scene(script, tmp_path_factory) -> tuple[Path, Path]:
    """An orthophoto and its map made in this process, uninterrupted, by the script's own code."""
    folder = tmp_path_factory.mktemp("scene")
    ortho = write_ortho(folder / "ortho.tif", (320, 448), seed=1)
    module = load_script(script)
    threads = torch.get_num_threads()
    try:
        module.run({"input": str(ortho), "output": str(folder / "ref.tif"), "block": 64, "overrides": SCENE})
    finally:
        torch.set_num_threads(threads)
    return ortho, folder / "ref.tif"


def launch(script: Path, env: dict[str, str] | None = None, **args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(script), json.dumps(args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def finish(process: subprocess.Popen, timeout: float = 120) -> dict:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_peak_memory_does_not_grow_with_the_raster(script, tmp_path):
    small = write_ortho(tmp_path / "small.tif", (256, 256))
    large = write_ortho(tmp_path / "large.tif", (1024, 1024))  # 4x the side, 16x the pixels
    runs = [
        launch(script, input=str(path), output=str(tmp_path / f"{path.stem}_map.tif"), block=128, overrides=COMMON)
        for path in (small, large)
    ]
    small, large = (finish(run) for run in runs)
    assert large["peak_rss_kb"] <= 1.10 * small["peak_rss_kb"], f"peak RSS {small} -> {large}"
    # Sharper: what detection itself adds. The large map's class probabilities alone would be 80 MB.
    growth = [run["peak_rss_kb"] - run["rss_before_kb"] for run in (small, large)]
    assert growth[1] <= growth[0] + 24 * 1024, f"detection added {growth[0]} kB, then {growth[1]} kB"


def test_resume_after_kill_9_gives_a_byte_identical_map(script, scene, tmp_path):
    ortho, reference = scene
    overrides = SCENE
    target = tmp_path / "map.tif"
    victim = launch(script, input=str(ortho), output=str(target), block=64, overrides=overrides, delay=0.05)
    journal = WorkDir(target).path / "journal-rank0.log"
    deadline = time.monotonic() + 60
    while not (journal.exists() and journal.read_text().count("\n") >= 5):
        assert victim.poll() is None, victim.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the run never journaled a block"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not target.exists()

    resumed = finish(launch(script, input=str(ortho), output=str(target), block=64, overrides=overrides, resume=True))
    assert 5 <= resumed["resumed"] < resumed["blocks"]
    assert target.read_bytes() == reference.read_bytes()
    assert (tmp_path / "map_scores.tif").read_bytes() == reference.with_name("ref_scores.tif").read_bytes()
    assert not WorkDir(target).path.exists()


def failing_net(module, at: int) -> torch.nn.Module:
    """The script's network (same weights, so resume accepts its blocks) that fails on its ``at``-th call."""
    model = module.TinyNet(3, 0.0)
    calls = iter(range(1, 1_000_000))
    forward = model.forward

    def fail_at(x):
        if next(calls) == at:
            raise DataError("simulated: the disk holding the orthophoto went away")
        return forward(x)

    model.forward = fail_at
    return model


def test_fatal_error_keeps_the_work_folder_only_with_finished_blocks_and_names_it(script, scene, tmp_path):
    ortho, reference = scene
    module = load_script(script)
    config = load_config(None, SCENE)
    target = tmp_path / "map.tif"
    work = WorkDir(target).path
    with pytest.raises(DataError) as raised:  # call 1 checks the model, call 2 is the first batch
        detect(config, failing_net(module, at=2), [ortho], target, block_size=64)
    assert "simulated" in str(raised.value) and "kept in" not in str(raised.value)
    assert not work.exists() and list(tmp_path.iterdir()) == []

    with pytest.raises(DataError) as raised:
        detect(config, failing_net(module, at=8), [ortho], target, block_size=64)
    assert f"finished block(s) are kept in {work}: rerun with --resume" in str(raised.value)
    assert work.is_dir() and not target.exists()
    summary = detect(config, module.TinyNet(3, 0.0), [ortho], target, block_size=64, resume=True)
    assert 0 < summary.maps[0].blocks_resumed < summary.maps[0].blocks
    assert target.read_bytes() == reference.read_bytes()
    assert not work.exists()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_ranks_assemble_the_same_map_as_one_process(script, scene, tmp_path):
    ortho, reference = scene
    overrides = SCENE
    port = str(free_port())
    ranks = [
        launch(
            script,
            env={"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "RANK": str(r), "WORLD_SIZE": "2"},
            input=str(ortho),
            output=str(tmp_path / "ddp.tif"),
            block=64,
            overrides=overrides,
        )
        for r in range(2)
    ]
    reports = [finish(process) for process in ranks]
    shares = reports[0]["blocks_per_rank"]
    assert reports[1]["blocks_per_rank"] == shares and len(shares) == 2
    assert min(shares) > 0 and sum(shares) == reports[0]["blocks"]
    assert (tmp_path / "ddp.tif").read_bytes() == reference.read_bytes()
    assert (tmp_path / "ddp_scores.tif").read_bytes() == reference.with_name("ref_scores.tif").read_bytes()
