"""The FLAIR-HUB multimodal network (IGN's ``FLAIR_HUB_Model``), with IGN's state-dict keys.

One smp encoder per single-date modality (``encoders.<MOD>.seg_model.*``), one U-TAE per series
(``encoders.<MOD>.*``), stage-wise fusion (``fusion_handler.conv_f.*``), one decoder and head per task
(``main_decoders.<TASK>.*``) and optional auxiliary heads per modality and task (``aux_decoders.<MOD>__<TASK>.*``).
Its input is a collate_hub batch (normalised by :func:`normalize_batch`); its output, a dict of class scores per
task at the labels' size, plus ``aux_<MOD>_<TASK>`` scores in training.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flairkit.data.hub.dataset import dates_key
from flairkit.data.hub.layout import INPUT_MODALITIES, MODALITIES, SERIES
from flairkit.errors import ConfigError, DataError
from flairkit.models.hub.decoders import TaskDecoder
from flairkit.models.hub.encoders import MonoEncoder, used_stages
from flairkit.models.hub.fusion import Fusion
from flairkit.models.hub.temporal import SeriesSettings, build_series_encoder

SINGLE_DATE = tuple(m for m in INPUT_MODALITIES if m not in SERIES)
"""Single-date modalities, in IGN's order (the order of fusion); SERIES: the time series, in IGN's order."""


@dataclass(frozen=True)
class HubNetworkSpec:
    """What the network is made of: inputs, tasks, encoders, decoder, auxiliary heads, U-TAE settings."""

    inputs: Mapping[str, int]
    """Modality -> input channels (bands per date for a series)."""
    tasks: Mapping[str, int]
    """Task (label modality, e.g. AERIAL_LABEL-COSIA) -> classes."""
    encoder: str = "swin_base_patch4_window12_384"
    encoders: Mapping[str, str] = field(default_factory=dict)
    """Per single-date modality encoder, overriding ``encoder``."""
    decoder: str = "upernet"
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)
    pyramid_channels: int = 256
    segmentation_channels: int = 64
    aux_heads: tuple[str, ...] = ()
    image_sizes: Mapping[str, int] = field(default_factory=dict)
    """Single-date modality -> the input side given to timm encoders that take one (default: FLAIR-HUB's patch side,
    the ``img_size`` IGN's code gives them)."""
    series: SeriesSettings = field(default_factory=SeriesSettings)

    def encoder_for(self, modality: str) -> str:
        return self.encoders.get(modality, self.encoder)

    def image_size(self, modality: str) -> int:
        return self.image_sizes.get(modality, MODALITIES[modality].side())


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class HubNetwork(nn.Module):
    """FLAIR-HUB's multimodal, multi-task network; see the module docstring for its keys and its batches."""

    def __init__(self, spec: HubNetworkSpec):
        super().__init__()
        unknown = [m for m in spec.inputs if m not in SINGLE_DATE + SERIES]
        if unknown or not spec.inputs:
            raise ConfigError(
                f"data.hub.modalities: {unknown or 'none'}; choose among {', '.join(SINGLE_DATE + SERIES)}"
            )
        if not spec.tasks:
            raise ConfigError("data.hub.labels is empty: the network needs at least one task (AERIAL_LABEL-COSIA)")
        bad_aux = [m for m in spec.aux_heads if m not in spec.inputs]
        if bad_aux:
            raise ConfigError(f"model.hub.aux_heads: {bad_aux} are not inputs; choose among {list(spec.inputs)}")
        self.spec = spec
        self.single_date = [m for m in SINGLE_DATE if m in spec.inputs]
        self.series = [m for m in SERIES if m in spec.inputs]
        total = sum(spec.tasks.values())
        self.encoders = nn.ModuleDict()
        for modality in self.single_date:
            self.encoders[modality] = MonoEncoder(
                spec.encoder_for(modality), spec.inputs[modality], spec.image_size(modality)
            )
        stages = {m: used_stages(self.encoders[m].out_channels) for m in self.single_date}
        if len({len(s) for s in stages.values()}) > 1:
            counts = {m: len(s) for m, s in stages.items()}
            raise ConfigError(f"model.hub.encoders: the encoders must have as many stages to fuse, got {counts}")
        n_stages = len(next(iter(stages.values()))) if stages else None
        reference: list[int] = self.encoders[self.single_date[0]].out_channels if self.single_date else []
        for modality in self.series:
            self.encoders[modality] = build_series_encoder(spec.inputs[modality], spec.series, total, n_stages)
        if self.single_date:
            widths = [*stages.values(), *(self.encoders[m].decoder_widths[::-1] for m in self.series)]
            self.fusion_handler = Fusion([sum(level) for level in zip(*widths, strict=False)], reference)
        else:
            self.fusion_handler = Fusion([1], [1])
        self.main_decoders = nn.ModuleDict(
            {
                task: self._decoder(reference, classes) if self.single_date else nn.Conv2d(total, classes, 1)
                for task, classes in spec.tasks.items()
            }
        )
        self.aux_decoders = nn.ModuleDict()
        for task, classes in spec.tasks.items():
            for modality in (m for m in SINGLE_DATE + SERIES if m in spec.aux_heads):
                self.aux_decoders[f"{modality}__{task}"] = (
                    self._decoder(self.encoders[modality].out_channels, classes)
                    if modality in self.single_date
                    else nn.Conv2d(total, classes, 1)
                )

    def _decoder(self, encoder_channels: Sequence[int], classes: int) -> TaskDecoder:
        spec = self.spec
        return TaskDecoder(
            spec.decoder,
            encoder_channels,
            classes,
            decoder_channels=spec.decoder_channels,
            pyramid_channels=spec.pyramid_channels,
            segmentation_channels=spec.segmentation_channels,
        )

    def output_size(self, batch: Mapping[str, Any]) -> tuple[int, int]:
        """The labels' size when the batch has labels (as IGN), else the largest input's."""
        for task in self.spec.tasks:
            if isinstance(batch.get(task), Tensor):
                return tuple(batch[task].shape[-2:])  # type: ignore[return-value]
        sides = [tuple(batch[m].shape[-2:]) for m in self.spec.inputs]
        return max(sides, key=lambda side: side[0] * side[1])  # type: ignore[return-value]

    def _check(self, batch: Mapping[str, Any]) -> None:
        if not isinstance(batch, Mapping):
            raise DataError(
                "the FLAIR-HUB network (model.hub) takes a collate_hub batch, a dict of modalities, not a "
                f"{type(batch).__name__}; flair train, evaluate and detect run it, flair predict does not yet"
            )
        for modality in self.spec.inputs:
            if modality not in batch:
                raise DataError(f"the batch has no {modality}, an input of this network; read it (data.hub.modalities)")
            expected = 5 if modality in SERIES else 4
            if batch[modality].dim() != expected or batch[modality].shape[-3] != self.spec.inputs[modality]:
                raise DataError(
                    f"{modality}: the network takes {self.spec.inputs[modality]} channel(s) per "
                    f"{'date' if expected == 5 else 'image'}, the batch has shape {tuple(batch[modality].shape)}"
                )
            if modality in SERIES and dates_key(modality) not in batch:
                raise DataError(f"the batch has no {dates_key(modality)}: U-TAE needs the dates of {modality}")

    def forward(
        self,
        batch: Mapping[str, Any],
        output_size: tuple[int, int] | None = None,
        with_aux: bool | None = None,
        drop: Collection[str] = (),
    ) -> dict[str, Tensor]:
        """Class scores per task (and ``aux_<MOD>_<TASK>`` when ``with_aux``, default in training); the modalities
        of ``drop`` (modality dropout) reach the fusion as zeros (IGN's: fresh random tensors), after their
        auxiliary heads as in IGN's network.

        A series' padded dates are those whose frame is all ``pad_value`` (0), as in IGN's U-TAE: collate_hub pads
        with zeros, so they are the dates its ``<MOD>_PAD_MASK`` marks."""
        self._check(batch)
        size = tuple(output_size) if output_size is not None else self.output_size(batch)
        with_aux = self.training if with_aux is None else with_aux
        maps: dict[str, Any] = {}
        series_scores: dict[str, Tensor] = {}
        out: dict[str, Tensor] = {}
        for modality, encoder in self.encoders.items():
            if modality in self.single_date:
                maps[modality] = encoder(batch[modality])
                source: Any = maps[modality]
            else:
                scores, decoder_maps = encoder(batch[modality], batch_positions=batch[dates_key(modality)])
                series_scores[modality] = source = _resize(scores, size)
                maps[modality] = decoder_maps
            if with_aux and modality in self.spec.aux_heads:
                for task in self.spec.tasks:
                    head = self.aux_decoders[f"{modality}__{task}"]
                    out[f"aux_{modality}_{task}"] = _resize(head(source), size)
        for modality in drop:
            maps[modality] = [torch.zeros_like(stage) for stage in maps[modality]]
            if modality in series_scores:
                series_scores[modality] = torch.zeros_like(series_scores[modality])
        if self.single_date:
            fused = self.fusion_handler(maps, self.single_date)
        else:
            fused = self.fusion_handler(series_scores, [])
        for task in self.spec.tasks:
            if self.single_date:
                out[task] = _resize(self.main_decoders[task](fused), size)
            elif len(self.spec.tasks) > 1:
                out[task] = self.main_decoders[task](fused)
            else:
                out[task] = fused
        return out


def normalize_batch(
    batch: Mapping[str, Any], statistics: Mapping[str, tuple[Sequence[float], Sequence[float]]]
) -> dict[str, Any]:
    """A copy of a collate_hub batch whose inputs are float32, z-scored per channel where ``statistics``
    (modality -> (means, stds)) says, as IGN's ``norm(..., 'custom')``; other modalities stay raw (Sentinel)."""
    out = dict(batch)
    for modality, (means, stds) in statistics.items():
        if modality not in batch:
            continue
        x = batch[modality].to(torch.float32)
        mean = torch.tensor(means, dtype=torch.float64)
        std = torch.tensor(stds, dtype=torch.float64)
        if mean.numel() != x.shape[-3]:
            raise DataError(
                f"{modality}: {x.shape[-3]} channel(s) but {mean.numel()} normalisation means; "
                f"set model.hub.normalization.{modality} to one mean and std per channel"
            )
        shape = (-1, 1, 1)
        out[modality] = ((x.double() - mean.view(shape)) / std.view(shape)).to(torch.float32)
    for modality in SINGLE_DATE + SERIES:
        if modality in out and modality not in statistics and isinstance(out[modality], Tensor):
            out[modality] = out[modality].to(torch.float32)
    return out
