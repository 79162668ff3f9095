"""FLAIR-HUB modalities read per zone-detection tile, as a FLAIR-HUB patch holds them.

The aerial image is the map's raster (read by the detection pipeline); every other modality is read here for each
tile over the tile's ground extent at the modality's own resolution (:data:`~flairkit.data.hub.layout.MODALITIES`:
DEM_ELEV 0.2 m, SPOT_RGBI 1.6 m, Sentinel-1/2 10.24 m, so a 512 px tile gives IGN's 512, 64 and 10 px patches).
Each modality is read on a grid in the map's CRS at its resolution, aligned on its first raster's pixels when that
raster lies on such a grid, else on the map's origin; rasters in another CRS or at another resolution are warped
onto it (bilinear, nearest for masks). A window whose pixel ``side // 2`` holds the tile's centre is read.

Sources (``flair detect --input KIND=FILE``): ``dsm`` and ``dtm`` (one band each: DEM_ELEV, channels as
``data.hub.elevation`` says), ``spot`` (a 4-band SPOT 6/7 RGBI raster), ``s2`` (detect.sentinel2), ``s1asc`` and
``s1desc`` (acquisitions lists, :mod:`~flairkit.data.series`, of 2-band VV, VH rasters). Series are filtered and
averaged per tile as ``data.hub.sentinel2``/``sentinel1`` say, from scratch for each tile (no shared state).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.transform import Affine

from flairkit.config.schema import HUB_BANDS, HubDataConfig, hub_input_channels
from flairkit.data.hub.dataset import collate_hub, dates_key
from flairkit.data.hub.elevation import elevation_channels
from flairkit.data.hub.layout import AERIAL_RESOLUTION, MODALITIES, S2, SERIES
from flairkit.data.hub.sentinel import clear_dates, date_offsets, monthly_average
from flairkit.data.series import (
    MASK_BANDS,
    Acquisition,
    GridRaster,
    centred_window,
    inspect_acquisitions,
    open_raster,
    series_grid,
)
from flairkit.errors import ConfigError, DataError

AERIAL = "AERIAL_RGBI"
DEM = "DEM_ELEV"
SPOT = "SPOT_RGBI"
SOURCES = {
    "dsm": DEM,
    "dtm": DEM,
    "spot": SPOT,
    "s2": S2,
    "s1asc": "SENTINEL1-ASC_TS",
    "s1desc": "SENTINEL1-DESC_TS",
}
"""``--input`` kinds of the FLAIR-HUB modalities other than the aerial image."""
SERIES_BANDS = {
    S2: "B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12",
    "SENTINEL1-ASC_TS": "VV, VH",
    "SENTINEL1-DESC_TS": "VV, VH",
}


def config_key(kind: str) -> str:
    """The config key of a source."""
    return "detect.sentinel2" if kind == "s2" else f"detect.inputs.{kind}"


def source_key(kind: str) -> str:
    """How a source is given, for messages."""
    return f"{config_key(kind)} (--input {kind}=FILE)"


@dataclass(frozen=True)
class HubSources:
    """The rasters and acquisitions lists of every modality a FLAIR-HUB model reads besides the aerial image."""

    config: HubDataConfig
    rasters: Mapping[str, Path]
    """Single-date sources by kind: dsm, dtm, spot."""
    series: Mapping[str, tuple[Path, tuple[Acquisition, ...]]]
    """Series modality -> its acquisitions list and acquisitions."""

    @property
    def files(self) -> list[Path]:
        """Every source file, the lists and the rasters they name."""
        listed = [p for _, acqs in self.series.values() for a in acqs for p in (a.data, a.mask) if p is not None]
        return list(dict.fromkeys([*self.rasters.values(), *(path for path, _ in self.series.values()), *listed]))

    def manifest(self) -> dict[str, Any]:
        """What a resumed map must share with the run that began it (files are compared by the caller)."""
        return {
            "hub": self.config.model_dump(
                mode="json", include={"modalities", "channels", "elevation", "sentinel2", "sentinel1", "reference_date"}
            ),
            "sources": {k: str(p.resolve()) for k, p in self.rasters.items()}
            | {m: str(p.resolve()) for m, (p, _) in self.series.items()},
        }

    def blank_item(self, tile_size: int) -> dict[str, Any]:
        """A tile's item of ones (a series of one date) with every modality's shape, to check the network."""
        item: dict[str, Any] = {"patch_id": "blank", "index": 0}
        for modality, channels in hub_input_channels(self.config).items():
            if modality == AERIAL:
                continue
            side = modality_side(modality, tile_size)
            if modality in SERIES:
                item[modality] = torch.ones((1, channels, side, side))
                item[dates_key(modality)] = torch.zeros(1, dtype=torch.long)
            else:
                item[modality] = torch.ones((channels, side, side))
        return item

    def coverage(self) -> dict[str, list[Path]]:
        """Each modality's data rasters, for a coverage check of every map."""
        out = {m: [a.data for a in acqs] for m, (_, acqs) in self.series.items()}
        return out | {kind: [path] for kind, path in self.rasters.items()}


