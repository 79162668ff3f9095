"""FLAIR-HUB's multimodal network: IGN-built weights load strictly and give IGN's scores; bad checkpoints are refused.

The fixtures in tests/fixtures/hub were written by IGN's own code (benchmarks/hub_official.py, smp 0.4.0).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from conftest import TINY_HUB_NETWORK
from flairkit.config import load_config, preset_names
from flairkit.data.hub.dataset import build_hub_dataset, collate_hub, pad_mask_key
from flairkit.errors import CheckpointError, ConfigError, DataError
from flairkit.models import zoo
from flairkit.models.build import build_model
from flairkit.models.hub import HubNetwork, HubNetworkSpec, hub_keys, load_hub_weights, normalization, normalize_batch
from flairkit.models.hub.build import task_classes
from flairkit.models.hub.temporal import SeriesSettings

FIXTURES = Path(__file__).parent / "fixtures" / "hub"
CASES = ("aerial_s2_upernet", "aerial_elev_s2_unet_multitask", "series_only_multitask")
CLASSES = {"AERIAL_LABEL-COSIA": 19, "ALL_LABEL-LPIS": 23}


def case_spec(name: str, official_pad_norm: bool = True) -> HubNetworkSpec:
    """The flairkit spec of a fixture, from the case IGN's script recorded in the file's metadata."""
    with safe_open(FIXTURES / f"{name}.safetensors", "pt") as handle:
        case = json.loads(handle.metadata()["case"])
    utae = case["utae"]
    widths = case["decoder_widths"]
    return HubNetworkSpec(
        inputs=case["inputs"],
        tasks={label: CLASSES[label] for label in case["labels"]},
        encoder=case["encoder"],
        decoder=case["decoder"],
        decoder_channels=tuple(widths.get("decoder_channels", (256, 128, 64, 32, 16))),
        pyramid_channels=widths.get("decoder_pyramid_channels", 256),
        segmentation_channels=widths.get("decoder_segmentation_channels", 64),
        aux_heads=tuple(case["aux"]),
        image_sizes=case["sizes"],
        series=SeriesSettings(
            encoder_widths=tuple(utae["encoder_widths"]),
            decoder_widths=tuple(utae["decoder_widths"]),
            out_conv=tuple(utae["out_conv"]),
            str_conv_k=utae["str_conv_k"],
            str_conv_s=utae["str_conv_s"],
            str_conv_p=utae["str_conv_p"],
            agg_mode=utae["agg_mode"],
            encoder_norm=utae["encoder_norm"],
            n_head=utae["n_head"],
            d_model=utae["d_model"],
            d_k=utae["d_k"],
            pad_value=utae["pad_value"],
            padding_mode=utae["padding_mode"],
            official_pad_norm=official_pad_norm,
        ),
    )


def io_tensors(name: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    tensors = load_file(FIXTURES / f"{name}_io.safetensors")
    parts: dict[str, dict[str, torch.Tensor]] = {"in": {}, "out": {}, "aux": {}}
    for key, value in tensors.items():
        part, _, rest = key.partition(".")
        parts[part][rest] = value
    return parts["in"], parts["out"], parts["aux"]


@pytest.mark.parametrize("name", CASES)
def test_ign_built_weights_load_strictly_and_give_ign_scores(name):
    network = HubNetwork(case_spec(name))
    load_hub_weights(network, FIXTURES / f"{name}.safetensors")
    network.eval()
    inputs, expected, expected_aux = io_tensors(name)
    with torch.no_grad():
        out = network(inputs, output_size=(12, 12), with_aux=True)
    assert set(expected) <= set(out)
    for task, scores in expected.items():
        torch.testing.assert_close(out[task], scores, rtol=0, atol=1e-5, msg=f"{name} {task}")
    for key, scores in expected_aux.items():
        torch.testing.assert_close(out[key], scores, rtol=0, atol=1e-5, msg=f"{name} {key}")
    assert set(out) == set(expected) | set(expected_aux)


def test_flairkit_keys_equal_ign_keys_after_ign_key_steps():
    tensors = load_file(FIXTURES / "aerial_s2_upernet.safetensors")
    assert all(key.startswith(("model.", "criterion.")) for key in tensors)
    network = HubNetwork(case_spec("aerial_s2_upernet"))
    assert set(hub_keys(tensors)) == set(network.state_dict())
    # smp 0.4.0's UPerNet names, which today's smp no longer has
    assert "main_decoders.AERIAL_LABEL-COSIA.seg_model.decoder.fpn_bottleneck.0.weight" in network.state_dict()


def _refusal(name: str, spec: HubNetworkSpec, tensors: dict[str, torch.Tensor] | None = None) -> str:
    network = HubNetwork(spec)
    before = {key: value.clone() for key, value in network.state_dict().items()}
    with pytest.raises(CheckpointError) as refused:
        load_hub_weights(network, tensors if tensors is not None else FIXTURES / f"{name}.safetensors")
    after = network.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before), "a refused load must change nothing"
    return str(refused.value)


def test_a_checkpoint_for_other_modalities_tasks_or_heads_is_refused_naming_them():
    name = "aerial_elev_s2_unet_multitask"
    spec = case_spec(name)
    no_elevation = {m: c for m, c in spec.inputs.items() if m != "DEM_ELEV"}
    message = _refusal(name, replace(spec, inputs=no_elevation))
    assert "modalities" in message and "the checkpoint has DEM_ELEV that the config lacks" in message
    assert "data.hub.modalities" in message
    with_spot = {**spec.inputs, "SPOT_RGBI": 4}
    message = _refusal(name, replace(spec, inputs=with_spot))
    assert "the config has SPOT_RGBI that the checkpoint lacks" in message
    cosia_only = {"AERIAL_LABEL-COSIA": 19}
    message = _refusal(name, replace(spec, tasks=cosia_only))
    assert "tasks" in message and "ALL_LABEL-LPIS" in message and "data.hub.labels" in message
    message = _refusal(name, replace(spec, aux_heads=("DEM_ELEV",)))
    assert "auxiliary heads" in message and "model.hub.aux_heads" in message


def test_a_checkpoint_that_does_not_fit_exactly_is_refused_never_reinitialised():
    name = "aerial_s2_upernet"
    spec = case_spec(name)
    wider = replace(spec, inputs={**spec.inputs, "AERIAL_RGBI": 4})
    message = _refusal(name, wider)
    assert "mis-shaped" in message and "encoders.AERIAL_RGBI.seg_model" in message
    tensors = load_file(FIXTURES / f"{name}.safetensors")
    del tensors["model.fusion_handler.conv_f.0.weight"]
    message = _refusal(name, spec, tensors)
    assert "1 missing" in message and "fusion_handler.conv_f.0.weight" in message
    tensors = load_file(FIXTURES / f"{name}.safetensors")
    tensors["model.extra.weight"] = torch.zeros(1)
    assert "1 unexpected" in _refusal(name, spec, tensors)


def hub_presets() -> list[str]:
    return [name for name in preset_names() if load_config(name).model.hub is not None]


def test_every_baseline_of_ign_readme_and_every_released_model_is_a_preset_with_its_published_miou():
    names = hub_presets()
    baselines = [f"flairhub-LC-{x}" for x in "ABCDEFGHIJKL"] + ["flairhub-LC-ALL"]
    baselines += [f"flairhub-LPIS-{x}" for x in "ABCDEFGHIJK"]
    assert set(baselines) <= set(names)
    lcl = load_config("flairhub-LC-L")
    assert lcl.data.hub.modalities == [
        "AERIAL_RGBI", "DEM_ELEV", "SPOT_RGBI", "SENTINEL2_TS", "SENTINEL1-ASC_TS", "SENTINEL1-DESC_TS"
    ]  # fmt: skip
    assert (lcl.published.miou, lcl.data.hub.channels["AERIAL_RGBI"]) == (65.8, [4, 1, 2])
    assert lcl.model.hub.normalization["DEM_ELEV"].means == [311.06, 311.06]
    assert load_config("flairhub-LPIS-I").data.hub.labels == ["ALL_LABEL-LPIS"]
    released = zoo.released_hub_models()
    assert "FLAIR-HUB_LC-A_IR_swinbase-upernet" in released and "FLAIR-HUB_LC-G_utae" in released
    assert not set(released) & set(zoo.released_models())
    for name in released:
        release = load_config(name).release
        assert (release.hub_repo, release.filename) == (f"IGNF/{name}", f"{name}.safetensors")
        assert zoo.model_info(name)["published"]["miou"] > 0


def test_every_flair_hub_preset_builds_and_runs_on_a_collate_hub_batch_of_the_synthetic_world(hub_world):
    datasets: dict[tuple, list] = {}
    for name in hub_presets():
        config = load_config(name, [*TINY_HUB_NETWORK, f"data.hub.root={hub_world}"])
        hub = config.data.hub
        key = (tuple(hub.modalities), tuple(hub.labels), tuple(sorted((m, tuple(c)) for m, c in hub.channels.items())))
        if key not in datasets:
            dataset = build_hub_dataset(hub, "train")
            datasets[key] = collate_hub([dataset[0], dataset[1]])
        for series in (m for m in hub.modalities if m.endswith("_TS")):
            # U-TAE finds padding as all-zero frames: exactly the dates collate_hub's pad mask marks
            padded = (datasets[key][series] == 0).flatten(2).all(dim=2)
            assert torch.equal(padded, datasets[key][pad_mask_key(series)]), name
        batch = normalize_batch(datasets[key], normalization(config))
        network = build_model(config, pretrained_encoder=False).eval()
        assert isinstance(network, HubNetwork)
        with torch.no_grad():
            out = network(batch)
        classes = task_classes(config)
        assert set(out) == set(classes), name
        for task, n in classes.items():
            assert out[task].shape == (2, n, 256, 256), name
            assert torch.isfinite(out[task]).all(), name


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.hub.aux_heads=[SPOT_RGBI]"], "model.hub.aux_heads: ['SPOT_RGBI'] not in data.hub.modalities"),
        (["model.hub.normalization={AERIAL_RGBI: {means: [1, 2], stds: [1, 1]}}"], "model.hub.normalization.AERIAL"),
        (["model.multimodal=true", "data.sentinel.enabled=true"], "model.hub and model.multimodal"),
        (["model.hub.decoder=fpn"], "model.hub.decoder"),
    ],
)
def test_bad_model_hub_settings_are_refused_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config("flairhub-LC-D", overrides)


def test_flair_train_of_the_multimodal_network_without_flair_hub_data_is_refused(tmp_path):
    from flairkit.training.run import train

    with pytest.raises(ConfigError, match=r"model\.hub reads FLAIR-HUB data: set data\.root"):
        train(load_config("flairhub-LC-A", [f"output_dir={tmp_path}"]))
    assert not any(tmp_path.iterdir())


def test_a_released_model_not_in_the_hub_cache_offline_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match=r"FLAIR-HUB_LC-G_utae are not in the hub cache.*resolve/main"):
        zoo.load_released_hub_model("FLAIR-HUB_LC-G_utae", cache_dir=tmp_path, offline=True)
    with pytest.raises(CheckpointError, match="not a released FLAIR-HUB model"):
        zoo.load_released_hub_model("flairhub-LC-G")


def test_presets_at_full_size_have_the_tensor_layout_of_ign_code():
    """Swin with its input size, ConvNeXt V2, U-Net and UPerNet, U-TAE widths, fusion: every key and shape as IGN
    builds them from its configs/train (digests written by benchmarks/hub_official.py)."""
    recorded = json.loads((FIXTURES / "ign_layouts.json").read_text())["layouts"]
    assert len(recorded) >= 8
    for name, ign in recorded.items():
        with torch.device("meta"):
            network = build_model(load_config(name), pretrained_encoder=False)
        state = network.state_dict()
        lines = sorted(f"{key} {tuple(value.shape)}" for key, value in state.items())
        assert len(state) == ign["tensors"], name
        assert sum(p.numel() for p in network.parameters()) == ign["parameters"], name
        assert hashlib.sha256("\n".join(lines).encode()).hexdigest() == ign["sha256"], name


def test_a_batch_missing_a_modality_or_its_dates_is_a_clear_error():
    network = HubNetwork(case_spec("aerial_s2_upernet")).eval()
    inputs, _, _ = io_tensors("aerial_s2_upernet")
    with pytest.raises(DataError, match="the batch has no SENTINEL2_TS"):
        network({k: v for k, v in inputs.items() if k != "SENTINEL2_TS"})
    with pytest.raises(DataError, match="the batch has no SENTINEL2_DATES"):
        network({k: v for k, v in inputs.items() if k != "SENTINEL2_DATES"})
    with pytest.raises(DataError, match="AERIAL_RGBI: the network takes 3 channel"):
        network({**inputs, "AERIAL_RGBI": inputs["AERIAL_RGBI"][:, :2]})
    with pytest.raises(DataError, match="takes a collate_hub batch"):
        network(inputs["AERIAL_RGBI"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.hub.encoder=no_such_net", "model.hub.encoder 'no_such_net': smp/timm cannot build it"),
        ("model.hub.utae.n_head=5", "model.hub.utae: agg_mode att_group needs every encoder width"),
    ],
)
def test_a_network_that_cannot_be_built_is_a_config_error_naming_the_key(override, message):
    with torch.device("meta"), pytest.raises(ConfigError, match=message):
        build_model(load_config("flairhub-LC-D", [override]), pretrained_encoder=False)


def test_flairkit_default_l_tae_norm_differs_from_ign_only_on_the_padded_sample():
    name = "aerial_s2_upernet"
    network = HubNetwork(case_spec(name, official_pad_norm=False))
    load_hub_weights(network, FIXTURES / f"{name}.safetensors")
    inputs, expected, _ = io_tensors(name)
    assert (inputs["SENTINEL2_TS"][1, -1] == 0).all() and (inputs["SENTINEL2_TS"][0] != 0).any(dim=(1, 2, 3)).all()
    with torch.no_grad():
        scores = network.eval()(inputs, output_size=(12, 12))["AERIAL_LABEL-COSIA"]
    torch.testing.assert_close(scores[0], expected["AERIAL_LABEL-COSIA"][0], rtol=0, atol=1e-5)
    assert (scores[1] - expected["AERIAL_LABEL-COSIA"][1]).abs().max() > 1e-3


def test_a_lightning_checkpoint_of_ign_loads_as_its_safetensors(tmp_path):
    name = "series_only_multitask"
    tensors = load_file(FIXTURES / f"{name}.safetensors")
    torch.save({"state_dict": tensors, "epoch": 3, "global_step": 30}, tmp_path / "ign.ckpt")
    network = HubNetwork(case_spec(name))
    load_hub_weights(network, tmp_path / "ign.ckpt")
    inputs, expected, _ = io_tensors(name)
    with torch.no_grad():
        out = network.eval()(inputs, output_size=(12, 12))
    torch.testing.assert_close(out["ALL_LABEL-LPIS"], expected["ALL_LABEL-LPIS"], rtol=0, atol=1e-5)
