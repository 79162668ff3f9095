"""FLAIR-HUB as IGN distributes it: modality folders, patch ids, split CSVs and the GLOBAL_ALL_MTD GeoPackages.

After IGNF/FLAIR-HUB (``data/utils_data/paths.py``, ``sentinel_dates.py``, ``csv/FLAIR-HUB_TOY.zip``) and
torchgeo's ``FLAIRHUB`` dataset. A release folder holds::

    {DOM}-{YEAR}_{MOD}/{ROI}/{DOM}-{YEAR}_{MOD}_{ROI}_{r}-{c}.tif   one folder per domain, year and modality
    {DOM}-195X_AERIAL-RLT_PAN/{ROI}/...                            historical (1950s) panchromatic images
    GLOBAL_ALL_MTD/GLOBAL_ALL_MTD_SPLIT.gpkg                       patch_id, split_1..split_5, split_flairchallenge...
    GLOBAL_ALL_MTD/GLOBAL_SENTINEL2_MTD_DATES.gpkg                 patch_id, acquisition_dates (JSON of YYYYMMDD)
    GLOBAL_ALL_MTD/GLOBAL_SENTINEL1-ASC_MTD_DATES.gpkg, GLOBAL_SENTINEL1-DESC_MTD_DATES.gpkg

A patch id is ``{DOM}-{YEAR}_{ROI}_{r}-{c}`` (``D006-2020_FF-S1-14_5-5``); a domain may span several
departments (``D024047``). IGN's split CSVs have a ``patch_id`` column and one path column per modality
(``../D006-2020_AERIAL_RGBI/...``); flairkit resolves relative paths from the CSV's folder, so IGN's CSVs
work from a ``csv/`` folder inside the release.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import fiona
from fiona.errors import FionaError

from flairkit.atomic import write_text_atomic
from flairkit.config.schema import HUB_BANDS, HubDataConfig, HubLabel, HubModality
from flairkit.errors import ConfigError, DataError
from flairkit.nomenclature import get_nomenclature, lpis_classes

AERIAL_RESOLUTION = 0.2
AERIAL_SIDE = 512
"""Aerial pixels across a patch of the release (102.4 m)."""

INPUT_MODALITIES: tuple[str, ...] = get_args(HubModality)
LABEL_MODALITIES: tuple[str, ...] = get_args(HubLabel)
COSIA, LPIS = LABEL_MODALITIES
HISTORICAL = "AERIAL-RLT_PAN"
HISTORICAL_YEAR = "195X"
"""The year token of the historical images' folders and files."""
S2, S2_MASKS = "SENTINEL2_TS", "SENTINEL2_MSK-SC"
SERIES = ("SENTINEL2_TS", "SENTINEL1-ASC_TS", "SENTINEL1-DESC_TS")
CSV_COLUMNS = (
    "patch_id",
    "AERIAL-RLT_PAN",
    "AERIAL_LABEL-COSIA",
    "AERIAL_RGBI",
    "ALL_LABEL-LPIS",
    "DEM_ELEV",
    "SENTINEL1-ASC_TS",
    "SENTINEL1-DESC_TS",
    "SENTINEL2_MSK-SC",
    "SENTINEL2_TS",
    "SPOT_RGBI",
)
"""Columns of IGN's split CSVs, in their order."""

METADATA_FOLDER = "GLOBAL_ALL_MTD"
SPLIT_FILE = "GLOBAL_ALL_MTD_SPLIT.gpkg"
DATES_FILES = {
    "SENTINEL2_TS": "GLOBAL_SENTINEL2_MTD_DATES.gpkg",
    "SENTINEL1-ASC_TS": "GLOBAL_SENTINEL1-ASC_MTD_DATES.gpkg",
    "SENTINEL1-DESC_TS": "GLOBAL_SENTINEL1-DESC_MTD_DATES.gpkg",
}
"""The GeoPackage of each series' acquisition dates, in the metadata folder."""
SPLIT_VALUES = {"train": "train", "valid": "val", "val": "val", "test": "test"}
"""Values of a split column and the split they name; patches with any other value belong to no split."""