def inspect_hub_sources(config: HubDataConfig, inputs: Mapping[str, str], sentinel2: Path | None) -> HubSources:
    """The sources of every modality of ``config.modalities`` but the aerial image, checked; a ConfigError naming
    the ``--input NAME=`` of any one missing or not read by the model."""
    modalities = list(config.modalities)
    unsupported = [m for m in modalities if m not in (AERIAL, *SOURCES.values())]
    if unsupported or AERIAL not in modalities:
        raise ConfigError(
            f"data.hub.modalities={modalities}: flair detect maps FLAIR-HUB models that read AERIAL_RGBI (the map's "
            f"grid) with any of {', '.join(sorted(set(SOURCES.values())))}; "
            f"{'AERIAL-RLT_PAN' if unsupported else 'a model without AERIAL_RGBI'} is not offered"
        )
    given = {kind: path for kind, path in inputs.items() if kind in SOURCES}
    if sentinel2 is not None:
        given["s2"] = str(sentinel2)
    for kind in given:
        if SOURCES[kind] not in modalities:
            raise ConfigError(
                f"{source_key(kind)}: this model reads no {SOURCES[kind]} (data.hub.modalities={modalities}); "
                "remove it or use a model that reads it"
            )
    for kind, modality in SOURCES.items():
        if modality in modalities and kind not in given:
            raise ConfigError(
                f"this FLAIR-HUB model reads {modality} for every tile; give it with --input {kind}=FILE "
                f"({config_key(kind)} in a config)"
            )
    rasters: dict[str, Path] = {}
    for kind in ("dsm", "dtm", "spot"):
        if kind in given:
            path = Path(given[kind])
            if not path.is_file():
                raise DataError(f"{source_key(kind)}: {path}: no such file; give a GeoTIFF or VRT")
            rasters[kind] = path
    _check_rasters(rasters)
    series = {}
    for kind in ("s2", "s1asc", "s1desc"):
        if kind in given:
            modality = SOURCES[kind]
            path = Path(given[kind])
            name = "Sentinel-2" if modality == S2 else "Sentinel-1"
            acquisitions = inspect_acquisitions(
                path, HUB_BANDS[modality], SERIES_BANDS[modality], name, masks=modality == S2
            )
            series[modality] = (path, acquisitions)
    return HubSources(config, rasters, series)


def _check_rasters(rasters: Mapping[str, Path]) -> None:
    for kind, path in rasters.items():
        bands = HUB_BANDS[SPOT] if kind == "spot" else 1
        with open_raster(path) as src:
            if src.crs is None:
                raise DataError(f"{path}: has no coordinate reference system; assign one (gdal_edit.py -a_srs)")
            if src.count < bands:
                raise DataError(
                    f"{path} ({source_key(kind)}): has {src.count} band(s), {kind} needs {bands}; give the "
                    f"{'SPOT RGBI raster' if kind == 'spot' else 'elevation raster (metres)'}"
                )


def modality_side(modality: str, tile_size: int) -> int:
    """Pixels across the window of ``modality`` for a ``tile_size`` px aerial tile; a ConfigError when the tile's
    extent is not a whole number of the modality's pixels."""
    side = tile_size * AERIAL_RESOLUTION / MODALITIES[modality].resolution
    if abs(side - round(side)) > 1e-6 or round(side) < 1:
        step = 256 if modality in SERIES else round(MODALITIES[modality].resolution / AERIAL_RESOLUTION)
        raise ConfigError(
            f"detect.tile_size={tile_size} (0.2 m) is {side:g} {modality} pixels of "
            f"{MODALITIES[modality].resolution:g} m; set detect.tile_size to a multiple of {step}"
        )
    return round(side)


