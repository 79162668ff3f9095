"""The validated configuration of every flairkit command.

One :class:`FlairConfig` holds every section; each command reads the sections it needs. Unknown keys,
wrong types and inconsistent combinations are refused when the config is built, before any work.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flairkit.errors import ConfigError
from flairkit.nomenclature import NOMENCLATURES, get_nomenclature

FLAIR_MEANS = (105.08, 110.87, 101.82, 106.38, 53.26)
FLAIR_STDS = (52.17, 45.38, 44.00, 39.69, 79.30)
BAND_NAMES = ("red", "green", "blue", "nir", "elevation")
DEVICE_PATTERN = r"auto|cpu|cuda|gpu|mps|cuda:\d+"
"""The device names of ``evaluate.device``, ``detect.device`` and ``--device``."""
InferencePrecision = Literal["auto", "32", "bf16", "fp16"]
RELEASE_WEIGHTS = "release"
"""``train.init_weights`` value that names the preset's released weights."""
TestTimeAugmentation = Literal["none", "flips", "d4"]
NormLayer = Literal["batch", "group", "frozen_batch"]


class Section(BaseModel):
    """A config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)


def _device_name(value: str) -> str:
    if not re.fullmatch(DEVICE_PATTERN, value):
        raise ValueError("must be auto, cpu, cuda (this rank's GPU), cuda:N (e.g. cuda:1) or mps")
    return value


def _number_as_text(value: Any) -> Any:
    # `--set detect.precision=32` reads as a number: accept it as the text the precision settings expect.
    return str(value) if isinstance(value, int) else value


def _existing(path: Path | None, key: str) -> Path | None:
    if path is not None and not Path(path).exists():
        raise ValueError(f"{key} '{path}' does not exist; give the path of an existing file or folder")
    return path


class NormalizationConfig(Section):
    """How uint8 aerial bands become model inputs."""

    mode: Literal["custom", "scaling", "without", "per_patch"] = "custom"
    """custom: (x - mean) / std per band; scaling: x / 255; without: raw values; per_patch: each band of each patch
    standardised by its own mean and std (training and inference; zone detection standardises each tile)."""
    means: list[float] | None = None
    """Per selected channel; defaults to the FLAIR statistics of the selected bands."""
    stds: list[float] | None = None
    """Per selected channel; defaults to the FLAIR statistics of the selected bands."""


class RadiometricConfig(Section):
    """Random radiometric jitter of training batches on the device, on the 0..255 scale before normalisation.

    Applies to the aerial colour bands (R, G, B, NIR) only, never to elevation; every option is off by default.
    """

    gain: float = Field(0.0, ge=0, lt=1)
    """Each band of each patch is multiplied by a factor drawn uniformly in [1 - gain, 1 + gain]."""
    offset: float = Field(0.0, ge=0, le=1)
    """Each band of each patch is shifted by offset x 255 x a number drawn uniformly in [-1, 1]."""
    gamma: float = Field(0.0, ge=0, lt=1)
    """Each band of each patch becomes 255 (x / 255)^g, log g drawn uniformly in [log(1 - gamma), -log(1 - gamma)]."""
    blur_probability: float = Field(0.0, ge=0, le=1)
    """Probability that a patch is blurred by a Gaussian of standard deviation drawn in [0.1, blur_sigma] pixels."""
    blur_sigma: float = Field(1.5, gt=0.1, le=5)
    """Largest standard deviation, in pixels, of the blur."""
    noise_std: float = Field(0.0, ge=0)
    """Standard deviation, on the 0..255 scale, of the Gaussian noise added to every pixel (0: none)."""
    histogram_probability: float = Field(0.0, ge=0, le=1)
    """Probability that a patch's bands are histogram-matched to histogram_reference."""
    histogram_reference: list[list[float]] | None = None
    """Reference domain, one list per selected band (data.channels order; elevation lists are ignored): the band's
    values at evenly spaced quantiles from 0 to 1 (at least 2, non-decreasing), e.g. computed on patches of the
    target domain with flairkit.data.transforms.band_quantiles."""

    @model_validator(mode="after")
    def _reference_given(self) -> RadiometricConfig:
        if self.histogram_probability > 0 and self.histogram_reference is None:
            raise ValueError(
                "data.radiometric.histogram_probability > 0 needs data.radiometric.histogram_reference (per-band "
                "quantiles of the reference domain); set it or set histogram_probability to 0"
            )
        for band in self.histogram_reference or []:
            if len(band) < 2 or any(b < a for a, b in itertools.pairwise(band)):
                raise ValueError(
                    "each list of data.radiometric.histogram_reference needs at least 2 non-decreasing quantiles"
                )
        return self


class SentinelConfig(Section):
    """Sentinel-2 time series of FLAIR #2 (used by the multimodal U-T&T model)."""

    enabled: bool = False
    """Load the Sentinel-2 super-patch of each aerial patch (needs the sen folders and the centroids JSON)."""
    sat_patch_size: int = Field(40, gt=0)
    """Side, in 10 m pixels, of the super-patch cropped around each aerial patch (multiple of 8)."""
    filter_clouds: bool = False
    """Drop dates whose snow + cloud cover is too high (FLAIR #2 FILT)."""
    cloud_probability: int = Field(60, ge=0, le=100)
    """A pixel counts as snow or cloud when its mask probability is at least this."""
    max_cover: float = Field(0.5, gt=0, le=1)
    """A date is kept when its snow + cloud cover fraction is below this."""
    monthly_average: bool = False
    """Average the kept dates of each calendar month (FLAIR #2 AVG M)."""
    divisor: float = Field(65535.0, gt=0)
    """Reflectances are divided by this (IGN divides uint16 series by 65535, but forgets to after monthly averaging;
    flairkit divides in every case)."""
    reference_date: str = "2021-05-15"
    """Dates become day offsets (reference - date) with the acquisition year ignored, as FLAIR #2 does."""

    @field_validator("sat_patch_size")
    @classmethod
    def _multiple_of_8(cls, value: int) -> int:
        if value % 8:
            raise ValueError(f"must be a multiple of 8 (U-TAE downsamples 3 times), got {value}; try 40")
        return value


