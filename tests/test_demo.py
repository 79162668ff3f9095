"""`flair demo` end to end on a tiny world: aerial U-Net with zone detection, and the U-T&T (demo-utt)."""

from __future__ import annotations

import pytest
from rich.console import Console

from conftest import TINY_WORLD
from flairkit.demo import DemoSettings, run_demo
from flairkit.errors import OutputExistsError


def tiny_settings(preset: str) -> DemoSettings:
    overrides = ["train.max_epochs=1", "data.batch_size=2", "detect.margin=16", "evaluate.batch_size=4"]
    return DemoSettings(world=TINY_WORLD, preset=preset, overrides=overrides)


@pytest.mark.parametrize(("preset", "protocol", "detects"), [("demo", "flair1", True), ("demo-utt", "flair2", False)])
def test_demo_trains_evaluates_and_reports(tmp_path, preset, protocol, detects):
    console = Console(record=True, width=120)
    result = run_demo(tmp_path / "demo", tiny_settings(preset), console=console)
    assert result.metrics.protocol == protocol and 0 <= result.metrics.miou <= 100
    assert result.training.best_checkpoint.is_file()
    report = result.report.read_text(encoding="utf-8")
    assert f"**{result.metrics.miou:.2f}**" in report
    assert (result.detection is not None) == detects
    assert ("## Zone detection" in report) == detects
    assert (result.out / "detection" / "landcover.tif").is_file() == detects
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run_demo(tmp_path / "demo", tiny_settings(preset), console=console)