@dataclass(frozen=True)
class ModalitySpec:
    """What one FLAIR-HUB modality holds for a patch."""

    name: str
    bands: int
    """Bands, per date for a series."""
    dtype: str
    """Data type of the release; others are read too, and ``flair data check`` warns about them."""
    resolution: float
    """Pixel size in metres; every modality of a patch covers the same 102.4 m square."""
    series: bool = False
    label: bool = False

    def side(self, aerial_side: int = AERIAL_SIDE) -> int:
        """Pixels across a patch whose aerial image is ``aerial_side`` pixels across."""
        return round(aerial_side * AERIAL_RESOLUTION / self.resolution)


MODALITIES: dict[str, ModalitySpec] = {
    spec.name: spec
    for spec in (
        ModalitySpec("AERIAL_RGBI", HUB_BANDS["AERIAL_RGBI"], "uint8", 0.2),
        ModalitySpec("AERIAL-RLT_PAN", HUB_BANDS["AERIAL-RLT_PAN"], "uint8", 0.4),
        ModalitySpec("DEM_ELEV", HUB_BANDS["DEM_ELEV"], "float32", 0.2),
        ModalitySpec("SPOT_RGBI", HUB_BANDS["SPOT_RGBI"], "uint16", 1.6),
        ModalitySpec("SENTINEL2_TS", HUB_BANDS["SENTINEL2_TS"], "uint16", 10.24, series=True),
        ModalitySpec("SENTINEL2_MSK-SC", 2, "uint8", 10.24, series=True),
        ModalitySpec("SENTINEL1-ASC_TS", HUB_BANDS["SENTINEL1-ASC_TS"], "float32", 10.24, series=True),
        ModalitySpec("SENTINEL1-DESC_TS", HUB_BANDS["SENTINEL1-DESC_TS"], "float32", 10.24, series=True),
        ModalitySpec("AERIAL_LABEL-COSIA", 1, "uint8", 0.2, label=True),
        ModalitySpec("ALL_LABEL-LPIS", 3, "uint8", 0.2, label=True),
    )
}
"""Every modality of the release. Series hold T x bands bands, date-major (the bands of date 1, then date 2...):
Sentinel-2 B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12; its masks snow then cloud probability (0-100);
Sentinel-1 VV, VH. DEM_ELEV holds DSM then DTM, LPIS one band per nomenclature level."""

_PATCH_ID = re.compile(r"(?P<domain>D\d+)-(?P<year>\d{4})_(?P<roi>[^_/\\]+)_(?P<row>\d+)-(?P<col>\d+)")
_FOLDER = re.compile(r"(?P<domain>D\d+)-(?P<year>\d{4}|195X)_(?P<modality>.+)")
_POSITION = re.compile(r"(?P<row>\d+)-(?P<col>\d+)\.tif")
PATCH_ID_HELP = "{DOM}-{YEAR}_{ROI}_{r}-{c}, e.g. D006-2020_FF-S1-14_5-5"


@dataclass(frozen=True, order=True)
class PatchId:
    """The parts of a patch id ``{DOM}-{YEAR}_{ROI}_{r}-{c}``."""

    domain: str
    year: str
    roi: str
    row: str
    col: str

    @classmethod
    def parse(cls, text: str, where: str = "patch id") -> PatchId:
        """Parse ``text``; a DataError naming ``where`` when it is no patch id."""
        match = _PATCH_ID.fullmatch(str(text).strip())
        if match is None:
            raise DataError(f"{where}: {text!r} is not a FLAIR-HUB patch id ({PATCH_ID_HELP})")
        return cls(**match.groupdict())

    def __str__(self) -> str:
        return f"{self.domain}-{self.year}_{self.roi}_{self.row}-{self.col}"

    @property
    def domain_year(self) -> str:
        """``{DOM}-{YEAR}``, e.g. D006-2020."""
        return f"{self.domain}-{self.year}"


def label_classes(label: str, lpis_level: int = 1) -> tuple[str, ...]:
    """Class names of a label modality in value order: COSIA's 19 (the ``hub`` nomenclature), or an LPIS level's."""
    return tuple(get_nomenclature("hub").names) if label == COSIA else lpis_classes(lpis_level)


def modality_folder(domain_year: str, modality: str) -> str:
    """The release folder of a domain-year's modality: ``D006-2020_AERIAL_RGBI``, ``D006-195X_AERIAL-RLT_PAN``."""
    if modality not in MODALITIES:
        raise DataError(f"unknown FLAIR-HUB modality {modality!r}; known: {', '.join(MODALITIES)}")
    domain = domain_year.split("-", 1)[0]
    year = HISTORICAL_YEAR if modality == HISTORICAL else domain_year.split("-", 1)[-1]
    return f"{domain}-{year}_{modality}"


