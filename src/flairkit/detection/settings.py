"""The settings of a detection run: the config's ``detect`` section (and the bands, normalisation and
nomenclature the model reads), checked and resolved once."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from flairkit.config.schema import FlairConfig
from flairkit.data.hub.multimodal import task_nomenclature
from flairkit.data.hub.tiles import AERIAL, SOURCES, HubSources, inspect_hub_sources, modality_side
from flairkit.data.rasters import AERIAL_RESOLUTION
from flairkit.data.sentinel import SENTINEL_RESOLUTION
from flairkit.data.series import SERIES_KEY, SentinelSeries, inspect_series
from flairkit.detection.stitching import OutputBands
from flairkit.detection.tiling import StitchingMode
from flairkit.devices import precision_name
from flairkit.errors import ConfigError
from flairkit.models.inference import forward_passes
from flairkit.nomenclature import Nomenclature, get_nomenclature

DEVICE_KEY = "detect.device (--device)"
PRECISION_KEY = "detect.precision (--precision)"


@dataclass(frozen=True)
class DetectionSettings:
    """The detection settings of a run, resolved once."""

    channels: tuple[int, ...]
    nomenclature: Nomenclature
    normalization: dict[str, Any]
    tile_size: int
    fit_tiles: bool
    margin: int
    mode: StitchingMode
    flair_detect_windows: bool
    block_size: int | None
    batch_size: int
    backend: str
    channels_last: bool
    precision: torch.dtype | None
    """Autocast dtype of the forward pass (None: float32)."""
    tta: str
    """Test-time augmentation (detect.tta): none, flips or d4."""
    models: int
    """Networks whose probabilities are averaged (an ensemble when more than one)."""
    codes: bool
    bands: OutputBands
    nodata: float | None
    all_zero_is_nodata: bool
    cog: bool
    vectorize: bool
    min_area: float
    simplify: float
    assembly: dict[str, Any]
    """Keyword arguments of :func:`~flairkit.data.assembly.inspect_assembly` (detect.inputs and its grid); empty
    when each input is one stacked orthophoto."""
    output_grid: str
    """detect.output_grid: reference, or input (an assembly's map warped back onto its rgb source's grid)."""
    series: SentinelSeries | None = None
    """The Sentinel-2 series a U-T&T model (model.multimodal) reads per tile (detect.sentinel2); None otherwise."""
    hub: HubSources | None = None
    """The other modalities a FLAIR-HUB model (model.hub) reads per tile; None otherwise."""
    task: str | None = None
    """The FLAIR-HUB task (data.hub.labels) this map shows; its nomenclature is ``nomenclature``."""
    tasks: tuple[str, ...] = ()
    """Every task of a FLAIR-HUB model: with more than one, one map per task (:func:`task_settings`)."""

    @property
    def passes(self) -> str:
        """The forward passes per tile, e.g. "tta d4 x 2 models = 16 passes"."""
        return forward_passes(self.tta, self.models)

    @property
    def score_names(self) -> list[str]:
        names = [f"p({self.nomenclature.names[t]})" for t in self.bands.probabilities]
        return names + (["confidence"] if self.bands.confidence else [])

    def manifest(self) -> dict[str, Any]:
        """The settings a resumed map must share with the run that began it."""
        return {
            "channels": list(self.channels),
            "normalization": self.normalization,
            "nomenclature": self.nomenclature.name,
            "tile_size": self.tile_size,
            "fit_tiles": self.fit_tiles,
            "margin": self.margin,
            "stitching": self.mode,
            "flair_detect_windows": self.flair_detect_windows,
            "block_size": self.block_size,
            "batch_size": self.batch_size,
            "backend": self.backend,
            "channels_last": self.channels_last,
            "precision": precision_name(self.precision),
            "tta": self.tta,
            "models": self.models,
            "bands": [list(self.bands.probabilities), self.bands.confidence],
            "nodata": self.nodata,
            "all_zero_is_nodata": self.all_zero_is_nodata,
            "assembly": self.assembly,
            "sentinel2": None
            if self.series is None
            else [str(self.series.path.resolve()), self.series.config.model_dump(mode="json")],
            "hub": None if self.hub is None else {**self.hub.manifest(), "task": self.task},
        }


def resolve_settings(config: FlairConfig, block_size: int | None, precision: torch.dtype | None) -> DetectionSettings:
    """The settings of ``config`` (``block_size``, when given, overrides ``detect.block_size``), for one network
    until :func:`~flairkit.detection.network.prepare_network` counts them; a ConfigError naming the key and the fix
    for any that zone detection cannot honour."""
    if config.data.metadata:
        raise ConfigError(
            "zone detection feeds no aerial metadata, but this config uses it (data.metadata=true); "
            "use a model trained without metadata"
        )
    detect = config.detect
    hub = _hub(config)
    series = None if hub is not None else _series(config)
    if block_size is None:
        block_size = detect.block_size
    if block_size is not None and block_size <= 0:
        raise ConfigError(f"the block size must be a positive number of pixels, got {block_size}")
    if detect.flair_detect_windows and detect.stitching != "margin":
        raise ConfigError(
            "detect.flair_detect_windows reproduces flair-detect's margin stitching; "
            "set detect.stitching=margin or detect.flair_detect_windows=false"
        )
    tasks = tuple(config.data.hub.labels) if hub is not None else ()
    nomenclature = (
        task_nomenclature(tasks[0], config.data.hub.lpis_level) if tasks else get_nomenclature(config.data.nomenclature)
    )
    enabled_names = [nomenclature.names[t] for t in nomenclature.enabled]
    probabilities = []
    for name in detect.probabilities:
        if name not in enabled_names:
            raise ConfigError(
                f"detect.probabilities: {name!r} is not a class the {nomenclature.name} models predict; "
                f"choose among {', '.join(enabled_names)}"
            )
        probabilities.append(nomenclature.names.index(name))
    if detect.output_grid == "input" and (probabilities or detect.confidence or detect.vectorize):
        raise ConfigError(
            "detect.output_grid=input warps the class map only; set detect.output_grid=reference to write "
            "scores (detect.probabilities, detect.confidence) or polygons (detect.vectorize)"
        )
    channels = tuple(config.data.channels)
    normalization = config.data.normalization.model_dump(mode="json")
    if hub is not None:
        channels = tuple(config.data.hub.channels.get(AERIAL, (1, 2, 3, 4)))
        settings = config.model.hub
        normalization = {m: s.model_dump(mode="json") for m, s in settings.normalization.items()} if settings else {}
    return DetectionSettings(
        channels=channels,
        nomenclature=nomenclature,
        normalization=normalization,
        tile_size=detect.tile_size,
        # A FLAIR-HUB tile must stay a whole number of every modality's pixels (checked in _hub).
        fit_tiles=detect.fit_tiles and hub is None,
        margin=detect.margin,
        mode=detect.stitching,
        flair_detect_windows=detect.flair_detect_windows,
        block_size=block_size,
        batch_size=detect.batch_size,
        backend=detect.backend,
        channels_last=detect.channels_last,
        precision=precision,
        tta=detect.tta,
        models=1,
        codes=detect.output_codes == "flair",
        bands=OutputBands.for_nomenclature(nomenclature, probabilities, detect.confidence),
        nodata=detect.nodata,
        all_zero_is_nodata=detect.all_zero_is_nodata,
        cog=detect.cog,
        vectorize=detect.vectorize,
        min_area=detect.min_polygon_area,
        simplify=detect.simplify_tolerance,
        assembly=_assembly(config) if {k for k in detect.inputs if hub is None or k not in SOURCES} else {},
        output_grid=detect.output_grid,
        series=series,
        hub=hub,
        task=tasks[0] if tasks else None,
        tasks=tasks,
    )


def task_settings(config: FlairConfig, settings: DetectionSettings) -> list[DetectionSettings]:
    """One settings per map: per task of a multi-task FLAIR-HUB model, else ``settings`` alone."""
    if len(settings.tasks) < 2:
        return [settings]
    out = []
    for task in settings.tasks:
        nomenclature = task_nomenclature(task, config.data.hub.lpis_level)
        bands = OutputBands.for_nomenclature(nomenclature, [], settings.bands.confidence)
        out.append(replace(settings, task=task, nomenclature=nomenclature, bands=bands))
    return out


def _hub(config: FlairConfig) -> HubSources | None:
    """The checked sources of a FLAIR-HUB model's other modalities; None for other models."""
    if config.model.hub is None:
        return None
    detect = config.detect
    if detect.tta != "none":
        raise ConfigError(
            f"detect.tta={detect.tta} (--tta): test-time augmentation is not offered for FLAIR-HUB models, whose "
            "modalities are read per tile at their own resolution; set detect.tta=none"
        )
    if detect.probabilities and len(config.data.hub.labels) > 1:
        raise ConfigError(
            "detect.probabilities names classes of one nomenclature but this FLAIR-HUB model has several tasks "
            f"({', '.join(config.data.hub.labels)}); remove detect.probabilities"
        )
    sources = inspect_hub_sources(config.data.hub, detect.inputs, detect.sentinel2)
    for modality in config.data.hub.modalities:
        if modality != AERIAL:
            modality_side(modality, detect.tile_size)
    return sources


