"""`flair demo` end to end on a tiny world: aerial U-Net with zone detection, and the U-T&T (demo-utt)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY_WORLD
from flairkit.errors import OutputExistsError
from flairkit.evaluation.predict import metrics_from_predictions
from flairkit.workflows.demo import DemoSettings, demo_config, run_demo


def tiny_settings(preset: str) -> DemoSettings:
    overrides = ["train.max_epochs=1", "data.batch_size=2", "detect.margin=16", "evaluate.batch_size=4"]
    return DemoSettings(world=TINY_WORLD, preset=preset, overrides=overrides)


@pytest.mark.parametrize(("preset", "protocol", "detects"), [("demo", "flair1", True), ("demo-utt", "flair2", False)])
def test_demo_trains_evaluates_and_reports(tmp_path, preset, protocol, detects):
    result = run_demo(tmp_path / "demo", tiny_settings(preset))
    assert result.metrics.protocol == protocol
    # The mIoU reported is the one of the predictions written, recounted from the files against the masks.
    config = demo_config(tiny_settings(preset), result.world.root, result.out)
    rescored = metrics_from_predictions(config, result.out / "evaluation" / "predictions", tmp_path / "rescored")
    assert rescored.miou == result.metrics.miou
    np.testing.assert_array_equal(rescored.per_class_iou, result.metrics.per_class_iou)
    assert result.training.best_checkpoint.is_file()
    report = result.report.read_text(encoding="utf-8")
    assert f"**{result.metrics.miou:.2f}**" in report
    assert (result.detection is not None) == detects
    assert ("## Zone detection" in report) == detects
    assert (result.out / "detection" / "landcover.tif").is_file() == detects
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run_demo(tmp_path / "demo", tiny_settings(preset))
