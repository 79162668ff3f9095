"""Metrics files: content, atomic writing, refusal to overwrite, reading back, figures and terminal table."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from rich.console import Console

from flairkit.cli.metrics import metrics_view
from flairkit.errors import DataError, OutputExistsError
from flairkit.evaluation import report
from flairkit.evaluation.figures import normalize_confusion, plot_confusion
from flairkit.evaluation.protocols import Metrics, compute_metrics
from flairkit.evaluation.report import read_metrics, write_metrics
from flairkit.nomenclature import get_nomenclature

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
OFFICIAL_KEYS = [
    "Avg_metrics_name",
    "Avg_metrics",
    "classes",
    "per_class_iou",
    "per_class_fscore",
    "per_class_precision",
    "per_class_recall",
]


@pytest.fixture(scope="module")
def metrics() -> Metrics:
    rng = np.random.default_rng(7)
    confmat = rng.integers(0, 200, size=(19, 19)) + np.diag(rng.integers(500, 2000, size=19))
    confmat[13, :] = 0  # snow absent from the truth
    return compute_metrics(confmat, get_nomenclature("15cl"), "model-card")


@pytest.fixture(scope="module")
def written(metrics, tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    run = tmp_path_factory.mktemp("run")
    return run, write_metrics(metrics, run)


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50


def test_files_are_written_under_metrics(written):
    run, paths = written
    assert {p.name for p in (run / "metrics").iterdir()} == {p.name for p in paths.values()}
    assert not list(run.rglob("*.part"))
    assert set(paths) == {"confmat", "metrics", "per_class", "report", "confusion_precision", "confusion_recall", "iou"}


def test_confmat_is_the_full_int64_matrix(written, metrics):
    _, paths = written
    saved = np.load(paths["confmat"])
    assert saved.dtype == np.int64
    np.testing.assert_array_equal(saved, metrics.confmat)
    assert saved.shape == (19, 19)


def test_metrics_json_has_the_official_keys_and_the_protocol(written, metrics):
    _, paths = written
    content = json.loads(paths["metrics"].read_text())
    assert list(content) == [*OFFICIAL_KEYS, "protocol", "nomenclature"]
    assert content["protocol"] == "model-card" and content["nomenclature"] == "15cl"
    assert content["Avg_metrics"] == pytest.approx(metrics.averages)
    assert content["classes"] == metrics.class_names
    assert content["per_class_recall"] == pytest.approx(metrics.per_class_recall)


def test_per_class_csv(written, metrics):
    _, paths = written
    with paths["per_class"].open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["class", "iou", "fscore", "precision", "recall", "support_pixels"]
    assert [r["class"] for r in rows] == metrics.class_names
    assert [float(r["iou"]) for r in rows] == pytest.approx(metrics.per_class_iou, abs=1e-6)
    support = [int(r["support_pixels"]) for r in rows]
    assert support == [int(metrics.confmat[i].sum()) for i in metrics.kept]
    assert support[metrics.class_names.index("snow")] == 0


def test_report_md(written, metrics):
    _, paths = written
    text = paths["report"].read_text()
    assert "model-card" in text and f"{metrics.miou:.2f}" in text
    assert "snow \\*" in text and "left out of the averages" in text
    assert "![iou_per_class.png](iou_per_class.png)" in text


def test_figures_are_valid_pngs(written):
    _, paths = written
    for key in ("confusion_precision", "confusion_recall", "iou"):
        assert_png(paths[key])


def test_refuses_to_overwrite_then_overwrites(metrics, tmp_path):
    write_metrics(metrics, tmp_path, figures=False)
    json_path = tmp_path / "metrics" / "metrics.json"
    json_path.write_text("{}")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_metrics(metrics, tmp_path, figures=False)
    assert json_path.read_text() == "{}"
    paths = write_metrics(metrics, tmp_path, overwrite=True, figures=False)
    assert json.loads(paths["metrics"].read_text())["protocol"] == "model-card"
    assert not list(tmp_path.rglob("*.png"))


def test_a_failure_leaves_no_metrics_json_and_no_partial_file(metrics, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "plot_confusion", broken)
    with pytest.raises(RuntimeError):
        write_metrics(metrics, tmp_path)
    assert not (tmp_path / "metrics" / "metrics.json").exists()
    assert not list(tmp_path.rglob("*.part"))


def test_read_metrics_from_run_folder_metrics_folder_or_file(written, metrics):
    run, paths = written
    for where in (run, run / "metrics", paths["metrics"]):
        content = read_metrics(where)
        assert content["Avg_metrics"] == pytest.approx(metrics.averages)
        assert content["support"] == metrics.support
        assert content["metrics_path"] == str(paths["metrics"])


def test_read_metrics_of_ign_code(tmp_path):
    official = {
        "Avg_metrics_name": ["mIoU", "Overall Accuracy", "Fscore", "Precision", "Recall"],
        "Avg_metrics": [50.0, 70.0, 60.0, 61.0, 62.0],
        "classes": ["building", "water"],
        "per_class_iou": [40.0, 60.0],
        "per_class_fscore": [1.0, 2.0],
        "per_class_precision": [1.0, 2.0],
        "per_class_recall": [1.0, 2.0],
    }
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "metrics.json").write_text(json.dumps(official))
    content = read_metrics(tmp_path)
    assert content["per_class_iou"] == [40.0, 60.0] and "protocol" not in content and "support" not in content


def test_read_metrics_errors(tmp_path):
    with pytest.raises(DataError, match="flair evaluate"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(DataError, match=r"not a readable metrics\.json"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({"Avg_metrics": []}))
    with pytest.raises(DataError, match="missing key"):
        read_metrics(tmp_path)


def test_normalised_confusion_diagonals_are_precision_and_recall(metrics):
    cleaned = metrics.confmat[np.ix_(metrics.kept, metrics.kept)]
    by_column = normalize_confusion(cleaned, "precision")
    by_row = normalize_confusion(cleaned, "recall")
    np.testing.assert_allclose(np.diag(by_column), metrics.per_class_precision)
    np.testing.assert_allclose(np.diag(by_row), metrics.per_class_recall)
    snow = metrics.class_names.index("snow")
    assert by_row[snow].sum() == 0  # empty row stays 0, not NaN
    np.testing.assert_allclose(np.delete(by_row, snow, axis=0).sum(axis=1), 100.0)
    np.testing.assert_allclose(by_column.sum(axis=0)[cleaned.sum(axis=0) > 0], 100.0)


def test_plot_confusion_refuses_to_overwrite(tmp_path):
    path = plot_confusion(np.eye(3, dtype=np.int64), ["a", "b", "c"], "recall", tmp_path / "cm.png")
    assert_png(path)
    with pytest.raises(OutputExistsError):
        plot_confusion(np.eye(3, dtype=np.int64), ["a", "b", "c"], "recall", path)
    with pytest.raises(ValueError, match="precision"):
        normalize_confusion(np.eye(3), "f1")  # type: ignore[arg-type]


def test_print_metrics(metrics):
    console = Console(record=True, width=140)
    console.print(metrics_view(metrics))
    text = console.export_text()
    assert "impervious surface" in text and f"{metrics.miou:.2f}" in text
    assert "left out of the averages by the model-card protocol: snow" in text
