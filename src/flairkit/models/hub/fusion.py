"""Stage-wise fusion of the FLAIR-HUB network (IGN's ``FusionHandler``).

At every stage the maps of all modalities are resized (bilinear) to the first single-date modality's map,
concatenated in modality order and brought back to that modality's width by a 1x1 convolution. As in IGN's
network, U-TAE maps come deepest first while encoder stages come shallowest first, and they are paired in that
order: the released weights were trained so. One modality alone passes through; series alone are averaged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flairkit.models.hub.encoders import has_placeholders, used_stages


class Fusion(nn.Module):
    """Concatenate and project per stage; ``conv_f`` holds one 1x1 convolution per used stage."""

    def __init__(self, stage_inputs: Sequence[int], target_channels: Sequence[int]):
        super().__init__()
        self.conv_f = nn.ModuleList(
            nn.Conv2d(in_channels, out_channels, kernel_size=1)
            for in_channels, out_channels in zip(stage_inputs, used_stages(target_channels), strict=False)
        )

    def forward(self, maps: Mapping[str, Sequence[Tensor] | Tensor], single_date: Sequence[str]) -> list[Tensor]:
        """Fused stages of ``maps`` (modality -> its stages, or a series' class scores when no single-date
        modality is present); ``single_date`` lists the single-date modalities among them, in order."""
        if len(maps) == 1:
            only = next(iter(maps.values()))
            return only if isinstance(only, Tensor) else list(only)
        if not single_date:
            return torch.stack(list(maps.values())).mean(dim=0)  # type: ignore[misc]
        reference = list(maps[single_date[0]])
        placeholders = reference[:2] if has_placeholders([t.shape[1] for t in reference]) else []
        targets = reference[len(placeholders) :]
        aligned = []
        for value in maps.values():
            stages = list(value)
            stages = stages[2:] if has_placeholders([t.shape[1] for t in stages]) else stages
            if len(stages) < len(targets):
                stages = [stages[0]] * (len(targets) - len(stages)) + stages
            aligned.append(
                [
                    stage
                    if stage.shape[-2:] == target.shape[-2:]
                    else F.interpolate(stage, size=target.shape[-2:], mode="bilinear", align_corners=False)
                    for stage, target in zip(stages, targets, strict=False)
                ]
            )
        stacked = [torch.cat(level, dim=1) for level in zip(*aligned, strict=False)]
        return placeholders + [conv(level) for conv, level in zip(self.conv_f, stacked, strict=False)]
