"""Time-series encoders of the FLAIR-HUB network: one U-TAE per Sentinel series, shaped as IGN shapes them.

With single-date encoders present, IGN re-derives the U-TAE widths so that it has one stage per encoder stage
(:func:`stage_widths`) and uses them for both the encoder and the decoder of U-TAE; the last ``out_conv`` width is
the sum of the classes of every task. U-TAE returns its class scores and its decoder maps, deepest first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from flairkit.errors import ConfigError
from flairkit.models.utae import UTAE


@dataclass(frozen=True)
class SeriesSettings:
    """U-TAE settings (IGN's ``multitemp_model``; defaults: configs/train/config_models.yaml)."""

    encoder_widths: tuple[int, ...] = (64, 64, 64, 128)
    decoder_widths: tuple[int, ...] = (32, 32, 64, 128)
    out_conv: tuple[int, ...] = (32, 19)
    str_conv_k: int = 3
    str_conv_s: int = 1
    str_conv_p: int = 1
    agg_mode: str = "att_group"
    encoder_norm: str = "group"
    n_head: int = 16
    d_model: int = 256
    d_k: int = 4
    pad_value: float = 0.0
    padding_mode: str = "reflect"
    official_pad_norm: bool = False
    """flairkit's L-TAE normalisation ignores padded dates; True reproduces IGN's (see flairkit.models.utae)."""


def stage_widths(encoder_widths: Sequence[int], n_stages: int) -> list[int]:
    """IGN's ``adjust_fm_length``: ``n_stages`` widths spread from min-1 to max+1 of ``encoder_widths``, each
    rounded to the nearest power of two (in log scale)."""
    if min(encoder_widths) < 2:
        raise ValueError(f"U-TAE widths {list(encoder_widths)} must all be at least 2")
    spread = np.linspace(min(encoder_widths) - 1, max(encoder_widths) + 1, n_stages).astype(int)
    return [2 ** round(math.log(int(value), 2)) for value in spread]


def output_widths(out_conv: Sequence[int], total_classes: int) -> list[int]:
    """``out_conv`` ending with the classes of every task, appended when it ends otherwise (as IGN does)."""
    widths = list(out_conv)
    return widths if widths[-1] == total_classes else [*widths, total_classes]


def build_series_encoder(in_channels: int, settings: SeriesSettings, total_classes: int, n_stages: int | None) -> UTAE:
    """A U-TAE for one series; ``n_stages`` is the single-date encoders' stage count, None without them."""
    try:
        return _utae(in_channels, settings, total_classes, n_stages)
    except ValueError as error:
        raise ConfigError(f"model.hub.utae: {error}") from None


def _utae(in_channels: int, settings: SeriesSettings, total_classes: int, n_stages: int | None) -> UTAE:
    if n_stages is None:
        encoder_widths, decoder_widths = list(settings.encoder_widths), list(settings.decoder_widths)
    else:
        encoder_widths = decoder_widths = stage_widths(settings.encoder_widths, n_stages)
    return UTAE(
        input_dim=in_channels,
        encoder_widths=encoder_widths,
        decoder_widths=decoder_widths,
        out_conv=output_widths(settings.out_conv, total_classes),
        str_conv_k=settings.str_conv_k,
        str_conv_s=settings.str_conv_s,
        str_conv_p=settings.str_conv_p,
        agg_mode=settings.agg_mode,  # type: ignore[arg-type]
        encoder_norm=settings.encoder_norm,  # type: ignore[arg-type]
        n_head=settings.n_head,
        d_model=settings.d_model,
        d_k=settings.d_k,
        return_maps=True,
        pad_value=settings.pad_value,
        padding_mode=settings.padding_mode,
        official_pad_norm=settings.official_pad_norm,
    )