class HubTileReader:
    """Every modality but the aerial image for each tile of a map with ``transform`` in ``crs``.

    Each call reads the tile's own windows and prepares them from scratch. Not thread-safe: one reader per thread.
    """

    def __init__(self, sources: HubSources, crs: CRS, transform: Affine, width: int, height: int, tile_size: int):
        self.sources = sources
        self.transform = transform
        left, top = transform @ (0, 0)
        right, bottom = transform @ (width, height)
        bounds = (min(left, right), min(top, bottom), max(left, right), max(top, bottom))
        self._grids: dict[str, Affine] = {}
        self._rasters: dict[str, list[GridRaster]] = {}
        self._masks: list[GridRaster | None] = []
        config = sources.config
        try:
            for modality in config.modalities:
                if modality == AERIAL:
                    continue
                res = MODALITIES[modality].resolution
                if modality in SERIES:
                    acquisitions = sources.series[modality][1]
                    paths = [a.data for a in acquisitions]
                else:
                    acquisitions = ()
                    paths = [sources.rasters[k] for k in (("dsm", "dtm") if modality == DEM else ("spot",))]
                buffer = modality_side(modality, tile_size) // 2 + 2
                grid, w, h = series_grid(paths[0], crs, bounds, buffer, res, (left, top))
                self._grids[modality] = grid
                self._rasters[modality] = [GridRaster(p, crs, grid, w, h, Resampling.bilinear) for p in paths]
                if modality == S2:
                    self._masks = [
                        None if a.mask is None else GridRaster(a.mask, crs, grid, w, h, Resampling.nearest)
                        for a in acquisitions
                    ]
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> HubTileReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        for raster in [*(r for rs in self._rasters.values() for r in rs), *self._masks]:
            if raster is not None:
                raster.close()
        self._rasters, self._masks = {}, []

    def window(self, modality: str, row: int, col: int, size: int) -> tuple[int, int, int]:
        """(row, col, side) in the modality's grid of the window of the ``size`` px tile at (``row``, ``col``)."""
        side = modality_side(modality, size)
        top, left = centred_window(self.transform, self._grids[modality], row, col, size, side)
        return top, left, side

    def tile_input(self, row: int, col: int, size: int) -> dict[str, Any]:
        """The tile's item as a FLAIR-HUB dataset gives it, less the aerial image: each modality's tensor and each
        series' day offsets."""
        config = self.sources.config
        item: dict[str, Any] = {"patch_id": f"tile {row},{col}", "index": 0}
        for modality, rasters in self._rasters.items():
            top, left, side = self.window(modality, row, col, size)
            arrays = [raster.read(top, left, side) for raster in rasters]
            channels = config.channels.get(modality)
            if modality == DEM:
                dem = np.concatenate([arrays[0][:1], arrays[1][:1]])
                item[modality] = torch.from_numpy(elevation_channels(dem, config.elevation, "DEM_ELEV"))
            elif modality == SPOT:
                image = arrays[0] if channels is None else arrays[0][[c - 1 for c in channels]]
                item[modality] = torch.from_numpy(image.astype(np.float32))
            else:
                series, offsets = self._series(modality, np.stack(arrays), top, left, side)
                item[modality] = torch.from_numpy(series)
                item[dates_key(modality)] = torch.from_numpy(offsets)
        return item

    def _series(self, modality: str, data: np.ndarray, top: int, left: int, side: int) -> tuple[np.ndarray, np.ndarray]:
        """As FLAIR-HUB's dataset prepares a series: bands chosen, cloudy dates dropped (Sentinel-2), monthly means."""
        config = self.sources.config
        dates = [a.date for a in self.sources.series[modality][1]]
        channels = config.channels.get(modality)
        if channels is not None:
            data = data[:, [c - 1 for c in channels]]
        if modality == S2:
            settings: Any = config.sentinel2
            if settings.filter_clouds:
                masks = np.stack(
                    [
                        np.zeros((MASK_BANDS, side, side), np.uint8) if mask is None else mask.read(top, left, side)
                        for mask in self._masks
                    ]
                )
                keep = clear_dates(masks, settings.cloud_threshold, settings.snow_threshold, settings.max_cover)
                data, dates = data[keep], [dates[i] for i in keep]
        else:
            settings = config.sentinel1
        if settings.monthly_average:
            return monthly_average(data, dates, config.reference_date, settings.fill_empty_months)
        return np.ascontiguousarray(data, dtype=np.float32), date_offsets(dates, config.reference_date)

    @staticmethod
    def batch(items: Sequence[dict[str, Any]]) -> list[Any]:
        """The extra model inputs of a batch of tiles: one collate_hub batch (series padded, with pad masks)."""
        return [collate_hub(list(items))]
