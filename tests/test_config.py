"""Config loading: presets, YAML files, dotted overrides and the errors users see."""

import pytest
import yaml

from flairkit.config import config_to_yaml, load_config, parse_override, preset_names, save_resolved_config
from flairkit.config.schema import FLAIR_MEANS
from flairkit.errors import ConfigError


def test_every_preset_loads_and_validates():
    names = preset_names()
    assert "FLAIR-INC_rgbie_15cl_resnet34-unet" in names
    assert "flair2-utt-filt-avgm-aug" in names
    for name in names:
        assert load_config(name).name == name


def test_released_model_presets_cover_modalities_architectures_and_nomenclatures():
    names = set(preset_names())
    for modality in ("rgb", "rgbi", "rgbie"):
        for ncl in ("12cl", "15cl"):
            for arch in ("resnet34-unet", "resnet34-deeplabv3", "resnet34-fpn", "mitb5-unet"):
                assert f"FLAIR-INC_{modality}_{ncl}_{arch}" in names


def test_table_iv_presets_inherit_from_the_utt_baseline():
    config = load_config("flair2-utt-all")
    assert config.model.multimodal and config.data.sentinel.enabled
    assert config.data.sentinel.filter_clouds and config.data.sentinel.monthly_average
    assert config.model.fusion.modality_dropout == 0.5
    assert config.data.metadata and config.data.augmentation_probability == 0.5


def test_custom_normalisation_defaults_to_the_selected_bands_statistics():
    config = load_config(None, ["data.channels=[4,1]"])
    assert config.data.normalization.means == [FLAIR_MEANS[3], FLAIR_MEANS[0]]


def test_overrides_are_parsed_as_yaml_values():
    assert parse_override("train.lr=0.01") == {"train": {"lr": 0.01}}
    assert parse_override("data.channels=[1,2,3]") == {"data": {"channels": [1, 2, 3]}}
    assert parse_override("model.encoder_weights=null") == {"model": {"encoder_weights": None}}
    config = load_config("demo", ["train.lr=0.5", "name=abc"])
    assert config.train.lr == 0.5 and config.name == "abc"
    assert load_config(None, ["train.precision=32"]).train.precision == "32"  # a number in YAML


def test_yaml_file_can_start_from_a_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("preset: FLAIR-INC_rgb_15cl_resnet34-fpn\ntrain:\n  lr: 0.1\n")
    config = load_config(path)
    assert config.model.arch == "fpn" and config.data.channels == [1, 2, 3] and config.train.lr == 0.1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.lrate=0.1"], "train.lrate: unknown key"),
        (["train.lr=fast"], "train.lr: Input should be a valid number"),
        (["data.channels=[1,2,3,4,5]", "data.normalization.means=[1,2,3]"], "data.normalization.means has 3 values"),
        (["detect.tile_size=512", "detect.margin=256"], "2*margin must be < tile_size"),
        (["data.channels=[0,1]"], "bands are 1-based"),
        (["data.nomenclature=14cl"], "unknown nomenclature"),
        (["data.sentinel.sat_patch_size=30"], "multiple of 8"),
        (["model.multimodal=true"], "data.sentinel.enabled=true"),
        (["data.root=/no/such/folder"], "data.root '/no/such/folder' does not exist"),
        (["train"], "must look like section.key=value"),
    ],
)
def test_bad_configs_fail_before_any_work_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as error:
        load_config(None, overrides)
    assert message in str(error.value)


def test_unknown_preset_and_missing_file_are_explained(tmp_path):
    with pytest.raises(ConfigError, match="flair models"):
        load_config("no-such-preset")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_resolved_config_round_trips(tmp_path):
    config = load_config("flair2-utt-avgm", ["train.lr=0.003"])
    path = save_resolved_config(config, tmp_path)
    assert load_config(path) == config
    assert yaml.safe_load(config_to_yaml(config))["train"]["lr"] == 0.003


def test_every_config_key_is_documented_and_the_readme_reference_is_current():
    from pathlib import Path

    from flairkit.config.reference import iter_keys, reference_markdown

    undocumented = [key for key, field in iter_keys() if not field.description]
    assert undocumented == []
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert reference_markdown() in readme, "regenerate the README table with `flair config reference`"


def test_network_label_names_each_model_family():
    labels = {name: load_config(name).model.network_label() for name in ("demo", "demo-utt", "flairhub-LC-A")}
    assert labels == {
        "demo": "unet / resnet18",
        "demo-utt": "U-T&T unet / resnet18",
        "flairhub-LC-A": "FLAIR-HUB upernet / swin_base_patch4_window12_384",
    }
    assert load_config("flair1-upernet-swin-small").model.network_label() == "huggingface openmmlab/upernet-swin-small"


def test_train_hub_without_model_hub_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"train\.hub\.aux_loss_weight: train\.hub configures FLAIR-HUB"):
        load_config("demo", ["train.hub.aux_loss_weight=2"])
    assert load_config("flairhub-LC-D", ["train.hub.aux_loss_weight=2"]).train.hub.aux_loss_weight == 2