def modality_folders(domain_years: Iterable[str], modalities: Iterable[str]) -> list[str]:
    """The distinct release folders of these domain-years and modalities, sorted: what a download must produce."""
    return sorted({modality_folder(d, m) for d in domain_years for m in modalities})


def patch_file(root: Path, patch_id: PatchId | str, modality: str) -> Path:
    """Where the release stores a patch's file of ``modality`` under ``root``."""
    patch = patch_id if isinstance(patch_id, PatchId) else PatchId.parse(patch_id)
    folder = modality_folder(patch.domain_year, modality)
    return Path(root) / folder / patch.roi / f"{folder}_{patch.roi}_{patch.row}-{patch.col}.tif"


def needed_modalities(config: HubDataConfig) -> tuple[str, ...]:
    """The modalities a config reads: its inputs, its labels and the Sentinel-2 masks when it filters clouds."""
    needed = [*config.modalities, *config.labels]
    if S2 in config.modalities and config.sentinel2.filter_clouds:
        needed.append(S2_MASKS)
    return tuple(needed)


def needed_metadata(config: HubDataConfig) -> tuple[str, ...]:
    """The GLOBAL_ALL_MTD GeoPackages a config reads: the split file unless CSVs give the splits, and series dates."""
    names = [] if config.train_csv or config.val_csv or config.test_csv else [SPLIT_FILE]
    return (*names, *(DATES_FILES[m] for m in config.modalities if m in SERIES))


def metadata_folder(config: HubDataConfig) -> Path:
    """The folder of the GLOBAL_ALL_MTD GeoPackages of a config."""
    if config.metadata_dir is not None:
        return Path(config.metadata_dir)
    if config.root is None:
        raise ConfigError("data.hub.root is not set; give the FLAIR-HUB folder (or data.hub.metadata_dir)")
    return Path(config.root) / METADATA_FOLDER


def is_hub_folder(path: Path) -> bool:
    """Whether ``path`` is a folder laid out as FLAIR-HUB (a GLOBAL_ALL_MTD or a {DOM}-{YEAR}_{MOD} folder)."""
    path = Path(path)
    if not path.is_dir():
        return False
    return (path / METADATA_FOLDER).is_dir() or any(_modality_of(entry) is not None for entry in path.iterdir())


def parse_modality_folder(name: str) -> tuple[str, str, str] | None:
    """(domain, year, modality) of a release folder name such as ``D006-2020_AERIAL_RGBI``, or None."""
    match = _FOLDER.fullmatch(name)
    if match is None or match["modality"] not in MODALITIES:
        return None
    if (match["modality"] == HISTORICAL) != (match["year"] == HISTORICAL_YEAR):
        return None
    return match["domain"], match["year"], match["modality"]


def _modality_of(folder: Path) -> str | None:
    parsed = parse_modality_folder(folder.name)
    return parsed[2] if parsed is not None and folder.is_dir() else None


@dataclass(frozen=True)
class HubPatch:
    """One patch and its files by modality."""

    patch_id: str
    files: Mapping[str, Path]


@dataclass
class HubFolder:
    """What :func:`scan_folder` found in a FLAIR-HUB folder."""

    root: Path
    patches: dict[str, dict[str, Path]] = field(default_factory=dict)
    """Patch id -> modality -> file, for every patch with at least one non-historical file."""
    unmatched: list[Path] = field(default_factory=list)
    """Files of modality folders not named ``{folder}_{ROI}_{r}-{c}.tif``, and historical images of no patch."""

    @property
    def modalities(self) -> list[str]:
        """The modalities present in the folder, in the CSV order."""
        found = {m for files in self.patches.values() for m in files}
        return [m for m in CSV_COLUMNS if m in found]


