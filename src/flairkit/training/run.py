"""``flair train`` as a library function: fit a model on a config's dataset, with checkpoints and logs."""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import EarlyStopping, EMAWeightAveraging, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader

from flairkit.allocator import retained_freed_memory
from flairkit.atomic import atomic_path, check_writable, write_text_atomic
from flairkit.config.loading import save_resolved_config
from flairkit.config.schema import RELEASE_WEIGHTS, FlairConfig
from flairkit.data.datamodule import FlairDataModule
from flairkit.data.datasets import collate_patches
from flairkit.data.hub.multimodal import HubDataModule
from flairkit.devices import math_settings
from flairkit.errors import ConfigError, OutputExistsError
from flairkit.models.build import build_model
from flairkit.nomenclature import get_nomenclature
from flairkit.training.freezing import FreezeEncoder
from flairkit.training.hub import IGN_METRIC, MAIN_METRIC, HubSegmentationTask
from flairkit.training.losses import aerial_class_weights, balanced_class_weights
from flairkit.training.module import SegmentationTask
from flairkit.training.recalibration import recalibrate_batchnorm

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
RECALIBRATED_CHECKPOINT = "recalibrated.ckpt"


@dataclass
class TrainResult:
    """Where a training run left its outputs and how it ended."""

    run_dir: Path
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    epochs: int
    val_loss: float | None
    val_miou: float | None
    adaptations: tuple[str, ...] = ()
    """How the init weights were adapted to other classes or bands (fine-tuning), one sentence each."""
    recalibrated_checkpoint: Path | None = None
    """The final weights with BatchNorm statistics measured again (``train.recalibrate_batchnorm``), else None."""

    def to_json(self) -> str:
        return json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}, indent=2)


def last_checkpoint(run_dir: Path) -> Path | None:
    """The ``last.ckpt`` of a run, if it exists."""
    path = Path(run_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT
    return path if path.is_file() else None


def _prepare_run_dir(config: FlairConfig, overwrite: bool, resuming: bool) -> Path:
    run_dir = config.run_dir
    checkpoints = run_dir / CHECKPOINT_DIR
    if checkpoints.exists() and any(checkpoints.iterdir()) and not resuming:
        if not overwrite:
            raise OutputExistsError(
                f"{run_dir} already holds checkpoints; resume it with --resume, choose another name "
                "(--set name=...), or pass --overwrite to start again from scratch"
            )
        for child in ("checkpoints", "logs", "csv"):
            shutil.rmtree(run_dir / child, ignore_errors=True)
    check_writable(run_dir / "config.yaml", overwrite=True)  # creates run_dir, or a DataError naming it
    return run_dir


def _next_csv_version(run_dir: Path) -> str:
    """A fresh CSV log folder per launch, so that resuming never deletes the earlier metrics.csv."""
    folder = run_dir / "csv"
    attempt = 0
    while (folder / f"attempt_{attempt}").exists():
        attempt += 1
    return f"attempt_{attempt}"


def build_trainer(
    config: FlairConfig,
    run_dir: Path,
    progress: bool = True,
    extra_callbacks: Sequence[L.Callback] = (),
    **overrides: Any,
) -> L.Trainer:
    """A Lightning trainer with FLAIR checkpoints, early stopping, logs for ``config``, and ``extra_callbacks``."""
    train = config.train
    if config.model.hub is None:
        monitor, mode, filename = "val_loss", "min", "ckpt-{epoch:02d}-{val_loss:.2f}"
    else:
        monitor = IGN_METRIC if train.hub.ign_weighted_iou_checkpoint else MAIN_METRIC
        mode, filename = "max", f"ckpt-{{epoch:02d}}-{{{monitor}:.4f}}"
    callbacks: list[L.Callback] = [
        ModelCheckpoint(
            dirpath=run_dir / CHECKPOINT_DIR,
            filename=filename,
            monitor=monitor,
            mode=mode,
            save_top_k=1,
            save_last=True,
            every_n_epochs=train.checkpoint_every_n_epochs,
        ),
        LearningRateMonitor(logging_interval="epoch"),
    ]
    if train.early_stopping_patience is not None:
        callbacks.append(EarlyStopping(monitor="val_loss", mode="min", patience=train.early_stopping_patience))
    if train.freeze_encoder_epochs:
        callbacks.append(FreezeEncoder(train.freeze_encoder_epochs))
    if train.ema_decay is not None:
        # Validation runs on the averaged weights, checkpoints store them (the raw ones under
        # "current_model_state"), and training ends with them in the model.
        callbacks.append(EMAWeightAveraging(decay=train.ema_decay, use_buffers=True))
    callbacks.extend(extra_callbacks)
    if train.sync_batchnorm and not torch.cuda.is_available():
        raise ConfigError("train.sync_batchnorm needs GPUs (SyncBatchNorm has no CPU implementation); set it to false")
    strategy = train.strategy
    unused = config.model.multimodal or config.model.provider == "huggingface" or train.freeze_encoder_epochs
    unused = unused or config.model.hub is not None
    if unused and strategy == "ddp":
        # U-T&T has parameters without gradients (U-TAE out_conv, fusion of stages the decoder skips), and so have a
        # frozen encoder and transformers' UperNet (the auxiliary head IGN's loss ignores, SwinBackbone's final norm),
        # and FLAIR-HUB's network (U-TAE's class scores feed only auxiliary heads when single-date encoders exist).
        strategy = "ddp_find_unused_parameters_true"
    settings: dict[str, Any] = {
        "accelerator": train.accelerator,
        "devices": train.devices,
        "num_nodes": train.num_nodes,
        "strategy": strategy,
        "precision": train.precision,
        "sync_batchnorm": train.sync_batchnorm,
        "max_epochs": train.max_epochs,
        "deterministic": train.deterministic,
        "limit_train_batches": train.limit_train_batches,
        "limit_val_batches": train.limit_val_batches,
        "log_every_n_steps": train.log_every_n_steps,
        "default_root_dir": run_dir,
        "callbacks": callbacks,
        "logger": [
            TensorBoardLogger(run_dir, name="logs", version=""),
            CSVLogger(run_dir, name="csv", version=_next_csv_version(run_dir)),
        ],
        "enable_progress_bar": progress,
        "use_distributed_sampler": False,
        "enable_model_summary": progress,
    }
    settings.update(overrides)
    return L.Trainer(**settings)


QUIET_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)",
    r".*overridden `on_after_batch_transfer`",
    r".*is smaller than the logging interval",
    r".*does not have many workers",
    r"Checkpoint directory .* exists and is not empty",  # resuming: flairkit refuses other non-empty folders
    r".*self.log\('val_.*sync_dist=True",  # validation metrics are computed from sums over every process
)
"""Lightning notices that do not apply to flairkit's loaders and hooks."""


