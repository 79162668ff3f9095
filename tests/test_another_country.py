"""Another country (`flair data synth --country`): vector labels and other classes, cut into patches and fine-tuned."""

from __future__ import annotations

import csv

import fiona
import numpy as np
import rasterio
import torch
from typer.testing import CliRunner

from flairkit.cli.main import app
from flairkit.config import load_config
from flairkit.data.rasters import read_raster
from flairkit.models.build import build_model
from flairkit.nomenclature import get_nomenclature
from flairkit.synth.country import CLASS_FIELD, COUNTRY_CLASSES
from flairkit.training.run import train


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_country_writes_vector_labels_mapping_and_nomenclature_then_patches_and_a_fine_tune_run(tmp_path):
    country, dataset = tmp_path / "country", tmp_path / "dataset"
    _invoke("data", "synth", str(country), "--country", "--orthos", "1", "--ortho-size", "256", "--seed", "1")

    with rasterio.open(country / "orthophotos" / "ORTHO_0.tif") as src:
        assert (src.count, src.width, src.crs.to_epsg()) == (3, 256, 5186)
    survey_codes = {cls.survey_code for cls in COUNTRY_CLASSES}
    with fiona.open(country / "labels.gpkg") as layer:
        values = [feature["properties"][CLASS_FIELD] for feature in layer]
        assert layer.schema["geometry"] == "Polygon"
    assert len(values) > 20 and set(values) <= survey_codes and len(set(values)) >= 4
    with (country / "mapping.csv").open() as handle:
        table = {int(row["value"]): row["class"] for row in csv.DictReader(handle)}
    nomenclature = get_nomenclature(str(country / "nomenclature.yaml"))
    assert set(table) == survey_codes
    assert sorted(table.values()) == sorted(t.name for t in nomenclature.targets)
    with fiona.open(country / "areas.gpkg") as areas:
        assert sorted(feature["properties"]["split"] for feature in areas) == ["test", "train", "train", "val"]

    _invoke(
        *("data", "patches", str(country / "orthophotos"), "-l", str(country / "labels.gpkg")),
        *("--class-field", CLASS_FIELD, "--mapping", str(country / "mapping.csv")),
        *("--nomenclature", str(country / "nomenclature.yaml"), "--areas", str(country / "areas.gpkg")),
        *("--area-field", "name", "--split-field", "split", "--patch-size", "64", "-o", str(dataset)),
    )
    masks = sorted(dataset.glob("flair_labels_train/*/*/msk/*.tif"))
    assert masks
    codes = np.unique(np.concatenate([read_raster(path).ravel() for path in masks]))
    assert set(codes.tolist()) <= {0, 1, 2, 3, 4, 5, 6} and len(codes) >= 4

    # A 15-class RGBIE "demo" checkpoint, fine-tuned on the RGB 6-class data for one epoch.
    demo = load_config("demo", ["model.encoder_weights=null"])
    torch.manual_seed(0)
    model = build_model(demo, pretrained_encoder=False)
    weights = tmp_path / "demo.ckpt"
    state = {f"model.{key}": value for key, value in model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"config": demo.model_dump(mode="json")}}, weights)
    config = load_config(
        "demo",
        [
            *(f"data.{split}_csv={dataset / f'{split}.csv'}" for split in ("train", "val", "test")),
            f"data.nomenclature={country / 'nomenclature.yaml'}",
            "data.channels=[1,2,3]",
            "data.metadata=false",
            "data.batch_size=4",
            "model.encoder_weights=null",
            f"output_dir={tmp_path / 'runs'}",
            f"train.init_weights={weights}",
            "train.rebuild_head=true",
            "train.adapt_inputs=true",
            "train.max_epochs=1",
            "train.early_stopping_patience=null",
        ],
    )
    result = train(config, progress=False)
    assert result.epochs == 1 and result.last_checkpoint is not None
    adapted = " ".join(result.adaptations)
    assert "woody" in adapted and "deciduous" in adapted
    head = torch.load(result.last_checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    assert head["model.seg_model.segmentation_head.0.weight"].shape[0] == 6
    assert head["model.seg_model.encoder.conv1.weight"].shape[1] == 3


def test_country_refuses_the_options_of_flair_worlds(tmp_path):
    result = CliRunner().invoke(app, ["data", "synth", str(tmp_path / "c"), "--country", "--patches", "3"])
    assert result.exit_code != 0
    assert "--patches does not apply to --country" in result.output
    assert not (tmp_path / "c").exists()