def scan_folder(root: Path) -> HubFolder:
    """Every patch file of a FLAIR-HUB folder, grouped by patch id (historical images by place)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; give the FLAIR-HUB folder (it holds D006-2020_AERIAL_RGBI, ...)")
    found = HubFolder(root)
    historical: dict[tuple[str, str, str, str], Path] = {}
    for folder in sorted(root.iterdir()):
        modality = _modality_of(folder)
        if modality is None:
            continue
        domain = folder.name.split("-", 1)[0]
        year = folder.name.split("-", 1)[1].split("_", 1)[0]
        for roi in sorted(p for p in folder.iterdir() if p.is_dir()):
            prefix = f"{folder.name}_{roi.name}_"
            for path in sorted(roi.glob("*.tif")):
                position = _POSITION.fullmatch(path.name[len(prefix) :]) if path.name.startswith(prefix) else None
                if position is None or "_" in roi.name:
                    found.unmatched.append(path)
                elif modality == HISTORICAL:
                    historical[(domain, roi.name, position["row"], position["col"])] = path
                else:
                    patch_id = f"{domain}-{year}_{roi.name}_{position['row']}-{position['col']}"
                    found.patches.setdefault(patch_id, {})[modality] = path
    used = set()
    for patch_id, files in found.patches.items():
        patch = PatchId.parse(patch_id)
        key = (patch.domain, patch.roi, patch.row, patch.col)
        if key in historical:
            files[HISTORICAL] = historical[key]
            used.add(key)
    found.unmatched.extend(path for key, path in historical.items() if key not in used)
    return found


def layout_patches(root: Path, patch_ids: Iterable[str], modalities: Sequence[str]) -> list[HubPatch]:
    """Patches whose files are where the release puts them under ``root``."""
    return [HubPatch(str(p), {m: patch_file(root, p, m) for m in modalities}) for p in patch_ids]


def read_split_csv(path: Path) -> list[HubPatch]:
    """The patches of an IGN split CSV: ``patch_id`` and one path column per modality (empty cell: no file).

    Relative paths start at the CSV's folder; columns that are no modality are ignored.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the split CSV ({error}); give IGN's FLAIR-HUB split CSV") from None
    reader = csv.DictReader(io.StringIO(text))
    columns = reader.fieldnames or []
    if "patch_id" not in columns:
        raise DataError(
            f"{path}: no patch_id column (found {columns[:4]}); a FLAIR-HUB split CSV has a header "
            f"{','.join(CSV_COLUMNS[:3])},... with one path column per modality"
        )
    modalities = [c for c in columns if c in MODALITIES]
    patches, seen = [], set()
    for line, row in enumerate(reader, start=2):
        patch_id = str(PatchId.parse(row["patch_id"] or "", f"{path}, line {line}"))
        if patch_id in seen:
            raise DataError(f"{path}, line {line}: patch {patch_id} is listed twice; keep one line per patch")
        seen.add(patch_id)
        files = {m: Path(os.path.normpath(path.parent / row[m].strip())) for m in modalities if (row[m] or "").strip()}
        patches.append(HubPatch(patch_id, files))
    return patches


def write_split_csv(path: Path, patches: Sequence[HubPatch], overwrite: bool = False) -> Path:
    """Write an IGN split CSV (every column of :data:`CSV_COLUMNS`, paths relative to the CSV), atomically."""
    path = Path(path)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for patch in patches:
        cells = [
            Path(os.path.relpath(patch.files[m], path.parent)).as_posix() if m in patch.files else ""
            for m in CSV_COLUMNS[1:]
        ]
        writer.writerow([patch.patch_id, *cells])
    return write_text_atomic(path, out.getvalue(), overwrite=overwrite)


def missing_files(patches: Iterable[HubPatch], modalities: Sequence[str]) -> Iterator[tuple[str, str, Path | None]]:
    """(patch id, modality, expected file or None) of every selected file that does not exist.

    Each folder is listed once, so that checking a whole release takes seconds, not a stat per file.
    """
    listings: dict[Path, set[str]] = {}
    for patch in patches:
        for modality in modalities:
            path = patch.files.get(modality)
            if path is None:
                yield patch.patch_id, modality, None
                continue
            if path.parent not in listings:
                try:
                    listings[path.parent] = {entry.name for entry in os.scandir(path.parent)}
                except OSError:
                    listings[path.parent] = set()
            if path.name not in listings[path.parent]:
                yield patch.patch_id, modality, path


@contextmanager
def _geopackage(path: Path) -> Iterator[Any]:
    if not path.is_file():
        raise DataError(f"{path}: file not found; it comes with the release's {METADATA_FOLDER} folder")
    try:
        with fiona.open(path, ignore_geometry=True) as layer:
            yield layer
    except FionaError as error:
        raise DataError(f"{path}: cannot read the GeoPackage ({error}); the file is damaged, replace it") from None