def heap_setting_applies(config: FlairConfig, trainer: L.Trainer) -> bool:
    """Whether ``train.retain_freed_memory`` applies to this run: on, and the trainer trains on CPUs.

    Decided from the accelerator Lightning resolved (``auto`` included): on a GPU the activations live in
    the GPU's memory, not in glibc's heap.
    """
    return config.train.retain_freed_memory and isinstance(trainer.accelerator, CPUAccelerator)


def _class_weights(config: FlairConfig, datamodule: FlairDataModule) -> torch.Tensor | None:
    """Loss weights of the config's class balancing, measured on the train masks (None: the nomenclature's)."""
    if config.train.class_balancing == "none":
        return None
    counts = datamodule.train_patch_pixels().sum(axis=0)
    return balanced_class_weights(aerial_class_weights(get_nomenclature(config.data.nomenclature)), counts)


def _write_recalibrated(
    config: FlairConfig, task: SegmentationTask, datamodule: FlairDataModule, trainer: L.Trainer, run_dir: Path
) -> Path:
    """Measure the final weights' BatchNorm statistics over the training patches, each once and without
    augmentation, and write them as ``checkpoints/recalibrated.ckpt``."""
    loader = DataLoader(
        datamodule.datasets["train"],
        batch_size=config.data.batch_size,
        num_workers=config.data.num_workers or 0,
        collate_fn=collate_patches,
    )
    device = trainer.strategy.root_device
    task.to(device)

    def forward(batch: dict[str, Any]) -> object:
        return task(task.prepare_batch(task.transfer_batch_to_device(batch, device, 0)))

    recalibrate_batchnorm(task, loader, forward=forward)
    task.cpu()
    checkpoint = {
        "state_dict": task.state_dict(),
        "hyper_parameters": dict(task.hparams),
        "epoch": trainer.current_epoch,
        "global_step": trainer.global_step,
        "pytorch-lightning_version": L.__version__,
    }
    path = run_dir / CHECKPOINT_DIR / RECALIBRATED_CHECKPOINT
    with atomic_path(path, overwrite=True) as temporary:
        torch.save(checkpoint, temporary)
    return path


