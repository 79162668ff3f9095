"""Build the network a config describes: the aerial smp model or the multimodal U-T&T."""

from __future__ import annotations

from torch import nn

from flairkit.config.schema import FlairConfig
from flairkit.models.factory import build_aerial_model


def build_model(config: FlairConfig, pretrained_encoder: bool = True) -> nn.Module:
    """The network of ``config``; ``pretrained_encoder=False`` when a checkpoint will be loaded."""
    if config.model.multimodal:
        from flairkit.models.utt import build_utt_model

        return build_utt_model(config, pretrained_encoder=pretrained_encoder)
    return build_aerial_model(config, pretrained_encoder=pretrained_encoder)