def _column(layer: Any, path: Path, name: str) -> None:
    columns = list(layer.schema["properties"])
    if name not in columns:
        raise DataError(f"{path}: no {name} column (columns: {', '.join(columns)}); it is not the expected GeoPackage")


def split_columns(path: Path) -> list[str]:
    """The split columns (every column but patch_id) of a GLOBAL_ALL_MTD_SPLIT.gpkg."""
    path = Path(path)
    with _geopackage(path) as layer:
        _column(layer, path, "patch_id")
        return [c for c in layer.schema["properties"] if c != "patch_id"]


def read_split_gpkg(path: Path, column: str) -> dict[str, str]:
    """Patch id -> train, val or test from one column of GLOBAL_ALL_MTD_SPLIT.gpkg (``valid`` reads as val)."""
    path = Path(path)
    with _geopackage(path) as layer:
        _column(layer, path, "patch_id")
        columns = [c for c in layer.schema["properties"] if c != "patch_id"]
        if column not in columns:
            raise DataError(
                f"{path}: no split column {column!r}; set data.hub.split to one of {', '.join(columns) or 'none'}"
            )
        splits = {}
        for feature in layer:
            value = SPLIT_VALUES.get(str(feature.properties[column] or "").strip().lower())
            if value is not None:
                splits[str(feature.properties["patch_id"])] = value
        return splits


def parse_acquisition_dates(text: str, where: str) -> tuple[dt.date, ...]:
    """The dates of an ``acquisition_dates`` cell: JSON of YYYYMMDD, an object (IGN reads its values) or a list."""
    try:
        value = json.loads(text)
    except (TypeError, json.JSONDecodeError):
        raise DataError(f'{where}: acquisition_dates {text!r} is not JSON; expected e.g. {{"0": "20210105"}}') from None
    items = list(value.values()) if isinstance(value, dict) else value
    if not isinstance(items, list):
        raise DataError(f"{where}: acquisition_dates is {type(items).__name__}, expected a JSON object or list")
    dates = []
    for item in items:
        try:
            stamp = str(item)
            if not re.fullmatch(r"\d{8}", stamp):
                raise ValueError(stamp)
            dates.append(dt.date(int(stamp[:4]), int(stamp[4:6]), int(stamp[6:])))
        except ValueError:
            raise DataError(f"{where}: acquisition date {item!r} is not a YYYYMMDD date; fix the GeoPackage") from None
    return tuple(dates)


def read_dates_gpkg(path: Path, patch_ids: Iterable[str] | None = None) -> dict[str, tuple[dt.date, ...]]:
    """Patch id -> acquisition dates, in band order, from a GLOBAL_*_MTD_DATES.gpkg (only ``patch_ids`` if given)."""
    path = Path(path)
    wanted = None if patch_ids is None else set(patch_ids)
    dates = {}
    with _geopackage(path) as layer:
        _column(layer, path, "patch_id")
        _column(layer, path, "acquisition_dates")
        for feature in layer:
            patch_id = str(feature.properties["patch_id"])
            if wanted is None or patch_id in wanted:
                where = f"{path}, patch {patch_id}"
                dates[patch_id] = parse_acquisition_dates(feature.properties["acquisition_dates"], where)
    return dates


def write_geopackage(path: Path, rows: Sequence[Mapping[str, str]], footprints: Sequence[Any], crs: str) -> Path:
    """Write a GLOBAL_ALL_MTD-style GeoPackage (a new file, e.g. in a world being staged): one polygon per row,
    string columns in the order of the first row."""
    schema = {"geometry": "Polygon", "properties": {name: "str" for name in rows[0]}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with fiona.open(path, "w", driver="GPKG", schema=schema, crs=crs) as layer:
        layer.writerecords(
            {"geometry": footprint, "properties": dict(row)} for row, footprint in zip(rows, footprints, strict=True)
        )
    return path


def dates_cell(dates: Sequence[dt.date]) -> str:
    """An ``acquisition_dates`` cell: a JSON object of YYYYMMDD strings keyed by band order (IGN reads its values)."""
    return json.dumps({str(i): f"{d:%Y%m%d}" for i, d in enumerate(dates)})