def _check_hub_training(config: FlairConfig) -> None:
    """Refuse the train settings the FLAIR-HUB multimodal network does not support, naming the key."""
    train = config.train
    unsupported = {
        "train.class_balancing": train.class_balancing != "none",
        "train.recalibrate_batchnorm": train.recalibrate_batchnorm,
        "data.class_aware_sampling": config.data.class_aware_sampling > 0,
        "train.freeze_encoder_epochs": train.freeze_encoder_epochs > 0,
    }
    for key, on in unsupported.items():
        if on:
            raise ConfigError(f"{key} is not supported with model.hub (FLAIR-HUB's network); leave it at its default")
    if train.init_weights is not None and str(train.init_weights) == RELEASE_WEIGHTS:
        raise ConfigError(
            "train.init_weights=release: give the released FLAIR-HUB model's file (flair models --download NAME "
            "prints where it is) as train.init_weights"
        )


def train(
    config: FlairConfig, *, overwrite: bool = False, progress: bool = True, callbacks: Sequence[L.Callback] = ()
) -> TrainResult:
    """Train the model of ``config``; resume when ``config.train.resume_from`` is set.

    Writes the resolved config, TensorBoard and CSV logs and checkpoints (best on val_loss + last)
    under ``config.run_dir``, and with ``train.recalibrate_batchnorm`` the final weights recalibrated
    (``recalibrated.ckpt``). ``callbacks`` are Lightning callbacks run besides flairkit's own.
    """
    from flairkit.models.hub import load_hub_weights
    from flairkit.models.weights import check_resume_checkpoint, load_init_weights, safe_unpickling

    hub = config.model.hub is not None
    if hub:
        _check_hub_training(config)
    resuming = config.train.resume_from is not None
    if resuming:
        check_resume_checkpoint(config.train.resume_from)
    datamodule: FlairDataModule | HubDataModule = HubDataModule(config) if hub else FlairDataModule(config)
    # Bad lists, metadata or centroids fail here, before the run folder is created or an old run deleted.
    datamodule.setup("fit")
    run_dir = _prepare_run_dir(config, overwrite, resuming)
    L.seed_everything(config.train.seed, workers=True, verbose=False)
    if config.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    save_resolved_config(config, run_dir)
    starts_from_file = resuming or config.train.init_weights is not None
    model = build_model(config, pretrained_encoder=not starts_from_file)
    adaptations: tuple[str, ...] = ()
    if config.train.init_weights is not None and not resuming:
        if hub:
            load_hub_weights(model, config.train.init_weights)
        else:
            adaptations = load_init_weights(model, config).adaptations
    if hub:
        task: SegmentationTask = HubSegmentationTask(config, model=model)
    else:
        task = SegmentationTask(config, model=model, class_weights=_class_weights(config, datamodule))
    trainer = build_trainer(config, run_dir, progress=progress, extra_callbacks=callbacks)
    with warnings.catch_warnings():
        for pattern in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        # Lightning unpickles the resumed checkpoint itself: never with code execution allowed.
        with (
            safe_unpickling(),
            retained_freed_memory(heap_setting_applies(config, trainer)),
            math_settings(
                trainer.strategy.root_device,
                training=True,
                precision=config.train.precision,
                fixed_shapes=not config.train.deterministic,
            ),
        ):
            trainer.fit(task, datamodule=datamodule, ckpt_path=config.train.resume_from, weights_only=True)
    checkpoint_callback = trainer.checkpoint_callback
    best = Path(checkpoint_callback.best_model_path) if checkpoint_callback.best_model_path else None
    metrics = trainer.callback_metrics
    recalibrated = None
    if config.train.recalibrate_batchnorm and trainer.is_global_zero:
        recalibrated = _write_recalibrated(config, task, datamodule, trainer, run_dir)
    result = TrainResult(
        run_dir=run_dir,
        best_checkpoint=best,
        last_checkpoint=last_checkpoint(run_dir),
        epochs=trainer.current_epoch,
        val_loss=float(metrics["val_loss"]) if "val_loss" in metrics else None,
        val_miou=float(metrics["val_miou"]) if "val_miou" in metrics else None,
        adaptations=adaptations,
        recalibrated_checkpoint=recalibrated,
    )
    if trainer.is_global_zero:
        write_text_atomic(run_dir / "train_summary.json", result.to_json())
    return result
