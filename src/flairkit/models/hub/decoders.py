"""Task decoders of the FLAIR-HUB network: UPerNet as segmentation-models-pytorch 0.4.0 built it, and U-Net.

IGN's released UPerNet weights come from smp 0.4.0, whose UPerNet (``psp``, ``fpn_stages``, ``fpn_bottleneck``)
smp 0.5 rewrote under other names and maths; :class:`UPerNetDecoder` is that 0.4.0 decoder, module for module, so
the weights load strictly on the smp flairkit depends on. smp's U-Net decoder kept its names and, on inputs whose
sides are multiples of 32, its outputs: it is used as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from torch import Tensor, nn

PSP_SIZES = (1, 2, 3, 6)


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, padding: int = 0) -> nn.Sequential:
    """Convolution without bias, BatchNorm, ReLU: smp's ``Conv2dReLU`` (keys ``0.weight``, ``1.*``)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class PSPModule(nn.Module):
    """Pyramid pooling of the deepest map (smp 0.4.0): pooled branches at 1, 2, 3, 6 cells, concatenated, 1x1."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(size), conv_bn_relu(in_channels, in_channels // len(PSP_SIZES), 1))
            for size in PSP_SIZES
        )
        self.out_conv = conv_bn_relu(in_channels * 2, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        return self.out_conv(torch.cat([x, *(_resize(block(x), size) for block in self.blocks)], dim=1))


class FPNBlock(nn.Module):
    """Top-down step: the coarser map resized to the skip's size, plus the skip's 1x1 projection (none for smp's
    empty placeholder stage)."""

    def __init__(self, skip_channels: int, pyramid_channels: int):
        super().__init__()
        self.skip_conv = conv_bn_relu(skip_channels, pyramid_channels, 1) if skip_channels else nn.Identity()

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = _resize(x, skip.shape[-2:])
        return x + self.skip_conv(skip) if skip.shape[1] else x


class UPerNetDecoder(nn.Module):
    """smp 0.4.0's UPerNet decoder: PSP on the deepest map, FPN top-down, every level resized to 1/4 of the input
    and fused by a 3x3 bottleneck. ``encoder_channels`` lists every encoder stage, input first."""

    def __init__(self, encoder_channels: Sequence[int], pyramid_channels: int = 256, segmentation_channels: int = 64):
        super().__init__()
        deepest_first = list(encoder_channels)[::-1]
        self.psp = PSPModule(deepest_first[0], pyramid_channels)
        self.fpn_stages = nn.ModuleList(FPNBlock(channels, pyramid_channels) for channels in deepest_first[1:])
        self.fpn_bottleneck = conv_bn_relu((len(deepest_first) - 1) * pyramid_channels, segmentation_channels, 3, 1)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        target = [side // 4 for side in features[0].shape[-2:]]
        deepest_first = list(features[1:])[::-1]
        levels = [self.psp(deepest_first[0])]
        for skip, stage in zip(deepest_first[1:], self.fpn_stages, strict=False):
            levels.append(stage(levels[-1], skip))
        return self.fpn_bottleneck(torch.cat([_resize(level, target) for level in levels], dim=1))


def segmentation_head(in_channels: int, classes: int, kernel_size: int, upsampling: int = 1) -> nn.Sequential:
    """smp's segmentation head: a convolution, then (UPerNet) bilinear x4 upsampling with aligned corners."""
    return nn.Sequential(
        nn.Conv2d(in_channels, classes, kernel_size, padding=kernel_size // 2),
        nn.UpsamplingBilinear2d(scale_factor=upsampling) if upsampling > 1 else nn.Identity(),
        nn.Identity(),
    )


class DecoderWithHead(nn.Module):
    """A decoder and its segmentation head (IGN's ``DecoderWrapper``: keys ``decoder.*``, ``segmentation_head.*``)."""

    def __init__(self, decoder: nn.Module, head: nn.Module):
        super().__init__()
        self.decoder = decoder
        self.segmentation_head = head

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        return self.segmentation_head(self.decoder(list(features)))


class TaskDecoder(nn.Module):
    """One task's (or one auxiliary head's) decoder on encoder stages, held as ``seg_model`` (IGN's key layout).

    ``encoder_channels`` are the stages of the encoder this decoder is built for; as IGN builds its decoders from
    an encoder of one input channel, the first (input) stage counts 1 channel.
    """

    def __init__(
        self,
        kind: str,
        encoder_channels: Sequence[int],
        classes: int,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        pyramid_channels: int = 256,
        segmentation_channels: int = 64,
    ):
        super().__init__()
        channels = [1, *list(encoder_channels)[1:]]
        if kind == "upernet":
            decoder: nn.Module = UPerNetDecoder(channels, pyramid_channels, segmentation_channels)
            head = segmentation_head(segmentation_channels, classes, kernel_size=1, upsampling=4)
        elif kind == "unet":
            decoder = UnetDecoder(channels, list(decoder_channels), n_blocks=len(decoder_channels))
            head = segmentation_head(decoder_channels[-1], classes, kernel_size=3)
        else:
            raise ValueError(f"unknown decoder {kind!r}; use upernet or unet")
        self.seg_model = DecoderWithHead(decoder, head)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        return self.seg_model(features)
