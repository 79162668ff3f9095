"""Build the network a config describes: the aerial smp model or the multimodal U-T&T."""

from __future__ import annotations

from torch import nn

from flairkit.config.schema import FlairConfig
from flairkit.models.factory import build_aerial_model, replace_batchnorm


def build_model(config: FlairConfig, pretrained_encoder: bool = True) -> nn.Module:
    """The network of ``config``, its BatchNorm2d layers as ``model.norm`` says; ``pretrained_encoder=False`` when a
    checkpoint will be loaded."""
    if config.model.multimodal:
        from flairkit.models.utt import build_utt_model

        network = build_utt_model(config, pretrained_encoder=pretrained_encoder)
    else:
        network = build_aerial_model(config, pretrained_encoder=pretrained_encoder)
    return replace_batchnorm(network, config.model.norm)
