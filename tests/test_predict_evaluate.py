"""`flair predict` / `flair evaluate` / `flair metrics` as library functions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch

from conftest import TINY_PATCH, tiny_config
from flairkit.data.datamodule import split_records
from flairkit.errors import OutputExistsError
from flairkit.evaluation.predict import evaluate, metrics_from_predictions, predict, prediction_path
from flairkit.models.build import build_model
from flairkit.nomenclature import get_nomenclature


class FavourDisabledClass(torch.nn.Module):
    """A model whose largest logit is always a disabled class, then 'water', then the rest."""

    def __init__(self, n_targets: int, disabled: int, preferred: int):
        super().__init__()
        self.n_targets, self.disabled, self.preferred = n_targets, disabled, preferred

    def forward(self, image, metadata=None):
        logits = torch.zeros(image.shape[0], self.n_targets, *image.shape[2:])
        logits[:, self.disabled] = 5.0
        logits[:, self.preferred] = 1.0
        return logits


@pytest.fixture(scope="module")
def tiny_model_config(tiny_world, tmp_path_factory):
    return tiny_config(tiny_world, tmp_path_factory.mktemp("runs"))


def test_predictions_are_georeferenced_uint8_lzw_named_after_the_image(tiny_model_config, tmp_path):
    config = tiny_model_config
    model = build_model(config, pretrained_encoder=False)
    result = predict(config, model, tmp_path)
    records = split_records(config, "test")
    assert len(result.written) == len(records)
    for record in records:
        path = prediction_path(tmp_path, record.image)
        assert path.name == f"PRED_{record.image.stem}.tif"
        with rasterio.open(path) as pred, rasterio.open(record.image) as image:
            assert pred.dtypes == ("uint8",) and pred.count == 1
            assert pred.compression.name.lower() == "lzw"
            assert pred.crs == image.crs and pred.transform == image.transform
            assert pred.shape == image.shape


def test_disabled_classes_are_never_predicted(tiny_model_config, tmp_path):
    config = tiny_model_config
    nomenclature = get_nomenclature(config.data.nomenclature)
    water = nomenclature.names.index("water")
    model = FavourDisabledClass(nomenclature.n_targets, nomenclature.disabled[0], water)
    result = predict(config, model, tmp_path)
    with rasterio.open(result.written[0]) as pred:
        assert np.unique(pred.read(1)).tolist() == [water]


def test_rerun_skips_finished_predictions_and_overwrite_recomputes(tiny_model_config, tmp_path):
    config = tiny_model_config
    model = build_model(config, pretrained_encoder=False)
    first = predict(config, model, tmp_path)
    first.written[0].unlink()
    again = predict(config, model, tmp_path)
    assert len(again.written) == 1 and len(again.skipped) == len(first.written) - 1
    forced = predict(config, model, tmp_path, overwrite=True)
    assert len(forced.written) == len(first.written)


def test_evaluate_writes_the_official_metrics_and_metrics_command_agrees(tiny_model_config, tmp_path):
    config = tiny_model_config
    model = build_model(config, pretrained_encoder=False)
    metrics = evaluate(config, model, tmp_path / "eval")
    folder = tmp_path / "eval" / "metrics"
    assert (folder / "confmat.npy").is_file()
    confmat = np.load(folder / "confmat.npy")
    assert confmat.dtype == np.int64
    assert confmat.sum() == len(split_records(config, "test")) * TINY_PATCH * TINY_PATCH
    official = json.loads((folder / "metrics.json").read_text())
    assert official["Avg_metrics_name"] == ["mIoU", "Overall Accuracy", "Fscore", "Precision", "Recall"]
    assert official["Avg_metrics"][0] == pytest.approx(metrics.miou)
    assert list(folder.glob("*.png"))
    with pytest.raises(OutputExistsError):
        evaluate(config, model, tmp_path / "eval")
    again = metrics_from_predictions(config, tmp_path / "eval" / "predictions", tmp_path / "again")
    assert np.array_equal(np.load(tmp_path / "again" / "metrics" / "confmat.npy"), confmat)
    assert again.miou == pytest.approx(metrics.miou)
