"""Load a network to run, whatever its weights are: torch weights (:mod:`flairkit.models.weights`) or an ONNX
graph (:mod:`flairkit.models.onnx`), and fingerprint what was loaded."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from flairkit.config.schema import FlairConfig
from flairkit.hashing import file_sha256
from flairkit.models.onnx import OnnxSegmenter
from flairkit.models.weights import ONNX_SUFFIX, check_weights_config, load_network, resolve_source


def load_model(config: FlairConfig, path: Path | str, device: str = "cpu") -> nn.Module:
    """Build the network of ``config`` (aerial or multimodal), load weights strictly, return it in eval mode.

    ``path`` is a weights file (any supported format/layout), a bundle folder from ``flair export``, a bundle's
    ``model.onnx`` (an onnxruntime :class:`~flairkit.models.onnx.OnnxSegmenter`, on the CPU) or a released model
    name (fetched into the cache when needed). When the weights come with their config (a flairkit checkpoint, a
    bundle, a released model), ``config`` must select the same bands, normalisation, nomenclature and network
    (:func:`flairkit.models.weights.check_weights_config`).
    """
    source = resolve_source(path)
    if source.path.suffix != ONNX_SUFFIX:
        return load_network(config, source, device)
    saved = source.config.model_dump(mode="json") if source.config is not None else None
    check_weights_config(config, saved, source.origin)
    return OnnxSegmenter(source.path)


def weights_fingerprint(model: nn.Module) -> str:
    """A sha256 of a network's class and weights (of its graph file for an ONNX graph).

    The same for the same weights however they were stored (checkpoint, safetensors, bundle): detection's resume
    and prediction folders use it to refuse work made by other weights.
    """
    digest = hashlib.sha256(type(model).__qualname__.encode())
    if isinstance(model, OnnxSegmenter):
        digest.update(file_sha256(model.path).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
