"""Aerial segmentation networks: any segmentation_models_pytorch architecture, with FLAIR-1 metadata fusion.

State-dict keys follow IGN's layout (``seg_model.*``, ``enc.enc_mlp.*``) so that, held by a Lightning
task as ``self.model``, official ``.ckpt`` files load strictly.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from flairkit.config.schema import FlairConfig, NormLayer
from flairkit.errors import ConfigError
from flairkit.nomenclature import get_nomenclature

logger = logging.getLogger(__name__)

METADATA_SIZE = 45
"""Length of the aerial metadata encoding (see :mod:`flairkit.data.metadata`)."""
MAX_GROUPS = 32
"""GroupNorm groups of ``model.norm=group`` (Wu & He, 2018); fewer when the channels are not a multiple of it."""


class MetadataMLP(nn.Module):
    """FLAIR-1's metadata encoder: 45 -> 64 -> 32 -> 16, dropout 0.4, ReLU (keys ``enc_mlp.{0,3,6}``)."""

    def __init__(self, in_features: int = METADATA_SIZE, dropout: float = 0.4):
        super().__init__()
        self.enc_mlp = nn.Sequential(
            nn.Linear(in_features, 64),
            nn.Dropout(dropout),
            nn.ReLU(),
            nn.Linear(64, 32),
            nn.Dropout(dropout),
            nn.ReLU(),
            nn.Linear(32, 16),
        )

    def forward(self, metadata: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Encode (B, 45) metadata and lay it out like the (B, C, H, W) map ``like``.

        As in FLAIR-1, the 16 values run along the height axis and repeat over channels and width.
        """
        encoded = self.enc_mlp(metadata).to(like.dtype)[:, None, :, None]
        _, channels, height, width = like.shape
        if encoded.shape[2] != height:
            encoded = F.interpolate(encoded, size=(height, 1), mode="nearest")
        return encoded.expand(-1, channels, height, width)


class AerialSegmenter(nn.Module):
    """An smp model (``seg_model``) with optional metadata added to its deepest encoder map (``enc``)."""

    def __init__(self, seg_model: smp.base.SegmentationModel, use_metadata: bool = False):
        super().__init__()
        self.seg_model = seg_model
        self.enc = MetadataMLP() if use_metadata else None

    @property
    def use_metadata(self) -> bool:
        return self.enc is not None

    def forward(self, image: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
        if self.enc is None:
            return self.seg_model(image)
        if metadata is None:
            raise ValueError("this model was built with metadata (data.metadata=true) but none was given")
        features = list(self.seg_model.encoder(image))
        features[-1] = features[-1] + self.enc(metadata, features[-1])
        return self.seg_model.segmentation_head(self.seg_model.decoder(features))


def build_smp_model(
    arch: str,
    encoder: str,
    in_channels: int,
    classes: int,
    encoder_weights: str | None,
    extra: dict[str, Any] | None = None,
) -> smp.base.SegmentationModel:
    """Create an smp model by name; pretrained encoder weights fall back to random with a warning when unavailable."""
    extra = extra or {}
    try:
        return smp.create_model(
            arch,
            encoder_name=encoder,
            in_channels=in_channels,
            classes=classes,
            encoder_weights=encoder_weights,
            **extra,
        )
    except TypeError as error:
        raise ConfigError(f"model.smp_kwargs: {error}; see segmentation_models_pytorch's {arch} arguments") from None
    except KeyError as error:
        raise ConfigError(
            f"model.arch={arch!r} / model.encoder={encoder!r} is not available in segmentation_models_pytorch "
            f"({error}); see its documentation for architecture and encoder names"
        ) from None
    except (OSError, RuntimeError, ValueError) as error:
        if encoder_weights is None:
            raise
        message = (
            f"could not load {encoder_weights} weights for encoder {encoder!r} ({error}); "
            "starting from random weights. Put the weights in the torch hub cache or set model.encoder_weights=null"
        )
        warnings.warn(message, stacklevel=2)
        logger.warning(message)
        return smp.create_model(
            arch, encoder_name=encoder, in_channels=in_channels, classes=classes, encoder_weights=None, **extra
        )


def build_aerial_model(config: FlairConfig, pretrained_encoder: bool = True) -> AerialSegmenter:
    """The aerial network described by ``config``.

    ``pretrained_encoder=False`` skips encoder pre-training (use it whenever a full checkpoint will be
    loaded, so that nothing is downloaded for nothing).
    """
    nomenclature = get_nomenclature(config.data.nomenclature)
    weights = config.model.encoder_weights if pretrained_encoder else None
    seg_model = build_smp_model(
        config.model.arch,
        config.model.encoder,
        len(config.data.channels),
        nomenclature.n_targets,
        weights,
        config.model.smp_kwargs,
    )
    return AerialSegmenter(seg_model, use_metadata=config.data.metadata)


def norm_groups(channels: int) -> int:
    """GroupNorm groups for ``channels``: 32, or the largest power of two dividing ``channels`` when smaller."""
    return math.gcd(MAX_GROUPS, channels)


def _replacement(layer: nn.BatchNorm2d, norm: NormLayer) -> nn.Module:
    if norm == "group":
        group = nn.GroupNorm(norm_groups(layer.num_features), layer.num_features, eps=layer.eps)
        if layer.affine:
            group.weight.data.copy_(layer.weight.data)
            group.bias.data.copy_(layer.bias.data)
        return group
    frozen = FrozenBatchNorm2d(layer.num_features, eps=layer.eps)
    if layer.affine:
        frozen.weight.copy_(layer.weight.data)
        frozen.bias.copy_(layer.bias.data)
    if layer.track_running_stats:
        frozen.running_mean.copy_(layer.running_mean)
        frozen.running_var.copy_(layer.running_var)
    return frozen


def replace_batchnorm(module: nn.Module, norm: NormLayer) -> nn.Module:
    """``module`` with every BatchNorm2d replaced as ``model.norm`` says, in place; returns ``module``.

    group: GroupNorm (:func:`norm_groups` groups) starting from the layer's scale and shift, its running statistics
    dropped; frozen_batch: torchvision's FrozenBatchNorm2d, statistics, scale and shift fixed as they are; batch:
    unchanged.
    """
    if norm == "batch":
        return module
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, _replacement(child, norm))
        else:
            replace_batchnorm(child, norm)
    return module


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of a module."""
    return sum(p.numel() for p in module.parameters())