HubModality = Literal[
    "AERIAL_RGBI", "AERIAL-RLT_PAN", "DEM_ELEV", "SPOT_RGBI", "SENTINEL2_TS", "SENTINEL1-ASC_TS", "SENTINEL1-DESC_TS"
]
"""FLAIR-HUB input modalities, named as IGN's folders and split-CSV columns."""
HubLabel = Literal["AERIAL_LABEL-COSIA", "ALL_LABEL-LPIS"]
"""FLAIR-HUB supervisions: COSIA land cover (19 classes) and LPIS crop types (3 nomenclature levels)."""
HUB_BANDS: dict[str, int] = {
    "AERIAL_RGBI": 4,
    "AERIAL-RLT_PAN": 1,
    "DEM_ELEV": 2,
    "SPOT_RGBI": 4,
    "SENTINEL2_TS": 10,
    "SENTINEL1-ASC_TS": 2,
    "SENTINEL1-DESC_TS": 2,
}
"""Bands of each FLAIR-HUB input modality (per date for the series)."""


class HubSentinel2Config(Section):
    """FLAIR-HUB Sentinel-2 series (SENTINEL2_TS): cloud and snow filtering with SENTINEL2_MSK-SC, monthly means."""

    filter_clouds: bool = True
    """Drop dates covered by clouds or snow according to the SENTINEL2_MSK-SC masks (IGN's filter_sentinel2)."""
    cloud_threshold: int = Field(1, ge=0, le=100)
    """A pixel is cloudy when its cloud probability (0-100) is above this (IGN's filter_sentinel2_max_cloud)."""
    snow_threshold: int = Field(1, ge=0, le=100)
    """A pixel is snowy when its snow probability (0-100) is above this (IGN's filter_sentinel2_max_snow)."""
    max_cover: float = Field(0.05, ge=0, le=1)
    """A date is kept when at most this fraction of its pixels is cloudy or snowy (IGN's
    filter_sentinel2_max_frac_cover). When no date passes, clouds are ignored as IGN does; when still none
    passes, the least covered date is kept."""
    monthly_average: bool = False
    """Average the kept dates of each calendar month, dated the 15th (IGN's temporal_average_sentinel2: monthly)."""
    fill_empty_months: bool = False
    """With monthly_average, always 12 months as IGN: a month without a date repeats the previous month's mean and
    offset (zeros before the first); off: such months are left out and the batch pads them."""


class HubSentinel1Config(Section):
    """FLAIR-HUB Sentinel-1 series (SENTINEL1-ASC_TS and SENTINEL1-DESC_TS, VV and VH)."""

    monthly_average: bool = False
    """Average the dates of each calendar month, dated the 15th (IGN's temporal_average_sentinel1: monthly)."""
    fill_empty_months: bool = False
    """As data.hub.sentinel2.fill_empty_months."""


