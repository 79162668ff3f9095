"""``flair reproduce`` on a FLAIR-1 preset: train, evaluate under the paper's protocol, set the figures side by side."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from flairkit.cli.main import app

runner = CliRunner()

TINY_RUN = (
    "model.encoder=resnet18",
    "model.encoder_weights=null",
    "data.batch_size=2",
    "data.num_workers=0",
    "train.max_epochs=1",
    "train.accelerator=cpu",
    "train.devices=1",
    "evaluate.batch_size=4",
)


@pytest.mark.slow
def test_reproduce_sets_the_test_metrics_beside_the_datapaper_figures(tiny_world, tmp_path):
    overrides = (*TINY_RUN, f"data.root={tiny_world}", f"output_dir={tmp_path}")
    args = ["reproduce", "flair1-unet-resnet34", *[a for o in overrides for a in ("--set", o)], "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    run = tmp_path / "flair1-unet-resnet34"
    ours = json.loads((run / "evaluation" / "metrics" / "metrics.json").read_text())
    rows = {row[0]: row[1:] for row in csv.reader((run / "comparison" / "comparison.csv").read_text().splitlines())}
    assert rows["protocol"] == ["flair1", "flair1"]
    miou = dict(zip(ours["Avg_metrics_name"], ours["Avg_metrics"], strict=True))["mIoU"]
    assert [float(v) for v in rows["mIoU"]] == [pytest.approx(miou, abs=1e-6), 54.43]

    again = runner.invoke(app, args)
    assert again.exit_code != 0
    assert "--overwrite" in again.output
