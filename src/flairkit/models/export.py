"""Self-contained model bundles: weights (safetensors), the resolved config, optionally an ONNX graph.

A bundle folder holds ``model.safetensors`` (flairkit key layout), ``config.json`` (the resolved config,
machine-specific paths removed), ``nomenclature.yaml`` (the text of a YAML nomenclature, restored where the
recorded path no longer holds it) and, on request, ``model.onnx`` (input ``image``: normalised float NCHW with
a dynamic batch; optional input ``metadata``; output ``logits``). Any flairkit command accepts the folder
as its weights; :class:`flairkit.models.onnx.OnnxSegmenter` runs the ONNX graph in place of the torch model.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flairkit.atomic import check_writable, set_default_mode
from flairkit.config.schema import FlairConfig
from flairkit.errors import CheckpointError, ConfigError
from flairkit.models.onnx import BUNDLE_ONNX, OnnxSegmenter, export_onnx, verify_onnx
from flairkit.models.weights import (
    BUNDLE_CONFIG,
    BUNDLE_NOMENCLATURE,
    BUNDLE_WEIGHTS,
    explain_mismatch,
    load_network,
    read_bundle_config,
    tensor_shapes,
    without_machine_paths,
)
from flairkit.nomenclature import get_nomenclature

logger = logging.getLogger(__name__)


def bundle_config_dict(config: FlairConfig) -> dict[str, Any]:
    """The resolved config as JSON data, without paths that only exist where it was made."""
    return without_machine_paths(config.model_dump(mode="json"))


def _reference_model(config: FlairConfig) -> nn.Module:
    """The network ``config`` describes, on the meta device when its modules allow it (no memory used)."""
    from flairkit.models.build import build_model

    try:
        with torch.device("meta"):
            return build_model(config, pretrained_encoder=False)
    except (RuntimeError, NotImplementedError):
        return build_model(config, pretrained_encoder=False)


def _check_matches_config(config: FlairConfig, model: nn.Module) -> None:
    message = explain_mismatch(
        "the model to export does not match the config (its bundle could not be loaded again):",
        tensor_shapes(model.state_dict()),
        tensor_shapes(_reference_model(config).state_dict()),
        config,
        source="the model",
    )
    if message:
        raise CheckpointError(f"{message}\nexport with the config the model was built from")


def _save_safetensors(model: nn.Module, path: Path, config: FlairConfig) -> None:
    from safetensors.torch import save_file

    tensors = {key: value.detach().to("cpu").contiguous() for key, value in model.state_dict().items()}
    network = "utt" if config.model.multimodal else "aerial"
    save_file(tensors, str(path), metadata={"format": "pt", "flairkit_network": network, "flairkit_name": config.name})


def export_bundle(
    config: FlairConfig,
    model: nn.Module,
    out_dir: Path,
    overwrite: bool = False,
    onnx: bool = False,
    tile_size: int = 512,
    private: bool = False,
) -> Path:
    """Write a self-contained bundle folder (weights, config, optional ONNX graph) atomically; return it.

    The model must be the network ``config`` builds. With ``onnx``, the graph takes ``tile_size`` square
    tiles and is checked against the torch model before the bundle is kept. The bundle gets the permissions of
    any new output (the umask applies), or owner-only ones with ``private``.
    """
    out_dir = Path(out_dir)
    check_writable(out_dir, overwrite)
    if onnx and config.model.multimodal:
        raise ConfigError(
            "ONNX export covers aerial networks only (model.multimodal=false); export the U-T&T without --onnx"
        )
    _check_matches_config(config, model)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".part", dir=out_dir.parent))
    try:
        _save_safetensors(model, staging / BUNDLE_WEIGHTS, config)
        (staging / BUNDLE_CONFIG).write_text(json.dumps(bundle_config_dict(config), indent=2) + "\n", encoding="utf-8")
        yaml_file = get_nomenclature(config.data.nomenclature).source
        if yaml_file is not None:
            # The YAML's text, not only its path: the bundle stays usable when the file moves or changes.
            shutil.copyfile(yaml_file, staging / BUNDLE_NOMENCLATURE)
        if onnx:
            in_channels = len(config.data.channels)
            export_onnx(model, staging / BUNDLE_ONNX, in_channels, tile_size)
            verify_onnx(model, staging / BUNDLE_ONNX, in_channels, tile_size)
        for path in [staging, *staging.iterdir()]:
            set_default_mode(path, private)  # mkdtemp and safetensors create them owner-only
        _replace_folder(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("bundle written to %s", out_dir)
    return out_dir


def _replace_folder(staging: Path, destination: Path) -> None:
    """Move ``staging`` to ``destination``, replacing what is there only once the new folder is complete."""
    if not destination.exists():
        os.replace(staging, destination)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".old", dir=destination.parent))
    os.replace(destination, retired / destination.name)
    os.replace(staging, destination)
    shutil.rmtree(retired, ignore_errors=True)


def load_bundle(folder: Path | str, onnx: bool = False) -> tuple[FlairConfig, nn.Module]:
    """The config and network of a bundle (in eval mode); with ``onnx``, an :class:`OnnxSegmenter` instead."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"bundle folder {folder} does not exist; export one with `flair export`")
    config = read_bundle_config(folder)
    if onnx:
        graph = folder / BUNDLE_ONNX
        if not graph.is_file():
            raise CheckpointError(f"{folder} has no {BUNDLE_ONNX}; export it again with `flair export --onnx`")
        return config, OnnxSegmenter(graph)
    return config, load_network(config, folder)
