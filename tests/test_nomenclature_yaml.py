"""Your own nomenclature as a YAML file: loading, refusals naming the file and key, label origins, and every
command (train, evaluate, detect and its QGIS style) using it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from rasterio.transform import from_origin
from typer.testing import CliRunner

from flairkit.cli.main import app
from flairkit.config import load_config
from flairkit.data.check import check_dataset
from flairkit.data.rasters import write_raster
from flairkit.errors import ConfigError, DataError
from flairkit.nomenclature import INVALID_TARGET, get_nomenclature, label_origin

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "nomenclatures"
SIX = EXAMPLES / "flair19-to-6.yaml"
THREE = {
    "name": "three",
    "classes": [
        {"name": "built", "colour": "#db0e9a"},
        {"name": "green", "colour": "#46e483"},
        {"name": "water", "colour": "#1553ae"},
    ],
}


def write_yaml(folder: Path, data: object, name: str = "classes.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_example_nomenclatures_load_with_their_codes_colours_weights_and_groups():
    six = get_nomenclature(SIX)
    assert six.names == ["built", "sealed", "bare", "water", "woody", "herbaceous", "other"]
    assert six.codes.tolist() == [1, 2, 3, 4, 5, 6, 7] and six.targets[0].colour == "#db0e9a"
    assert six.disabled == [6] and six.class_values == list(range(1, 20))
    flair = six.map_mask(np.arange(0, 21, dtype=np.uint8))
    assert flair[[1, 13, 18]].tolist() == [0, 0, 0]  # building, swimming pool, greenhouse -> built
    assert flair[[0, 19, 20]].tolist() == [INVALID_TARGET, 6, INVALID_TARGET]  # unlabelled, other, no FLAIR code
    own = get_nomenclature(EXAMPLES / "own-classes.yaml")
    assert own.codes.tolist() == [1, 2, 3, 4, 5, 9] and own.disabled == [5]
    assert own.map_mask(np.array([0, 1, 5, 9, 6])).tolist() == [INVALID_TARGET, 0, 4, 5, INVALID_TARGET]
    assert own.targets[2].flair == (7, 6) and own.ignore_value == 0


def test_classes_are_found_by_code_or_name_and_flair_classes_by_name_when_masks_hold_flair_codes():
    six, own = get_nomenclature(SIX), get_nomenclature(EXAMPLES / "own-classes.yaml")
    assert six.value_of("Deciduous") == 7 and six.value_of("woody") == 6 and six.value_of(4) == 5
    assert own.value_of("tree") == 3 and own.value_of(9) == 9
    assert own.value_of("deciduous") is None and own.value_of(7) is None  # masks hold own codes, not FLAIR's


def test_codes_follow_the_list_and_first_code_0_reads_masks_that_start_at_0(tmp_path):
    ones = get_nomenclature(write_yaml(tmp_path, THREE, "ones.yaml"))
    assert ones.codes.tolist() == [1, 2, 3] and ones.class_values == [1, 2, 3] and ones.ignore_value == 0
    zeros = get_nomenclature(write_yaml(tmp_path, {**THREE, "first_code": 0}, "zeros.yaml"))
    assert zeros.codes.tolist() == [1, 2, 3]  # maps still show codes 1..3
    assert zeros.map_mask(np.array([0, 1, 2, 3, 255], dtype=np.uint8)).tolist() == [0, 1, 2, 255, 255]
    assert zeros.ignore_value == 255


def _three(**changes: object) -> dict:
    return {**THREE, **changes}


BAD_NOMENCLATURES = {
    "not a mapping": ([1, 2], "(top level): expected a mapping"),
    "unknown key": (_three(colours=1), "colours: unknown key"),
    "one class": (_three(classes=THREE["classes"][:1]), "classes: expected a list of at least 2 classes"),
    "no colour": (_three(classes=[{"name": "a"}, {"name": "b", "colour": "#000000"}]), "classes[0].colour"),
    "bad colour": (_three(classes=[{"name": "a", "colour": "red"}, *THREE["classes"]]), "classes[0].colour"),
    "code 0": (_three(classes=[{"name": "a", "colour": "#000000", "code": 0}, *THREE["classes"]]), "classes[0].code"),
    "same code": (
        _three(classes=[{"name": "a", "colour": "#000000", "code": 2}, *THREE["classes"][1:]]),
        "classes[*].code: 2 is given to two classes",
    ),
    "same name": (_three(classes=[*THREE["classes"], THREE["classes"][0]]), "'built' is given to two classes"),
    "negative weight": (_three(classes=[{**THREE["classes"][0], "weight": -1}, *THREE["classes"][1:]]), "weight"),
    "nothing learnt": (
        _three(classes=[{**c, "weight": 0} for c in THREE["classes"]]),
        "classes[*].weight: every class has weight 0",
    ),
    "unknown FLAIR class": (
        _three(classes=[{**THREE["classes"][0], "flair": ["lava"]}, *THREE["classes"][1:]]),
        "classes[0].flair: 'lava' is no FLAIR class",
    ),
    "FLAIR class in two groups": (
        _three(classes=[{**c, "flair": [1]} for c in THREE["classes"]]),
        "FLAIR class 1 is grouped into two classes",
    ),
    "FLAIR masks without groups": (_three(mask_values="flair"), "class 'built' has no 'flair' list"),
    "built-in name": (_three(name="15cl"), "name: '15cl' is a built-in nomenclature's name"),
}


@pytest.mark.parametrize("data, expected", BAD_NOMENCLATURES.values(), ids=BAD_NOMENCLATURES)
def test_a_bad_nomenclature_yaml_is_refused_naming_the_file_and_the_key(tmp_path, data, expected):
    path = write_yaml(tmp_path, data)
    with pytest.raises(ConfigError) as error:
        get_nomenclature(path)
    assert str(error.value).startswith(f"{path}: ") and expected in str(error.value)


def test_the_config_takes_a_nomenclature_path_and_refuses_a_missing_or_bad_one(tmp_path):
    path = write_yaml(tmp_path, THREE)
    assert load_config(None, [f"data.nomenclature={path}"]).data.nomenclature == str(path)
    with pytest.raises(ConfigError, match="nomenclature file not found"):
        load_config(None, [f"data.nomenclature={tmp_path / 'missing.yaml'}"])
    bad = write_yaml(tmp_path, _three(classes=[]), "bad.yaml")
    with pytest.raises(ConfigError, match=r"data.nomenclature: .*bad.yaml: classes"):
        load_config(None, [f"data.nomenclature={bad}"])
    with pytest.raises(ConfigError, match="or give the path of a nomenclature YAML"):
        load_config(None, ["data.nomenclature=14cl"])


def test_labels_that_start_at_0_are_detected_and_shifted():
    origin = label_origin(range(19), get_nomenclature("19cl"), "labels.tif")
    assert origin.shift == 1 and origin.unlabelled == ()
    assert "labels.tif: labels start at 0: codes are shifted by +1" in origin.note


def test_labels_that_hold_the_codes_are_read_as_they_are_and_0_stays_unlabelled():
    assert label_origin([1, 2, 19], get_nomenclature("19cl"), "a").shift == 0
    origin = label_origin([0, 1, 2, 3, 255], get_nomenclature("19cl"), "b")
    assert origin.shift == 0 and origin.unlabelled == (0, 255)
    assert "value(s) [0, 255] are no class: read as unlabelled" in origin.note


def test_the_given_start_overrides_the_detection_and_labels_from_1_fit_a_nomenclature_from_0(tmp_path):
    assert label_origin([0, 1, 2, 3], get_nomenclature("19cl"), "a", start=0).shift == 1
    zero_based = get_nomenclature(write_yaml(tmp_path, _three(first_code=0)))
    origin = label_origin([1, 2, 3], zero_based, "b")
    assert origin.shift == -1 and "labels start at 1: codes are shifted by -1" in origin.note


def test_label_values_that_no_class_takes_are_listed():
    with pytest.raises(DataError, match=r"labels.tif: label values \[42, 77\] are no class of nomenclature '19cl'"):
        label_origin([1, 42, 77], get_nomenclature("19cl"), "labels.tif")


def test_data_check_states_that_masks_may_start_at_0_and_not_when_first_code_says_so(tmp_path):
    transform = from_origin(843_000.0, 6_519_000.0, 0.2, 0.2)
    image = write_raster(tmp_path / "IMG_1.tif", np.zeros((5, 8, 8), np.uint8), crs="EPSG:2154", transform=transform)
    labels = np.arange(64, dtype=np.uint8).reshape(8, 8) % 3
    mask = write_raster(tmp_path / "MSK_1.tif", labels, crs="EPSG:2154", transform=transform)
    (tmp_path / "list.csv").write_text(f"{image.name},{mask.name}\r\n")
    report = check_dataset(tmp_path / "list.csv", nomenclature=str(write_yaml(tmp_path, THREE)))
    assert report.ok and report.n_warnings == 1  # 0 may be unlabelled: stated, not fatal
    assert "values [0, 1, 2] may be labels that start at 0 (codes shifted by +1)" in report.problems[0].message
    assert "if 0 is a class there, declare first_code: 0" in report.problems[0].message
    assert ("mask values", "0, 1, 2 (0: unlabelled)") in report.summary
    zero_based = check_dataset(
        tmp_path / "list.csv", nomenclature=str(write_yaml(tmp_path, _three(first_code=0), "z.yaml"))
    )
    assert zero_based.ok and not zero_based.problems


TINY_TRAIN = [
    "model.encoder=resnet18",
    "model.encoder_weights=null",
    "data.batch_size=4",
    "data.num_workers=0",
    "train.max_epochs=1",
    "train.accelerator=cpu",
    "train.devices=1",
    "evaluate.batch_size=8",
    "detect.tile_size=64",
    "detect.margin=16",
    "detect.batch_size=4",
]


def test_train_evaluate_and_detect_with_a_yaml_nomenclature(tiny_world, tmp_path):
    runner = CliRunner()
    settings = [f"data.root={tiny_world}", f"output_dir={tmp_path}", f"data.nomenclature={SIX}", *TINY_TRAIN]
    common = ["-c", "demo", *(arg for s in settings for arg in ("--set", s))]
    trained = runner.invoke(app, ["train", *common, "--no-progress"])
    assert trained.exit_code == 0, trained.output
    checkpoint = tmp_path / "demo" / "checkpoints" / "last.ckpt"

    evaluated = runner.invoke(app, ["evaluate", str(tmp_path / "eval"), *common, "--checkpoint", str(checkpoint)])
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads((tmp_path / "eval" / "metrics" / "metrics.json").read_text())
    assert metrics["classes"] == get_nomenclature(SIX).names[:6] and metrics["nomenclature"] == "flair-6cl"

    ortho = tiny_world / "orthophotos" / "ORTHO_0.tif"
    output = tmp_path / "map.tif"
    detected = runner.invoke(
        app, ["detect", str(ortho), "-o", str(output), *common, "--checkpoint", str(checkpoint), "--no-progress"]
    )
    assert detected.exit_code == 0, detected.output
    with rasterio.open(output) as src:
        values = set(np.unique(src.read(1)).tolist())
        assert values and values <= {1, 2, 3, 4, 5, 6}
        assert src.colormap(1)[1][:3] == (0xDB, 0x0E, 0x9A)  # "built" in its YAML colour
    style = output.with_suffix(".qml").read_text()
    assert 'label="1 - built"' in style and 'color="#db0e9a"' in style and "building" not in style
