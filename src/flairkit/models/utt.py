"""U-T&T, FLAIR #2's multimodal network: an aerial smp U-Net whose encoder maps receive Sentinel-2 U-TAE features.

After IGNF/FLAIR-2 (``TimeTexture_flair`` and its fusion modules) and the FLAIR #2 datapaper. Attribute names
follow the official model (``arch_vhr``, ``arch_hr``, ``fm_utae_featmap_cropped``, ``fm_utae_featmap_collapsed``,
``mtd_mlp``, ``reshape_utae_output``) so that an official Lightning checkpoint, keys under ``model.``, loads
strictly. Differences from the official code, all numerically neutral unless stated:

- the aerial footprint inside the super-patch is computed from the sizes (10x10 for 512 px, as official);
  when the super-patch minus the footprint is odd, the footprint leans toward the centroid pixel where
  torchvision's ``CenterCrop`` may round away from it (same window on the official 40/10 geometry);
- the auxiliary satellite head convolves the footprint before its nearest upsampling (same result, cheaper),
  so any aerial size works;
- the collapsed fusion pools each sample's own map; ``official_batch_collapse`` restores the official use of
  the first sample's map for the whole batch;
- modality dropout is decided by the caller (``drop_sentinel``), never inside ``forward``, so that inference
  is deterministic (the official forward draws it at inference too).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import segmentation_models_pytorch as smp
import torch.nn.functional as F
from torch import Tensor, nn

from flairkit.config.schema import FlairConfig
from flairkit.data.rasters import AERIAL_RESOLUTION
from flairkit.data.sentinel import SENTINEL_RESOLUTION
from flairkit.errors import ConfigError
from flairkit.models.factory import MetadataMLP, build_smp_model
from flairkit.models.utae import UTAE
from flairkit.nomenclature import get_nomenclature

FusionMode = Literal["cropped", "collapsed", "both"]

MIN_DEEPEST_SIZE = 2
"""Smallest side of U-TAE's deepest map: its 3x3 reflect-padded convolutions need at least 2 pixels."""

METADATA_DROPOUT = 0.5
"""Dropout of FLAIR #2's metadata MLP (FLAIR-1 uses 0.4)."""


def satellite_footprint(aerial_size: Sequence[int], sat_size: Sequence[int]) -> tuple[int, int]:
    """Side, in Sentinel-2 pixels, of the area an aerial patch covers (10 for 512 px at 0.2 m), within the map."""
    ratio = AERIAL_RESOLUTION / SENTINEL_RESOLUTION
    height, width = (min(s, max(1, round(a * ratio))) for a, s in zip(aerial_size, sat_size, strict=True))
    return height, width


def centre_crop(x: Tensor, size: Sequence[int]) -> Tensor:
    """The ``size`` window of (..., H, W) maps around the super-patch's centre pixel (index H // 2, W // 2).

    A super-patch is cut with the patch's centroid pixel at index ``S // 2``; the window starts at
    ``(S - size + 1) // 2``, so an odd leftover rounds toward that pixel. On even leftovers (FLAIR #2's 10 of 40)
    this is torchvision's ``CenterCrop``, as in IGN's code; on odd ones (a 3-pixel footprint in 16) ``CenterCrop``
    rounds half to even and may miss the patch by one pixel.
    """
    height, width = x.shape[-2:]
    top = (height - size[0] + 1) // 2
    left = (width - size[1] + 1) // 2
    return x[..., top : top + size[0], left : left + size[1]]


class CroppedFusion(nn.Module):
    """Per encoder stage, a 1x1 convolution of the satellite footprint to the stage's channels, resized bilinearly
    to the stage (after IGNF/FLAIR-2 ``FM_cropped``; keys ``conv_list.{stage}``). Stages without channels (some
    smp encoders have one) get no module."""

    def __init__(self, in_channels: int, stage_channels: Sequence[int]):
        super().__init__()
        self.conv_list = nn.ModuleDict(
            {str(i): nn.Conv2d(in_channels, c, kernel_size=1) for i, c in enumerate(stage_channels) if c > 0}
        )

    def forward(self, crop: Tensor, stage: int, size: Sequence[int]) -> Tensor:
        """(B, C_sat, h, w) footprint -> (B, C_stage, *size) for encoder stage ``stage``."""
        return F.interpolate(self.conv_list[str(stage)](crop), size=tuple(size), mode="bilinear", align_corners=False)


