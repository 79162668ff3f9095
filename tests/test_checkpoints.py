"""Loading weights: every official layout and file format, strictly, and refusing what does not fit or runs code."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from flairkit.config import load_config
from flairkit.errors import CheckpointError
from flairkit.hashing import file_sha256
from flairkit.models.build import build_model
from flairkit.models.loader import load_model
from flairkit.models.weights import (
    check_weights_config,
    config_from_checkpoint,
    inspect_checkpoint,
    load_init_weights,
    load_weights,
    normalize_keys,
    read_state_dict,
    summarize,
    tensor_shapes,
    weights_config_source,
)

TILE = 64
AERIAL = ("model.encoder_weights=null", "model.encoder=resnet18")
UTT_SETTINGS = ("model.encoder_weights=null", "model.encoder=resnet18", "data.sentinel.sat_patch_size=16")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run faster on one thread, above all on a busy machine; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def aerial_config(*overrides: str):
    return load_config(None, [*AERIAL, *overrides])


def make(config, seed: int) -> torch.nn.Module:
    """The network of ``config``, seeded, with random BatchNorm statistics so that loading them is visible."""
    torch.manual_seed(seed)
    model = build_model(config, pretrained_encoder=False)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith(("running_mean", "running_var")):
                tensor.copy_(torch.rand(tensor.shape) + (0.5 if name.endswith("running_var") else -0.5))
    return model.eval()


def official_layouts(state: dict[str, torch.Tensor]) -> dict[str, dict]:
    """The same aerial weights as each official code would store them (besides the file format)."""
    raw_smp = {key.removeprefix("seg_model."): value for key, value in state.items()}
    lightning_state = {f"model.{key}": value for key, value in state.items()}
    lightning_state["criterion.weight"] = torch.ones(19)
    lightning = {
        "state_dict": lightning_state,
        "epoch": 41,
        "global_step": 1234,
        "pytorch-lightning_version": "2.6.0",
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.02, "params": [0, 1]}]}],
        "callbacks": {"ModelCheckpoint": {"dirpath": "/somewhere/checkpoints", "best_model_score": torch.tensor(0.3)}},
    }
    # IGNF/FLAIR-1 zone_detect: keys partitioned on "model.seg_model.", empty leftovers dropped.
    zone = {k.partition("model.seg_model.")[2]: v for k, v in lightning_state.items()}
    zone = {k: v for k, v in zone.items() if k}
    return {
        "smp": raw_smp,
        "flair1-lightning": lightning,
        "zone-detect": zone,
        "flairkit": dict(state),
        "model-wrapper": {"model": raw_smp},
        "data-parallel": {f"module.{key}": value for key, value in lightning_state.items()},
    }


def save(obj: dict, path: Path, fmt: str) -> Path:
    if fmt == "safetensors":
        flat = obj.get("state_dict", obj.get("model", obj))
        save_file({key: value.contiguous() for key, value in flat.items()}, str(path))
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=fmt == "torch-zip")
    return path


@pytest.fixture(scope="module")
def aerial():
    """A randomised 5-band, 19-logit U-Net ResNet18, its state dict and a reference prediction."""
    config = aerial_config()
    model = make(config, seed=1)
    image = torch.rand(2, 5, TILE, TILE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model(image)
    return config, model.state_dict(), image, expected


def fresh(config) -> torch.nn.Module:
    return make(config, seed=99)


# Misleading extensions on purpose: the format is recognised by content.
FORMATS = [("torch-zip", "weights.safetensors"), ("torch-legacy", "weights.ckpt"), ("safetensors", "weights.pth")]
LAYOUTS = ["smp", "flair1-lightning", "zone-detect", "flairkit", "model-wrapper", "data-parallel"]


@pytest.mark.parametrize(
    ("layout", "fmt", "filename"),
    [(layout, *FORMATS[i % len(FORMATS)]) for i, layout in enumerate(LAYOUTS)]
    + [("flair1-lightning", *FORMATS[0]), ("smp", *FORMATS[2])],
)
def test_every_official_layout_and_format_loads_strictly_with_identical_outputs(
    aerial, tmp_path, layout, fmt, filename
):
    config, state, image, expected = aerial
    path = save(official_layouts(state)[layout], tmp_path / filename, fmt)
    model = fresh(config)
    report = load_weights(model, path)
    assert report.format == fmt
    assert report.loaded == len(state)
    assert report.complete
    with torch.no_grad():
        assert torch.equal(model(image), expected)


def test_lightning_report_names_layout_and_ignores_the_loss_weights(aerial, tmp_path):
    config, state, _, _ = aerial
    path = save(official_layouts(state)["flair1-lightning"], tmp_path / "x.ckpt", "torch-zip")
    report = load_weights(fresh(config), path)
    assert report.layout == "flair1-lightning"
    assert report.dropped == ("criterion.weight",)
    assert "criterion.weight" in report.summary()


def test_read_state_dict_detects_format_by_content(aerial, tmp_path):
    _, state, _, _ = aerial
    for fmt, filename in FORMATS:
        tensors, detected = read_state_dict(save(dict(state), tmp_path / filename, fmt))
        assert detected == fmt
        assert set(tensors) == set(state)


def test_flair1_checkpoint_with_metadata_encoder_loads(tmp_path):
    config = aerial_config("data.metadata=true")
    source = make(config, seed=5)
    state = {f"model.{k}": v for k, v in source.state_dict().items()} | {"criterion.weight": torch.ones(19)}
    assert any(key.startswith("model.enc.enc_mlp.6.") for key in state)
    path = save({"state_dict": state, "epoch": 1}, tmp_path / "mtd.ckpt", "torch-zip")
    model = load_model(config, path)
    image, metadata = torch.rand(1, 5, TILE, TILE), torch.rand(1, 45)
    with torch.no_grad():
        assert torch.equal(model(image, metadata), source(image, metadata))
    with pytest.raises(CheckpointError, match=r"metadata encoder weights.*data\.metadata=true"):
        load_model(aerial_config(), path)


def test_legacy_smp_deeplabv3_decoder_keys_are_renamed(tmp_path):
    config = aerial_config("model.arch=deeplabv3")
    source = make(config, seed=6)
    legacy = {}
    for key, value in source.state_dict().items():
        key = key.removeprefix("seg_model.")
        for new, old in (
            ("decoder.aspp.", "decoder.0."),
            ("decoder.conv.", "decoder.1."),
            ("decoder.bn.", "decoder.2."),
        ):
            key = key.replace(new, old) if key.startswith(new) else key
        legacy[key] = value
    assert "decoder.0.convs.0.0.weight" in legacy
    model = load_model(config, save(legacy, tmp_path / "old.pth", "torch-legacy"))
    image = torch.rand(1, 5, TILE, TILE)
    with torch.no_grad():
        assert torch.equal(model(image), source(image))


def test_wrong_class_count_is_refused_with_the_nomenclature_to_use(aerial, tmp_path):
    source = build_model(aerial_config("data.nomenclature=13cl"), pretrained_encoder=False)
    path = save(source.state_dict(), tmp_path / "13.safetensors", "safetensors")
    with pytest.raises(CheckpointError) as error:
        load_weights(fresh(aerial[0]), path)
    message = str(error.value)
    assert "segmentation_head.0.weight has 13 classes in the file, the config expects 19 (data.nomenclature" in message
    assert "13cl" in message


def test_wrong_channel_count_is_refused_naming_data_channels(aerial, tmp_path):
    _, state, _, _ = aerial
    path = save(official_layouts(state)["smp"], tmp_path / "rgbie.pth", "torch-zip")
    with pytest.raises(CheckpointError) as error:
        load_model(aerial_config("data.channels=[1,2,3]"), path)
    message = str(error.value)
    assert "5 input channels in the file, the config selects 3 (data.channels=[1, 2, 3])" in message
    assert "flair models --inspect" in message


def test_corrupted_key_is_refused_listing_missing_and_unknown_keys(aerial, tmp_path):
    _, state, _, _ = aerial
    broken = dict(state)
    broken["seg_model.decoder.blocks.0.conv1.0.weightX"] = broken.pop("seg_model.decoder.blocks.0.conv1.0.weight")
    path = save(broken, tmp_path / "broken.pth", "torch-zip")
    with pytest.raises(CheckpointError) as error:
        load_weights(fresh(aerial[0]), path)
    message = str(error.value)
    assert "missing from the file: seg_model.decoder.blocks.0.conv1.0.weight" in message
    assert "unknown to the config's model: seg_model.decoder.blocks.0.conv1.0.weightX" in message


def test_other_architecture_is_named_in_the_error(aerial, tmp_path):
    source = build_model(aerial_config("model.arch=fpn"), pretrained_encoder=False)
    path = save(source.state_dict(), tmp_path / "fpn.pth", "torch-zip")
    with pytest.raises(CheckpointError, match=r"architecture: fpn in the file, the config builds unet \(model\.arch\)"):
        load_weights(fresh(aerial[0]), path)


def test_unknown_layout_and_flair_hub_files_are_refused(aerial, tmp_path):
    unknown = save({"backbone.stem.weight": torch.zeros(2)}, tmp_path / "unknown.pth", "torch-zip")
    with pytest.raises(CheckpointError, match=r"no known key layout.*backbone\.stem\.weight.*seg_model\."):
        load_weights(fresh(aerial[0]), unknown)
    hub = save({"model.main_decoders.AERIAL.seg_model.x": torch.zeros(2)}, tmp_path / "hub.ckpt", "torch-zip")
    with pytest.raises(CheckpointError, match="FLAIR-HUB"):
        load_weights(fresh(aerial[0]), hub)


class _WritesMarker:
    """Unpickling this object would run ``open(marker, "w")``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("zipped", [True, False])
