"""``flair predict`` and ``flair evaluate`` as library functions: patch predictions and their metrics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress
from torch import nn
from torch.utils.data import DataLoader

from flairkit.atomic import check_writable
from flairkit.config.loading import save_resolved_config
from flairkit.config.schema import FlairConfig
from flairkit.data.datamodule import build_dataset, default_num_workers, split_records
from flairkit.data.datasets import collate_patches
from flairkit.data.discovery import PatchRecord
from flairkit.data.rasters import read_profile, read_raster, write_raster
from flairkit.evaluation.confusion import ConfusionAccumulator
from flairkit.evaluation.protocols import Metrics, compute_metrics
from flairkit.evaluation.report import print_metrics, write_metrics
from flairkit.nomenclature import get_nomenclature
from flairkit.training.module import SegmentationTask

PREDICTION_PREFIX = "PRED_"


def prediction_path(out_dir: Path, image: Path) -> Path:
    """Where the prediction of ``image`` is written: ``PRED_<image basename>.tif``."""
    return Path(out_dir) / f"{PREDICTION_PREFIX}{Path(image).stem}.tif"


def resolve_device(accelerator: str) -> torch.device:
    """The torch device for a ``train.accelerator`` value ("auto" picks CUDA when present)."""
    if accelerator in {"gpu", "cuda"} or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    if accelerator == "mps":
        return torch.device("mps")
    return torch.device("cpu")


@dataclass
class PredictResult:
    """What a prediction run wrote and, when labels were given, its confusion matrix."""

    out_dir: Path
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    confmat: np.ndarray | None = None


def _move(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def predict_records(
    config: FlairConfig,
    model: nn.Module,
    records: Sequence[PatchRecord],
    out_dir: Path,
    *,
    with_labels: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> PredictResult:
    """Write ``PRED_<basename>.tif`` (uint8 0-based targets, LZW, input georeferencing) for each record.

    Predictions that already exist are kept and skipped (so a rerun finishes an interrupted run) unless
    ``overwrite``; with labels, the confusion matrix is accumulated batch by batch (existing predictions
    are read back for it).
    """
    out_dir = Path(out_dir)
    if records:
        check_writable(prediction_path(out_dir, records[0].image), overwrite=True)  # creates out_dir or says why not
    for stale in out_dir.glob(f".{PREDICTION_PREFIX}*.part"):
        stale.unlink(missing_ok=True)  # temporary file of a run that was killed while writing
    nomenclature = get_nomenclature(config.data.nomenclature)
    device = resolve_device(config.train.accelerator)
    task = SegmentationTask(config, model=model).to(device).eval()
    result = PredictResult(out_dir=out_dir)
    confusion = ConfusionAccumulator(nomenclature.n_targets) if with_labels else None
    todo = [i for i, r in enumerate(records) if overwrite or not prediction_path(out_dir, r.image).exists()]
    for index in sorted(set(range(len(records))) - set(todo)):
        path = prediction_path(out_dir, records[index].image)
        result.skipped.append(path)
        if confusion is not None:
            dataset = build_dataset(config, [records[index]], with_labels=True)
            confusion.update(read_raster(path, bands=[1])[0], dataset.read_target(records[index]))
    if todo:
        dataset = build_dataset(config, [records[i] for i in todo], with_labels=with_labels)
        workers = default_num_workers() if config.data.num_workers is None else config.data.num_workers
        loader = DataLoader(
            dataset,
            batch_size=config.evaluate.batch_size,
            num_workers=workers,
            collate_fn=collate_patches,
            pin_memory=device.type == "cuda",
        )
        with Progress(disable=not progress, transient=True) as bar, torch.inference_mode():
            job = bar.add_task("predicting", total=len(dataset))
            for batch in loader:
                batch = task.prepare_batch(_move(batch, device))
                classes = task.predict_step(batch, 0)["classes"]
                if confusion is not None:
                    confusion.update(classes, batch["target"])
                for row, local in zip(classes.cpu().numpy(), batch["index"].tolist(), strict=True):
                    record = dataset.records[local]
                    profile = read_profile(record.image)
                    path = prediction_path(out_dir, record.image)
                    write_raster(path, row, crs=profile.get("crs"), transform=profile["transform"], overwrite=True)
                    result.written.append(path)
                bar.advance(job, len(classes))
    if confusion is not None:
        result.confmat = confusion.matrix
    return result


def predict(
    config: FlairConfig,
    model: nn.Module,
    out_dir: Path,
    *,
    split: str = "test",
    overwrite: bool = False,
    progress: bool = True,
) -> PredictResult:
    """Predict every patch of ``split`` of the config's dataset into ``out_dir``."""
    records = split_records(config, split)
    save_resolved_config(config, out_dir)
    return predict_records(config, model, records, out_dir, overwrite=overwrite, progress=progress)


def evaluate(
    config: FlairConfig,
    model: nn.Module,
    out_dir: Path,
    *,
    split: str = "test",
    overwrite: bool = False,
    progress: bool = True,
    console: Any = None,
) -> Metrics:
    """Predict ``split`` and compute the official metrics; writes predictions and ``metrics/`` in ``out_dir``."""
    out_dir = Path(out_dir)
    check_writable(out_dir / "metrics" / "metrics.json", overwrite)
    records = split_records(config, split)
    save_resolved_config(config, out_dir)
    result = predict_records(
        config, model, records, out_dir / "predictions", with_labels=True, overwrite=overwrite, progress=progress
    )
    metrics = compute_metrics(result.confmat, get_nomenclature(config.data.nomenclature), config.evaluate.protocol)
    write_metrics(metrics, out_dir, overwrite=overwrite)
    if progress or console is not None:
        print_metrics(metrics, console=console)
    return metrics


def metrics_from_predictions(
    config: FlairConfig,
    pred_dir: Path,
    out_dir: Path,
    *,
    split: str = "test",
    overwrite: bool = False,
    console: Any = None,
) -> Metrics:
    """Official metrics of existing ``PRED_*.tif`` files against the split's masks (``flair metrics``)."""
    from flairkit.evaluation.pairs import confusion_from_files, pair_predictions

    check_writable(Path(out_dir) / "metrics" / "metrics.json", overwrite)
    nomenclature = get_nomenclature(config.data.nomenclature)
    masks = [r.mask for r in split_records(config, split) if r.mask is not None]
    confmat = confusion_from_files(pair_predictions(Path(pred_dir), masks), nomenclature)
    metrics = compute_metrics(confmat, nomenclature, config.evaluate.protocol)
    write_metrics(metrics, out_dir, overwrite=overwrite)
    print_metrics(metrics, console=console)
    return metrics
