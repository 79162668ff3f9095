"""``flair predict`` and ``flair evaluate`` as library functions: patch predictions and their metrics."""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from flairkit.atomic import check_not_inputs, check_writable
from flairkit.config.loading import save_resolved_config
from flairkit.config.schema import FlairConfig
from flairkit.data.datamodule import build_dataset, split_records
from flairkit.data.datasets import collate_patches
from flairkit.data.discovery import PatchRecord
from flairkit.data.hub.aerial import hub_settings
from flairkit.data.hub.dataset import build_hub_dataset, collate_hub
from flairkit.data.hub.layout import LPIS
from flairkit.data.hub.multimodal import multimodal_settings, task_nomenclature
from flairkit.data.rasters import read_profile, write_raster
from flairkit.devices import (
    autocast,
    default_num_workers,
    ensure_worker_socket_dir,
    math_settings,
    resolve_device,
    resolve_precision,
)
from flairkit.errors import ConfigError
from flairkit.evaluation.confusion import ConfusionAccumulator
from flairkit.evaluation.html import REPORT_FILE, write_evaluation_report
from flairkit.evaluation.manifest import (
    MANIFEST,
    check_prediction_paths,
    claim_folder,
    kept_prediction,
    prediction_manifest,
    weights_files,
)
from flairkit.evaluation.protocols import Metrics, compute_metrics, lpis_level_metrics
from flairkit.evaluation.report import inference_settings, write_metrics
from flairkit.models.hub import normalization, normalize_batch
from flairkit.models.inference import Predictor, forward_passes, masked_argmax
from flairkit.models.onnx import OnnxSegmenter, onnx_on_device
from flairkit.nomenclature import get_nomenclature

Models = nn.Module | Sequence[nn.Module]
"""One network, or the networks of an ensemble (their probabilities averaged)."""
Weights = Path | str | Sequence[Path | str] | None
"""Where the networks were loaded from: a file, bundle or released model name per network, when known."""

PREDICTION_PREFIX = "PRED_"
CONFIG_FILE = "config.yaml"
DEVICE_KEY = "evaluate.device (--device)"
PRECISION_KEY = "evaluate.precision (--precision)"

Progress = Callable[[int, int], None]
"""Called with (patches done, patches to do) after each batch."""


def prediction_path(out_dir: Path, image: Path) -> Path:
    """Where the prediction of ``image`` is written: ``PRED_<image basename>.tif``."""
    return Path(out_dir) / f"{PREDICTION_PREFIX}{Path(image).stem}.tif"


@dataclass
class PredictResult:
    """What a prediction run wrote and, when labels were given, its confusion matrix."""

    out_dir: Path
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    confmat: np.ndarray | None = None
    patch_pixels: dict[Path, tuple[int, int]] = field(default_factory=dict)
    """With labels, per prediction file: (pixels predicted right, pixels whose truth is a learnt class)."""
    passes: str = ""
    """Test-time augmentation, models and forward passes per patch, e.g. "tta d4 x 2 models = 16 passes"."""


class _BackgroundWriter:
    """Runs write jobs in one thread behind the model loop, in order; at most ``depth`` wait in memory.

    Each job returns the path it wrote, appended to ``written``. The first failure is raised in the calling
    thread at the next :meth:`submit` or when the ``with`` block ends; later jobs are then dropped.
    """

    def __init__(self, depth: int, written: list[Path]):
        self._jobs: queue.Queue[Callable[[], Path] | None] = queue.Queue(maxsize=depth)
        self._written = written
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="flairkit-predict-write", daemon=True)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            if self._error is None:  # after a failure, keep taking jobs so that submit never blocks
                try:
                    self._written.append(job())
                except BaseException as error:
                    self._error = error

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, job: Callable[[], Path]) -> None:
        self._raise()
        self._jobs.put(job)

    def __enter__(self) -> _BackgroundWriter:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._jobs.put(None)
        self._thread.join()  # the jobs already taken are valid predictions: they are finished, not dropped
        if kind is None:
            self._raise()


def _write_prediction(record: PatchRecord, out_dir: Path, classes: np.ndarray) -> Path:
    profile = read_profile(record.image)
    path = prediction_path(out_dir, record.image)
    return write_raster(path, classes, crs=profile.get("crs"), transform=profile["transform"], overwrite=True)


