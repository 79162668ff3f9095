"""A torch dataset of FLAIR-HUB patches over any subset of modalities, and its collate with padded series.

An item holds ``patch_id``, ``index``, one tensor per input modality named as IGN names it (``AERIAL_RGBI``,
``DEM_ELEV``, ``SENTINEL2_TS``...), the day offsets of each series (``SENTINEL2_DATES``, ``SENTINEL1-ASC_DATES``,
as IGN's keys) and one (H, W) uint8 target per label (``AERIAL_LABEL-COSIA``, ``ALL_LABEL-LPIS``, 0-based as the
files store them). Values are the files' own: uint8 stays uint8, other types become float32; normalisation is
the model's business. A batch adds ``<MOD>_PAD_MASK`` (B, T), True on the dates padding each series to the
longest of the batch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from flairkit.config.schema import HubDataConfig
from flairkit.data.hub.elevation import elevation_channels
from flairkit.data.hub.layout import (
    COSIA,
    DATES_FILES,
    MODALITIES,
    S2,
    S2_MASKS,
    SERIES,
    SPLIT_FILE,
    HubPatch,
    PatchId,
    label_classes,
    layout_patches,
    metadata_folder,
    missing_files,
    modality_folder,
    needed_modalities,
    read_dates_gpkg,
    read_split_csv,
    read_split_gpkg,
)
from flairkit.data.hub.sentinel import clear_dates, date_offsets, monthly_average, split_dates
from flairkit.data.rasters import read_raster
from flairkit.data.sentinel import pad_time_series
from flairkit.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")


def dates_key(modality: str) -> str:
    """The item key of a series' day offsets: ``SENTINEL2_TS`` -> ``SENTINEL2_DATES``."""
    return modality.replace("_TS", "_DATES")


def pad_mask_key(modality: str) -> str:
    """The batch key of a series' pad mask: ``SENTINEL2_TS`` -> ``SENTINEL2_PAD_MASK``."""
    return modality.replace("_TS", "_PAD_MASK")


@dataclass(frozen=True)
class SeriesDates:
    """The acquisition dates of one series modality, per patch, and the GeoPackage they come from."""

    source: Path
    by_patch: Mapping[str, tuple[dt.date, ...]]