def collapse_mlp(in_features: int, out_features: int, dropout: float = 0.3) -> nn.Sequential:
    """Three Linear layers (Dropout, ReLU between) whose widths step evenly from ``in_features`` to
    ``out_features``, or double ``in_features`` when both are equal (the official ``FM_collapsed`` widths)."""
    step = abs(in_features - out_features) // 3
    if in_features < out_features:
        hidden = (in_features + step, in_features + 2 * step)
    elif in_features > out_features:
        hidden = (in_features - step, in_features - 2 * step)
    else:
        hidden = (2 * in_features, 2 * in_features)
    return nn.Sequential(
        nn.Linear(in_features, hidden[0]),
        nn.Dropout(dropout),
        nn.ReLU(),
        nn.Linear(hidden[0], hidden[1]),
        nn.Dropout(dropout),
        nn.ReLU(),
        nn.Linear(hidden[1], out_features),
    )


class CollapsedFusion(nn.Module):
    """Per encoder stage, an MLP from the spatially averaged satellite map to the stage's channels, to be tiled
    over the stage (after IGNF/FLAIR-2 ``FM_collapsed``; keys ``mlps.{stage}.{0,3,6}``)."""

    def __init__(self, in_channels: int, stage_channels: Sequence[int]):
        super().__init__()
        self.mlps = nn.ModuleDict({str(i): collapse_mlp(in_channels, c) for i, c in enumerate(stage_channels) if c > 0})

    def forward(self, pooled: Tensor, stage: int) -> Tensor:
        """(B, C_sat) averaged features -> (B, C_stage, 1, 1), broadcastable over the stage."""
        return self.mlps[str(stage)](pooled)[:, :, None, None]


class SatelliteHead(nn.Module):
    """Classifier of the satellite footprint, nearest-resized to the aerial size (official ``reshape_utae_output``).

    The 1x1 convolution is registered as ``1`` to match the official ``Sequential(Upsample(512), Conv2d)``; it is
    applied before the resizing, which gives the same values since a 1x1 convolution commutes with a nearest
    resize, at ~2,600 times less cost, and works for any aerial size.
    """

    def __init__(self, in_channels: int, n_classes: int):
        super().__init__()
        self.add_module("1", nn.Conv2d(in_channels, n_classes, kernel_size=1))

    def forward(self, crop: Tensor, size: Sequence[int]) -> Tensor:
        return F.interpolate(self._modules["1"](crop), size=tuple(size), mode="nearest")


