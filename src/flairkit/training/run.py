"""``flair train`` as a library function: fit a model on a config's dataset, with checkpoints and logs."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from flairkit.atomic import write_text_atomic
from flairkit.config.loading import save_resolved_config
from flairkit.config.schema import FlairConfig
from flairkit.data.datamodule import FlairDataModule
from flairkit.errors import ConfigError, OutputExistsError
from flairkit.models.build import build_model
from flairkit.training.module import SegmentationTask

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"


@dataclass
class TrainResult:
    """Where a training run left its outputs and how it ended."""

    run_dir: Path
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    epochs: int
    val_loss: float | None
    val_miou: float | None

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
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _next_csv_version(run_dir: Path) -> str:
    """A fresh CSV log folder per launch, so that resuming never deletes the earlier metrics.csv."""
    folder = run_dir / "csv"
    attempt = 0
    while (folder / f"attempt_{attempt}").exists():
        attempt += 1
    return f"attempt_{attempt}"


def build_trainer(config: FlairConfig, run_dir: Path, progress: bool = True, **overrides: Any) -> L.Trainer:
    """A Lightning trainer with FLAIR's checkpointing, early stopping and logs for ``config``."""
    train = config.train
    callbacks: list[L.Callback] = [
        ModelCheckpoint(
            dirpath=run_dir / CHECKPOINT_DIR,
            filename="ckpt-{epoch:02d}-{val_loss:.2f}",
            monitor="val_loss",
            mode="min",
            save_top_k=1,
            save_last=True,
            every_n_epochs=train.checkpoint_every_n_epochs,
        ),
        LearningRateMonitor(logging_interval="epoch"),
    ]
    if train.early_stopping_patience is not None:
        callbacks.append(EarlyStopping(monitor="val_loss", mode="min", patience=train.early_stopping_patience))
    if train.sync_batchnorm and not torch.cuda.is_available():
        raise ConfigError("train.sync_batchnorm needs GPUs (SyncBatchNorm has no CPU implementation); set it to false")
    strategy = train.strategy
    if config.model.multimodal and strategy == "ddp":
        # U-T&T has parameters without gradients (U-TAE out_conv, fusion of stages the decoder skips).
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


def train(config: FlairConfig, *, overwrite: bool = False, progress: bool = True) -> TrainResult:
    """Train the model of ``config``; resume when ``config.train.resume_from`` is set.

    Writes the resolved config, TensorBoard and CSV logs and checkpoints (best on val_loss + last)
    under ``config.run_dir``.
    """
    from flairkit.models.checkpoints import load_weights

    resuming = config.train.resume_from is not None
    run_dir = _prepare_run_dir(config, overwrite, resuming)
    L.seed_everything(config.train.seed, workers=True, verbose=False)
    if config.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    save_resolved_config(config, run_dir)
    starts_from_file = resuming or config.train.init_weights is not None
    model = build_model(config, pretrained_encoder=not starts_from_file)
    if config.train.init_weights is not None and not resuming:
        load_weights(model, config.train.init_weights)
    task = SegmentationTask(config, model=model)
    datamodule = FlairDataModule(config)
    trainer = build_trainer(config, run_dir, progress=progress)
    trainer.fit(task, datamodule=datamodule, ckpt_path=config.train.resume_from)
    checkpoint_callback = trainer.checkpoint_callback
    best = Path(checkpoint_callback.best_model_path) if checkpoint_callback.best_model_path else None
    metrics = trainer.callback_metrics
    result = TrainResult(
        run_dir=run_dir,
        best_checkpoint=best,
        last_checkpoint=last_checkpoint(run_dir),
        epochs=trainer.current_epoch,
        val_loss=float(metrics["val_loss"]) if "val_loss" in metrics else None,
        val_miou=float(metrics["val_miou"]) if "val_miou" in metrics else None,
    )
    if trainer.is_global_zero:
        write_text_atomic(run_dir / "train_summary.json", result.to_json())
    return result