def split_patches(config: HubDataConfig, split: str) -> list[HubPatch]:
    """The patches of ``split`` (train, val or test): from its split CSV, else from the official split column.

    With the split column, patches of domain-years that have no folder of any selected modality are left
    out, so that a partial download (some domains) trains on what is there; inside a downloaded domain-year,
    a missing file is an error when the dataset is built.
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose train, val or test")
    csv_path = {"train": config.train_csv, "val": config.val_csv, "test": config.test_csv}[split]
    if csv_path is not None:
        return read_split_csv(csv_path)
    if config.root is None:
        raise ConfigError(
            f"no FLAIR-HUB data for the {split} split: set data.hub.root (the release folder) or data.hub.{split}_csv"
        )
    gpkg = metadata_folder(config) / SPLIT_FILE
    if not gpkg.is_file():
        raise DataError(
            f"{gpkg}: not found; put the release's GLOBAL_ALL_MTD folder there, set data.hub.metadata_dir, "
            f"or give IGN's split CSVs (data.hub.{split}_csv)"
        )
    root = Path(config.root)
    needed = needed_modalities(config)
    present: dict[str, bool] = {}
    patch_ids = []
    for patch_id, value in sorted(read_split_gpkg(gpkg, config.split).items()):
        if value != split:
            continue
        domain_year = PatchId.parse(patch_id, f"{gpkg}, column patch_id").domain_year
        if domain_year not in present:
            present[domain_year] = any((root / modality_folder(domain_year, m)).is_dir() for m in needed)
        if present[domain_year]:
            patch_ids.append(patch_id)
    if not patch_ids:
        raise DataError(
            f"{gpkg}: column {config.split} puts no patch of the domains under {root} in the {split} split; "
            "download their folders or choose another data.hub.split"
        )
    return layout_patches(root, patch_ids, needed)


def load_series_dates(config: HubDataConfig, patch_ids: Sequence[str]) -> dict[str, SeriesDates]:
    """The acquisition dates of every selected series, for ``patch_ids``, from the GLOBAL_ALL_MTD GeoPackages."""
    folder = metadata_folder(config)
    dates = {}
    for modality in config.modalities:
        if modality in SERIES:
            path = folder / DATES_FILES[modality]
            dates[modality] = SeriesDates(path, read_dates_gpkg(path, patch_ids))
    return dates


def build_hub_dataset(config: HubDataConfig, split: str) -> HubDataset:
    """A :class:`HubDataset` of ``split`` (train, val or test) as the ``data.hub`` section says."""
    patches = split_patches(config, split)
    return HubDataset(patches, config, load_series_dates(config, [p.patch_id for p in patches]))


class HubDataset(Dataset):
    """FLAIR-HUB patches as dictionaries of tensors (see the module docstring).

    Building it checks that every patch has a file for every selected modality and label and, for each
    series, a date list: a patch missing one is an error naming the file, before any training.
    """

    def __init__(
        self, patches: Sequence[HubPatch], config: HubDataConfig, dates: Mapping[str, SeriesDates] | None = None
    ):
        if not patches:
            raise DataError("the split holds no FLAIR-HUB patch; check data.hub.root, data.hub.split or the CSVs")
        self.patches = list(patches)
        self.config = config
        self.dates = dict(dates or {})
        self._check_files()
        self._check_dates()

    def _check_files(self) -> None:
        missing = list(missing_files(self.patches, needed_modalities(self.config)))
        if not missing:
            return
        patch_id, modality, path = missing[0]
        where = f"{path}" if path is not None else f"patch {patch_id}"
        what = "is missing" if path is not None else f"has no {modality} path in its split CSV"
        raise DataError(
            f"{where}: {what} ({len(missing)} file(s) of the selected modalities missing in all, first: {modality} of "
            f"{patch_id}); download them, or leave {modality} out of data.hub.modalities/labels; "
            "`flair data check` lists every problem"
        )

    def _check_dates(self) -> None:
        for modality in self.config.modalities:
            if modality not in SERIES:
                continue
            if modality not in self.dates:
                raise DataError(f"no acquisition dates were given for {modality}; load them with load_series_dates")
            source = self.dates[modality]
            absent = [p.patch_id for p in self.patches if p.patch_id not in source.by_patch]
            if absent:
                raise DataError(
                    f"{source.source}: no acquisition dates for {len(absent)} patch(es), e.g. {absent[0]}; use the "
                    f"GLOBAL_ALL_MTD of the same release, or leave {modality} out of data.hub.modalities"
                )

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, key: int | tuple[int, bool]) -> dict[str, Any]:
        if isinstance(key, tuple):
            index, padding = key
            return {**self[index], "valid": not padding}
        index = key
        patch = self.patches[index]
        item: dict[str, Any] = {"patch_id": patch.patch_id, "index": index}
        for modality in self.config.modalities:
            if modality in SERIES:
                series, offsets = self._series(patch, modality)
                item[modality] = torch.from_numpy(series)
                item[dates_key(modality)] = torch.from_numpy(offsets)
            elif modality == "DEM_ELEV":
                path = patch.files[modality]
                item[modality] = torch.from_numpy(
                    elevation_channels(read_raster(path), self.config.elevation, str(path))
                )
            else:
                item[modality] = _as_tensor(self._image(patch, modality))
        for label in self.config.labels:
            item[label] = torch.from_numpy(self._label(patch, label))
        return item

    def _image(self, patch: HubPatch, modality: str) -> np.ndarray:
        path = patch.files[modality]
        channels = self.config.channels.get(modality)
        image = read_raster(path, bands=channels)
        expected = MODALITIES[modality].bands
        if channels is None and image.shape[0] != expected:
            raise DataError(f"{path}: has {image.shape[0]} band(s), FLAIR-HUB {modality} has {expected}; replace it")
        return image

    def _series(self, patch: HubPatch, modality: str) -> tuple[np.ndarray, np.ndarray]:
        path = patch.files[modality]
        series = split_dates(read_raster(path), MODALITIES[modality].bands, str(path))
        source = self.dates[modality]
        dates = source.by_patch[patch.patch_id]
        if series.shape[0] != len(dates):
            raise DataError(
                f"{path}: holds {series.shape[0]} date(s) but {source.source} lists {len(dates)} for "
                f"{patch.patch_id}; the series and its dates file do not match: use files of the same release"
            )
        channels = self.config.channels.get(modality)
        if channels is not None:
            series = series[:, [c - 1 for c in channels]]
        if modality == S2:
            settings = self.config.sentinel2
            if settings.filter_clouds:
                keep = clear_dates(
                    self._masks(patch, len(dates)),
                    settings.cloud_threshold,
                    settings.snow_threshold,
                    settings.max_cover,
                )
                series, dates = series[keep], tuple(dates[i] for i in keep)
        else:
            settings = self.config.sentinel1
        if settings.monthly_average:
            return monthly_average(series, dates, self.config.reference_date, settings.fill_empty_months)
        return np.ascontiguousarray(series, dtype=np.float32), date_offsets(dates, self.config.reference_date)

    def _masks(self, patch: HubPatch, n_dates: int) -> np.ndarray:
        path = patch.files[S2_MASKS]
        masks = split_dates(read_raster(path), MODALITIES[S2_MASKS].bands, str(path))
        if masks.shape[0] != n_dates:
            raise DataError(
                f"{path}: holds {masks.shape[0]} date(s) of masks but the Sentinel-2 series of {patch.patch_id} has "
                f"{n_dates}; the masks and the series must come from the same release"
            )
        return masks

    def _label(self, patch: HubPatch, label: str) -> np.ndarray:
        return read_label(patch.files[label], label, self.config.lpis_level)


def read_label(path: Path, label: str, lpis_level: int = 1) -> np.ndarray:
    """The (H, W) uint8 0-based classes of a label file (COSIA, or an LPIS level's band); bad values name the file."""
    band = 1 if label == COSIA else lpis_level
    values = read_raster(path, bands=[band])[0]
    classes = label_classes(label, lpis_level)
    if not np.issubdtype(values.dtype, np.integer):
        raise DataError(f"{path}: labels are {values.dtype}, FLAIR-HUB labels are integer class values; replace it")
    invalid = np.unique(values[(values < 0) | (values >= len(classes))])
    if invalid.size:
        raise DataError(
            f"{path}: band {band} holds values {invalid[:8].tolist()} outside 0..{len(classes) - 1} "
            f"({len(classes)} classes); fix the file, `flair data check` lists every bad file"
        )
    return values.astype(np.uint8)


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array if array.dtype == np.uint8 else array.astype(np.float32))


