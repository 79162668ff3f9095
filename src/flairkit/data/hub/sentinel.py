"""FLAIR-HUB time series: date offsets, Sentinel-2 cloud and snow filtering, monthly means.

After IGNF/FLAIR-HUB ``data/utils_data/sentinel.py`` and ``sentinel_dates.py``. A series GeoTIFF holds T x C
bands, date-major; its dates come from the GLOBAL_ALL_MTD GeoPackages. Offsets are ``date - reference`` in
days with the reference MM-DD taken in each date's own year (FLAIR #2 uses ``reference - date``).

Every function returns new arrays and never changes its inputs: IGN's zone detection filters clouds by
overwriting its shared date list, so that later tiles read fewer bands with the wrong dates.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np

from flairkit.errors import DataError

MID_MONTH = 15
"""Day of the month given to a monthly mean."""


def _reference(reference: str, year: int) -> dt.date:
    month, day = (int(part) for part in reference.split("-"))
    return dt.date(year, month, day)


def date_offsets(dates: Sequence[dt.date], reference: str = "05-15") -> np.ndarray:
    """(T,) int64 days ``date - reference``, the reference MM-DD taken in each date's year (IGN's diff_dates)."""
    return np.array([(d - _reference(reference, d.year)).days for d in dates], dtype=np.int64)


def split_dates(array: np.ndarray, bands_per_date: int, where: str) -> np.ndarray:
    """A (T * C, H, W) series raster as (T, C, H, W); a DataError naming ``where`` if the bands do not divide."""
    if array.ndim != 3 or array.shape[0] % bands_per_date:
        raise DataError(
            f"{where}: {array.shape[0]} bands are not a whole number of dates of {bands_per_date} bands; "
            "the file is damaged or is not this modality, replace it"
        )
    return array.reshape(array.shape[0] // bands_per_date, bands_per_date, *array.shape[1:])


def clear_dates(
    masks: np.ndarray, cloud_threshold: int = 1, snow_threshold: int = 1, max_cover: float = 0.05
) -> np.ndarray:
    """Indexes of the dates to keep given (T, 2, H, W) snow and cloud probabilities.

    As IGN: a pixel is clear when its cloud probability is at most ``cloud_threshold`` and its snow probability
    at most ``snow_threshold``; a date is kept when at least ``(1 - max_cover)`` of its pixels are clear. When
    no date passes, clouds are ignored (snow only). When still none passes, flairkit keeps the date with the
    most clear pixels, where IGN's code returns an empty series.
    """
    masks = np.asarray(masks)
    if masks.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    snow_ok = masks[:, 0] <= snow_threshold
    pixels = masks.shape[2] * masks.shape[3]
    needed = (1 - max_cover) * pixels
    clear = (snow_ok & (masks[:, 1] <= cloud_threshold)).sum(axis=(1, 2))
    keep = np.flatnonzero(clear >= needed)
    if keep.size == 0:
        keep = np.flatnonzero(snow_ok.sum(axis=(1, 2)) >= needed)
    if keep.size == 0:
        keep = np.array([int(np.argmax(clear))])
    return keep.astype(np.int64)


def monthly_average(
    series: np.ndarray, dates: Sequence[dt.date], reference: str = "05-15", fill_empty_months: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The mean of the dates of each calendar month (float32) and each month's offset (int64), months in order.

    A month's offset is its 15th minus the reference, both in the year of the first date, as IGN computes it.
    Months without a date are left out, unless ``fill_empty_months``: then, as IGN, there are always 12, an
    empty month repeating the previous month's mean and offset (zeros and 0 before the first).
    """
    series = np.asarray(series)
    if series.shape[0] != len(dates) or not len(dates):
        raise ValueError(f"{series.shape[0]} dates of data for {len(dates)} date(s); both must be equal and > 0")
    reference_day = _reference(reference, dates[0].year)
    months = np.array([d.month for d in dates])
    means: list[np.ndarray] = []
    offsets: list[int] = []
    for month in range(1, 13):
        selected = np.flatnonzero(months == month)
        if selected.size:
            means.append(series[selected].astype(np.float64).mean(axis=0))
            offsets.append((dt.date(reference_day.year, month, MID_MONTH) - reference_day).days)
        elif fill_empty_months:
            means.append(means[-1] if means else np.zeros(series.shape[1:]))
            offsets.append(offsets[-1] if offsets else 0)
    return np.stack(means).astype(np.float32), np.array(offsets, dtype=np.int64)