def _series(config: FlairConfig) -> SentinelSeries | None:
    """The checked Sentinel-2 series of a U-T&T model; None for a model of images alone."""
    detect, sentinel = config.detect, config.data.sentinel
    if "s2" in detect.inputs:
        raise ConfigError(
            "detect.inputs.s2: in a config the Sentinel-2 acquisitions list is detect.sentinel2 (--input s2=FILE on "
            "the command line); move it there"
        )
    if not config.model.multimodal:
        if detect.sentinel2 is not None:
            raise ConfigError(
                f"{SERIES_KEY}: this model reads no Sentinel-2 (model.multimodal=false); remove the series "
                "or use a U-T&T checkpoint and its config"
            )
        return None
    if detect.sentinel2 is None:
        raise ConfigError(
            f"this U-T&T model (model.multimodal) reads a Sentinel-2 series for every tile; give the acquisitions "
            f"with {SERIES_KEY}, a JSON or CSV list of dated 10-band GeoTIFFs"
        )
    if detect.tta != "none":
        raise ConfigError(
            f"detect.tta={detect.tta} (--tta): test-time augmentation is not offered for U-T&T models, whose fusion "
            "adds the Sentinel-2 map pixel by pixel to the aerial features; set detect.tta=none"
        )
    covered = detect.tile_size * AERIAL_RESOLUTION / SENTINEL_RESOLUTION
    if covered > sentinel.sat_patch_size:
        largest = int(sentinel.sat_patch_size * SENTINEL_RESOLUTION / AERIAL_RESOLUTION) // 32 * 32
        raise ConfigError(
            f"detect.tile_size={detect.tile_size} covers {covered:g} Sentinel-2 pixels, more than the model's "
            f"super-patch (data.sentinel.sat_patch_size={sentinel.sat_patch_size}); set detect.tile_size to at "
            f"most {largest}"
        )
    return inspect_series(detect.sentinel2, sentinel)


def _assembly(config: FlairConfig) -> dict[str, Any]:
    detect = config.detect
    hub = config.model.hub is not None
    return {
        "inputs": {k: v for k, v in detect.inputs.items() if not (hub and k in SOURCES)},
        "resolution": detect.resolution,
        "crs": detect.crs,
        "allow_resample": detect.allow_resample,
        "resampling_imagery": detect.resampling_imagery,
        "resampling_elevation": detect.resampling_elevation,
        "all_zero_is_nodata": detect.all_zero_is_nodata,
    }