def _patch_pixels(classes: torch.Tensor, target: torch.Tensor, learnt: torch.Tensor) -> list[tuple[int, int]]:
    """Per patch of a (B, H, W) batch: (pixels predicted right, pixels whose truth is a learnt class)."""
    scored = learnt[target.long()]
    right = ((classes == target) & scored).flatten(1).sum(1)
    return list(zip(right.tolist(), scored.flatten(1).sum(1).tolist(), strict=True))


def predict_records(
    config: FlairConfig,
    model: Models,
    records: Sequence[PatchRecord],
    out_dir: Path,
    *,
    with_labels: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
    weights: Weights = None,
    inputs: Sequence[Path] = (),
) -> PredictResult:
    """Write ``PRED_<basename>.tif`` (uint8 0-based targets, LZW, input georeferencing) for each record.

    Several networks (an ensemble) and ``evaluate.tta`` average their probabilities (see
    :class:`~flairkit.models.inference.Predictor`). ``out_dir/manifest.json`` records the weights (``weights``: the
    file, bundle or released model each network was loaded from, when known), the settings and the forward passes
    per patch; a folder made by other weights or settings is refused unless
    ``overwrite``. Complete predictions that already exist are kept and skipped (so a rerun finishes an
    interrupted run) unless ``overwrite``; damaged ones are computed again. No output may replace a patch, a
    mask, a CSV list or one of ``inputs``. With labels, the confusion matrix and the pixels right per patch are
    accumulated batch by batch (kept predictions are read back for them). The network runs on
    ``evaluate.device`` in ``evaluate.precision`` (autocast of the forward pass; the argmax is taken in float32);
    the files are written by a thread behind the model. ``progress`` is called with (patches predicted, patches to
    predict) as batches are done.
    """
    out_dir = Path(out_dir)
    predictions = [prediction_path(out_dir, record.image) for record in records]
    models = [model] if isinstance(model, nn.Module) else list(model)
    files = weights_files(weights)
    lists = [path for path in (config.data.train_csv, config.data.val_csv, config.data.test_csv) if path is not None]
    check_prediction_paths(records, predictions, [out_dir / MANIFEST], [*lists, *inputs, *files])
    passes = forward_passes(config.evaluate.tta, len(models))
    manifest = prediction_manifest(config, models, files, passes)
    if records:
        check_writable(predictions[0], overwrite=True)  # creates out_dir or says why not
    for stale in out_dir.glob(f".{PREDICTION_PREFIX}*.part"):
        stale.unlink(missing_ok=True)  # temporary file of a run that was killed while writing
    nomenclature = get_nomenclature(config.data.nomenclature)
    device = resolve_device(config.evaluate.device, DEVICE_KEY)
    precision = resolve_precision(config.evaluate.precision, device, PRECISION_KEY)
    models = [onnx_on_device(m, config, device) if isinstance(m, OnnxSegmenter) else m for m in models]
    predictor = Predictor(config, models, device, precision, config.evaluate.tta)
    result = PredictResult(out_dir=out_dir, passes=passes)
    confusion = ConfusionAccumulator(nomenclature.n_targets) if with_labels else None
    learnt = torch.zeros(256, dtype=torch.bool)
    learnt[nomenclature.enabled] = True
    existing = [not overwrite and path.exists() for path in predictions]
    claim_folder(out_dir, manifest, overwrite=overwrite, has_predictions=any(existing))
    todo = []
    for index, (record, path) in enumerate(zip(records, predictions, strict=True)):
        kept = kept_prediction(path, record.image, nomenclature.n_targets) if existing[index] else None
        if kept is None:
            todo.append(index)
            continue
        result.skipped.append(path)
        if confusion is not None:
            target = build_dataset(config, [record], with_labels=True).read_target(record)
            confusion.update(kept, target)
            pair = (torch.from_numpy(kept)[None], torch.from_numpy(target)[None])
            result.patch_pixels[path] = _patch_pixels(*pair, learnt)[0]
    if todo:
        dataset = build_dataset(config, [records[i] for i in todo], with_labels=with_labels)
        loader = _evaluation_loader(dataset, config, device, collate_patches)
        done = 0
        if progress is not None:
            progress(done, len(dataset))
        with (
            torch.inference_mode(),
            math_settings(device),
            _BackgroundWriter(2 * config.evaluate.batch_size, result.written) as writer,
        ):
            for batch in loader:
                batch = predictor.prepare(batch)
                classes = predictor.classes(batch)
                if confusion is not None:
                    confusion.update(classes, batch["target"])
                    counts = _patch_pixels(classes, batch["target"], learnt.to(classes.device))
                for k, (row, local) in enumerate(zip(classes.cpu().numpy(), batch["index"].tolist(), strict=True)):
                    writer.submit(functools.partial(_write_prediction, dataset.records[local], out_dir, row))
                    if confusion is not None:
                        result.patch_pixels[prediction_path(out_dir, dataset.records[local].image)] = counts[k]
                done += len(classes)
                if progress is not None:
                    progress(done, len(dataset))
    if confusion is not None:
        result.confmat = confusion.matrix
    return result


