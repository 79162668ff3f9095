"""Comparing runs (and published figures) class by class."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from flairkit.cli.compare import comparison_view
from flairkit.config.schema import PublishedMetrics
from flairkit.errors import DataError, OutputExistsError
from flairkit.evaluation.compare import class_key, compare_runs, published_rows, write_comparison
from flairkit.evaluation.protocols import compute_metrics
from flairkit.evaluation.report import write_metrics
from flairkit.nomenclature import get_nomenclature


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[list[Path], list]:
    root = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(11)
    folders, metrics = [], []
    for name, protocol in (("unet", "flair1"), ("deeplab", "flair1")):
        confmat = rng.integers(0, 100, size=(19, 19)) + np.diag(rng.integers(200, 900, size=19))
        m = compute_metrics(confmat, get_nomenclature("15cl"), protocol)
        write_metrics(m, root / name, figures=False)
        folders.append(root / name)
        metrics.append(m)
    return folders, metrics


def test_runs_become_columns(runs):
    folders, metrics = runs
    result = compare_runs([folders[0], folders[1] / "metrics"])
    assert result.labels == ["unet", "deeplab"]
    assert result.classes == metrics[0].class_names
    assert result.protocols == ["flair1", "flair1"] and not result.mixed_protocols
    averages = dict(result.average_rows())
    assert averages["mIoU"] == pytest.approx([metrics[0].miou, metrics[1].miou])
    assert averages["Overall Accuracy"] == pytest.approx([m.overall_accuracy for m in metrics])
    ious = dict(result.iou_rows())
    assert ious["water"] == pytest.approx([m.per_class_iou[m.class_names.index("water")] for m in metrics])


def test_same_run_twice_gets_distinct_labels(runs):
    folders, _ = runs
    assert compare_runs([folders[0], folders[0]]).labels == ["unet", "unet #2"]


def test_explicit_labels(runs):
    folders, _ = runs
    assert compare_runs(folders, labels=["ours", "theirs"]).labels == ["ours", "theirs"]
    with pytest.raises(ValueError, match="1 labels given for 2 runs"):
        compare_runs(folders, labels=["ours"])


def test_published_figures_sit_beside_ours(runs):
    folders, _ = runs
    published = PublishedMetrics(
        source="FLAIR-INC card",
        miou=58.093,
        overall_accuracy=74.887,
        per_class_iou={"Building": 74.671, "swimming_pool": 38.207, "unknown class": 1.0},
        protocol="model-card",
    )
    column = published_rows(published)
    assert column.label == "published: FLAIR-INC card"
    assert column.averages["mIoU"] == 58.093 and column.averages["Fscore"] is None
    result = compare_runs(folders, [published])
    assert result.mixed_protocols
    ious = dict(result.iou_rows())
    assert ious["building"][2] == 74.671 and ious["swimming pool"][2] == 38.207  # matched despite case and '_'
    assert ious["water"][2] is None
    assert ious["unknown class"] == [None, None, 1.0]
    assert dict(result.average_rows())["mIoU"][2] == 58.093
    assert compare_runs(folders).with_published(published).labels == result.labels


def test_print_comparison_warns_on_mixed_protocols(runs):
    folders, metrics = runs
    result = compare_runs(folders, [PublishedMetrics(source="paper", miou=54.43)])
    result.columns[2] = published_rows(PublishedMetrics(source="paper", miou=54.43, protocol="flair2"))
    console = Console(record=True, width=160)
    console.print(comparison_view(result))
    text = console.export_text()
    assert "IoU impervious surface" in text and f"{metrics[1].miou:.2f}" in text and "54.43" in text
    assert "different protocols (flair1, flair2)" in text


def test_write_comparison(runs, tmp_path):
    folders, metrics = runs
    result = compare_runs(folders)
    paths = write_comparison(result, tmp_path)
    with paths["table"].open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["metric", "unet", "deeplab"]
    assert rows[1] == ["protocol", "flair1", "flair1"]
    by_name = {row[0]: row[1:] for row in rows[2:]}
    assert [float(v) for v in by_name["mIoU"]] == pytest.approx([m.miou for m in metrics], abs=1e-6)
    assert len(by_name) == 5 + len(metrics[0].class_names)
    assert paths["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(OutputExistsError):
        write_comparison(result, tmp_path)
    write_comparison(result, tmp_path, overwrite=True)
    assert not list(tmp_path.glob("*.part"))


def test_undefined_values_from_flair2_runs(tmp_path):
    confmat = np.zeros((13, 13), dtype=np.int64)
    confmat[0, 0], confmat[1, 1] = 10, 5
    write_metrics(compute_metrics(confmat, get_nomenclature("13cl")), tmp_path / "f2", figures=False)
    content = json.loads((tmp_path / "f2" / "metrics" / "metrics.json").read_text())
    assert content["per_class_iou"][2] is None
    result = compare_runs([tmp_path / "f2"])
    assert dict(result.iou_rows())["impervious surface"] == [None]
    assert dict(result.average_rows())["mIoU"] == [100.0]
    write_comparison(result, tmp_path / "out")


def test_missing_metrics_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="flair evaluate"):
        compare_runs([tmp_path])
    with pytest.raises(DataError, match="nothing to compare"):
        compare_runs([])


def test_class_key():
    assert class_key("Swimming_pool") == class_key("swimming pool") == class_key(" swimming-pool ")
