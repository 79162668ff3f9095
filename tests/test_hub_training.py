"""`flair train` / `flair evaluate` on FLAIR-HUB: a single-date aerial U-Net on AERIAL_RGBI with COSIA labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny_config
from flairkit.cli.main import app
from flairkit.data.datamodule import build_dataset, split_records
from flairkit.data.hub.dataset import build_hub_dataset, split_patches
from flairkit.errors import ConfigError
from flairkit.nomenclature import get_nomenclature
from flairkit.synth.hub import HubSynthOptions, synthesize_hub_world

runner = CliRunner()
WORLD = HubSynthOptions(n_domains=3, areas_per_domain=1, patches_per_area=2, patch_size=256, seed=5)
HUB = ("data.nomenclature=hub", "data.channels=[1,2,3,4]", "data.hub.modalities=[AERIAL_RGBI]")
TRAIN = (
    "model.encoder=resnet18",
    "model.encoder_weights=null",
    "data.batch_size=2",
    "data.num_workers=0",
    "train.max_epochs=1",
    "train.accelerator=cpu",
    "train.devices=1",
    "evaluate.batch_size=2",
    *HUB,
)


@pytest.fixture(scope="module")
def hub_world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hubtrain") / "FLAIR-HUB"
    synthesize_hub_world(root, WORLD)
    return root


def _sets(*overrides: str) -> list[str]:
    return [arg for override in overrides for arg in ("--set", override)]


def test_splits_and_targets_are_flair_hub_official_split_and_cosia_labels(hub_world, tmp_path):
    config = tiny_config(hub_world, tmp_path, *HUB)
    hub = config.data.hub.model_copy(update={"root": hub_world})
    for split in ("train", "val", "test"):
        records = split_records(config, split)
        assert [r.patch_id for r in records] == [p.patch_id for p in split_patches(hub, split)]
    records = split_records(config, "train")
    assert split_records(tiny_config(hub_world, tmp_path, *HUB, f"data.hub.root={hub_world}"), "train") == records
    with pytest.raises(ConfigError, match="name different datasets; set only one of them"):
        split_records(tiny_config(hub_world, tmp_path, *HUB, f"data.hub.root={tmp_path}"), "train")
    dataset = build_dataset(config, records)
    reference = build_hub_dataset(hub, "train")
    item, expected = dataset[0], reference[0]
    assert item["image"].dtype == torch.uint8 and item["image"].shape[0] == 4
    assert np.array_equal(item["image"].numpy(), expected["AERIAL_RGBI"].numpy())
    assert np.array_equal(item["target"].numpy(), expected["AERIAL_LABEL-COSIA"].numpy())
    hub_classes = get_nomenclature("hub")
    assert dataset.nomenclature.n_targets == 19 and hub_classes.weights[15:] == [0.0] * 4


@pytest.mark.slow
def test_train_and_evaluate_an_aerial_unet_on_flair_hub_from_the_command_line(hub_world, tmp_path):
    common = ["-c", "demo", *_sets(f"data.root={hub_world}", f"output_dir={tmp_path}", *TRAIN)]
    trained = runner.invoke(app, ["train", *common, "--no-progress"])
    assert trained.exit_code == 0, trained.output
    checkpoint = tmp_path / "demo" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    evaluated = runner.invoke(app, ["evaluate", str(tmp_path / "eval"), *common, "--checkpoint", str(checkpoint)])
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads((tmp_path / "eval" / "metrics" / "metrics.json").read_text())
    assert len(metrics["classes"]) == 15  # the COSIA classes of non-zero weight
    confmat = np.load(tmp_path / "eval" / "metrics" / "confmat.npy")
    assert confmat.shape == (19, 19)
    # Every pixel of the test split's COSIA labels is counted, in FLAIR-HUB's own class order.
    labels = np.zeros(19, dtype=np.int64)
    hub = tiny_config(hub_world, tmp_path, *HUB).data.hub.model_copy(update={"root": hub_world})
    for item in build_hub_dataset(hub, "test"):
        labels += np.bincount(item["AERIAL_LABEL-COSIA"].numpy().ravel(), minlength=19)
    assert np.array_equal(confmat.sum(axis=1), labels)
    predictions = sorted((tmp_path / "eval" / "predictions").glob("PRED_*.tif"))
    assert len(predictions) == len(split_patches(hub, "test"))
    # `flair metrics` reads masks as FLAIR codes: on FLAIR-HUB labels it refuses rather than miscounting.
    rescored = runner.invoke(
        app, ["metrics", str(tmp_path / "eval" / "predictions"), *common, "-o", str(tmp_path / "m")]
    )
    assert rescored.exit_code != 0
    assert "for FLAIR-HUB data run `flair evaluate`" in " ".join(rescored.output.split())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.hub.modalities=[AERIAL_RGBI,SENTINEL2_TS]", "data.hub.modalities: SENTINEL2_TS is a time series"),
        ("data.hub.modalities=[SENTINEL1-ASC_TS]", "data.hub.modalities: SENTINEL1-ASC_TS is a time series"),
        ("data.nomenclature=15cl", "set data.nomenclature=hub"),
        ("data.channels=[1,2,3,4,5]", "set data.channels=[1, 2, 3, 4]"),
    ],
)
def test_unsupported_flair_hub_settings_are_refused_naming_the_key(hub_world, tmp_path, override, message):
    config = tiny_config(hub_world, tmp_path, *HUB, override)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        split_records(config, "train")
    refused = runner.invoke(app, ["train", "-c", "demo", *_sets(f"data.root={hub_world}", *TRAIN, override)])
    assert refused.exit_code != 0
    assert message in " ".join(refused.output.split())
