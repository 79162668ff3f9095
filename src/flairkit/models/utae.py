"""U-TAE: a U-Net with a Lightweight Temporal Attention Encoder (L-TAE) for satellite image time series.

After Sainte Fare Garnot & Landrieu, "Panoptic Segmentation of Satellite Image Time Series with Convolutional
Temporal Attention Networks" (ICCV 2021, VSainteuf/utae-paps), as used by IGNF/FLAIR-2 for the Sentinel-2
branch of U-T&T. Module and parameter names follow those repositories so that their weights load strictly.

Inputs are (B, T, C, H, W) series whose T axis is zero-padded to the longest series of the batch; as in the
original, a date whose frame equals ``pad_value`` everywhere is padding. One deliberate difference: the L-TAE
input GroupNorm here ignores padded dates, whereas the original takes its statistics over every date, so that a
sample's output there depends on how much padding its batch needed. ``official_pad_norm=True`` restores the
original behaviour; without padding both are identical.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NormKind = Literal["batch", "group", "instance", "none"]
AggregationMode = Literal["att_group", "att_mean", "mean"]

MASKED_SCORE = -1e3
"""Attention score given to padded dates (after the original; exp(-1000) is 0 in float32)."""


class PositionalEncoder(nn.Module):
    """Sinusoidal encoding of day offsets (after VSainteuf/utae-paps).

    A position p gives ``d`` values p / period^(2*floor(i/2)/d), sine on even and cosine on odd indices,
    and the ``d`` values are tiled ``repeat`` times (one copy per attention head).
    """

    def __init__(self, d: int, period: float = 1000.0, repeat: int = 1):
        super().__init__()
        self.d = d
        self.period = period
        self.repeat = repeat

    def forward(self, positions: Tensor) -> Tensor:
        """(B, T) day offsets -> (B, T, d * repeat) float32 encodings."""
        exponents = 2 * torch.div(torch.arange(self.d, device=positions.device), 2, rounding_mode="floor") / self.d
        denominators = torch.pow(float(self.period), exponents.float())
        angles = positions.float()[..., None] / denominators
        table = torch.empty_like(angles)
        table[..., 0::2] = torch.sin(angles[..., 0::2])
        table[..., 1::2] = torch.cos(angles[..., 1::2])
        return table.repeat(1, 1, self.repeat)


class MultiHeadAttention(nn.Module):
    """L-TAE attention: one learnt query per head (``Q``), keys from a linear layer (``fc1_k``), and the
    input channels split evenly among the heads as values."""

    def __init__(self, n_head: int, d_k: int, d_in: int, attn_dropout: float = 0.1):
        super().__init__()
        self.n_head = n_head
        self.d_k = d_k
        self.d_in = d_in
        self.Q = nn.Parameter(torch.empty(n_head, d_k))
        nn.init.normal_(self.Q, mean=0.0, std=math.sqrt(2.0 / d_k))
        self.fc1_k = nn.Linear(d_in, n_head * d_k)
        nn.init.normal_(self.fc1_k.weight, mean=0.0, std=math.sqrt(2.0 / d_k))
        self.dropout = nn.Dropout(attn_dropout)
        self.temperature = math.sqrt(d_k)

    def forward(self, values: Tensor, pad_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(N, T, d_in) sequences and (N, T) bool padding -> (n_head, N, d_in / n_head) outputs and
        (n_head, N, T) attention."""
        n, t, _ = values.shape
        keys = self.fc1_k(values).view(n, t, self.n_head, self.d_k)
        scores = torch.einsum("hk,nthk->hnt", self.Q.to(keys.dtype), keys) / self.temperature
        if pad_mask is not None:
            scores = scores.masked_fill(pad_mask[None], MASKED_SCORE)
        attention = self.dropout(scores.softmax(dim=-1))
        heads = values.view(n, t, self.n_head, self.d_in // self.n_head)
        return torch.einsum("hnt,nthf->hnf", attention, heads), attention


def masked_group_norm(x: Tensor, valid: Tensor, norm: nn.GroupNorm) -> Tensor:
    """``norm`` applied to (N, C, T) with statistics taken only over the positions where ``valid`` (N, T) is True."""
    n, c, t = x.shape
    groups = norm.num_groups
    grouped = x.to(torch.promote_types(x.dtype, torch.float32)).view(n, groups, c // groups, t)
    weight = valid[:, None, None, :].to(grouped.dtype)
    count = (weight.sum(dim=(2, 3), keepdim=True) * (c // groups)).clamp_min(1.0)
    mean = (grouped * weight).sum(dim=(2, 3), keepdim=True) / count
    var = ((grouped - mean).square() * weight).sum(dim=(2, 3), keepdim=True) / count
    out = ((grouped - mean) * torch.rsqrt(var + norm.eps)).view(n, c, t)
    if norm.affine:
        out = out * norm.weight.to(out.dtype)[None, :, None] + norm.bias.to(out.dtype)[None, :, None]
    return out.to(x.dtype)


class LTAE2d(nn.Module):
    """Lightweight Temporal Attention Encoder applied at every pixel: (B, T, C, H, W) -> (B, C_out, H, W).

    After Sainte Fare Garnot & Landrieu (2020), VSainteuf/utae-paps ``LTAE2d``: GroupNorm, 1x1 projection to
    ``d_model``, sinusoidal encoding of the dates, one-query-per-head attention, MLP (Linear, BatchNorm1d, ReLU),
    dropout and output GroupNorm.
    """

    def __init__(
        self,
        in_channels: int = 128,
        n_head: int = 16,
        d_k: int = 4,
        mlp: Sequence[int] = (256, 128),
        dropout: float = 0.2,
        d_model: int | None = 256,
        period: float = 1000.0,
        positional_encoding: bool = True,
        official_pad_norm: bool = False,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.n_head = n_head
        self.official_pad_norm = official_pad_norm
        self.d_model = d_model if d_model is not None else in_channels
        if mlp[0] != self.d_model:
            raise ValueError(f"the L-TAE MLP must start at d_model={self.d_model}, got widths {list(mlp)}")
        if self.d_model % n_head or in_channels % n_head or mlp[-1] % n_head:
            raise ValueError(
                f"n_head={n_head} must divide d_model={self.d_model}, the input width {in_channels} "
                f"and the output width {mlp[-1]}"
            )
        self.inconv = nn.Conv1d(in_channels, d_model, 1) if d_model is not None else None
        self.positional_encoder = (
            PositionalEncoder(self.d_model // n_head, period=period, repeat=n_head) if positional_encoding else None
        )
        self.attention_heads = MultiHeadAttention(n_head=n_head, d_k=d_k, d_in=self.d_model)
        self.in_norm = nn.GroupNorm(num_groups=n_head, num_channels=in_channels)
        self.out_norm = nn.GroupNorm(num_groups=n_head, num_channels=mlp[-1])
        layers: list[nn.Module] = []
        for width_in, width_out in pairwise(mlp):
            layers += [nn.Linear(width_in, width_out), nn.BatchNorm1d(width_out), nn.ReLU()]
        self.mlp = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, batch_positions: Tensor | None = None, pad_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Encode a series; returns the (B, C_out, H, W) map and the (n_head, B, T, H, W) attention masks."""
        b, t, c, h, w = x.shape
        sequences = x.permute(0, 3, 4, 2, 1).reshape(b * h * w, c, t)
        pixel_pad = None if pad_mask is None else pad_mask[:, None, None, :].expand(b, h, w, t).reshape(-1, t)
        if pixel_pad is not None and not self.official_pad_norm and pad_mask.any():
            out = masked_group_norm(sequences, ~pixel_pad, self.in_norm)
        else:
            out = self.in_norm(sequences)
        if self.inconv is not None:
            out = self.inconv(out)
        out = out.transpose(1, 2)
        if self.positional_encoder is not None:
            if batch_positions is None:
                raise ValueError("the L-TAE encodes dates: give batch_positions (B, T)")
            encoding = self.positional_encoder(batch_positions).to(out.dtype)
            out = (out.reshape(b, h * w, t, -1) + encoding[:, None]).reshape(b * h * w, t, -1)
        heads, attention = self.attention_heads(out, pad_mask=pixel_pad)
        out = heads.permute(1, 0, 2).reshape(b * h * w, -1)
        out = self.out_norm(self.dropout(self.mlp(out)))
        out = out.view(b, h, w, -1).permute(0, 3, 1, 2)
        attention = attention.view(self.n_head, b, h, w, t).permute(0, 1, 4, 2, 3)
        return out, attention


class ConvLayer(nn.Module):
    """Successive convolutions, each followed by a normalisation and a ReLU (the last ReLU optional)."""

    def __init__(
        self,
        nkernels: Sequence[int],
        norm: NormKind = "batch",
        k: int = 3,
        s: int = 1,
        p: int = 1,
        n_groups: int = 4,
        last_relu: bool = True,
        padding_mode: str = "reflect",
    ):
        super().__init__()
        if norm not in ("batch", "group", "instance", "none"):
            raise ValueError(f"unknown normalisation {norm!r}; use batch, group, instance or none")
        layers: list[nn.Module] = []
        for i, (width_in, width_out) in enumerate(pairwise(nkernels)):
            layers.append(nn.Conv2d(width_in, width_out, k, stride=s, padding=p, padding_mode=padding_mode))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(width_out))
            elif norm == "instance":
                layers.append(nn.InstanceNorm2d(width_out))
            elif norm == "group":
                layers.append(nn.GroupNorm(num_groups=n_groups, num_channels=width_out))
            if last_relu or i < len(nkernels) - 2:
                layers.append(nn.ReLU())
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class TemporallySharedBlock(nn.Module):
    """A block applied to every date of a series; padded dates are skipped and left at ``pad_value``."""

    def __init__(self, pad_value: float | None = None):
        super().__init__()
        self.pad_value = pad_value

    def smart_forward(self, x: Tensor) -> Tensor:
        """Apply the block to (B, C, H, W) maps or to every date of (B, T, C, H, W) series."""
        if x.dim() == 4:
            return self(x)
        b, t = x.shape[:2]
        frames = x.flatten(0, 1)
        if self.pad_value is None:
            return self(frames).unflatten(0, (b, t))
        padded = (frames == self.pad_value).flatten(1).all(dim=1)
        if not padded.any():
            return self(frames).unflatten(0, (b, t))
        encoded = self(frames[~padded])
        out = encoded.new_full((b * t, *encoded.shape[1:]), self.pad_value)
        out[~padded] = encoded
        return out.unflatten(0, (b, t))


class ConvBlock(TemporallySharedBlock):
    """A :class:`ConvLayer` shared across dates (key ``conv.conv.*``)."""

    def __init__(
        self,
        nkernels: Sequence[int],
        pad_value: float | None = None,
        norm: NormKind = "batch",
        last_relu: bool = True,
        padding_mode: str = "reflect",
    ):
        super().__init__(pad_value=pad_value)
        self.conv = ConvLayer(nkernels=nkernels, norm=norm, last_relu=last_relu, padding_mode=padding_mode)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class DownConvBlock(TemporallySharedBlock):
    """Strided convolution then a residual pair of convolutions, shared across dates."""

    def __init__(
        self,
        d_in: int,
        d_out: int,
        k: int,
        s: int,
        p: int,
        pad_value: float | None = None,
        norm: NormKind = "batch",
        padding_mode: str = "reflect",
    ):
        super().__init__(pad_value=pad_value)
        self.down = ConvLayer(nkernels=[d_in, d_in], norm=norm, k=k, s=s, p=p, padding_mode=padding_mode)
        self.conv1 = ConvLayer(nkernels=[d_in, d_out], norm=norm, padding_mode=padding_mode)
        self.conv2 = ConvLayer(nkernels=[d_out, d_out], norm=norm, padding_mode=padding_mode)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(self.down(x))
        return out + self.conv2(out)


class UpConvBlock(nn.Module):
    """Transposed convolution, concatenation with the (1x1-convolved) skip map, residual pair of convolutions."""

    def __init__(
        self,
        d_in: int,
        d_out: int,
        k: int,
        s: int,
        p: int,
        norm: NormKind = "batch",
        d_skip: int | None = None,
        padding_mode: str = "reflect",
    ):
        super().__init__()
        d = d_out if d_skip is None else d_skip
        self.skip_conv = nn.Sequential(nn.Conv2d(d, d, kernel_size=1), nn.BatchNorm2d(d), nn.ReLU())
        self.up = nn.Sequential(
            nn.ConvTranspose2d(d_in, d_out, kernel_size=k, stride=s, padding=p), nn.BatchNorm2d(d_out), nn.ReLU()
        )
        self.conv1 = ConvLayer(nkernels=[d_out + d, d_out], norm=norm, padding_mode=padding_mode)
        self.conv2 = ConvLayer(nkernels=[d_out, d_out], norm=norm, padding_mode=padding_mode)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        out = self.conv1(torch.cat([self.up(x), self.skip_conv(skip)], dim=1))
        return out + self.conv2(out)


def _resize_attention(attention: Tensor, size: torch.Size) -> Tensor:
    """Bring (N, T, h, w) attention masks to a skip map's size: bilinear up, average pooling down."""
    if attention.shape[-2:] == size:
        return attention
    if size[0] > attention.shape[-2]:
        return F.interpolate(attention, size=size, mode="bilinear", align_corners=False)
    return F.avg_pool2d(attention, kernel_size=attention.shape[-2] // size[0])


def aggregate_in_time(x: Tensor, pad_mask: Tensor, attention: Tensor, mode: AggregationMode) -> Tensor:
    """Collapse the dates of a (B, T, C, H, W) skip map into (B, C, H, W) (U-TAE's temporal aggregator).

    att_group: each group of C / n_head channels is averaged with its head's attention, resized to the map;
    att_mean: every channel with the head-averaged attention; mean: plain mean over unpadded dates.
    """
    b, t, c, h, w = x.shape
    valid = (~pad_mask).to(x.dtype)
    if mode == "att_group":
        n_head = attention.shape[0]
        weights = _resize_attention(attention.flatten(0, 1), x.shape[-2:]).view(n_head, b, t, h, w)
        weights = weights * valid[None, :, :, None, None]
        groups = x.view(b, t, n_head, c // n_head, h, w)
        return (groups * weights.permute(1, 2, 0, 3, 4)[:, :, :, None]).sum(dim=1).reshape(b, c, h, w)
    if mode == "att_mean":
        weights = F.interpolate(attention.mean(dim=0), size=(h, w), mode="bilinear", align_corners=False)
        weights = weights * valid[:, :, None, None]
        return (x * weights[:, :, None]).sum(dim=1)
    if mode == "mean":
        count = valid.sum(dim=1).clamp_min(1.0)
        return (x * valid[:, :, None, None, None]).sum(dim=1) / count[:, None, None, None]
    raise ValueError(f"unknown temporal aggregation {mode!r}; use att_group, att_mean or mean")


class UTAE(nn.Module):
    """U-TAE (after VSainteuf/utae-paps ``UTAE``, as configured by IGNF/FLAIR-2); defaults are FLAIR #2's settings.

    A shared spatial encoder runs on every date, the L-TAE collapses the deepest level in time and its attention
    masks collapse the skip connections; a convolutional decoder brings the map back to the input resolution.
    ``forward`` returns the ``out_conv`` scores, with the decoder maps when ``return_maps``;
    :meth:`feature_maps` returns the maps alone.
    """

    def __init__(
        self,
        input_dim: int = 10,
        encoder_widths: Sequence[int] = (64, 64, 128, 128),
        decoder_widths: Sequence[int] | None = (64, 64, 128, 128),
        out_conv: Sequence[int] = (32, 13),
        str_conv_k: int = 4,
        str_conv_s: int = 2,
        str_conv_p: int = 1,
        agg_mode: AggregationMode = "att_group",
        encoder_norm: NormKind = "group",
        n_head: int = 16,
        d_model: int = 256,
        d_k: int = 4,
        return_maps: bool = False,
        pad_value: float = 0.0,
        padding_mode: str = "reflect",
        positional_period: float = 1000.0,
        official_pad_norm: bool = False,
    ):
        super().__init__()
        encoder_widths = list(encoder_widths)
        decoder_widths = list(decoder_widths) if decoder_widths is not None else list(encoder_widths)
        if len(encoder_widths) != len(decoder_widths) or encoder_widths[-1] != decoder_widths[-1]:
            raise ValueError(
                f"encoder_widths {encoder_widths} and decoder_widths {decoder_widths} must have the same length "
                "and the same last (deepest) width"
            )
        if agg_mode not in ("att_group", "att_mean", "mean"):
            raise ValueError(f"unknown agg_mode {agg_mode!r}; use att_group, att_mean or mean")
        if agg_mode == "att_group" and any(width % n_head for width in encoder_widths):
            raise ValueError(
                f"agg_mode att_group needs every encoder width {encoder_widths} divisible by n_head={n_head}"
            )
        self.n_stages = len(encoder_widths)
        self.stride = str_conv_s
        self.encoder_widths = encoder_widths
        self.decoder_widths = decoder_widths
        self.agg_mode = agg_mode
        self.return_maps = return_maps
        self.pad_value = pad_value
        self.in_conv = ConvBlock(
            nkernels=[input_dim, encoder_widths[0], encoder_widths[0]],
            pad_value=pad_value,
            norm=encoder_norm,
            padding_mode=padding_mode,
        )
        self.down_blocks = nn.ModuleList(
            DownConvBlock(
                d_in=encoder_widths[i],
                d_out=encoder_widths[i + 1],
                k=str_conv_k,
                s=str_conv_s,
                p=str_conv_p,
                pad_value=pad_value,
                norm=encoder_norm,
                padding_mode=padding_mode,
            )
            for i in range(self.n_stages - 1)
        )
        self.up_blocks = nn.ModuleList(
            UpConvBlock(
                d_in=decoder_widths[i],
                d_out=decoder_widths[i - 1],
                d_skip=encoder_widths[i - 1],
                k=str_conv_k,
                s=str_conv_s,
                p=str_conv_p,
                norm="batch",
                padding_mode=padding_mode,
            )
            for i in range(self.n_stages - 1, 0, -1)
        )
        self.temporal_encoder = LTAE2d(
            in_channels=encoder_widths[-1],
            d_model=d_model,
            n_head=n_head,
            mlp=[d_model, encoder_widths[-1]],
            d_k=d_k,
            period=positional_period,
            official_pad_norm=official_pad_norm,
        )
        self.out_conv = ConvBlock(nkernels=[decoder_widths[0], *out_conv], padding_mode=padding_mode)

    @property
    def downsampling(self) -> int:
        """Ratio between the input size and the deepest map's size (1 with FLAIR-HUB's stride-1 convolutions)."""
        return self.stride ** (self.n_stages - 1)

    def padding_mask(self, x: Tensor) -> Tensor:
        """(B, T) True where a date of (B, T, C, H, W) is padding (its frame equals ``pad_value`` everywhere)."""
        return (x == self.pad_value).flatten(2).all(dim=2)

    def feature_maps(self, x: Tensor, batch_positions: Tensor) -> list[Tensor]:
        """Decoder maps of (B, T, C, H, W) series dated by (B, T) day offsets, deepest first.

        With FLAIR #2's settings and 40 px inputs: (B,128,5,5), (B,128,10,10), (B,64,20,20), (B,64,40,40).
        """
        if x.dim() != 5:
            raise ValueError(f"U-TAE expects (B, T, C, H, W) series, got shape {tuple(x.shape)}")
        if batch_positions.shape != x.shape[:2]:
            raise ValueError(f"dates {tuple(batch_positions.shape)} must be (B, T) = {tuple(x.shape[:2])}")
        if x.shape[-2] % self.downsampling or x.shape[-1] % self.downsampling:
            raise ValueError(
                f"U-TAE input size {tuple(x.shape[-2:])} must be a multiple of {self.downsampling} "
                f"({self.n_stages} stages)"
            )
        pad_mask = self.padding_mask(x)
        skips = [self.in_conv.smart_forward(x)]
        for block in self.down_blocks:
            skips.append(block.smart_forward(skips[-1]))
        out, attention = self.temporal_encoder(skips[-1], batch_positions=batch_positions, pad_mask=pad_mask)
        maps = [out]
        for block, skip in zip(self.up_blocks, reversed(skips[:-1]), strict=True):
            out = block(out, aggregate_in_time(skip, pad_mask, attention, self.agg_mode))
            maps.append(out)
        return maps

    def forward(self, x: Tensor, batch_positions: Tensor) -> Tensor | tuple[Tensor, list[Tensor]]:
        """(B, out_conv[-1], H, W) scores, or (scores, decoder maps) when ``return_maps``."""
        maps = self.feature_maps(x, batch_positions)
        scores = self.out_conv(maps[-1])
        return (scores, maps) if self.return_maps else scores
