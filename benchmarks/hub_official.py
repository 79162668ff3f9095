"""Builds FLAIR-HUB networks with IGN's own code and writes the fixtures of tests/test_hub_models.py.

This file imports nothing from flairkit: it runs in a separate virtual environment holding IGN's pins and a
checkout of IGNF/FLAIR-HUB (read at 3d5693b)::

    python3 -m venv /tmp/ign-hub-venv
    /tmp/ign-hub-venv/bin/pip install torch segmentation-models-pytorch==0.4.0 safetensors==0.5.3 \\
        pytorch-lightning==2.5.1 timm
    git clone https://github.com/IGNF/FLAIR-HUB /tmp/flair-hub-src   # or any checkout of it
    /tmp/ign-hub-venv/bin/python benchmarks/hub_official.py --checkout /tmp/flair-hub-src \\
        --out tests/fixtures/hub

For each case of ``CASES`` it builds IGN's ``FLAIR_HUB_Model`` from a config laid out as IGN's YAML files
(``models.monotemp_model.arch``, ``models.multitemp_model``, ``modalities.inputs``/``inputs_channels``/
``aux_loss``, ``labels``/``labels_configs``) with a fixed seed, gives its normalisation layers random
statistics, scales and shifts (so that a mix-up of them shows), rounds every tensor to float16 (the stored
precision, so that both sides compute with the same weights) and runs it in eval mode on a random batch whose
series carry a padded date. It writes ``<case>.safetensors``, the state dict as IGN's Lightning module stores
it (``model.`` prefix, plus a ``criterion.*`` tensor that IGN's loader drops), and ``<case>_io.safetensors``:
the inputs, dates, the task scores (``out.<TASK>``) and the auxiliary scores IGN computes (``aux.<NAME>``).
It also builds the full-size networks of ``FULL_SIZE`` from the checkout's configs/train, on the meta device, and
writes their tensor count, parameter count and layout digest (keys and shapes) to ``ign_layouts.json``.

Two things differ from IGN's configs, both through ``smp.create_model``'s arguments, none through IGN's code:
encoders are built with ``encoder_weights=None`` (IGN's default asks for ImageNet weights, a download), and
decoders get small widths (``DECODER_WIDTHS``) so that the fixtures stay small; the encoders are timm's tiny
test models. IGN's code prints its parameter table; it is silenced.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

MONO = ("AERIAL_RGBI", "AERIAL-RLT_PAN", "DEM_ELEV", "SPOT_RGBI")
MULTI = ("SENTINEL2_TS", "SENTINEL1-ASC_TS", "SENTINEL1-DESC_TS")
COSIA, LPIS = "AERIAL_LABEL-COSIA", "ALL_LABEL-LPIS"
CLASSES = {COSIA: 19, LPIS: 23}
DECODER_WIDTHS = {
    "upernet": {"decoder_pyramid_channels": 16, "decoder_segmentation_channels": 8},
    "unet": {"decoder_channels": (8, 8, 4, 4, 4)},
}
UTAE = {
    "encoder_widths": [4, 4, 4, 8],
    "decoder_widths": [4, 4, 4, 8],
    "out_conv": [8, 19],
    "str_conv_k": 3,
    "str_conv_s": 1,
    "str_conv_p": 1,
    "agg_mode": "att_group",
    "encoder_norm": "group",
    "n_head": 4,
    "d_model": 8,
    "d_k": 4,
    "pad_value": 0,
    "padding_mode": "reflect",
}
CASES = {
    "aerial_s2_upernet": {
        "encoder": "test_convnext",
        "decoder": "upernet",
        "inputs": {"AERIAL_RGBI": 3, "SENTINEL2_TS": 10},
        "labels": [COSIA],
        "aux": ["AERIAL_RGBI", "SENTINEL2_TS"],
        "sizes": {"AERIAL_RGBI": 32, "SENTINEL2_TS": 8},
    },
    "aerial_elev_s2_unet_multitask": {
        "encoder": "test_efficientnet",
        "decoder": "unet",
        "inputs": {"AERIAL_RGBI": 4, "DEM_ELEV": 2, "SENTINEL2_TS": 10},
        "labels": [COSIA, LPIS],
        "aux": [],
        "sizes": {"AERIAL_RGBI": 32, "DEM_ELEV": 32, "SENTINEL2_TS": 8},
    },
    "series_only_multitask": {
        "encoder": "test_efficientnet",
        "decoder": "upernet",
        "inputs": {"SENTINEL2_TS": 10, "SENTINEL1-ASC_TS": 2, "SENTINEL1-DESC_TS": 2},
        "labels": [COSIA, LPIS],
        "aux": ["SENTINEL1-ASC_TS"],
        "sizes": {"SENTINEL2_TS": 8, "SENTINEL1-ASC_TS": 8, "SENTINEL1-DESC_TS": 8},
    },
}
BATCH = 2
DATES = 4
LABEL_SIDE = 12
"""Side of the labels, hence of the scores (IGN resizes every output to the labels' size)."""
SEED = 2025


def ign_config(case: dict) -> dict:
    """A config laid out as IGN's merged YAML files, for one case."""
    inputs = case["inputs"]
    return {
        "labels": list(case["labels"]),
        "labels_configs": {
            label: {"value_name": {i: f"class {i}" for i in range(CLASSES[label])}} for label in case["labels"]
        },
        "modalities": {
            "inputs": {mod: mod in inputs for mod in MONO + MULTI},
            "inputs_channels": {
                mod: list(range(1, inputs[mod] + 1)) for mod in inputs if mod not in ("DEM_ELEV", "AERIAL-RLT_PAN")
            },
            "aux_loss": {mod: mod in case["aux"] for mod in MONO + MULTI},
            "pre_processings": {"calc_elevation": True, "calc_elevation_stack_dsm": inputs.get("DEM_ELEV") == 2},
        },
        "models": {
            "monotemp_model": {"arch": f"{case['encoder']}-{case['decoder']}"},
            "multitemp_model": json.loads(json.dumps(UTAE)),
        },
    }


def patch_smp(decoder: str | None) -> None:
    """Random encoders (no download) and, for a ``decoder`` of ``DECODER_WIDTHS``, small decoders, through
    ``smp.create_model``'s own arguments."""
    import segmentation_models_pytorch as smp

    original = getattr(smp.create_model, "__wrapped__", smp.create_model)

    def create_model(*args, **kwargs):
        kwargs["encoder_weights"] = None
        kwargs.update(DECODER_WIDTHS.get(decoder, {}))
        return original(*args, **kwargs)

    create_model.__wrapped__ = original
    smp.create_model = create_model


def randomise_norms(model) -> None:
    """Give every normalisation layer random statistics, scale and shift."""
    import torch
    from torch import nn

    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.normal_(0.0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
        norm = isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm))
        if norm and getattr(module, "weight", None) is not None:
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)


