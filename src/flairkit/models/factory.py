"""Aerial segmentation networks: any segmentation_models_pytorch architecture, with FLAIR-1 metadata fusion.

State-dict keys follow IGN's layout (``seg_model.*``, ``enc.enc_mlp.*``) so that, held by a Lightning
task as ``self.model``, official ``.ckpt`` files load strictly.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from flairkit.config.schema import FlairConfig
from flairkit.errors import ConfigError
from flairkit.nomenclature import get_nomenclature

logger = logging.getLogger(__name__)

METADATA_SIZE = 45
"""Length of the aerial metadata encoding (see :mod:`flairkit.data.metadata`)."""


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


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of a module."""
    return sum(p.numel() for p in module.parameters())