def predict(
    config: FlairConfig,
    model: Models,
    out_dir: Path,
    *,
    split: str = "test",
    overwrite: bool = False,
    progress: Progress | None = None,
    weights: Weights = None,
    inputs: Sequence[Path] = (),
) -> PredictResult:
    """Predict every patch of ``split`` of the config's dataset into ``out_dir``, then save the resolved config.

    ``weights``: the file, bundle or released model ``model`` was loaded from (recorded in the folder's manifest
    and as ``evaluate.checkpoint`` of the saved config); ``inputs``: other files no output may replace (the
    config file). See :func:`predict_records`.
    """
    records = split_records(config, split)
    check_not_inputs([Path(out_dir) / CONFIG_FILE], inputs)
    result = predict_records(
        config, model, records, out_dir, overwrite=overwrite, progress=progress, weights=weights, inputs=inputs
    )
    _save_config(config, out_dir, weights)
    return result


def _save_config(config: FlairConfig, folder: Path, weights: Weights) -> None:
    """The resolved config beside predictions, naming the weights file that made them (``evaluate.checkpoint``; the
    first of an ensemble, whose files the predictions' manifest lists)."""
    files = weights_files(weights)
    path = files[0] if files else None
    if path is not None:
        config = config.model_copy(deep=True)
        config.evaluate.checkpoint = path
    save_resolved_config(config, folder, CONFIG_FILE)


def evaluate(
    config: FlairConfig,
    model: Models,
    out_dir: Path,
    *,
    split: str = "test",
    overwrite: bool = False,
    progress: Progress | None = None,
    weights: Weights = None,
    inputs: Sequence[Path] = (),
) -> Metrics:
    """Predict ``split`` and compute the official metrics; writes ``predictions/``, ``config.yaml``, ``metrics/`` and
    ``report.html`` in ``out_dir`` and returns the metrics. ``progress``, ``weights`` and ``inputs`` as for
    :func:`predict`."""
    out_dir = Path(out_dir)
    check_writable(out_dir / "metrics" / "metrics.json", overwrite)
    check_writable(out_dir / REPORT_FILE, overwrite)
    records = split_records(config, split)
    check_not_inputs([out_dir / CONFIG_FILE], inputs)
    models = [model] if isinstance(model, nn.Module) else list(model)
    result = predict_records(
        config,
        models,
        records,
        out_dir / "predictions",
        with_labels=True,
        overwrite=overwrite,
        progress=progress,
        weights=weights,
        inputs=inputs,
    )
    _save_config(config, out_dir, weights)
    metrics = compute_metrics(result.confmat, get_nomenclature(config.data.nomenclature), config.evaluate.protocol)
    write_metrics(metrics, out_dir, overwrite=overwrite, inference=inference_settings(config.evaluate.tta, len(models)))
    write_evaluation_report(
        config, metrics, out_dir, records, split=split, patch_pixels=result.patch_pixels, overwrite=overwrite
    )
    return metrics


