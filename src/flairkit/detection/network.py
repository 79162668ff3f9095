"""The network as zone detection runs it: on its device, checked on one blank tile, then in ONNX Runtime or in
torch with its BatchNorm folded into the convolutions, at the chosen precision."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from flairkit.config.schema import FlairConfig
from flairkit.data.transforms import Normalizer
from flairkit.detection.settings import DetectionSettings
from flairkit.devices import autocast
from flairkit.errors import ConfigError
from flairkit.models.inference import AveragedNetwork, fold_batchnorm
from flairkit.models.loader import weights_fingerprint
from flairkit.models.onnx import OnnxSegmenter, onnx_on_device, onnx_providers, onnx_runtime_model

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectionNetwork:
    """What runs the tiles: the network, its input normalisation, the settings it allows and its fingerprint."""

    model: torch.nn.Module
    normalizer: Normalizer
    settings: DetectionSettings
    """The run's settings, less what the network cannot do (fitted tiles for a graph of one tile size,
    reduced precision in ONNX Runtime)."""
    fingerprint: str
    """:func:`~flairkit.models.loader.weights_fingerprint` of the weights as given, joined by "+" for an ensemble
    (resume refuses others)."""
    backend: str
    """What runs the network(s): torch, ONNX Runtime or both."""


def prepare_network(
    config: FlairConfig,
    model: torch.nn.Module | Sequence[torch.nn.Module],
    settings: DetectionSettings,
    device: torch.device,
    compute: bool,
) -> DetectionNetwork:
    """``model`` (one network, or the networks of an ensemble) ready to map tiles on ``device``; without
    ``compute`` (every map is already done) it is only moved there and fingerprinted.

    Several networks or test-time augmentation (``detect.tta``) run as one
    :class:`~flairkit.models.inference.AveragedNetwork`, returning the log of the averaged probabilities: blend
    stitching's softmax gives them back and margin stitching's argmax picks the same class."""
    models = [model] if isinstance(model, torch.nn.Module) else list(model)
    settings = replace(settings, models=len(models))
    normalizer = Normalizer.from_config(config.data.normalization).to(device)
    networks, fingerprints = [], []
    for network in models:
        if isinstance(network, OnnxSegmenter):
            network = onnx_on_device(network, config, device)
        network = network.eval().to(device)
        if getattr(network, "tile_shape", None) is not None:  # a graph exported for one tile size (ONNX)
            settings = replace(settings, fit_tiles=False)
        if compute:
            check_model(network, normalizer, settings, device)
        fingerprints.append(weights_fingerprint(network))
        networks.append(inference_network(network, settings, device) if compute else network)
    onnx = [isinstance(network, OnnxSegmenter) for network in networks]
    if any(onnx) and settings.precision is not None:
        logger.info("ONNX Runtime computes the graph in float32: detect.precision applies to torch networks")
        if all(onnx):
            settings = replace(settings, precision=None)
    backend = "ONNX Runtime" if all(onnx) else "torch" if not any(onnx) else "ONNX Runtime and torch"
    runnable: torch.nn.Module = networks[0]
    if len(networks) > 1 or settings.tta != "none":
        runnable = AveragedNetwork(networks, settings.tta, settings.nomenclature.disabled)
    return DetectionNetwork(runnable, normalizer, settings, "+".join(fingerprints), backend)


def check_model(
    model: torch.nn.Module, normalizer: Normalizer, settings: DetectionSettings, device: torch.device
) -> None:
    """Run one blank tile through the model: wrong bands, tile size or class count fail before any work."""
    size, bands = settings.tile_size, len(settings.channels)
    if settings.fit_tiles and size > 512:
        # Same remainder modulo 256 (so the same divisibility by the encoder stride), far less to compute.
        size = 256 + size % 256
    blank = torch.zeros((1, bands, size, size), dtype=torch.uint8, device=device)
    try:
        with torch.inference_mode(), autocast(device, settings.precision):
            logits = model(normalizer(blank))
    except RuntimeError as error:
        raise ConfigError(
            f"the model fails on a {size}x{size} tile of {bands} band(s) ({error}); check data.channels and "
            f"detect.tile_size (U-Net encoders need a multiple of 32)"
        ) from None
    expected = (1, settings.nomenclature.n_targets, size, size)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ConfigError(
            f"the model returns {got} for a {size}x{size} tile but {expected} logits were expected "
            f"({settings.nomenclature.n_targets} targets of nomenclature {settings.nomenclature.name}); "
            f"set data.nomenclature to the model's"
        )


def wants_onnx(settings: DetectionSettings, device: torch.device) -> bool:
    """Whether ``detect.backend`` asks for ONNX Runtime on ``device``; where it has no provider, a warning and no."""
    if not (settings.backend == "onnx" or (settings.backend == "auto" and device.type == "cpu")):
        return False
    if onnx_providers(device) is None:
        logger.warning(
            "detect.backend=onnx: ONNX Runtime has no execution provider for %s here (for CUDA: pip install "
            "onnxruntime-gpu in place of onnxruntime); running the network in torch on %s",
            device,
            device,
        )
        return False
    return True


def inference_network(model: torch.nn.Module, settings: DetectionSettings, device: torch.device) -> torch.nn.Module:
    """The network as detection runs it: in ONNX Runtime (``detect.backend``: auto on the CPU, onnx on the CPU
    or a CUDA GPU with onnxruntime-gpu), else torch with its BatchNorm folded into the convolutions and, with
    ``detect.channels_last``, in channels_last format."""
    if isinstance(model, OnnxSegmenter):
        return model
    if wants_onnx(settings, device):
        graph = onnx_runtime_model(model, len(settings.channels), threads=torch.get_num_threads(), device=device)
        if graph is not None:
            logger.info("running the network in ONNX Runtime on %s", device)
            return graph
        if settings.backend == "onnx":
            raise ConfigError(
                f"detect.backend=onnx: ONNX Runtime cannot run this network on {device} (it needs onnxruntime "
                "and onnx installed: pip install 'flairkit[onnx]', and an aerial smp network); "
                "set detect.backend=auto or torch"
            )
    model = fold_batchnorm(model, torch.rand(1, len(settings.channels), 64, 64, device=device))
    return model.to(memory_format=torch.channels_last) if settings.channels_last else model
