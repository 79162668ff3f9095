"""Running a network without Lightning: batch inputs, forward pass, logits to classes (disabled targets never
predicted), test-time augmentation and ensembles (probabilities averaged), and BatchNorm folded into convolutions.

Training (:class:`flairkit.training.module.SegmentationTask`) and prediction (:class:`Predictor`) share
:func:`prepare_inputs`, :func:`runnable_network` and :func:`network_logits`.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from flairkit.config.schema import FlairConfig
from flairkit.data.transforms import Normalizer
from flairkit.devices import autocast, strict_float32
from flairkit.errors import ConfigError
from flairkit.nomenclature import get_nomenclature

logger = logging.getLogger(__name__)

Augment = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""Random augmentation applied alike to a normalised image batch and its targets."""

TTA_TRANSFORMS: dict[str, tuple[int, ...]] = {"none": (0,), "flips": (0, 2, 4, 6), "d4": tuple(range(8))}
"""Dihedral transforms (see :func:`dihedral`) of each test-time augmentation setting: flips are the identity, the
horizontal and vertical flips and both (a half turn); d4 adds the quarter turns and the two diagonal flips."""


def dihedral(image: torch.Tensor, transform: int) -> torch.Tensor:
    """Dihedral transform ``transform`` (0..7) of the last two dimensions: a horizontal flip when ``transform`` >= 4,
    then ``transform % 4`` quarter turns."""
    if transform >= 4:
        image = image.flip(-1)
    return torch.rot90(image, transform % 4, dims=(-2, -1))


def undo_dihedral(image: torch.Tensor, transform: int) -> torch.Tensor:
    """The inverse of :func:`dihedral` ``transform``."""
    image = torch.rot90(image, -(transform % 4), dims=(-2, -1))
    return image.flip(-1) if transform >= 4 else image


def forward_passes(tta: str, models: int) -> str:
    """The cost of ``tta`` with ``models`` networks, e.g. "tta d4 x 2 models = 16 passes"."""
    passes = len(TTA_TRANSFORMS[tta]) * models
    return f"tta {tta} x {models} model{'s' if models > 1 else ''} = {passes} pass{'es' if passes > 1 else ''}"


def masked_softmax(logits: torch.Tensor, disabled: Sequence[int], dim: int = 1) -> torch.Tensor:
    """Float32 softmax over ``dim`` of the targets not ``disabled`` (disabled targets get probability 0)."""
    logits = logits.float()
    if disabled:
        logits = logits.index_fill(dim, torch.as_tensor(list(disabled), device=logits.device), float("-inf"))
    return torch.softmax(logits, dim=dim)


def averaged_log_probabilities(
    networks: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    image: torch.Tensor,
    tta: str,
    disabled: Sequence[int],
) -> torch.Tensor:
    """Log of the (B, K, H, W) probabilities of ``image`` averaged over ``networks`` and the ``tta`` transforms.

    Each network maps a normalised (B, C, H, W) batch to logits; each transformed batch is run, its logits
    transformed back and turned into probabilities (``disabled`` targets at 0, log -inf), then averaged. A softmax
    over the enabled targets of the result gives back the averaged probabilities, so stitching and masked argmax
    consume it like logits. Networks run one after another on the same batch: memory does not grow with them.
    """
    total: torch.Tensor | None = None
    transforms = TTA_TRANSFORMS[tta]
    for network in networks:
        for transform in transforms:
            logits = undo_dihedral(network(_dense(dihedral(image, transform), image)), transform)
            probabilities = masked_softmax(logits, disabled)
            total = probabilities if total is None else total.add_(probabilities)
    assert total is not None, "no network to run"
    return total.div_(len(networks) * len(transforms)).log_()