def evaluate_hub(
    config: FlairConfig,
    model: nn.Module,
    out_dir: Path,
    *,
    split: str = "test",
    overwrite: bool = False,
    progress: Progress | None = None,
    weights: Weights = None,
    inputs: Sequence[Path] = (),
) -> dict[str, Metrics]:
    """Score FLAIR-HUB's multimodal network (``model.hub``) on ``split``: per task (data.hub.labels), its confusion
    matrix and metrics under ``evaluate.protocol`` in ``out_dir/<TASK>/metrics/`` (LPIS also at each coarser level,
    in ``out_dir/ALL_LABEL-LPIS/level<k>/metrics/``), and ``config.yaml``; returns the metrics by folder. No
    prediction file is written. ``progress``, ``weights`` and ``inputs`` as for :func:`predict`.
    """
    out_dir = Path(out_dir)
    tasks = list(config.data.hub.labels)
    if config.evaluate.tta != "none":
        raise ConfigError(f"evaluate.tta={config.evaluate.tta} (--tta) is not offered with model.hub; set it to none")
    hub = multimodal_settings(config)
    dataset = build_hub_dataset(hub, split)
    check_not_inputs([out_dir / CONFIG_FILE], inputs)
    folders = _hub_metric_folders(tasks, hub.lpis_level)
    for name in folders:
        check_writable(out_dir / name / "metrics" / "metrics.json", overwrite)
    nomenclatures = {task: task_nomenclature(task, hub.lpis_level) for task in tasks}
    confusions = {task: ConfusionAccumulator(nomenclatures[task].n_targets) for task in tasks}
    device = resolve_device(config.evaluate.device, DEVICE_KEY)
    precision = resolve_precision(config.evaluate.precision, device, PRECISION_KEY)
    network = model.to(device).eval()
    statistics = normalization(config)
    loader = _evaluation_loader(dataset, config, device, collate_hub)
    done = 0
    with torch.inference_mode(), math_settings(device):
        for batch in loader:
            moved = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            with autocast(device, precision):
                logits = network(normalize_batch(moved, statistics))
            for task in tasks:
                disabled = nomenclatures[task].disabled
                confusions[task].update(masked_argmax(logits[task].float(), disabled), moved[task])
            done += len(batch["patch_id"])
            if progress is not None:
                progress(done, len(dataset))
    _save_config(config, out_dir, weights)
    protocol = config.evaluate.protocol
    results = {}
    for task in tasks:
        matrix = confusions[task].matrix
        if task == LPIS:
            for level, metrics in lpis_level_metrics(matrix, hub.lpis_level, protocol).items():
                results[folders[task] if level == hub.lpis_level else f"{task}/level{level}"] = metrics
        else:
            results[task] = compute_metrics(matrix, nomenclatures[task], protocol)
    for name, metrics in results.items():
        write_metrics(metrics, out_dir / name, overwrite=overwrite, inference=inference_settings("none", 1))
    return results


def _hub_metric_folders(tasks: Sequence[str], lpis_level: int) -> dict[str, str]:
    """The folders (under the output folder) of each task's metrics; LPIS adds ``level<k>`` for each coarser level."""
    folders = {task: task for task in tasks}
    if LPIS in tasks:
        folders.update({f"{LPIS}/level{level}": f"{LPIS}/level{level}" for level in range(lpis_level - 1, 0, -1)})
    return folders


def metrics_from_predictions(
    config: FlairConfig,
    pred_dir: Path,
    out_dir: Path,
    *,
    split: str = "test",
    overwrite: bool = False,
) -> Metrics:
    """Official metrics of existing ``PRED_*.tif`` files against the split's masks (``flair metrics``), written to
    ``out_dir/metrics/`` and returned."""
    from flairkit.evaluation.pairs import confusion_from_files, pair_predictions

    if hub_settings(config.data) is not None:
        # FLAIR-HUB labels are 0-based targets, not the FLAIR codes these pairs are read as.
        raise ConfigError(
            "flair metrics reads FLAIR #1/#2 masks (MSK_*.tif of class codes); for FLAIR-HUB data run "
            "`flair evaluate`, which predicts and scores the split with its COSIA labels"
        )
    check_writable(Path(out_dir) / "metrics" / "metrics.json", overwrite)
    nomenclature = get_nomenclature(config.data.nomenclature)
    masks = [r.mask for r in split_records(config, split) if r.mask is not None]
    confmat = confusion_from_files(pair_predictions(Path(pred_dir), masks), nomenclature)
    metrics = compute_metrics(confmat, nomenclature, config.evaluate.protocol)
    write_metrics(metrics, out_dir, overwrite=overwrite)
    return metrics


def _evaluation_loader(dataset: Any, config: FlairConfig, device: torch.device, collate: Callable) -> DataLoader:
    """The evaluation loader of ``dataset``: evaluate.batch_size, data.num_workers (default: the CPUs this process
    may use), pinned memory on CUDA."""
    workers = default_num_workers() if config.data.num_workers is None else config.data.num_workers
    if workers:
        ensure_worker_socket_dir()
    return DataLoader(
        dataset,
        batch_size=config.evaluate.batch_size,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
    )