class UTT(nn.Module):
    """U-T&T: aerial U-Net (``arch_vhr``) + Sentinel-2 U-TAE (``arch_hr``) fused into every encoder stage.

    ``fusion_mode``: "both" (official: cropped + collapsed, summed), "cropped" or "collapsed"; only the modules of
    the chosen mode exist. ``use_metadata`` adds FLAIR #2's metadata MLP (``mtd_mlp``) to the deepest encoder map.
    Any smp architecture works: the fusion follows the encoder's ``out_channels``.
    """

    def __init__(
        self,
        arch_vhr: smp.base.SegmentationModel,
        arch_hr: UTAE,
        n_classes: int,
        fusion_mode: FusionMode = "both",
        official_batch_collapse: bool = False,
        use_metadata: bool = False,
    ):
        super().__init__()
        if fusion_mode not in ("cropped", "collapsed", "both"):
            raise ValueError(f"unknown fusion mode {fusion_mode!r}; use cropped, collapsed or both")
        self.official_batch_collapse = official_batch_collapse
        self.arch_vhr = arch_vhr
        self.arch_hr = arch_hr
        sat_channels = arch_hr.decoder_widths[0]
        stage_channels = list(arch_vhr.encoder.out_channels)
        self.fm_utae_featmap_cropped = (
            CroppedFusion(sat_channels, stage_channels) if fusion_mode in ("cropped", "both") else None
        )
        self.fm_utae_featmap_collapsed = (
            CollapsedFusion(sat_channels, stage_channels) if fusion_mode in ("collapsed", "both") else None
        )
        self.mtd_mlp = MetadataMLP(dropout=METADATA_DROPOUT) if use_metadata else None
        self.reshape_utae_output = SatelliteHead(sat_channels, n_classes)

    @property
    def use_metadata(self) -> bool:
        return self.mtd_mlp is not None

    def _satellite_features(self, features: list[Tensor], sat_map: Tensor, crop: Tensor) -> list[Tensor | None]:
        """What the satellite adds to each encoder stage (None for stages without channels)."""
        cropped, collapsed = self.fm_utae_featmap_cropped, self.fm_utae_featmap_collapsed
        pooled = sat_map.mean(dim=(-2, -1))
        if self.official_batch_collapse:
            pooled = pooled[:1]
        added: list[Tensor | None] = []
        for stage, feature in enumerate(features):
            if feature.shape[1] == 0:
                added.append(None)
            elif collapsed is None:
                added.append(cropped(crop, stage, feature.shape[-2:]))
            elif cropped is None:
                added.append(collapsed(pooled, stage))
            else:
                added.append(cropped(crop, stage, feature.shape[-2:]) + collapsed(pooled, stage))
        return added

    def forward(
        self,
        aerial: Tensor,
        sentinel: Tensor,
        dates: Tensor,
        metadata: Tensor | None = None,
        drop_sentinel: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """Aerial logits and satellite logits, both (B, n_classes, H, W).

        ``aerial`` (B, C, H, W) with H, W multiples of the encoder's stride (32 for resnet34); ``sentinel``
        (B, T, C_sat, S, S) zero-padded on T; ``dates`` (B, T) day offsets; ``metadata`` (B, 45) when the model
        was built with metadata (ignored otherwise). ``drop_sentinel`` skips the satellite contribution to the
        U-Net (modality dropout, drawn by the caller per batch); the satellite logits are computed regardless.
        """
        if aerial.dim() != 4 or sentinel.dim() != 5 or aerial.shape[0] != sentinel.shape[0]:
            raise ValueError(
                f"U-T&T expects aerial (B, C, H, W) and sentinel (B, T, C, S, S) with the same B; "
                f"got {tuple(aerial.shape)} and {tuple(sentinel.shape)}"
            )
        if self.mtd_mlp is not None and metadata is None:
            raise ValueError("this model was built with metadata (data.metadata=true) but none was given")
        self.arch_vhr.check_input_shape(aerial)
        aerial_size = aerial.shape[-2:]
        sat_map = self.arch_hr.feature_maps(sentinel, dates)[-1]
        crop = centre_crop(sat_map, satellite_footprint(aerial_size, sat_map.shape[-2:]))
        features = list(self.arch_vhr.encoder(aerial))
        if self.mtd_mlp is not None:
            features[-1] = features[-1] + self.mtd_mlp(metadata, features[-1])
        if not drop_sentinel:
            added = self._satellite_features(features, sat_map, crop)
            features = [f if extra is None else f + extra for f, extra in zip(features, added, strict=True)]
        aerial_logits = self.arch_vhr.segmentation_head(self.arch_vhr.decoder(features))
        return aerial_logits, self.reshape_utae_output(crop, aerial_size)


def build_utt_model(config: FlairConfig, pretrained_encoder: bool = True) -> UTT:
    """The U-T&T network described by ``config`` (aerial bands, nomenclature, metadata, U-TAE and fusion).

    ``pretrained_encoder=False`` skips the aerial encoder's pre-training (use it whenever a checkpoint will be
    loaded).
    """
    utae = config.model.utae
    downsampling = 2 ** (len(utae.encoder_widths) - 1)
    sat_size = config.data.sentinel.sat_patch_size
    if sat_size % downsampling or sat_size // downsampling < MIN_DEEPEST_SIZE:
        raise ConfigError(
            f"data.sentinel.sat_patch_size={sat_size} must be a multiple of {downsampling} and at least "
            f"{MIN_DEEPEST_SIZE * downsampling} for model.utae.encoder_widths with {len(utae.encoder_widths)} "
            "stages; try 40"
        )
    try:
        arch_hr = UTAE(
            input_dim=utae.input_dim,
            encoder_widths=utae.encoder_widths,
            decoder_widths=utae.decoder_widths,
            out_conv=utae.out_conv,
            n_head=utae.n_head,
            d_model=utae.d_model,
            d_k=utae.d_k,
            official_pad_norm=utae.official_pad_norm,
            return_maps=True,
        )
    except ValueError as error:
        raise ConfigError(f"model.utae: {error}; fix these widths or remove model.utae to use FLAIR #2's") from None
    n_classes = get_nomenclature(config.data.nomenclature).n_targets
    weights = config.model.encoder_weights if pretrained_encoder else None
    arch_vhr = build_smp_model(
        config.model.arch, config.model.encoder, len(config.data.channels), n_classes, weights, config.model.smp_kwargs
    )
    return UTT(
        arch_vhr,
        arch_hr,
        n_classes,
        fusion_mode=config.model.fusion.mode,
        official_batch_collapse=config.model.fusion.official_batch_collapse,
        use_metadata=config.data.metadata,
    )
