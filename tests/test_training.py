"""`flair train` as a library: learning, checkpoints, resume, fine-tuning, and CPU DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import lightning as L
import pytest
import torch

from conftest import tiny_config
from flairkit.config import load_config
from flairkit.data.datamodule import FlairDataModule
from flairkit.errors import OutputExistsError
from flairkit.models.build import build_model
from flairkit.training.module import SegmentationTask
from flairkit.training.run import build_trainer, train

DDP_LOSS_TOLERANCE = 0.01
"""Relative: measured 0.15% after 2 epochs (batch-norm statistics over 2 samples per process instead of 4)."""
DDP_MIOU_TOLERANCE = 0.01
"""Absolute, on mIoU as a fraction: measured 0.0012."""


def _validation_loss(config) -> float:
    L.seed_everything(config.train.seed, verbose=False)
    task = SegmentationTask(config, model=build_model(config, pretrained_encoder=False))
    trainer = build_trainer(config, config.run_dir / "untrained", progress=False, logger=False, callbacks=[])
    return trainer.validate(task, datamodule=FlairDataModule(config), verbose=False)[0]["val_loss"]


def test_two_epochs_improve_validation_loss(tiny_world, tmp_path):
    config = tiny_config(tiny_world, tmp_path)
    before = _validation_loss(config)
    result = train(config, progress=False)
    assert result.val_loss < before
    assert result.best_checkpoint.is_file() and result.last_checkpoint.is_file()
    assert (result.run_dir / "config.yaml").is_file()
    assert load_config(result.run_dir / "config.yaml") == config
    assert list((result.run_dir / "logs").glob("events.out.tfevents*"))
    assert (result.run_dir / "csv" / "attempt_0" / "metrics.csv").is_file()
    summary = json.loads((result.run_dir / "train_summary.json").read_text())
    assert summary["epochs"] == 2


def test_checkpoint_keys_follow_the_official_layout(tiny_world, tmp_path):
    result = train(tiny_config(tiny_world, tmp_path, "train.max_epochs=1"), progress=False)
    state = torch.load(result.last_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert "criterion.weight" in state
    assert any(key.startswith("model.seg_model.encoder.") for key in state)
    assert any(key.startswith("model.seg_model.segmentation_head.0.") for key in state)


def test_existing_run_is_not_overwritten_without_asking(tiny_world, tmp_path):
    config = tiny_config(tiny_world, tmp_path, "train.max_epochs=1")
    train(config, progress=False)
    with pytest.raises(OutputExistsError, match="--resume"):
        train(config, progress=False)
    train(config, overwrite=True, progress=False)


def test_resume_continues_the_same_run_to_the_same_metrics(tiny_world, tmp_path):
    # The first run stops after one epoch through max_epochs, so the schedule must not depend on it (plateau
    # does not; a real interruption of one config is tested with SIGKILL in test_crash_recovery.py).
    settings = ("train.deterministic=true", "train.scheduler=plateau")
    straight = train(tiny_config(tiny_world, tmp_path / "a", *settings), progress=False)
    first = train(tiny_config(tiny_world, tmp_path / "b", "train.max_epochs=1", *settings), progress=False)
    resumed_config = tiny_config(tiny_world, tmp_path / "b", *settings, f"train.resume_from={first.last_checkpoint}")
    resumed = train(resumed_config, progress=False)
    assert resumed.epochs == straight.epochs == 2
    assert resumed.val_loss == pytest.approx(straight.val_loss, rel=1e-5)
    assert resumed.val_miou == pytest.approx(straight.val_miou, abs=1e-6)


class _WeightsAtStart(L.Callback):
    """Keeps a copy of the network's weights as training starts, before any step."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.weights = {key: value.detach().clone() for key, value in pl_module.model.state_dict().items()}


def test_fine_tuning_starts_from_given_weights(tiny_world, tmp_path):
    base = train(tiny_config(tiny_world, tmp_path / "base", "train.max_epochs=1"), progress=False)
    config = tiny_config(
        tiny_world, tmp_path / "tuned", "train.max_epochs=1", f"train.init_weights={base.last_checkpoint}"
    )
    at_start = _WeightsAtStart()
    tuned = train(config, progress=False, callbacks=[at_start])
    assert tuned.epochs == 1 and tuned.best_checkpoint.is_file()
    state = torch.load(base.last_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    source = {key.removeprefix("model."): value for key, value in state.items() if key.startswith("model.")}
    assert at_start.weights.keys() == source.keys()
    assert all(torch.equal(at_start.weights[key], value) for key, value in source.items())


def _cli_train(world, run_root, *overrides):
    command = [sys.executable, "-m", "flairkit", "train", "-c", "demo", "--no-progress"]
    settings = [
        f"data.root={world}",
        f"output_dir={run_root}",
        "model.encoder=resnet18",
        "model.encoder_weights=null",
        "data.num_workers=0",
        "data.augmentation_probability=0",
        "train.max_epochs=2",
        "train.lr=0.0003",
        "train.accelerator=cpu",
        "train.deterministic=true",
        *overrides,
    ]
    for setting in settings:
        command += ["--set", setting]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((run_root / "demo" / "train_summary.json").read_text())


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_matches_one_process_with_the_same_global_batch(tiny_world, tmp_path):
    single = _cli_train(tiny_world, tmp_path / "single", "train.devices=1", "data.batch_size=4")
    ddp = _cli_train(tiny_world, tmp_path / "ddp", "train.devices=2", "train.strategy=ddp", "data.batch_size=2")
    assert ddp["epochs"] == single["epochs"] == 2
    # Same samples per global step; batch-norm statistics are per process on CPU (SyncBatchNorm needs GPUs).
    assert ddp["val_loss"] == pytest.approx(single["val_loss"], rel=DDP_LOSS_TOLERANCE)
    assert ddp["val_miou"] == pytest.approx(single["val_miou"], abs=DDP_MIOU_TOLERANCE)


@pytest.mark.slow
def test_multimodal_utt_trains_and_evaluates_through_the_same_functions(tiny_world, tmp_path):
    from flairkit.evaluation.predict import evaluate, metrics_from_predictions
    from flairkit.models.loader import load_model

    config = tiny_config(
        tiny_world,
        tmp_path,
        "train.max_epochs=1",
        "data.nomenclature=13cl",
        "data.sentinel.enabled=true",
        "data.sentinel.sat_patch_size=16",
        "data.sentinel.filter_clouds=true",
        "data.sentinel.monthly_average=true",
        "model.multimodal=true",
        "model.encoder=resnet34",
        "model.fusion.modality_dropout=0.5",
    )
    result = train(config, progress=False)
    state = torch.load(result.last_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert any(key.startswith("model.arch_vhr.") for key in state)
    assert any(key.startswith("model.arch_hr.") for key in state)
    metrics = evaluate(config, load_model(config, result.last_checkpoint), tmp_path / "eval")
    assert metrics.protocol == "flair2"
    # The mIoU reported is the one of the predictions written, recounted from the files against the masks.
    rescored = metrics_from_predictions(config, tmp_path / "eval" / "predictions", tmp_path / "rescored")
    assert rescored.miou == metrics.miou
    assert json.loads((tmp_path / "eval" / "metrics" / "metrics.json").read_text())["Avg_metrics"][0] == metrics.miou