def _same_shapes(items: Sequence[dict[str, Any]], key: str, shape: Callable[[torch.Tensor], tuple[int, ...]]) -> None:
    first = shape(items[0][key])
    for item in items[1:]:
        if shape(item[key]) != first:
            raise DataError(
                f"{key} of {item['patch_id']} is {tuple(shape(item[key]))} but {tuple(first)} for "
                f"{items[0]['patch_id']} in the same batch; every patch of a modality must have the same size "
                "(`flair data check` lists the odd files)"
            )


def collate_hub(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch items: tensors stacked, series zero-padded on time with dates and a pad mask (True on padding)."""
    batch: dict[str, Any] = {
        "patch_id": [item["patch_id"] for item in items],
        "index": torch.tensor([item["index"] for item in items]),
    }
    if "valid" in items[0]:
        batch["valid"] = torch.tensor([item["valid"] for item in items])
    date_keys = {dates_key(m) for m in SERIES}
    for key in items[0]:
        if key in batch or key in date_keys:
            continue
        if key in SERIES:
            _same_shapes(items, key, lambda series: tuple(series.shape[1:]))
            series, dates, pad_mask = pad_time_series([(item[key], item[dates_key(key)]) for item in items])
            batch.update({key: series, dates_key(key): dates, pad_mask_key(key): pad_mask})
        else:
            _same_shapes(items, key, lambda tensor: tuple(tensor.shape))
            batch[key] = torch.stack([item[key] for item in items])
    return batch
