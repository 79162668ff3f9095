"""Runs IGN's official FLAIR-1 code for the side-by-side benchmarks; executed by the OFFICIAL environment's Python.

This file imports nothing from flairkit: ``bench_official.py`` starts it with the interpreter of the virtual
environment where IGNF/FLAIR-1 and its pinned requirements are installed, in a checkout of that repository::

    <official python> benchmarks/official.py detect --checkout FLAIR-1 --conf detect.yaml --result out.json
                                                [--exact-windows]
    <official python> benchmarks/official.py train --checkout FLAIR-1 --csv train.csv --batch 10 --result out.json

``detect`` times ``src.zone_detect.main.main()`` (the ``flair-detect`` entry point) from slicing to the
closed output raster; ``train`` times the official dataset (read, one-hot mask, albumentations flips,
float64 normalisation) and one training step of the official Lightning task (forward, weighted cross
entropy, per-step softmax/argmax/IoU metric, backward, SGD step), as Lightning's automatic optimisation runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

LIBRARIES = ("torch", "segmentation-models-pytorch", "pytorch-lightning", "torchmetrics", "rasterio", "numpy")


def best_of(function: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """The fastest of ``repeats`` timed calls (seconds), after ``warmup`` untimed ones."""
    for _ in range(warmup):
        function()
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        timings.append(time.perf_counter() - start)
    return min(timings)


def _enter(checkout: Path) -> None:
    os.chdir(checkout)
    sys.path.insert(0, str(checkout))


def rounding_geometry_window(dataset, shapes, pixel_precision: int = 6, **_: object):
    """``rasterio.features.geometry_window`` as flair-detect asks for it: pixel bounds rounded to ``pixel_precision``.

    Current rasterio ignores ``pixel_precision`` and takes the floor/ceiling of the float pixel bounds, so a
    kept window of 256 px whose geographic bounds carry float noise becomes 257 px wide, and rasterio's write
    stretches the 256 px prediction over it (nearest neighbour).
    """
    import math

    from rasterio.features import bounds
    from rasterio.windows import Window

    left, bottom, right, top = (round(v, pixel_precision) for v in bounds(shapes[0], transform=~dataset.transform))
    rows, cols = (min(top, bottom), max(top, bottom)), (min(left, right), max(left, right))
    row0, col0 = math.floor(rows[0]), math.floor(cols[0])
    window = Window(col0, row0, math.ceil(cols[1]) - col0, math.ceil(rows[1]) - row0)
    return window.intersection(Window(0, 0, dataset.width, dataset.height))


def run_detect(checkout: Path, conf: Path, exact_windows: bool = False) -> dict:
    """One ``flair-detect`` run: wall seconds of its main() (imports excluded).

    ``exact_windows``: kept windows computed with :func:`rounding_geometry_window` (no 1 px stretch).
    """
    _enter(checkout)
    import warnings

    warnings.simplefilter("ignore")
    from src.zone_detect import main as zone_detect

    if exact_windows:
        zone_detect.geometry_window = rounding_geometry_window
    sys.argv = ["flair-detect", "--conf", str(conf)]
    start = time.perf_counter()
    zone_detect.main()
    seconds = time.perf_counter() - start
    sys.stdout = sys.__stdout__  # main() swaps in its log file writer
    sys.stderr = sys.__stderr__
    return {"seconds": seconds}


def official_train_config(batch: int, classes: dict[int, list], channels: list[int], norm: dict) -> dict:
    """The keys of configs/flair-1-config.yaml that the official data and task modules read (U-Net ResNet34)."""
    return {
        "model_framework": {
            "model_provider": "SegmentationModelsPytorch",
            "SegmentationModelsPytorch": {"encoder_decoder": "resnet34_unet"},
        },
        "use_augmentation": True,
        "use_metadata": False,
        "channels": channels,
        "norm_type": norm["type"],
        "norm_means": norm["means"],
        "norm_stds": norm["stds"],
        "batch_size": batch,
        "learning_rate": 0.02,
        "use_weights": True,
        "supervision_starts_at_one": True,
        "classes": classes,
        "num_workers": 0,
    }


def run_train(checkout: Path, csv: Path, batch: int, repeats: int, classes: dict, channels: list, norm: dict) -> dict:
    """Seconds per batch of the official data pipeline and per official training step."""
    _enter(checkout)
    import warnings

    warnings.simplefilter("ignore")
    import torch
    from src.flair.tasks_utils import gather_paths, get_data_module, get_segmentation_module

    config = official_train_config(batch, classes, channels, norm)
    config["paths"] = {"train_csv": str(csv), "val_csv": str(csv)}
    paths = gather_paths(config, "train")
    data_module = get_data_module(config, dict_train=paths, dict_val=paths)
    data_module.setup("fit")
    loader = data_module.train_dataloader()
    n_batches = len(loader)

    def one_pass() -> None:
        for _ in loader:
            pass

    load_s = best_of(one_pass, repeats=repeats) / n_batches
    batch_data = next(iter(loader))
    with contextlib.redirect_stdout(io.StringIO()):
        task = get_segmentation_module(config, stage="train")
    task.setup("fit")
    task.train()
    optimizer = task.optimizer

    def step() -> None:
        optimizer.zero_grad()
        loss = task.training_step(batch_data, 0)
        loss.backward()
        optimizer.step()

    step_s = best_of(step, repeats=repeats)
    return {
        "load_s_per_batch": load_s,
        "step_s": step_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "batch": batch,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=["detect", "train"])
    parser.add_argument("--checkout", type=Path, required=True, help="the IGNF/FLAIR-1 checkout")
    parser.add_argument("--result", type=Path, required=True, help="JSON file receiving the figures")
    parser.add_argument("--conf", type=Path, help="detect: the flair-detect YAML config")
    parser.add_argument("--exact-windows", action="store_true", help="detect: round kept windows (no 1 px stretch)")
    parser.add_argument("--csv", type=Path, help="train: the FLAIR-1 CSV list of image,mask pairs")
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--settings", type=Path, help="train: JSON with classes, channels and normalisation")
    args = parser.parse_args()
    checkout, result = args.checkout.resolve(), args.result.resolve()
    if args.task == "detect":
        figures = run_detect(checkout, args.conf.resolve(), args.exact_windows)
    else:
        settings = json.loads(args.settings.read_text())
        classes = {int(k): v for k, v in settings["classes"].items()}
        figures = run_train(
            checkout, args.csv.resolve(), args.batch, args.repeats, classes, settings["channels"], settings["norm"]
        )
    figures["versions"] = {name: metadata.version(name) for name in LIBRARIES}
    result.write_text(json.dumps(figures))


if __name__ == "__main__":
    main()