def _dense(moved: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """``moved`` (a transformed view of ``image``) copied into ``image``'s memory format: convolutions are slow on
    the strides of a rotated view."""
    channels_last = image.dim() == 4 and image.is_contiguous(memory_format=torch.channels_last)
    return moved.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


class AveragedNetwork(nn.Module):
    """Several networks and test-time augmentation called as one network: see :func:`averaged_log_probabilities`.

    The networks are kept as given (prepared for their device beforehand), not registered as submodules.
    """

    def __init__(self, networks: Sequence[Callable[[torch.Tensor], torch.Tensor]], tta: str, disabled: Sequence[int]):
        super().__init__()
        self.networks = tuple(networks)
        self.tta = tta
        self.disabled = tuple(disabled)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return averaged_log_probabilities(self.networks, image, self.tta, self.disabled)


def prepare_inputs(
    batch: dict[str, Any], normalizer: Normalizer, channels_last: bool = False, augment: Augment | None = None
) -> dict[str, Any]:
    """Set ``batch["input"]`` of a batch already on its device: the normalised image (augmented with
    ``batch["target"]`` when ``augment`` is given and the batch has targets), in channels_last layout when asked."""
    image = normalizer(batch["image"])
    target = batch.get("target")
    if augment is not None and target is not None:
        image, batch["target"] = augment(image, target)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    batch["input"] = image
    return batch


def runnable_network(model: nn.Module, channels_last: bool = False, compile: bool = False) -> nn.Module:
    """What to call for ``model``'s forward pass: ``model`` converted in place to channels_last when asked,
    ``torch.compile``'d when asked."""
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return torch.compile(model) if compile else model


def network_logits(
    network: nn.Module, batch: dict[str, Any], multimodal: bool, drop_sentinel: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits of the aerial branch of a prepared batch and, for U-T&T (``multimodal``), of the satellite branch."""
    metadata = batch.get("metadata")
    if multimodal:
        return network(
            batch["input"], batch["sentinel"], batch["dates"], metadata=metadata, drop_sentinel=drop_sentinel
        )
    return network(batch["input"], metadata), None


class Predictor:
    """Classes of batches of patches, without Lightning: normalise, forward (autocast to ``precision``), masked argmax.

    The network runs in eval mode on ``device``, as ``config`` describes it (aerial or U-T&T, normalisation,
    nomenclature; ``train.channels_last`` and ``train.compile`` as in training). Several networks (an ensemble)
    and test-time augmentation (``tta``, see :data:`TTA_TRANSFORMS`) average their probabilities
    (:func:`averaged_log_probabilities`). Call it inside ``torch.inference_mode()``.
    """

    def __init__(
        self,
        config: FlairConfig,
        model: nn.Module | Sequence[nn.Module],
        device: torch.device,
        precision: torch.dtype | None = None,
        tta: str = "none",
    ):
        models = [model] if isinstance(model, nn.Module) else list(model)
        self.multimodal = config.model.multimodal
        if self.multimodal and tta != "none":
            raise ConfigError(
                f"evaluate.tta={tta} (--tta): test-time augmentation is not offered for U-T&T models, whose fusion "
                "adds the Sentinel-2 map pixel by pixel to the aerial features; set evaluate.tta=none"
            )
        self.device = device
        self.precision = precision
        self.tta = tta
        self.channels_last = config.train.channels_last
        self.disabled = get_nomenclature(config.data.nomenclature).disabled
        self.normalizer = Normalizer.from_config(config.data.normalization).to(device)
        self.models = [m.to(device).eval() for m in models]
        self.networks = [runnable_network(m, self.channels_last, config.train.compile) for m in self.models]

    @property
    def passes(self) -> str:
        """The forward passes per patch (see :func:`forward_passes`)."""
        return forward_passes(self.tta, len(self.networks))

    def prepare(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch on the device, with its network input (see :func:`prepare_inputs`)."""
        batch = {
            k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
        }
        return prepare_inputs(batch, self.normalizer, self.channels_last)

    def classes(self, batch: dict[str, Any]) -> torch.Tensor:
        """(B, H, W) uint8 target indices of a prepared batch; the argmax is taken in float32."""
        with autocast(self.device, self.precision):
            if len(self.networks) == 1 and self.tta == "none":
                logits, _ = network_logits(self.networks[0], batch, self.multimodal)
            else:
                runs = [functools.partial(self._aerial_logits, network, batch) for network in self.networks]
                logits = averaged_log_probabilities(runs, batch["input"], self.tta, self.disabled)
        return masked_argmax(logits.float(), self.disabled)

    def _aerial_logits(self, network: nn.Module, batch: dict[str, Any], image: torch.Tensor) -> torch.Tensor:
        return network_logits(network, {**batch, "input": image}, self.multimodal)[0]


def masked_argmax(logits: torch.Tensor, disabled: Sequence[int], dim: int = 1) -> torch.Tensor:
    """Argmax over ``dim`` after setting the logits of ``disabled`` targets to -inf (uint8 result)."""
    if disabled:
        logits = logits.clone()
        index = torch.as_tensor(list(disabled), device=logits.device)
        logits.index_fill_(dim, index, float("-inf"))
    return logits.argmax(dim=dim).to(torch.uint8)


def fold_batchnorm(model: nn.Module, example: torch.Tensor, tolerance: float = 1e-4) -> nn.Module:
    """A copy of ``model`` (eval mode) with every BatchNorm that directly follows a convolution folded into it.

    The convolution -> BatchNorm pairs are found by running ``example`` through the model. The copy is
    returned only if its output matches the model's on ``example`` (largest error relative to the largest
    logit below ``tolerance``), else the model itself, with a warning: a convolution whose output also feeds
    another layer cannot be folded, and the check catches it. Both passes run in full float32 (no autocast,
    no TF32), so the check holds whatever precision the caller infers in.
    """
    model = model.eval()
    names = {module: name for name, module in model.named_modules()}
    calls: Counter[nn.Module] = Counter()
    producers: dict[int, nn.Module] = {}
    outputs: list[torch.Tensor] = []  # kept alive so that tensor ids stay unique during the pass
    pairs: dict[nn.Module, nn.Module] = {}

    def after_conv(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        calls[module] += 1
        producers[id(output)] = module
        outputs.append(output)

    def after_norm(module: nn.Module, inputs: tuple, _output: torch.Tensor) -> None:
        calls[module] += 1
        if id(inputs[0]) in producers:
            pairs[module] = producers[id(inputs[0])]

    hooks = [
        module.register_forward_hook(after_conv if isinstance(module, nn.Conv2d) else after_norm)
        for module in model.modules()
        if isinstance(module, nn.Conv2d | nn.BatchNorm2d)
    ]
    try:
        with torch.no_grad(), strict_float32(example.device.type):
            reference = model(example)
    finally:
        for hook in hooks:
            hook.remove()
        outputs.clear()
    convs = Counter(pairs.values())
    foldable = {
        norm: conv
        for norm, conv in pairs.items()
        if calls[norm] == calls[conv] == convs[conv] == 1 and norm.running_mean is not None
    }
    if not foldable:
        return model
    folded = copy.deepcopy(model)
    for norm, conv in foldable.items():
        fused = fuse_conv_bn_eval(folded.get_submodule(names[conv]), folded.get_submodule(names[norm]))
        _replace(folded, names[conv], fused)
        _replace(folded, names[norm], nn.Identity())
    with torch.no_grad(), strict_float32(example.device.type):
        error = ((folded(example) - reference).abs().max() / reference.abs().max().clamp_min(1e-12)).item()
    if error <= tolerance:
        return folded
    logger.warning(
        "BatchNorm not folded into the convolutions: the folded network differs by %.3g of the largest logit "
        "(tolerance %.3g); running the network unfolded (slower, same results)",
        error,
        tolerance,
    )
    return model


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)
