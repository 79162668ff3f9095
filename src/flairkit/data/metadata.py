"""Aerial patch metadata (FLAIR #1 "MTD"): reading ``flair_aerial_metadata.json`` and the 45-value encoding.

The encoding follows IGNF/FLAIR-1 ``parsing_metadata`` and IGNF/FLAIR-2 ``adding_encoded_metadata``:

- 0..31: position. With ``x' = x / 1e8``, ``y' = y / 1e8`` and frequencies ``f_i = 10**-i`` (i = 0..7),
  values 0..15 interleave ``sin(x' f_i), cos(x' f_i)`` and values 16..31 the same for ``y'``.
- 32: altitude ``z / 3164.9099121094`` (the dataset maximum).
- 33..34: camera, ``[1, 0]`` when its name contains "UCE", else ``[0, 1]``.
- 35..38: year one-hot over 2018..2021 (all zero for other years, where IGN's code fails).
- 39..44: ``(v + 1) / 2`` of sin and cos of the month, the day (``day / 31``) and the time of day (``s / 86400``).

IGN's code computes the month term as ``sin(2 pi (month - 1/12))``, the same value for every month. The
``"official"`` encoding keeps that (needed to use models trained with it); ``"corrected"`` uses the month's
real phase ``(month - 1) / 12``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flairkit.data.discovery import PatchRecord
from flairkit.errors import DataError

METADATA_SIZE = 45
ENCODINGS = ("official", "corrected")
POSITION_SCALE = 1e8
N_FREQUENCIES = 8
MAX_ALTITUDE = 3164.9099121094
YEARS = (2018, 2019, 2020, 2021)

_DATE = re.compile(r"^\s*(\d{4})-(\d{1,2})-(\d{1,2})\s*$")
_TIME = re.compile(r"^\s*(\d{1,2})h(\d{1,2})\s*$")


class AerialMetadata(dict):
    """The metadata JSON as a dict keyed by patch id, remembering the file it came from."""

    def __init__(self, entries: dict[str, dict], path: Path | None = None):
        super().__init__(entries)
        self.path = path


def load_aerial_metadata(path: Path) -> AerialMetadata:
    """Read a FLAIR aerial metadata JSON (``{"IMG_000826": {"patch_centroid_x": ..., ...}, ...}``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: aerial metadata file not found; give the dataset's flair_aerial_metadata.json")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not a valid JSON file ({error}); replace it with the dataset's original") from None
    if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
        raise DataError(f"{path}: expected an object of objects keyed by patch id (e.g. 'IMG_000826')")
    return AerialMetadata(entries, path)


def _field(entry: dict[str, Any], key: str) -> Any:
    if key not in entry:
        raise DataError(f"metadata entry lacks the field {key!r}")
    return entry[key]


def _number(entry: dict[str, Any], key: str) -> float:
    value = _field(entry, key)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"metadata field {key!r} should be a number, got {value!r}") from None


def _half_wave(angle: float) -> list[float]:
    """sin and cos of ``angle`` mapped from [-1, 1] to [0, 1]."""
    return [(math.sin(angle) + 1) / 2, (math.cos(angle) + 1) / 2]


def encode_position(x: float, y: float) -> np.ndarray:
    """The 32 sinusoidal position values of a patch centre (Lambert-93 metres)."""
    # 1 / scale**(i/8) rather than 10**-i: the same numbers, computed as IGN does, bit for bit.
    frequencies = 1.0 / POSITION_SCALE ** (np.arange(N_FREQUENCIES, dtype=np.float64) / N_FREQUENCIES)
    encoding = np.empty(4 * N_FREQUENCIES, dtype=np.float64)
    for offset, value in ((0, x), (2 * N_FREQUENCIES, y)):
        phase = value / POSITION_SCALE * frequencies
        encoding[offset : offset + 2 * N_FREQUENCIES : 2] = np.sin(phase)
        encoding[offset + 1 : offset + 2 * N_FREQUENCIES : 2] = np.cos(phase)
    return encoding


def encode_metadata(entry: dict[str, Any], encoding: str = "official") -> np.ndarray:
    """The (45,) float32 encoding of one patch's metadata entry (see the module docstring)."""
    if encoding not in ENCODINGS:
        raise DataError(f"unknown metadata encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")
    position = encode_position(_number(entry, "patch_centroid_x"), _number(entry, "patch_centroid_y"))
    altitude = _number(entry, "patch_centroid_z") / MAX_ALTITUDE
    camera = [1.0, 0.0] if "UCE" in str(_field(entry, "camera")) else [0.0, 1.0]
    date = _DATE.match(str(_field(entry, "date")))
    if date is None:
        raise DataError(f"metadata field 'date' should be 'YYYY-MM-DD', got {entry['date']!r}")
    year, month, day = (int(g) for g in date.groups())
    time = _TIME.match(str(_field(entry, "time")))
    if time is None:
        raise DataError(f"metadata field 'time' should be 'HHhMM' (e.g. '10h35'), got {entry['time']!r}")
    seconds = int(time.group(1)) * 3600 + int(time.group(2)) * 60
    year_one_hot = [1.0 if year == y else 0.0 for y in YEARS]
    # IGN's bug: month - 1/12 instead of (month - 1) / 12 gives a whole number of turns minus a constant.
    month_phase = month - 1 / 12 if encoding == "official" else (month - 1) / 12
    temporal = (
        _half_wave(2 * math.pi * month_phase)
        + _half_wave(2 * math.pi * day / 31)
        + _half_wave(2 * math.pi * seconds / 86400)
    )
    values = np.concatenate([position, [altitude], camera, year_one_hot, temporal])
    return values.astype(np.float32)


def metadata_for(records: Sequence[PatchRecord], metadata: dict[str, dict], encoding: str = "official") -> np.ndarray:
    """The (N, 45) float32 encodings of ``records``' patches, looked up by patch id."""
    source = getattr(metadata, "path", None) or "the aerial metadata JSON"
    rows = np.empty((len(records), METADATA_SIZE), dtype=np.float32)
    for i, record in enumerate(records):
        entry = metadata.get(record.patch_id)
        if entry is None:
            raise DataError(
                f"{record.patch_id} ({record.image}) has no entry in {source}; "
                "use the metadata file of this dataset or set data.metadata=false"
            )
        try:
            rows[i] = encode_metadata(entry, encoding)
        except DataError as error:
            raise DataError(f"{source}, entry {record.patch_id}: {error}; fix the entry") from None
    return rows