def random_batch(case: dict, generator) -> dict:
    """Inputs of every modality, series dated and the second sample's last date padded (zeros)."""
    import torch

    batch = {}
    for mod, channels in case["inputs"].items():
        side = case["sizes"][mod]
        if mod in MULTI:
            series = torch.randn(BATCH, DATES, channels, side, side, generator=generator)
            dates = torch.sort(torch.randint(-130, 220, (BATCH, DATES), generator=generator), dim=1).values.float()
            series[1, -1] = 0.0
            dates[1, -1] = 0.0
            batch[mod] = series
            batch[mod.replace("TS", "DATES")] = dates
        else:
            batch[mod] = torch.randn(BATCH, channels, side, side, generator=generator)
    for label in case["labels"]:
        batch[label] = torch.zeros(BATCH, LABEL_SIDE, LABEL_SIDE, dtype=torch.long)
    return batch


def build_case(name: str, case: dict, out: Path) -> dict:
    import torch
    from flair_hub.models.flair_model import FLAIR_HUB_Model
    from safetensors.torch import save_file

    patch_smp(case["decoder"])
    torch.manual_seed(SEED)
    with contextlib.redirect_stdout(io.StringIO()):
        model = FLAIR_HUB_Model(ign_config(case), dict(case["sizes"]))
    randomise_norms(model)
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    model.eval()
    batch = random_batch(case, torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        scores, aux = model(batch)
    state = {f"model.{key}": value.detach().clone().contiguous() for key, value in model.state_dict().items()}
    state = {key: value.half() if value.is_floating_point() else value for key, value in state.items()}
    state[f"criterion.{case['labels'][0]}.weight"] = torch.ones(CLASSES[case["labels"][0]], dtype=torch.float16)
    save_file(
        state,
        str(out / f"{name}.safetensors"),
        metadata={"case": json.dumps({**case, "utae": UTAE, "decoder_widths": DECODER_WIDTHS[case["decoder"]]})},
    )
    io_tensors = {f"in.{key}": value.contiguous() for key, value in batch.items() if key not in CLASSES}
    io_tensors.update({f"out.{key}": value.contiguous() for key, value in scores.items()})
    io_tensors.update({f"aux.{key}": value.contiguous() for key, value in aux.items()})
    save_file(io_tensors, str(out / f"{name}_io.safetensors"))
    return {"tensors": len(state), "outputs": sorted(scores), "aux": sorted(aux)}


SWIN_B = "swin_base_patch4_window12_384"
FULL_SIZE = {
    "flairhub-LC-A": (["AERIAL_RGBI"], f"{SWIN_B}-upernet", COSIA, None),
    "flairhub-LC-D": (["AERIAL_RGBI", "SENTINEL2_TS"], f"{SWIN_B}-upernet", COSIA, None),
    "flairhub-LC-G": (["SENTINEL2_TS"], f"{SWIN_B}-upernet", COSIA, None),
    "flairhub-LC-K": (["AERIAL_RGBI", "AERIAL-RLT_PAN"], f"{SWIN_B}-upernet", COSIA, None),
    "flairhub-LC-L": (
        ["AERIAL_RGBI", "DEM_ELEV", "SPOT_RGBI", "SENTINEL2_TS", "SENTINEL1-ASC_TS", "SENTINEL1-DESC_TS"],
        f"{SWIN_B}-upernet",
        COSIA,
        None,
    ),
    "flairhub-LPIS-F": (["SENTINEL2_TS"], f"{SWIN_B}-upernet", LPIS, None),
    "FLAIR-HUB_LC-A_IR_convnextv2base-unet": (["AERIAL_RGBI"], "convnextv2_base-unet", COSIA, None),
    "FLAIR-HUB_LC-A_RGB_swintiny-upernet": (["AERIAL_RGBI"], "swin_tiny_patch4_window7_224-upernet", COSIA, [1, 2, 3]),
}
"""Full-size networks (flairkit preset -> modalities, IGN arch, task, aerial channels when not IGN's default),
built as IGN's configs/train builds them: their tensor layout goes to ign_layouts.json."""
SIDES = {"AERIAL_RGBI": 512, "AERIAL-RLT_PAN": 256, "DEM_ELEV": 512, "SPOT_RGBI": 64}
"""Input sides IGN's code takes from a batch (Sentinel patches: 10 px)."""


def layout_digest(state: dict) -> str:
    """sha256 of the sorted ``key shape`` lines of a state dict."""
    import hashlib

    lines = sorted(f"{key} {tuple(value.shape)}" for key, value in state.items())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def full_size_layouts(checkout: Path) -> dict:
    """Tensor count, parameter count and layout digest of every ``FULL_SIZE`` network, on the meta device."""
    import torch
    import yaml
    from flair_hub.models.flair_model import FLAIR_HUB_Model

    train = checkout / "configs" / "train"
    models = yaml.safe_load((train / "config_models.yaml").read_text())["models"]
    modalities = yaml.safe_load((train / "config_modalities.yaml").read_text())["modalities"]
    patch_smp(None)
    layouts = {}
    for name, (inputs, arch, label, aerial) in FULL_SIZE.items():
        channels = dict(modalities["inputs_channels"], **({"AERIAL_RGBI": aerial} if aerial else {}))
        config = {
            "labels": [label],
            "labels_configs": {label: {"value_name": {i: f"class {i}" for i in range(CLASSES[label])}}},
            "modalities": {
                "inputs": {mod: mod in inputs for mod in MONO + MULTI},
                "inputs_channels": channels,
                "aux_loss": {mod: False for mod in MONO + MULTI},
                "pre_processings": modalities["pre_processings"],
            },
            "models": {"monotemp_model": {"arch": arch}, "multitemp_model": dict(models["multitemp_model"])},
        }
        with torch.device("meta"), contextlib.redirect_stdout(io.StringIO()):
            model = FLAIR_HUB_Model(config, {mod: SIDES.get(mod, 10) for mod in inputs})
        state = model.state_dict()
        layouts[name] = {
            "tensors": len(state),
            "parameters": sum(p.numel() for p in model.parameters()),
            "sha256": layout_digest(state),
        }
    return layouts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, required=True, help="checkout of IGNF/FLAIR-HUB (holds src/flair_hub)")
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/hub"), help="fixtures folder")
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="cases to write (default: all)")
    args = parser.parse_args()
    sys.path.insert(0, str(args.checkout / "src"))
    args.out.mkdir(parents=True, exist_ok=True)
    from importlib import metadata

    versions = {lib: metadata.version(lib) for lib in ("torch", "segmentation-models-pytorch", "timm")}
    report = {name: build_case(name, CASES[name], args.out) for name in args.case or sorted(CASES)}
    layouts = full_size_layouts(args.checkout)
    (args.out / "ign_layouts.json").write_text(json.dumps({"versions": versions, "layouts": layouts}, indent=1) + "\n")
    print(json.dumps({"versions": versions, "cases": report, "layouts": layouts}, indent=1))


if __name__ == "__main__":
    main()