def test_pickle_that_runs_code_is_refused_and_never_executed(aerial, tmp_path, zipped):
    marker = tmp_path / "executed"
    payload = {"state_dict": dict(aerial[1]), "hyper_parameters": _WritesMarker(marker)}
    path = tmp_path / "evil.ckpt"
    torch.save(payload, path, _use_new_zipfile_serialization=zipped)
    for attempt in (
        lambda: load_weights(fresh(aerial[0]), path),
        lambda: load_model(aerial[0], path),
        lambda: inspect_checkpoint(path),
    ):
        with pytest.raises(CheckpointError) as error:
            attempt()
        assert "pickled code" in str(error.value)
        assert "refuses to execute" in str(error.value)
        assert "safetensors" in str(error.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty"),
        (b"<!DOCTYPE html><html>Not found</html>", "HTML"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\n", "Git LFS pointer"),
        (b"\x00\x01garbage" * 10, "neither a safetensors file nor a PyTorch checkpoint"),
    ],
)
def test_files_that_are_not_weights_are_refused(tmp_path, content, expected):
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected):
        read_state_dict(path)


def test_truncated_and_non_state_dict_files_are_refused(aerial, tmp_path):
    complete = save(dict(aerial[1]), tmp_path / "full.pth", "torch-zip")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(complete.read_bytes()[: complete.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        read_state_dict(truncated)
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        read_state_dict(listed)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(tmp_path / "missing.pth")


def test_not_strict_loads_what_fits_and_reports_the_rest(aerial, tmp_path):
    config = aerial[0]
    source = make(aerial_config("data.nomenclature=13cl"), seed=8)
    path = save(source.state_dict(), tmp_path / "13.pth", "torch-zip")
    model = fresh(config)
    report = load_weights(model, path, strict=False)
    assert not report.complete
    assert set(report.mismatched) == {"seg_model.segmentation_head.0.weight", "seg_model.segmentation_head.0.bias"}
    assert torch.equal(
        model.state_dict()["seg_model.encoder.conv1.weight"], source.state_dict()["seg_model.encoder.conv1.weight"]
    )
    nothing = save({"seg_model.encoder.conv1.weight": torch.zeros(1)}, tmp_path / "tiny.pth", "torch-zip")
    with pytest.raises(CheckpointError, match="no tensor"):
        load_weights(fresh(config), nothing, strict=False)


def test_normalize_keys_maps_official_names_to_ours(aerial):
    config, state, _, _ = aerial
    lightning = official_layouts(state)["flair1-lightning"]["state_dict"]
    mapped = normalize_keys(lightning, fresh(config))
    assert set(mapped) == set(state)


def test_inspect_describes_a_lightning_checkpoint(aerial, tmp_path):
    _, state, _, _ = aerial
    path = save(official_layouts(state)["flair1-lightning"], tmp_path / "x.bin", "torch-zip")
    info = inspect_checkpoint(path)
    assert info["format"] == "torch-zip"
    assert info["container"] == "Lightning checkpoint"
    assert info["layout"] == "flair1-lightning"
    assert (info["architecture"], info["encoder"]) == ("unet", "resnet18")
    assert (info["in_channels"], info["n_classes"], info["metadata"]) == (5, 19, False)
    assert info["epoch"] == 41
    assert info["ignored_entries"] == ["criterion.weight"]
    assert "demo" in info["matching_presets"]
    assert info["n_parameters"] == sum(p.numel() for p in fresh(aerial[0]).parameters())


@pytest.mark.parametrize(
    "arch", ["unet", "unetplusplus", "fpn", "deeplabv3", "deeplabv3plus", "pspnet", "linknet", "manet", "pan"]
)
def test_architecture_is_recognised_from_keys(arch):
    with torch.device("meta"):
        model = build_model(aerial_config(f"model.arch={arch}", "model.encoder=resnet34"), pretrained_encoder=False)
    summary = summarize(tensor_shapes(model.state_dict()), "aerial")
    assert (summary.arch, summary.encoder, summary.in_channels, summary.n_classes) == (arch, "resnet34", 5, 19)


def test_mix_transformer_encoder_is_recognised():
    model = build_model(aerial_config("model.encoder=mit_b0", "data.channels=[1,2,3]"), pretrained_encoder=False)
    summary = summarize(tensor_shapes(model.state_dict()), "aerial")
    assert (summary.arch, summary.encoder, summary.in_channels) == ("unet", "mit_b0", 3)


@pytest.fixture(scope="module")
def utt():
    config = load_config("flair2-utt", list(UTT_SETTINGS))
    model = make(config, seed=11)
    generator = torch.Generator().manual_seed(4)
    inputs = (
        torch.rand(1, 5, TILE, TILE, generator=generator),
        torch.rand(1, 3, 10, 16, 16, generator=generator),
        torch.tensor([[10.0, 50.0, 120.0]]),
    )
    with torch.no_grad():
        expected = model(*inputs)
    return config, model.state_dict(), inputs, expected


def test_official_flair2_checkpoint_loads_into_the_utt_with_identical_outputs(utt, tmp_path):
    config, state, inputs, expected = utt
    official = {f"model.{key}": value for key, value in state.items()}
    official |= {"criterion.0.weight": torch.ones(13), "criterion.1.weight": torch.ones(13)}
    assert {"model.arch_vhr.segmentation_head.0.weight", "model.reshape_utae_output.1.weight"} <= set(official)
    assert any(key.startswith("model.fm_utae_featmap_collapsed.mlps.5.6.") for key in official)
    path = save({"state_dict": official, "epoch": 3}, tmp_path / "utt.ckpt", "torch-zip")
    model = load_model(config, path)
    with torch.no_grad():
        got = model(*inputs)
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    info = inspect_checkpoint(path)
    assert (info["layout"], info["sentinel_bands"], info["n_classes"]) == ("flair2-lightning", 10, 13)


def test_network_families_are_not_mixed_up(utt, aerial, tmp_path):
    utt_file = save(dict(utt[1]), tmp_path / "utt.safetensors", "safetensors")
    with pytest.raises(CheckpointError, match=r"U-T&T multimodal network but the config builds an aerial"):
        load_model(aerial_config("data.nomenclature=13cl"), utt_file)
    aerial_file = save(dict(aerial[1]), tmp_path / "aerial.safetensors", "safetensors")
    with pytest.raises(CheckpointError, match=r"aerial segmentation network \(smp\) but the config builds a FLAIR #2"):
        load_model(utt[0], aerial_file)


def test_utt_fusion_and_satellite_bands_mismatch_name_their_keys(utt, tmp_path):
    path = save(dict(utt[1]), tmp_path / "utt.pth", "torch-zip")
    other = load_config("flair2-utt", [*UTT_SETTINGS, "model.fusion.mode=cropped", "model.utae.input_dim=4"])
    with pytest.raises(CheckpointError) as error:
        load_model(other, path)
    assert "10 Sentinel-2 bands in the file, the config expects 4 (model.utae.input_dim)" in str(error.value)
    assert "model.fusion.mode" in str(error.value)


def test_config_saved_in_a_flairkit_checkpoint_is_recovered(aerial, tmp_path):
    state = aerial[1]
    saved = aerial_config("data.root=" + str(tmp_path), "name=trained")
    payload = {"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 1}
    payload["hyper_parameters"] = {"config": saved.model_dump(mode="json")}
    path = save(payload, tmp_path / "last.ckpt", "torch-zip")
    recovered = config_from_checkpoint(path, ["evaluate.batch_size=3"])
    assert recovered.name == "trained"
    assert recovered.data.root is None
    assert recovered.evaluate.batch_size == 3
    assert weights_config_source(path) is None


# ------------------------------------------------------------------------------ the config saved with weights


def flairkit_checkpoint(config, model: torch.nn.Module, path: Path) -> Path:
    """``model`` as a flairkit Lightning checkpoint, with ``config`` saved as its hyper-parameter."""
    state = {f"model.{key}": value for key, value in model.state_dict().items()}
    payload = {"state_dict": state, "epoch": 1, "hyper_parameters": {"config": config.model_dump(mode="json")}}
    return save(payload, path, "torch-zip")


def test_saved_config_mismatch_is_refused_with_both_values_and_allowed_on_purpose(aerial, tmp_path, caplog):
    path = flairkit_checkpoint(aerial[0], fresh(aerial[0]), tmp_path / "last.ckpt")
    for setting, expected in (
        ("data.nomenclature=hub", "data.nomenclature: the weights need 15cl, the config has hub"),
        (
            "data.channels=[3,2,1,4,5]",
            "data.channels: the weights need [1, 2, 3, 4, 5], the config has [3, 2, 1, 4, 5]",
        ),
        ("model.arch=fpn", "model.arch: the weights need unet, the config has fpn"),
    ):
        with pytest.raises(CheckpointError) as raised:
            load_model(aerial_config(setting), path)
        assert expected in str(raised.value) and "model.weights_config_check=warn" in str(raised.value)
    with caplog.at_level("WARNING"):
        load_model(aerial_config("data.nomenclature=hub", "model.weights_config_check=warn"), path)
    assert "data.nomenclature: the weights need 15cl, the config has hub" in caplog.text
    load_model(aerial_config("data.nomenclature=hub", "model.weights_config_check=off"), path)


def test_weights_without_a_saved_config_have_nothing_to_compare(aerial, caplog):
    with caplog.at_level("DEBUG", logger="flairkit.models.weights.loading"):
        assert check_weights_config(aerial_config("data.nomenclature=hub"), None, "file x.pth") == []
    assert [r.levelname for r in caplog.records] == ["DEBUG"] and "carries no config" in caplog.text


def test_the_check_override_never_travels_with_the_weights(aerial, tmp_path):
    lenient = aerial_config("model.weights_config_check=off")
    path = flairkit_checkpoint(lenient, fresh(lenient), tmp_path / "last.ckpt")
    recovered = config_from_checkpoint(path, ["data.nomenclature=hub"])
    assert recovered.model.weights_config_check == "strict"
    with pytest.raises(CheckpointError, match=r"data\.nomenclature: the weights need 15cl"):
        load_model(recovered, path)


def head(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if "segmentation_head" in k}


def test_init_weights_of_another_nomenclature_need_the_override_then_the_head_starts_afresh(aerial, tmp_path):
    trained = fresh(aerial[0])
    path = flairkit_checkpoint(aerial[0], trained, tmp_path / "last.ckpt")
    encoder = "seg_model.encoder.conv1.weight"
    for nomenclature in ("13cl", "hub"):  # 13 logits; 19 logits in another order
        config = aerial_config(f"data.nomenclature={nomenclature}", f"train.init_weights={path}")
        with pytest.raises(CheckpointError) as raised:
            load_init_weights(make(config, seed=5), config)
        message = str(raised.value)
        assert f"data.nomenclature: the weights need 15cl, the config has {nomenclature}" in message
        assert "to fine-tune onto another nomenclature on purpose, set model.weights_config_check=warn" in message
        config.model.weights_config_check = "warn"
        model = make(config, seed=5)
        built_head = {k: v.clone() for k, v in head(model).items()}
        load_init_weights(model, config)
        assert torch.equal(model.state_dict()[encoder], trained.state_dict()[encoder])
        assert all(torch.equal(head(model)[k], built_head[k]) for k in built_head)
    bands = aerial_config("data.channels=[3,2,1,4,5]", f"train.init_weights={path}", "data.nomenclature=hub")
    with pytest.raises(CheckpointError, match=r"data\.channels: the weights need \[1, 2, 3, 4, 5\]"):
        load_init_weights(make(bands, seed=5), bands)


def test_init_weights_without_a_saved_config_of_another_class_count_say_how_to_fine_tune(aerial, tmp_path):
    path = save(dict(aerial[1]), tmp_path / "weights.pth", "torch-zip")
    config = aerial_config("data.nomenclature=13cl", f"train.init_weights={path}")
    with pytest.raises(CheckpointError, match=r"has 19 classes in the file(.|\n)*model\.weights_config_check=warn"):
        load_init_weights(make(config, seed=5), config)
    config.model.weights_config_check = "warn"
    model = make(config, seed=5)
    load_init_weights(model, config)
    assert torch.equal(
        model.state_dict()["seg_model.encoder.conv1.weight"], aerial[1]["seg_model.encoder.conv1.weight"]
    )


def test_inspect_gives_the_sha256_of_the_file(aerial, tmp_path):
    path = save(dict(aerial[1]), tmp_path / "weights.safetensors", "safetensors")
    assert inspect_checkpoint(path)["sha256"] == file_sha256(path)
