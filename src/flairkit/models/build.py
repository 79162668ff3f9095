"""Build the network a config describes: the aerial smp or HuggingFace transformers model, or the multimodal U-T&T."""

from __future__ import annotations

from torch import nn

from flairkit.config.schema import FlairConfig
from flairkit.models.factory import build_aerial_model, replace_batchnorm


def build_model(config: FlairConfig, pretrained_encoder: bool = True) -> nn.Module:
    """The network of ``config``, its BatchNorm2d layers as ``model.norm`` says; ``pretrained_encoder=False`` when a
    checkpoint will be loaded."""
    if config.model.hub is not None:
        from flairkit.models.hub.build import build_hub_network

        network = build_hub_network(config)
    elif config.model.multimodal:
        from flairkit.models.utt import build_utt_model

        network = build_utt_model(config, pretrained_encoder=pretrained_encoder)
    elif config.model.provider == "huggingface":
        from flairkit.models.huggingface import build_huggingface_model

        network = build_huggingface_model(config, pretrained=pretrained_encoder)
    else:
        network = build_aerial_model(config, pretrained_encoder=pretrained_encoder)
    return replace_batchnorm(network, config.model.norm)