class HubDataConfig(Section):
    """FLAIR-HUB in IGN's distributed layout: any subset of modalities, COSIA and LPIS labels (README, FLAIR-HUB)."""

    root: Path | None = None
    """FLAIR-HUB folder holding the {DOM}-{YEAR}_{MOD} folders and GLOBAL_ALL_MTD; null when not using FLAIR-HUB.
    When set (or data.root is a FLAIR-HUB folder), flair train/evaluate read FLAIR-HUB."""
    metadata_dir: Path | None = None
    """Folder of the GLOBAL_ALL_MTD GeoPackages (Sentinel dates, official splits); default: root/GLOBAL_ALL_MTD."""
    split: str = "split_1"
    """Column of GLOBAL_ALL_MTD_SPLIT.gpkg giving each patch's split: split_1..split_5, split_flairchallenge, ...
    (values train, valid, test)."""
    train_csv: Path | None = None
    """IGN split CSV of the train patches (patch_id and one path column per modality); replaces the split column."""
    val_csv: Path | None = None
    """IGN split CSV of the validation patches."""
    test_csv: Path | None = None
    """IGN split CSV of the test patches."""
    modalities: list[HubModality] = Field(default_factory=lambda: ["AERIAL_RGBI"])
    """Input modalities read for each patch: AERIAL_RGBI, AERIAL-RLT_PAN, DEM_ELEV, SPOT_RGBI, SENTINEL2_TS,
    SENTINEL1-ASC_TS, SENTINEL1-DESC_TS."""
    channels: dict[HubModality, list[int]] = Field(default_factory=dict)
    """1-based bands read per modality, in model order (IGN's inputs_channels, e.g. AERIAL_RGBI: [4, 1, 2]); a
    modality not listed reads all its bands. DEM_ELEV takes data.hub.elevation instead."""
    elevation: Literal["dsm_ndsm", "dsm_dtm", "ndsm"] = "dsm_ndsm"
    """DEM_ELEV channels: dsm_ndsm [DSM, DSM - DTM] (IGN's training default, calc_elevation + stack_dsm); dsm_dtm the
    file's [DSM, DTM] (IGN's zone detection); ndsm [DSM - DTM]."""
    labels: list[HubLabel] = Field(default_factory=lambda: ["AERIAL_LABEL-COSIA"])
    """Supervisions read for each patch: AERIAL_LABEL-COSIA (land cover), ALL_LABEL-LPIS (crop types), both, or none."""
    lpis_level: int = Field(1, ge=1, le=3)
    """LPIS nomenclature level, the band read from ALL_LABEL-LPIS: 1 (23 classes), 2 (31) or 3 (46)."""
    reference_date: str = "05-15"
    """MM-DD: series dates become offsets date - reference in days, the reference taken in each date's own year
    (IGN's ref_date; the opposite sign to FLAIR #2)."""
    sentinel2: HubSentinel2Config = Field(default_factory=HubSentinel2Config)
    sentinel1: HubSentinel1Config = Field(default_factory=HubSentinel1Config)

    _root_exists = field_validator("root")(lambda v: _existing(v, "data.hub.root"))
    _metadata_exists = field_validator("metadata_dir")(lambda v: _existing(v, "data.hub.metadata_dir"))
    _train_exists = field_validator("train_csv")(lambda v: _existing(v, "data.hub.train_csv"))
    _val_exists = field_validator("val_csv")(lambda v: _existing(v, "data.hub.val_csv"))
    _test_exists = field_validator("test_csv")(lambda v: _existing(v, "data.hub.test_csv"))

    @field_validator("modalities", "labels")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"a name is listed twice in {value}")
        return value

    @field_validator("modalities")
    @classmethod
    def _some_modality(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("select at least one input modality, e.g. [AERIAL_RGBI]")
        return value

    @field_validator("channels")
    @classmethod
    def _valid_channels(cls, value: dict[str, list[int]]) -> dict[str, list[int]]:
        for modality, bands in value.items():
            if modality == "DEM_ELEV":
                raise ValueError("DEM_ELEV takes no channels; choose its bands with data.hub.elevation")
            count = HUB_BANDS[modality]
            bad = [b for b in bands if not 1 <= b <= count]
            if not bands or bad or len(set(bands)) != len(bands):
                example = list(range(1, count + 1))
                raise ValueError(
                    f"{modality}: {bands} must list distinct 1-based bands within 1..{count}, e.g. {example}"
                )
        return value

    @field_validator("reference_date")
    @classmethod
    def _month_day(cls, value: str) -> str:
        try:
            # 2001 is not a leap year: the reference must exist in every year.
            dt.date.fromisoformat(f"2001-{value}" if re.fullmatch(r"\d{2}-\d{2}", value) else "")
        except ValueError:
            raise ValueError(f"{value!r} is not a MM-DD date of every year (29 February is not); e.g. 05-15") from None
        return value


class DataConfig(Section):
    """Where the dataset is and how patches become tensors."""

    root: Path | None = None
    """FLAIR #2 layout root (holds flair_aerial_train, flair_labels_train, ...), a synthetic world, or a FLAIR-HUB
    folder (trains on its AERIAL_RGBI and COSIA labels as data.hub says; README, "Train on FLAIR-HUB")."""
    train_csv: Path | None = None
    """FLAIR-1 style path list of the train split (image,mask per line); used instead of ``root`` when given."""
    val_csv: Path | None = None
    """FLAIR-1 style path list of the validation split."""
    test_csv: Path | None = None
    """FLAIR-1 style path list of the test split."""
    channels: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5])
    """1-based aerial bands in the order fed to the model: 1 R, 2 G, 3 B, 4 NIR, 5 elevation."""
    nomenclature: str = "15cl"
    """Mask values -> targets: 15cl (19 logits, 4 disabled), 19cl, 13cl (FLAIR #2), 12cl, hub (see `flair models`), or
    the path of a nomenclature YAML (README, "Your own data")."""
    normalization: NormalizationConfig = Field(default_factory=NormalizationConfig)
    radiometric: RadiometricConfig = Field(default_factory=RadiometricConfig)
    metadata: bool = False
    """Feed the 45-value aerial metadata encoding to the model (FLAIR-1 MTD)."""
    metadata_encoding: Literal["official", "corrected"] = "official"
    """official keeps IGN's constant month term; corrected encodes the month properly."""
    sentinel: SentinelConfig = Field(default_factory=SentinelConfig)
    hub: HubDataConfig = Field(default_factory=HubDataConfig)
    val_fraction: float = Field(0.2, gt=0, lt=1)
    """Share of domains held out for validation when splitting a FLAIR #2 folder by domain."""
    split_seed: int = 2022
    """Seed of the domain-wise train/val split."""
    augmentation_probability: float = Field(0.5, ge=0, le=1)
    """Probability of each of hflip, vflip, rot90 during training; 0 disables augmentation."""
    class_aware_sampling: float = Field(0.0, ge=0)
    """Draw training patches with replacement, each with probability proportional to (rarity of its rarest class)
    ^ this power, a class's rarity being total pixels / its pixels over the train masks; 0: plain shuffle."""
    batch_size: int = Field(10, gt=0)
    """Patches per training batch and per process (global batch = batch_size x devices x nodes)."""
    num_workers: int | None = Field(None, ge=0)
    """Loader processes; default: this process's share of the CPUs it may use (affinity mask, cgroup quota, split
    between LOCAL_WORLD_SIZE ranks) minus one, at most 8."""
    pin_memory: bool | None = None
    """Default: on when training on a GPU."""
    prefetch_factor: int = Field(2, gt=0)
    """Batches each loader process prepares ahead."""

    _root_exists = field_validator("root")(lambda v: _existing(v, "data.root"))
    _train_exists = field_validator("train_csv")(lambda v: _existing(v, "data.train_csv"))
    _val_exists = field_validator("val_csv")(lambda v: _existing(v, "data.val_csv"))
    _test_exists = field_validator("test_csv")(lambda v: _existing(v, "data.test_csv"))

    @field_validator("channels")
    @classmethod
    def _valid_channels(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("select at least one band, e.g. [1, 2, 3] for RGB")
        bad = [c for c in value if not 1 <= c <= len(BAND_NAMES)]
        if bad:
            raise ValueError(f"bands are 1-based in 1..5 (R, G, B, NIR, elevation); got {bad}")
        if len(set(value)) != len(value):
            raise ValueError(f"a band is selected twice in {value}")
        return value

    @field_validator("nomenclature")
    @classmethod
    def _known_nomenclature(cls, value: str) -> str:
        if value in NOMENCLATURES:
            return value
        try:
            get_nomenclature(value)
        except (KeyError, ConfigError) as error:
            raise ValueError(str(error.args[0])) from None
        return value

    @model_validator(mode="after")
    def _reference_per_band(self) -> DataConfig:
        reference = self.radiometric.histogram_reference
        if reference is not None and len(reference) != len(self.channels):
            raise ValueError(
                f"data.radiometric.histogram_reference has {len(reference)} lists but data.channels selects "
                f"{len(self.channels)} bands {self.channels}; give one list of quantiles per selected band"
            )
        return self

    @model_validator(mode="after")
    def _fill_normalization(self) -> DataConfig:
        norm = self.normalization
        if norm.mode != "custom":
            return self
        n = len(self.channels)
        for key, default in (("means", FLAIR_MEANS), ("stds", FLAIR_STDS)):
            values = getattr(norm, key)
            if values is None:
                object.__setattr__(norm, key, [default[c - 1] for c in self.channels])
            elif len(values) != n:
                raise ValueError(
                    f"data.normalization.{key} has {len(values)} values but data.channels selects {n} bands "
                    f"{self.channels}; give one value per selected band or remove the key to use the FLAIR statistics"
                )
        if any(s <= 0 for s in norm.stds or []):
            raise ValueError("data.normalization.stds must all be > 0")
        return self


class UTAEConfig(Section):
    """U-TAE satellite branch (defaults: the official FLAIR #2 settings)."""

    input_dim: int = 10
    """Sentinel-2 bands fed to U-TAE."""
    encoder_widths: list[int] = Field(default_factory=lambda: [64, 64, 128, 128])
    """Channels of the U-TAE encoder stages."""
    decoder_widths: list[int] = Field(default_factory=lambda: [64, 64, 128, 128])
    """Channels of the U-TAE decoder stages."""
    out_conv: list[int] = Field(default_factory=lambda: [32, 13])
    """U-TAE output head widths (computed but unused by U-T&T, as in FLAIR #2)."""
    n_head: int = 16
    """L-TAE attention heads."""
    d_model: int = 256
    """L-TAE model width."""
    d_k: int = 4
    """L-TAE key/query size."""
    official_pad_norm: bool = False
    """Reproduce IGN's L-TAE normalisation, whose statistics include padded dates (outputs then depend on padding)."""


class FusionConfig(Section):
    """How U-TAE features join the aerial U-Net encoder."""

    mode: Literal["cropped", "collapsed", "both"] = "both"
    """cropped: centre crop -> 1x1 conv; collapsed: spatial mean -> MLP; both: their sum (FLAIR #2)."""
    official_batch_collapse: bool = False
    """Reproduce IGN's bug: the collapsed branch uses batch element 0 for the whole batch."""
    modality_dropout: float = Field(0.0, ge=0, le=1)
    """Probability of dropping the satellite contribution for a training batch (paper M.DR: 0.5)."""


class HubUTAEConfig(Section):
    """U-TAE of each FLAIR-HUB series (IGN's multitemp_model; defaults: IGN's configs/train/config_models.yaml)."""

    encoder_widths: list[int] = Field(default_factory=lambda: [64, 64, 64, 128], min_length=2)
    """With single-date encoders IGN re-derives the widths: one power of two per encoder stage, spread over these."""
    decoder_widths: list[int] = Field(default_factory=lambda: [32, 32, 64, 128], min_length=2)
    """Used as given only without single-date encoders (then its last must equal encoder_widths' last)."""
    out_conv: list[int] = Field(default_factory=lambda: [32, 19], min_length=1)
    """U-TAE head widths; the sum of the tasks' classes is appended when the last differs (as IGN)."""
    str_conv_k: int = Field(3, gt=0)
    str_conv_s: int = Field(1, gt=0)
    str_conv_p: int = Field(1, ge=0)
    agg_mode: Literal["att_group", "att_mean", "mean"] = "att_group"
    encoder_norm: Literal["group", "batch", "instance", "none"] = "group"
    n_head: int = Field(16, gt=0)
    d_model: int = Field(256, gt=0)
    d_k: int = Field(4, gt=0)
    pad_value: float = 0.0
    padding_mode: Literal["reflect", "zeros", "replicate", "circular"] = "reflect"
    official_pad_norm: bool = False
    """As model.utae.official_pad_norm: true reproduces IGN's L-TAE normalisation over padded dates too."""


class HubNormalizationConfig(Section):
    """Per-channel z-score of one FLAIR-HUB modality, in the order the channels are read (IGN's <MOD>_means/stds)."""

    means: list[float] = Field(min_length=1)
    stds: list[float] = Field(min_length=1)

    @model_validator(mode="after")
    def _same_length(self) -> HubNormalizationConfig:
        if len(self.means) != len(self.stds) or any(s <= 0 for s in self.stds):
            raise ValueError("give as many means as stds, every std > 0, one per channel read")
        return self


class HubModelConfig(Section):
    """FLAIR-HUB's multimodal network (IGN's FLAIR_HUB_Model); its inputs and tasks are data.hub.modalities/labels."""

    encoder: str = "swin_base_patch4_window12_384"
    """Encoder of every single-date modality as IGN names it (the part of its arch before '-'): an smp encoder name
    or a timm model (swin_base_patch4_window12_384, convnextv2_base, ...), built with random weights."""
    encoders: dict[HubModality, str] = Field(default_factory=dict)
    """Per single-date modality encoder overriding model.hub.encoder (same number of stages)."""
    decoder: Literal["upernet", "unet"] = "upernet"
    """Decoder of every task: upernet (smp 0.4.0's, as IGN's weights have it) or unet."""
    decoder_channels: list[int] = Field(default_factory=lambda: [256, 128, 64, 32, 16], min_length=5, max_length=5)
    """U-Net decoder widths (smp's default)."""
    pyramid_channels: int = Field(256, gt=0)
    """UPerNet pyramid width (smp's default)."""
    segmentation_channels: int = Field(64, gt=0)
    """UPerNet output width (smp's default)."""
    aux_heads: list[HubModality] = Field(default_factory=list)
    """Modalities with an auxiliary decoder per task (IGN's aux_loss); their scores come out in training."""
    image_sizes: dict[HubModality, int] = Field(default_factory=dict)
    """Input side given to timm encoders that take one (Swin); default FLAIR-HUB's: aerial/elevation 512, SPOT 64."""
    normalization: dict[HubModality, HubNormalizationConfig] = Field(default_factory=dict)
    """Per-modality z-scores of the channels read; modalities not listed are fed raw (IGN: Sentinel-1/2)."""
    utae: HubUTAEConfig = Field(default_factory=HubUTAEConfig)


def hub_input_channels(hub: HubDataConfig) -> dict[str, int]:
    """Channels of each FLAIR-HUB input as data.hub reads them (per date for a series)."""
    elevation = 1 if hub.elevation == "ndsm" else 2
    return {m: elevation if m == "DEM_ELEV" else len(hub.channels.get(m, range(HUB_BANDS[m]))) for m in hub.modalities}


def _check_hub_model(model: ModelConfig, hub: HubDataConfig) -> None:
    settings = model.hub
    assert settings is not None
    if model.multimodal:
        raise ValueError("model.hub and model.multimodal (U-T&T) are two networks: set one of them")
    channels = hub_input_channels(hub)
    for key, names in (
        ("aux_heads", settings.aux_heads),
        ("encoders", settings.encoders),
        ("normalization", settings.normalization),
        ("image_sizes", settings.image_sizes),
    ):
        absent = [m for m in names if m not in channels]
        if absent:
            raise ValueError(f"model.hub.{key}: {absent} not in data.hub.modalities {hub.modalities}; add or drop it")
    for modality, stats in settings.normalization.items():
        if len(stats.means) != channels[modality]:
            raise ValueError(
                f"model.hub.normalization.{modality}: {len(stats.means)} means for the {channels[modality]} channel(s) "
                "data.hub reads; give one mean and std per channel"
            )
    if not hub.labels:
        raise ValueError("model.hub needs a task: set data.hub.labels, e.g. [AERIAL_LABEL-COSIA]")


def _check_hub_training(train: HubTrainConfig, hub: HubDataConfig) -> None:
    absent = [m for m in train.modality_dropout if m not in hub.modalities]
    if absent:
        raise ValueError(f"train.hub.modality_dropout: {absent} not in data.hub.modalities {hub.modalities}; drop it")
    absent = [label for label in train.task_weights if label not in hub.labels]
    if absent:
        raise ValueError(f"train.hub.task_weights: {absent} not in data.hub.labels {hub.labels}; drop it")


class ModelConfig(Section):
    """Network architecture."""

    provider: Literal["smp", "huggingface"] = "smp"
    """smp: a segmentation_models_pytorch network (model.arch, model.encoder); huggingface: a transformers
    semantic-segmentation network (model.hf_model), FLAIR-1's HuggingFace model provider."""
    arch: str = "unet"
    """Any segmentation_models_pytorch architecture name: unet, deeplabv3, fpn, unetplusplus, ..."""
    encoder: str = "resnet34"
    """Any smp encoder name: resnet34, resnet18, mit_b5, efficientnet-b4, ..."""
    hf_model: str | None = None
    """provider huggingface: the hub id of the transformers model, e.g. openmmlab/upernet-swin-small (IGN's
    org_model). Built offline from the config flairkit holds for it, or from model.hf_config_file."""
    hf_config_file: Path | None = None
    """provider huggingface: the model's transformers config.json, for hub ids flairkit holds no config of."""
    hf_config: dict[str, Any] = Field(default_factory=dict)
    """provider huggingface: keys of the transformers config to override (nested dicts merge), e.g.
    ``{backbone_config: {depths: [1, 1, 1, 1]}}``; the bands and classes are always the run's."""
    hf_pretrained: bool = False
    """provider huggingface: start from the hub's pretrained weights of model.hf_model (fetched into the hub cache;
    heads of other shapes stay random, as IGN's ignore_mismatched_sizes) when no checkpoint is loaded."""
    encoder_weights: str | None = "imagenet"
    """Encoder pre-training, used only when no checkpoint is loaded; null for random initialisation."""
    smp_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra keyword arguments of ``smp.create_model`` (e.g. ``decoder_channels: [128, 64, 32, 16, 8]``)."""
    norm: NormLayer = "batch"
    """Normalisation layers of the network: batch (BatchNorm); group: GroupNorm, 32 groups (fewer, a power of two, when
    the channels are not a multiple of 32), ImageNet encoder weights keep their convolutions and BatchNorm scale and
    shift but lose their statistics; frozen_batch: BatchNorm whose statistics, scale and shift stay as initialised
    (the ImageNet ones; with encoder_weights null, 0/1: no normalisation). Weights load into the same norm only,
    except BatchNorm weights given as train.init_weights: loaded, then converted."""
    multimodal: bool = False
    """U-T&T: fuse the Sentinel-2 U-TAE branch into the aerial U-Net (FLAIR #2)."""
    utae: UTAEConfig = Field(default_factory=UTAEConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    hub: HubModelConfig | None = None
    """FLAIR-HUB's multimodal network on data.hub.modalities and data.hub.labels (see HubModelConfig: encoder,
    encoders, decoder, decoder widths, aux_heads, image_sizes, normalization, utae); null: not that network."""
    weights_config_check: Literal["strict", "warn", "off"] = "strict"
    """Weights that carry their config (flairkit checkpoint, bundle, released model) made for another nomenclature,
    band selection, normalisation or network: strict refuses them, warn logs the differences, off skips the check.
    With train.init_weights, warn or off also fine-tunes onto another nomenclature (the head is rebuilt as with
    train.rebuild_head, which checks the other inputs still)."""

    # YAML reads a bare `off` as false (`--set model.weights_config_check=off`): take it as the text.
    _off_text = field_validator("weights_config_check", mode="before")(lambda v: "off" if v is False else v)
    _hf_config_exists = field_validator("hf_config_file")(lambda v: _existing(v, "model.hf_config_file"))

    @model_validator(mode="after")
    def _provider_keys(self) -> ModelConfig:
        if self.provider == "huggingface":
            if not self.hf_model:
                raise ValueError(
                    "model.provider=huggingface needs model.hf_model, the hub id of the transformers model, "
                    "e.g. openmmlab/upernet-swin-small"
                )
            if self.multimodal:
                raise ValueError("model.multimodal builds the smp U-T&T: set model.provider=smp or multimodal=false")
        elif self.hf_model or self.hf_config_file or self.hf_config or self.hf_pretrained:
            raise ValueError("model.hf_* keys are used with model.provider=huggingface only: set it, or drop them")
        return self

    def network_label(self) -> str:
        """The network in a few words, for reports: ``unet / resnet34``, ``huggingface openmmlab/upernet-swin-small``,
        ``FLAIR-HUB upernet / swin_base_patch4_window12_384``, ``U-T&T unet / resnet34``."""
        if self.hub is not None:
            return f"FLAIR-HUB {self.hub.decoder} / {self.hub.encoder}"
        if self.provider == "huggingface":
            return f"huggingface {self.hf_model}"
        return f"{'U-T&T ' if self.multimodal else ''}{self.arch} / {self.encoder}"


class LossConfig(Section):
    """Coefficients of the training loss terms, summed; all use the class weights and ignore pixels of no class."""

    ce: float = Field(1.0, ge=0)
    """Weighted cross entropy (FLAIR's loss)."""
    dice: float = Field(0.0, ge=0)
    """Soft multiclass Dice, each class's term weighted by its class weight."""
    focal: float = Field(0.0, ge=0)
    """Softmax focal loss with the class weights."""
    focal_gamma: float = Field(2.0, ge=0)
    """Focusing exponent of the focal term (0: weighted cross entropy)."""
    lovasz: float = Field(0.0, ge=0)
    """Lovasz-softmax (a surrogate of the mean IoU) over the classes present in the batch."""

    @model_validator(mode="after")
    def _some_term(self) -> LossConfig:
        if self.ce + self.dice + self.focal + self.lovasz <= 0:
            raise ValueError("train.loss has no term: give ce, dice, focal or lovasz a coefficient > 0, e.g. ce: 1")
        return self


class HubTrainConfig(Section):
    """Training of FLAIR-HUB's multimodal network (model.hub): task and auxiliary losses, modality dropout, and the
    flags that reproduce IGN's training bugs (README, FLAIR-HUB, "Training and evaluating")."""

    task_weights: dict[HubLabel, float] = Field(default_factory=dict)
    """Coefficient of each task's loss in the sum (IGN's task_weight); a task not listed weighs 1."""
    aux_loss_weight: float = Field(1.5, ge=0)
    """Coefficient of the auxiliary heads (model.hub.aux_heads): each task's loss adds this times the mean of its
    heads' losses (IGN's aux_loss_weight)."""
    modality_dropout: dict[HubModality, float] = Field(default_factory=dict)
    """Probability, per input modality, that a training batch has its feature maps replaced by zeros before fusion
    (IGN's modality_dropout); a modality not listed is never dropped. Needs two modalities or more."""
    ign_aux_loss_bug: bool = False
    """Reproduce IGN: the auxiliary losses are computed but never added to the loss (its ``task in dict_logits_aux``
    test is never true)."""
    ign_modality_dropout_bug: bool = False
    """Reproduce IGN: each forward draws every modality's dropout probability from U(0, 1) (a drop one time in two)
    instead of using modality_dropout, as soon as one of them is above 0."""
    ign_weighted_iou_checkpoint: bool = False
    """Reproduce IGN: keep the checkpoint of the best frequency-weighted IoU of the first task (val_weighted_iou)
    instead of its macro mIoU (val_miou)."""

    @field_validator("modality_dropout")
    @classmethod
    def _probabilities(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {m: p for m, p in value.items() if not 0 <= p <= 1}
        if bad:
            raise ValueError(f"{bad}: each modality dropout is a probability within 0..1")
        return value


class TrainConfig(Section):
    """Optimisation, hardware and checkpointing of ``flair train``."""

    optimizer: Literal["sgd", "adamw"] = "sgd"
    """sgd (FLAIR) or adamw."""
    lr: float = Field(0.02, gt=0)
    """Initial learning rate."""
    momentum: float = Field(0.0, ge=0)
    """SGD momentum; 0 as in the official FLAIR code."""
    weight_decay: float = Field(0.0, ge=0)
    """L2 penalty (decoupled for adamw)."""
    scheduler: Literal["plateau", "cosine"] = "plateau"
    """plateau: FLAIR's ReduceLROnPlateau on val_loss; cosine: cosine decay to min_lr over max_epochs."""
    plateau_factor: float = Field(0.5, gt=0, lt=1)
    """ReduceLROnPlateau on val_loss: factor applied to the learning rate."""
    plateau_patience: int = Field(10, ge=0)
    """ReduceLROnPlateau patience in epochs."""
    plateau_cooldown: int = Field(4, ge=0)
    """ReduceLROnPlateau cooldown in epochs."""
    min_lr: float = Field(1e-7, ge=0)
    """Lowest learning rate of the schedule."""
    loss: LossConfig = Field(default_factory=LossConfig)
    class_balancing: Literal["none", "sqrt_inverse"] = "none"
    """none: FLAIR's 0/1 class weights; sqrt_inverse: also scale each class by sqrt(median frequency / frequency)
    measured on the train masks (helps rare classes such as swimming pools)."""
    max_epochs: int = Field(200, gt=0)
    """Number of epochs at most."""
    early_stopping_patience: int | None = Field(30, ge=1)
    """Stop after this many epochs without a better val_loss; null disables early stopping."""
    seed: int = 2022
    """Seed of weights, shuffling, augmentation and dropout."""
    deterministic: bool = False
    """Deterministic algorithms (bit-identical CPU runs for a seed; slower)."""
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    """Lightning accelerator."""
    devices: int | str = "auto"
    """Devices per node (e.g. 4 GPUs); data.batch_size is per device."""
    num_nodes: int = Field(1, ge=1)
    """Nodes (SLURM-friendly: Lightning reads the SLURM environment)."""
    strategy: str = "auto"
    """Lightning strategy: auto, ddp, ddp_spawn, ..."""
    sync_batchnorm: bool = False
    """Synchronise batch-norm statistics across processes (makes DDP match one process with the same global batch)."""
    precision: Literal["32", "bf16-mixed", "16-mixed"] = "32"
    """Numerical precision of training."""
    channels_last: bool = False
    """NHWC memory layout (faster convolutions on recent GPUs and CPUs)."""
    compile: bool = False
    """torch.compile the network."""
    retain_freed_memory: bool = True
    """CPU training (never GPUs): keep freed memory in the process (glibc), 1.35-1.5x faster steps, higher peak RSS."""
    resume_from: Path | None = None
    """A checkpoint of an interrupted run: restores weights, optimiser, scheduler and epoch."""
    init_weights: Path | None = None
    """Weights to start from (fine-tuning): a weights file, a bundle folder, or ``release``: the released weights of
    the preset (its ``release`` section; fetched into the hub cache). The optimiser starts afresh."""
    rebuild_head: bool = False
    """With init_weights made for another nomenclature: rebuild the segmentation head for data.nomenclature (a class
    grouping FLAIR classes starts from theirs, README "Adapt a released model"); the other inputs are still checked."""
    adapt_inputs: bool = False
    """With init_weights made for other bands or normalisation: accept data.channels and data.normalization as they
    are; the first convolution keeps the filters of known bands, and new bands get the mean of its filters."""
    freeze_encoder_epochs: int = Field(0, ge=0)
    """Train with the encoder frozen (no gradient, batch norm in eval mode) for this many first epochs."""
    ema_decay: float | None = Field(None, gt=0, lt=1)
    """Exponential moving average of the weights and BatchNorm buffers, updated after each optimiser step with this
    decay (e.g. 0.999); validation and the saved checkpoints use the averaged weights. null: off."""
    recalibrate_batchnorm: bool = False
    """After training, measure the BatchNorm running statistics again over the training patches (no augmentation,
    final weights) and write them as checkpoints/recalibrated.ckpt; best and last checkpoints stay as trained."""
    checkpoint_every_n_epochs: int = Field(1, ge=1)
    """Checkpoint period in epochs."""
    limit_train_batches: int | float = 1.0
    """Fraction (float) or number (int) of training batches per epoch."""
    limit_val_batches: int | float = 1.0
    """Fraction (float) or number (int) of validation batches per epoch."""
    log_every_n_steps: int = Field(10, gt=0)
    """Logging period in steps."""
    hub: HubTrainConfig = Field(default_factory=HubTrainConfig)

    _precision_text = field_validator("precision", mode="before")(_number_as_text)
    _resume_exists = field_validator("resume_from")(lambda v: _existing(v, "train.resume_from"))
    _init_exists = field_validator("init_weights")(
        lambda v: v if v == Path(RELEASE_WEIGHTS) else _existing(v, "train.init_weights")
    )


class EvaluateConfig(Section):
    """Prediction and metrics (``flair predict``, ``flair evaluate``, ``flair metrics``)."""

    checkpoint: Path | None = None
    """Default weights of ``flair predict/evaluate`` when --checkpoint is not given."""
    protocol: Literal["auto", "flair1", "model-card", "flair2", "flairhub"] = "auto"
    """auto: flairhub for FLAIR-HUB's nomenclatures (hub, lpis1..3), flair2 for 13-logit ones, flair1 otherwise."""
    batch_size: int = Field(8, gt=0)
    """Patches per prediction batch."""
    device: str = "auto"
    """auto: this rank's GPU (cuda:LOCAL_RANK modulo the GPU count) when CUDA is present, else Apple MPS, else the CPU;
    or cpu, cuda, cuda:N, mps (--device)."""
    precision: InferencePrecision = "auto"
    """Autocast of the network's forward pass: auto is bf16 on GPUs that compute it natively (Ampere and newer), 32
    elsewhere; 32, bf16 or fp16 (--precision)."""
    tta: TestTimeAugmentation = "none"
    """Test-time augmentation, probabilities averaged: none, flips (4 passes per patch) or d4 (the 8 dihedral
    transforms: 8 passes) (--tta)."""

    _ckpt_exists = field_validator("checkpoint")(lambda v: _existing(v, "evaluate.checkpoint"))
    _device_known = field_validator("device")(_device_name)
    _precision_text = field_validator("precision", mode="before")(_number_as_text)


class DetectConfig(Section):
    """Zone detection on large orthophotos (``flair detect``)."""

    tile_size: int = Field(1536, gt=0)
    """Largest side in pixels of the tiles given to the model (flair-detect uses 512)."""
    fit_tiles: bool = True
    """Shrink each raster's tiles to the smallest multiple of 32 needing no more of them; false: tile_size as is."""
    margin: int = Field(128, ge=0)
    """Pixels cropped on each tile side (margin mode) or overlap half-width (blend mode)."""
    stitching: Literal["margin", "blend"] = "margin"
    """margin: official flair-detect hard centre crop; blend: overlapping tiles averaged with a smooth window."""
    flair_detect_windows: bool = False
    """Margin mode: write tile centres over the windows flair-detect computes on current rasterio (some 1 px wider)."""
    batch_size: int = Field(1, gt=0)
    """Tiles per inference batch (flair-detect uses 4 tiles of 512)."""
    backend: Literal["auto", "torch", "onnx"] = "auto"
    """auto: ONNX Runtime on CPU when installed (faster), else torch; onnx: ONNX Runtime (its CUDA provider on a GPU:
    without it, a warning and torch) or an error; torch."""
    device: str = "auto"
    """As evaluate.device: auto, cpu, cuda (this rank's GPU), cuda:N or mps (--device)."""
    precision: InferencePrecision = "auto"
    """As evaluate.precision: auto (bf16 on GPUs that compute it natively, else 32), 32, bf16 or fp16 (--precision)."""
    tta: TestTimeAugmentation = "none"
    """As evaluate.tta: none, flips (4 passes per tile) or d4 (8 passes) (--tta)."""
    channels_last: bool = True
    """Run a torch network in channels_last memory format (faster convolutions on CPU and in mixed precision on GPU)."""
    output_codes: Literal["flair", "index"] = "flair"
    """flair: write FLAIR class codes 1..19; index: 0-based targets."""
    probabilities: list[str] = Field(default_factory=list)
    """Class names whose probability bands (uint8 0..255) are written into ``<map>_scores.tif``; empty for none."""
    confidence: bool = False
    """Also write a confidence band (max probability, uint8) into ``<map>_scores.tif``."""
    nodata: float | None = None
    """Input value marking missing pixels (in all selected bands); overrides the file's own nodata."""
    all_zero_is_nodata: bool = True
    """When an input declares neither a nodata value nor a mask, pixels whose selected bands are all 0 are missing
    (nodata in the map); false classifies them. Pixels that no source of a VRT covers are always missing."""
    block_size: int | None = Field(None, gt=0)
    """Side in pixels of the unit of work, resume and distribution (default about 2048, rounded to the tile step)."""
    cog: bool = False
    """Also write a Cloud-Optimised GeoTIFF with nearest overviews."""
    vectorize: bool = False
    """Also write a GeoPackage of polygons per class."""
    min_polygon_area: float = Field(0.0, ge=0)
    """Polygons smaller than this (m²) are dropped when vectorising."""
    simplify_tolerance: float = Field(0.0, ge=0)
    """Douglas-Peucker tolerance (m) when vectorising; 0 keeps pixel edges."""
    inputs: dict[str, str] = Field(default_factory=dict)
    """The model's bands assembled from several rasters, by kind: rgb, nir, dsm, dtm, each ``PATH[:BANDS]``
    (e.g. ``nir: ortho_irc.vrt:1``), instead of one stacked orthophoto (--input KIND=PATH[:BANDS]). FLAIR-HUB models
    (model.hub) read their other modalities per tile from dsm and dtm (DEM_ELEV), spot (SPOT_RGBI raster), s1asc
    and s1desc (Sentinel-1 acquisitions lists, as detect.sentinel2)."""
    resolution: float | None = Field(None, gt=0)
    """Pixel size (CRS units) of the grid assembled inputs are warped onto; null: 0.2 m, the FLAIR models' own."""
    crs: str | None = None
    """CRS (e.g. EPSG:2154) of the grid assembled inputs are warped onto; null: the rgb source's."""
    allow_resample: bool = False
    """Let assembled rgb/nir inputs whose pixel size is not the grid's be resampled onto it (--allow-resample); setting
    detect.resolution or detect.crs allows it too. Elevation, and sources in another CRS, are always warped."""
    resampling_imagery: Literal["nearest", "bilinear", "cubic", "average"] = "bilinear"
    """Resampling of rgb/nir sources warped onto the grid."""
    resampling_elevation: Literal["nearest", "bilinear", "cubic", "average"] = "bilinear"
    """Resampling of dsm/dtm sources warped onto the grid."""
    output_grid: Literal["reference", "input"] = "reference"
    """Grid of the class map of assembled inputs: reference (the grid they are warped onto) or input (the rgb
    source's own CRS and pixel size; the finished map is warped back with nearest resampling, window by window)."""
    sentinel2: Path | None = None
    """U-T&T models (model.multimodal): JSON or CSV list of the Sentinel-2 acquisitions (date, 10-band GeoTIFF,
    optional snow/cloud mask), read per tile and filtered/averaged as data.sentinel says (--input s2=FILE); FLAIR-HUB
    models (model.hub) with SENTINEL2_TS: the same list, filtered/averaged as data.hub.sentinel2 says."""

    _device_known = field_validator("device")(_device_name)
    _precision_text = field_validator("precision", mode="before")(_number_as_text)

    @model_validator(mode="after")
    def _margin_fits(self) -> DetectConfig:
        if 2 * self.margin >= self.tile_size:
            raise ValueError(
                f"detect.margin={self.margin} leaves no centre in detect.tile_size={self.tile_size} "
                f"(2*margin must be < tile_size); lower the margin or raise the tile size"
            )
        return self


class PublishedMetrics(Section):
    """Figures published for a configuration (paper table or model card), in %."""

    source: str
    miou: float
    overall_accuracy: float | None = None
    per_class_iou: dict[str, float] = Field(default_factory=dict)
    protocol: Literal["flair1", "model-card", "flair2", "flairhub"] = "flair1"


class ReleaseConfig(Section):
    """Where IGN's released weights of a preset are published, the revision they are pinned to, how they are checked."""

    hub_repo: str
    """Model hub repository, e.g. IGNF/FLAIR-INC_rgbie_15cl_resnet34-unet."""
    filename: str
    """Weights file inside the repository."""
    revision: str = "main"
    """Commit sha the weights are pinned to, or ``main`` when no commit is known (then whatever main holds)."""
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    """Published sha256 of the weights file (its LFS object id on the hub), or null when unknown."""
    size: int | None = Field(default=None, ge=0)
    """Exact size of the weights file in bytes, or null when unknown."""
    verify: Literal["sha256", "hub-etag"] = "hub-etag"
    """``sha256``: checked against ``sha256``; ``hub-etag``: no sha256 is known, so the download is checked
    against the ETag the hub sends with it (the sha256 of an LFS file)."""

    @model_validator(mode="after")
    def _verify_matches_sha256(self) -> ReleaseConfig:
        if (self.verify == "sha256") != (self.sha256 is not None):
            raise ValueError("release.verify must be sha256 when release.sha256 is set, and hub-etag when it is null")
        return self


class FlairConfig(Section):
    """Every section of a flairkit run."""

    name: str = "run"
    """Run name: outputs go to ``output_dir/name``."""
    description: str = ""
    """Free text shown by ``flair models``."""
    published: PublishedMetrics | None = None
    """Published figures of this configuration (paper or model card), for ``flair reproduce`` and ``flair compare``."""
    release: ReleaseConfig | None = None
    """Where IGN published the weights of this configuration (released models only)."""
    output_dir: Path = Path("runs")
    """Folder that holds the runs."""
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    detect: DetectConfig = Field(default_factory=DetectConfig)

    @model_validator(mode="after")
    def _consistent(self) -> FlairConfig:
        if self.model.multimodal and not self.data.sentinel.enabled:
            raise ValueError(
                "model.multimodal needs Sentinel-2 inputs; set data.sentinel.enabled=true or model.multimodal=false"
            )
        if self.train.recalibrate_batchnorm and self.model.norm != "batch":
            raise ValueError(
                f"train.recalibrate_batchnorm needs BatchNorm statistics to measure, and model.norm={self.model.norm} "
                "has none to recalibrate; set model.norm=batch or train.recalibrate_batchnorm=false"
            )
        if self.model.hub is not None:
            _check_hub_model(self.model, self.data.hub)
            _check_hub_training(self.train.hub, self.data.hub)
        elif self.train.hub != HubTrainConfig():
            changed = ", ".join(f"train.hub.{key}" for key in sorted(self.train.hub.model_fields_set))
            raise ValueError(
                f"{changed}: train.hub configures FLAIR-HUB's multimodal network only; set model.hub or drop it"
            )
        return self

    @property
    def run_dir(self) -> Path:
        """The folder that receives this run's outputs."""
        return Path(self.output_dir) / self.name
