"""The network as zone detection runs it: on its device, checked on one blank tile, then in ONNX Runtime or in
torch with its BatchNorm folded into the convolutions, at the chosen precision. A U-T&T model runs in torch as it
is, called on each batch's aerial tiles and Sentinel-2 series (:class:`AerialLogits`); a FLAIR-HUB model in torch,
called on each batch's aerial tiles and its other modalities (:class:`HubLogits`), one task at a time."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from flairkit.config.schema import FlairConfig
from flairkit.data.hub.tiles import AERIAL, HubTileReader
from flairkit.data.sentinel import N_BANDS
from flairkit.data.transforms import Normalizer
from flairkit.detection.settings import DetectionSettings
from flairkit.devices import autocast
from flairkit.errors import ConfigError
from flairkit.models.hub import HubNetwork, normalization, normalize_batch
from flairkit.models.inference import AveragedNetwork, fold_batchnorm
from flairkit.models.loader import weights_fingerprint
from flairkit.models.onnx import OnnxSegmenter, onnx_on_device, onnx_providers, onnx_runtime_model

logger = logging.getLogger(__name__)


class AerialLogits(torch.nn.Module):
    """A U-T&T network called as detection calls it: (aerial, series, dates) -> the aerial branch's logits."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network

    def forward(self, aerial: torch.Tensor, series: torch.Tensor, dates: torch.Tensor) -> torch.Tensor:
        return self.network(aerial, series, dates)[0]


class HubLogits(torch.nn.Module):
    """A FLAIR-HUB network called as detection calls it: (aerial, batch of the other modalities) -> the logits of
    one task at the aerial tiles' size, every modality normalised by :func:`~flairkit.models.hub.normalize_batch`."""

    def __init__(
        self, network: HubNetwork, statistics: Mapping[str, tuple[Sequence[float], Sequence[float]]], task: str
    ):
        super().__init__()
        self.network = network
        self.statistics = dict(statistics)
        self.task = task

    def forward(self, aerial: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        moved = {k: v.to(aerial.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        moved[AERIAL] = aerial
        return self.network(normalize_batch(moved, self.statistics), output_size=tuple(aerial.shape[-2:]))[self.task]


@dataclass(frozen=True)
class DetectionNetwork:
    """What runs the tiles: the network, its input normalisation, the settings it allows and its fingerprint."""

    model: torch.nn.Module
    normalizer: torch.nn.Module
    """The aerial tiles' normalisation (identity for a FLAIR-HUB model, whose :class:`HubLogits` normalises)."""
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
    if settings.series is not None:
        return _multimodal_network(config, models, settings, device, compute)
    if settings.hub is not None:
        return _hub_network(config, models, settings, device, compute)
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


def _multimodal_network(
    config: FlairConfig,
    models: list[torch.nn.Module],
    settings: DetectionSettings,
    device: torch.device,
    compute: bool,
) -> DetectionNetwork:
    """A U-T&T network as detection runs it: in torch, unfolded (its fusion reads the encoder's maps)."""
    model, settings = _single_torch_model(models, settings, "U-T&T")
    normalizer = Normalizer.from_config(config.data.normalization).to(device)
    network = AerialLogits(model.eval().to(device)).eval()
    if compute:
        check_model(network, normalizer, settings, device)
    return DetectionNetwork(network, normalizer, settings, weights_fingerprint(model), "torch")


def _hub_network(
    config: FlairConfig,
    models: list[torch.nn.Module],
    settings: DetectionSettings,
    device: torch.device,
    compute: bool,
) -> DetectionNetwork:
    """A FLAIR-HUB network as detection runs it: in torch, on the task of ``settings.task``."""
    model, settings = _single_torch_model(models, settings, "FLAIR-HUB")
    assert isinstance(model, HubNetwork) and settings.task is not None
    network = HubLogits(model.eval().to(device), normalization(config), settings.task).eval()
    identity = torch.nn.Identity()
    if compute:
        check_model(network, identity, settings, device)
    return DetectionNetwork(network, identity, settings, weights_fingerprint(model), "torch")


def _single_torch_model(
    models: list[torch.nn.Module], settings: DetectionSettings, family: str
) -> tuple[torch.nn.Module, DetectionSettings]:
    """The one model of a family that detection runs in torch only (no ensembles, no ONNX), and its settings."""
    if len(models) > 1:
        raise ConfigError(
            f"{len(models)} checkpoints were given but ensembles of {family} models are not offered; give one"
        )
    if settings.backend == "onnx" or isinstance(models[0], OnnxSegmenter):
        raise ConfigError(f"detect.backend=onnx: {family} models run in torch only; set detect.backend=auto or torch")
    return models[0], replace(settings, backend="torch")


def check_model(
    model: torch.nn.Module, normalizer: torch.nn.Module, settings: DetectionSettings, device: torch.device
) -> None:
    """Run one blank tile through the model: wrong bands, tile size or class count fail before any work."""
    size, bands = settings.tile_size, len(settings.channels)
    if settings.fit_tiles and size > 512:
        # Same remainder modulo 256 (so the same divisibility by the encoder stride), far less to compute.
        size = 256 + size % 256
    blank = torch.zeros((1, bands, size, size), dtype=torch.uint8, device=device)
    extra: tuple[torch.Tensor, ...] = ()
    if settings.series is not None:
        side = settings.series.config.sat_patch_size
        series = torch.ones((1, 1, N_BANDS, side, side), device=device)
        extra = (series, torch.zeros((1, 1), dtype=torch.long, device=device))
    if settings.hub is not None:
        extra = tuple(HubTileReader.batch([settings.hub.blank_item(size)]))
    try:
        with torch.inference_mode(), autocast(device, settings.precision):
            logits = model(normalizer(blank), *extra)
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
