"""The real `flair` command line, end to end on a tiny generated world."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from flairkit.cli.main import app

runner = CliRunner()

TINY_TRAIN = [
    "model.encoder=resnet18",
    "model.encoder_weights=null",
    "data.batch_size=4",
    "data.num_workers=0",
    "train.max_epochs=1",
    "train.accelerator=cpu",
    "train.devices=1",
]


def _sets(*settings: str) -> list[str]:
    return [arg for setting in settings for arg in ("--set", setting)]


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_help_lists_every_command():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("train", "predict", "evaluate", "metrics", "detect", "models", "export", "data", "demo", "config"):
        assert command in result.output


def test_config_show_prints_the_resolved_yaml_and_bad_keys_exit_non_zero():
    shown = invoke("config", "show", "-c", "FLAIR-INC_rgb_15cl_resnet34-deeplabv3", "--set", "train.lr=0.5")
    assert shown.exit_code == 0 and "deeplabv3" in shown.output and "lr: 0.5" in shown.output
    bad = runner.invoke(app, ["config", "validate", "--set", "train.lrr=1"])
    assert bad.exit_code == 2
    assert "train.lrr: unknown key" in bad.output


@pytest.mark.slow
def test_train_evaluate_predict_and_metrics_from_the_command_line(tiny_world, tmp_path):
    common = ["-c", "demo", *_sets(f"data.root={tiny_world}", f"output_dir={tmp_path}", *TINY_TRAIN)]
    trained = invoke("train", *common, "--no-progress")
    assert trained.exit_code == 0, trained.output
    checkpoint = tmp_path / "demo" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    again = runner.invoke(app, ["train", *common, "--no-progress"])
    assert again.exit_code == 2 and "--resume" in again.output

    evaluated = invoke("evaluate", tmp_path / "eval", *common, "--checkpoint", checkpoint, "--no-progress")
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads((tmp_path / "eval" / "metrics" / "metrics.json").read_text())
    assert "Metrics (flair1 protocol" in evaluated.output
    assert len(metrics["per_class_iou"]) == len(metrics["classes"])

    predicted = invoke("predict", tmp_path / "pred", *common, "--checkpoint", checkpoint, "--no-progress")
    assert predicted.exit_code == 0, predicted.output
    assert list((tmp_path / "pred").glob("PRED_IMG_*.tif"))

    scored = invoke("metrics", tmp_path / "pred", "--out", tmp_path / "scored", *common)
    assert scored.exit_code == 0, scored.output
    assert (tmp_path / "scored" / "metrics" / "confmat.npy").is_file()

    compared = invoke(
        "compare", tmp_path / "eval", tmp_path / "scored", "--published", "FLAIR-INC_rgbie_15cl_resnet34-unet"
    )
    assert compared.exit_code == 0, compared.output
    assert "54.7" in compared.output
