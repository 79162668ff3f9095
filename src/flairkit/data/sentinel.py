"""Sentinel-2 time series of FLAIR #2: super-area files, super-patch crops, cloud filtering, monthly means.

After IGNF/FLAIR-2 ``src/dataset.py`` and ``src/utils_dataset.py``. Each area folder ``.../<DOMAIN>/<ZONE>/sen``
holds ``*_data.npy`` (T, 10, H, W), ``*_masks.npy`` (T, 2, H, W: snow and cloud probabilities) and
``*_products.txt`` (one product name per date). Differences from IGN's code, all on inputs where it fails:
a crop leaving the super-area is an error (IGN silently returns a smaller or empty array), a 29 February
becomes the 28th when the reference year is not a leap year, no-data dates (all zero or non-finite) are
dropped, and when the cloud filter would remove every date the least covered one is kept.

Series are returned as float32 reflectances without rescaling (see :func:`load_sentinel_sample`).
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flairkit.config.schema import SentinelConfig
from flairkit.errors import ConfigError, DataError

N_BANDS = 10
"""B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12."""
SENTINEL_RESOLUTION = 10.0
"""Sentinel-2 pixel size in metres (the 10 m bands of FLAIR #2 super-patches)."""
AVERAGE_DAY = 15
"""Day of the month given to a monthly average."""


@dataclass
class SentinelSample:
    """A patch's Sentinel-2 series and its dates as day offsets from the reference date."""

    series: np.ndarray
    """(T, 10, s, s) float32."""
    dates: np.ndarray
    """(T,) int64, reference date minus acquisition date, in days."""


@dataclass(frozen=True)
class SentinelFiles:
    """The three files of one area's Sentinel-2 super-area."""

    data: Path
    masks: Path
    products: Path


def load_centroids(path: Path) -> dict[str, tuple[int, int]]:
    """Read ``flair-2_centroids_sp_to_patch.json``: ``IMG_xxxxxx.tif`` -> (row, col) in its super-area."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: centroids file not found; give the dataset's flair-2_centroids_sp_to_patch.json")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not a valid JSON file ({error}); replace it with the dataset's original") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected an object mapping 'IMG_xxxxxx.tif' to [row, col]")
    centroids = {}
    for key, value in raw.items():
        if not (isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int) for v in value)):
            raise DataError(f"{path}: entry {key!r} should be [row, col] integers, got {value!r}; fix the entry")
        centroids[key] = (value[0], value[1])
    return centroids


def sentinel_files(sentinel_dir: Path) -> SentinelFiles:
    """The data, masks and products files of an area folder (exactly one of each)."""
    sentinel_dir = Path(sentinel_dir)
    if not sentinel_dir.is_dir():
        raise DataError(
            f"{sentinel_dir}: Sentinel-2 folder not found; add the area's sen/ folder "
            "or disable Sentinel-2 (data.sentinel.enabled=false)"
        )
    found = []
    for suffix in ("_data.npy", "_masks.npy", "_products.txt"):
        matches = sorted(sentinel_dir.glob(f"*{suffix}"))
        if len(matches) != 1:
            what = "no file" if not matches else f"{len(matches)} files"
            raise DataError(f"{sentinel_dir}: {what} named *{suffix}; each sen/ folder needs exactly one")
        found.append(matches[0])
    return SentinelFiles(*found)


def read_products(products_txt: Path) -> list[dt.date]:
    """The acquisition dates of a products list (``SENTINEL2A_YYYYMMDD-...`` names, one per line).

    Blank lines are ignored. The year is read at characters 11:15 and the month and day at 15:19, as IGN does.
    """
    products_txt = Path(products_txt)
    try:
        lines = products_txt.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{products_txt}: cannot read the products list ({error}); replace it") from None
    dates = []
    for number, line in enumerate(lines, start=1):
        name = line.strip()
        if not name:
            continue
        stamp = name[11:19]
        try:
            if not stamp.isdigit():
                raise ValueError(stamp)
            dates.append(dt.date(int(stamp[:4]), int(stamp[4:6]), int(stamp[6:8])))
        except ValueError:
            raise DataError(
                f"{products_txt}, line {number}: {name!r} has no YYYYMMDD date at characters 11:19 "
                "(expected names like SENTINEL2A_20210415-105852-...); fix the line"
            ) from None
    return dates


def product_dates(products_txt: Path) -> list[tuple[int, int]]:
    """The (month, day) of each product, read at characters 15:19 as IGN does (see :func:`read_products`)."""
    return [(d.month, d.day) for d in read_products(products_txt)]


def parse_reference_date(reference_date: str) -> dt.date:
    """``YYYY-MM-DD`` as a date; ConfigError naming data.sentinel.reference_date otherwise."""
    try:
        return dt.date.fromisoformat(reference_date)
    except (TypeError, ValueError):
        raise ConfigError(
            f"data.sentinel.reference_date={reference_date!r} is not a YYYY-MM-DD date; e.g. 2021-05-15"
        ) from None


def _in_year(year: int, month: int, day: int) -> dt.date:
    return dt.date(year, month, min(day, calendar.monthrange(year, month)[1]))


def day_offsets(month_days: Sequence[tuple[int, int]], reference_date: str = "2021-05-15") -> np.ndarray:
    """(reference - date) in days for (month, day) pairs, placing every date in the reference year as IGN does."""
    reference = parse_reference_date(reference_date)
    return np.array(
        [(reference - _in_year(reference.year, month, day)).days for month, day in month_days], dtype=np.int64
    )


def offsets_to_months(offsets: np.ndarray, reference_date: str = "2021-05-15") -> np.ndarray:
    """The calendar month (1..12) of each day offset."""
    reference = parse_reference_date(reference_date)
    return np.array([(reference - dt.timedelta(days=int(o))).month for o in offsets], dtype=np.int64)


def largest_crop(shape: tuple[int, int], centre: tuple[int, int]) -> int:
    """The largest super-patch side (a multiple of 8) centred on ``centre`` inside a (H, W) super-area; 0 if none."""
    (height, width), (row, col) = shape, centre
    margin = min(row, col, height - row, width - col)
    return max(0, (2 * margin // 8) * 8)


def crop_super_patch(array: np.ndarray, centre: tuple[int, int], size: int, where: str) -> np.ndarray:
    """The (T, C, size, size) window of a (T, C, H, W) super-area centred on ``centre`` = (row, col).

    Rows ``row - size//2 .. row + size//2`` as IGN does. A window leaving the super-area is a DataError
    naming ``where``.
    """
    height, width = array.shape[-2:]
    row, col = centre
    top, left = row - size // 2, col - size // 2
    if top < 0 or left < 0 or top + size > height or left + size > width:
        margin = min(row, col, height - row, width - col)
        fits = largest_crop((height, width), centre)
        if fits > 0:
            advice = f"at most {fits} fits here"
        elif margin > 0:
            advice = f"the centroid is {margin} pixel(s) from the edge, too close for any multiple of 8"
        else:
            advice = "the centroid lies outside the super-area"
        raise DataError(
            f"{where}: the {size}x{size} Sentinel-2 super-patch around (row {row}, col {col}) leaves the "
            f"{height}x{width} super-area ({advice}); lower data.sentinel.sat_patch_size or fix the centroid"
        )
    return array[..., top : top + size, left : left + size]


def cloud_cover(masks: np.ndarray, probability: int = 60) -> np.ndarray:
    """(T,) cover of each date: (#snow >= p + #cloud >= p) / (H * W), as IGN computes it (may exceed 1)."""
    masks = np.asarray(masks)
    covered = (masks[:, 0] >= probability).sum(axis=(1, 2)) + (masks[:, 1] >= probability).sum(axis=(1, 2))
    return covered / float(masks.shape[-2] * masks.shape[-1])


def filter_cloudy_dates(
    data: np.ndarray, masks: np.ndarray, offsets: np.ndarray, probability: int = 60, max_cover: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the dates whose cloud + snow cover is below ``max_cover``.

    When no date passes, the single least covered date is kept (IGN's code would fail on an empty series).
    """
    cover = cloud_cover(masks, probability)
    keep = np.flatnonzero(cover < max_cover)
    if keep.size == 0 and cover.size:
        keep = np.array([int(np.argmin(cover))])
        warnings.warn(
            "every Sentinel-2 date of a super-patch is too cloudy; keeping its least covered date",
            RuntimeWarning,
            stacklevel=2,
        )
    return data[keep], np.asarray(offsets)[keep]


def monthly_average(
    data: np.ndarray, offsets: np.ndarray, reference_date: str = "2021-05-15"
) -> tuple[np.ndarray, np.ndarray]:
    """Average the dates of each calendar month that has any; a month's date is its 15th.

    Months come out in calendar order (IGN's order for series within one year). Months without a date
    are skipped, so T varies between areas.
    """
    reference = parse_reference_date(reference_date)
    months = offsets_to_months(np.asarray(offsets), reference_date)
    averages, average_offsets = [], []
    for month in np.unique(months):
        selected = np.flatnonzero(months == month)
        averages.append(np.asarray(data[selected], dtype=np.float64).mean(axis=0))
        average_offsets.append((reference - dt.date(reference.year, int(month), AVERAGE_DAY)).days)
    if not averages:
        return np.zeros((0, *np.shape(data)[1:]), dtype=np.float64), np.zeros(0, dtype=np.int64)
    return np.stack(averages), np.array(average_offsets, dtype=np.int64)


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(
            f"{path}: cannot read the array ({error}); the file is corrupt or truncated, replace it"
        ) from None


def open_super_area(files: SentinelFiles) -> tuple[np.ndarray, np.ndarray, list[dt.date]]:
    """Memory-map an area's data and masks and read its product dates, checking they agree."""
    data, masks = _load_npy(files.data), _load_npy(files.masks)
    dates = read_products(files.products)
    if data.ndim != 4:
        raise DataError(f"{files.data}: expected a (T, {N_BANDS}, H, W) array, got shape {data.shape}; replace it")
    t, _, height, width = data.shape
    if masks.shape != (t, 2, height, width):
        raise DataError(
            f"{files.masks}: shape {masks.shape} does not match the data {data.shape} "
            f"(expected ({t}, 2, {height}, {width})); the files come from different areas or are damaged"
        )
    if len(dates) != t:
        raise DataError(
            f"{files.products}: lists {len(dates)} product(s) but {files.data.name} holds {t} date(s); "
            "one product name per date is needed"
        )
    return data, masks, dates


def _valid_dates(series: np.ndarray) -> np.ndarray:
    """Indexes of dates that hold data: not all zero and every value finite."""
    flat = series.reshape(series.shape[0], -1)
    has_data = np.any(flat != 0, axis=1)
    if np.issubdtype(flat.dtype, np.floating):
        has_data &= np.all(np.isfinite(flat), axis=1)
    return np.flatnonzero(has_data)


def load_sentinel_sample(
    sentinel_dir: Path, patch_key: str, centroid: tuple[int, int], config: SentinelConfig
) -> SentinelSample:
    """The Sentinel-2 super-patch series of one aerial patch, filtered and averaged as ``config`` says.

    Only the crop is read from disk. Dates without data (all zero, or with NaN) are dropped; if every date
    is empty the series is kept with non-finite values set to 0, which the model then treats as padding.
    Values are the stored reflectances as float32. IGN's FLAIR #2 code divides uint16 series by 65535
    (``img_as_float``) but leaves monthly averages unscaled; any scaling is the caller's choice.
    """
    files = sentinel_files(sentinel_dir)
    data, masks, dates = open_super_area(files)
    where = f"{patch_key} in {files.data}"
    size = config.sat_patch_size
    series = np.asarray(crop_super_patch(data, centroid, size, where))
    crop_masks = np.asarray(crop_super_patch(masks, centroid, size, where))
    offsets = day_offsets([(d.month, d.day) for d in dates], config.reference_date)
    return prepare_series(series, crop_masks, offsets, config)


def prepare_series(
    series: np.ndarray, masks: np.ndarray, offsets: np.ndarray, config: SentinelConfig
) -> SentinelSample:
    """A super-patch's (T, 10, s, s) ``series``, (T, 2, s, s) snow and cloud ``masks`` and day ``offsets`` without
    empty dates, cloud-filtered and averaged as ``config`` says (see :func:`load_sentinel_sample`). The inputs are
    never modified."""
    valid = _valid_dates(series)
    if valid.size:
        series, masks, offsets = series[valid], masks[valid], np.asarray(offsets)[valid]
    else:
        warnings.warn(
            "every Sentinel-2 date of a super-patch is empty (all zero or NaN); keeping them as zeros",
            RuntimeWarning,
            stacklevel=2,
        )
        series = np.nan_to_num(series.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if config.filter_clouds and series.shape[0]:
        series, offsets = filter_cloudy_dates(series, masks, offsets, config.cloud_probability, config.max_cover)
    if config.monthly_average and series.shape[0]:
        series, offsets = monthly_average(series, offsets, config.reference_date)
    return SentinelSample(np.ascontiguousarray(series, dtype=np.float32), np.asarray(offsets).astype(np.int64))


def _as_pair(sample: SentinelSample | tuple) -> tuple[torch.Tensor, torch.Tensor]:
    series, dates = (sample.series, sample.dates) if isinstance(sample, SentinelSample) else sample
    return torch.as_tensor(series, dtype=torch.float32), torch.as_tensor(dates)


def pad_time_series(
    samples: Sequence[SentinelSample | tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Zero-pad series to the longest one: (B, Tmax, C, s, s) series, (B, Tmax) dates, (B, Tmax) pad mask.

    ``samples`` are :class:`SentinelSample` or (series, dates) pairs. The pad mask is True on padded dates.
    """
    pairs = [_as_pair(s) for s in samples]
    if not pairs:
        raise DataError("no Sentinel-2 sample to batch")
    shapes = {tuple(series.shape[1:]) for series, _ in pairs}
    if len(shapes) > 1:
        raise DataError(
            f"Sentinel-2 super-patches of one batch differ in shape {sorted(shapes)}; "
            "every patch must use the same data.sentinel.sat_patch_size"
        )
    t_max = max(series.shape[0] for series, _ in pairs)
    batch = torch.zeros((len(pairs), t_max, *shapes.pop()), dtype=torch.float32)
    dates = torch.zeros((len(pairs), t_max), dtype=pairs[0][1].dtype)
    pad_mask = torch.ones((len(pairs), t_max), dtype=torch.bool)
    for i, (series, sample_dates) in enumerate(pairs):
        t = series.shape[0]
        batch[i, :t] = series
        dates[i, :t] = sample_dates
        pad_mask[i, :t] = False
    return batch, dates, pad_mask
