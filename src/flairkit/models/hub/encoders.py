"""Single-date encoders of the FLAIR-HUB network: smp encoders, named as IGN's configs name them.

IGN's ``arch`` strings name the encoder bare (``swin_base_patch4_window12_384``, ``convnextv2_base``,
``resnet34``): an smp encoder of that name when smp has one, else the timm model through smp's ``tu-`` universal
encoder, given the modality's input size as ``img_size`` when the timm model takes one (Swin does, ConvNeXt does
not). Encoders are built with random weights: released weights replace them, so nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence

import segmentation_models_pytorch as smp
from torch import Tensor, nn

from flairkit.errors import ConfigError

DEPTH = 5
"""Encoder stages, smp's default, which IGN's networks keep."""


def smp_encoder_name(name: str) -> str:
    """The smp name of an IGN encoder name: itself when smp knows it, else ``tu-<name>``."""
    if name.startswith("tu-") or name in smp.encoders.get_encoder_names():
        return name
    return f"tu-{name}"


def build_encoder(name: str, in_channels: int, img_size: int) -> nn.Module:
    """A randomly initialised smp encoder of ``in_channels`` inputs, as IGN's ``FLAIR_Monotemp`` builds it."""
    smp_name = smp_encoder_name(name)
    try:
        if smp_name.startswith("tu-"):
            try:
                return smp.encoders.get_encoder(
                    smp_name, in_channels=in_channels, depth=DEPTH, weights=None, img_size=img_size
                )
            except TypeError:
                return smp.encoders.get_encoder(smp_name, in_channels=in_channels, depth=DEPTH, weights=None)
        return smp.encoders.get_encoder(smp_name, in_channels=in_channels, depth=DEPTH, weights=None)
    except (KeyError, RuntimeError, ValueError) as error:
        raise ConfigError(
            f"model.hub.encoder {name!r}: smp/timm cannot build it ({error}); give an smp encoder name or a timm "
            "model name such as swin_base_patch4_window12_384 or convnextv2_base"
        ) from None


def used_stages(channels: Sequence[int]) -> list[int]:
    """Channels of the stages that carry features: smp's two leading placeholders (input, empty 1/2 map) of
    transformer-style encoders are left out, as IGN's fusion leaves them out."""
    channels = list(channels)
    if len(channels) > 2 and (channels[0] == 0 or channels[1] == 0):
        return channels[2:]
    return channels


def has_placeholders(channels: Sequence[int]) -> bool:
    """Whether an encoder's first two stages are smp's placeholders (transformer-style encoders)."""
    return len(used_stages(channels)) != len(channels)


class MonoEncoder(nn.Module):
    """A single-date modality's encoder, held as ``seg_model`` (IGN's key layout)."""

    def __init__(self, name: str, in_channels: int, img_size: int):
        super().__init__()
        self.seg_model = build_encoder(name, in_channels, img_size)

    @property
    def out_channels(self) -> list[int]:
        """Channels of every stage, smp's placeholders included."""
        return list(self.seg_model.out_channels)

    def forward(self, x: Tensor) -> list[Tensor]:
        return list(self.seg_model(x))
