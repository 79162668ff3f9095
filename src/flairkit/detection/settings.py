"""The settings of a detection run: the config's ``detect`` section (and the bands, normalisation and
nomenclature the model reads), checked and resolved once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from flairkit.config.schema import FlairConfig
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
        }


def resolve_settings(config: FlairConfig, block_size: int | None, precision: torch.dtype | None) -> DetectionSettings:
    """The settings of ``config`` (``block_size``, when given, overrides ``detect.block_size``), for one network
    until :func:`~flairkit.detection.network.prepare_network` counts them; a ConfigError naming the key and the fix
    for any that zone detection cannot honour."""
    if config.data.metadata or config.model.multimodal:
        raise ConfigError(
            "zone detection feeds orthophoto pixels only, but this config uses "
            + ("aerial metadata (data.metadata=true)" if config.data.metadata else "Sentinel-2 (model.multimodal)")
            + "; use a model trained on images alone"
        )
    detect = config.detect
    if block_size is None:
        block_size = detect.block_size
    if block_size is not None and block_size <= 0:
        raise ConfigError(f"the block size must be a positive number of pixels, got {block_size}")
    if detect.flair_detect_windows and detect.stitching != "margin":
        raise ConfigError(
            "detect.flair_detect_windows reproduces flair-detect's margin stitching; "
            "set detect.stitching=margin or detect.flair_detect_windows=false"
        )
    nomenclature = get_nomenclature(config.data.nomenclature)
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
    return DetectionSettings(
        channels=tuple(config.data.channels),
        nomenclature=nomenclature,
        normalization=config.data.normalization.model_dump(mode="json"),
        tile_size=detect.tile_size,
        fit_tiles=detect.fit_tiles,
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
        assembly=_assembly(config) if detect.inputs else {},
        output_grid=detect.output_grid,
    )


def _assembly(config: FlairConfig) -> dict[str, Any]:
    detect = config.detect
    return {
        "inputs": dict(detect.inputs),
        "resolution": detect.resolution,
        "crs": detect.crs,
        "allow_resample": detect.allow_resample,
        "resampling_imagery": detect.resampling_imagery,
        "resampling_elevation": detect.resampling_elevation,
        "all_zero_is_nodata": detect.all_zero_is_nodata,
    }
