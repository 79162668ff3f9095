"""``flair data check`` on a FLAIR-HUB folder: every modality of every patch, read in full.

For each patch, every modality present in the folder must have its file; each file is read whole (a truncated
TIFF often has a valid header) and checked for its band count, data type, size (from the patch size: 512
aerial pixels, 256 historical, 64 SPOT, 10 Sentinel), CRS, alignment with the patch's other files and, for
labels, class values. Each series must have its acquisition dates in GLOBAL_ALL_MTD, as many as its bands
say, and the Sentinel-2 masks as many dates as the series. Every problem is collected.
"""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flairkit.data.check import CheckReport, Problem, problem_from_error
from flairkit.data.hub.layout import (
    AERIAL_SIDE,
    COSIA,
    CSV_COLUMNS,
    DATES_FILES,
    METADATA_FOLDER,
    MODALITIES,
    S2,
    S2_MASKS,
    SPLIT_FILE,
    SPLIT_VALUES,
    PatchId,
    label_classes,
    patch_file,
    read_dates_gpkg,
    read_split_gpkg,
    scan_folder,
    split_columns,
)
from flairkit.data.rasters import LAMBERT93, read_profile, read_raster
from flairkit.errors import DataError

ALIGNMENT_TOLERANCE = 0.5
"""Metres by which the bounds of a patch's files may differ."""
SIZE_SAMPLE = 50
"""Patches whose aerial side sets the expected patch size when none is given."""


def _width(path: Path) -> int | None:
    try:
        return read_profile(path)["width"]
    except DataError:
        return None  # reported with the file's other problems


@dataclass(frozen=True)
class _FileInfo:
    dates: int | None
    bounds: tuple[float, float, float, float] | None
    crs: Any


def _check_bands(path: Path, modality: str, count: int, n_dates: int | None, problems: list[Problem]) -> int | None:
    """Check the band count; returns the number of dates of a series."""
    spec = MODALITIES[modality]
    if not spec.series:
        if count != spec.bands:
            problems.append(Problem(path, f"has {count} band(s), FLAIR-HUB {modality} has {spec.bands}", True))
        return None
    if count % spec.bands:
        message = f"has {count} bands, not a whole number of dates of {spec.bands} bands ({modality})"
        problems.append(Problem(path, message, True))
        return None
    dates = count // spec.bands
    if n_dates is not None and dates != n_dates:
        source = DATES_FILES.get(modality, DATES_FILES[S2])
        message = f"holds {dates} date(s) ({count} bands) but {source} lists {n_dates}; the series and its dates differ"
        problems.append(Problem(path, message, True))
    return dates


def _check_labels(path: Path, modality: str, pixels: np.ndarray, problems: list[Problem]) -> None:
    for band in range(min(pixels.shape[0], MODALITIES[modality].bands)):
        classes = label_classes(modality, band + 1)
        bad = np.unique(pixels[band][(pixels[band] < 0) | (pixels[band] >= len(classes))])
        if bad.size:
            level = "" if modality == COSIA else f" (LPIS level {band + 1})"
            message = f"band {band + 1} holds values {bad[:8].tolist()} outside 0..{len(classes) - 1}{level}"
            problems.append(Problem(path, message, True))


def _check_file(path: Path, modality: str, side: int, n_dates: int | None, problems: list[Problem]) -> _FileInfo | None:
    spec = MODALITIES[modality]
    try:
        profile = read_profile(path)
        pixels = read_raster(path)
    except DataError as error:
        problems.append(problem_from_error(path, error))
        return None
    dates = _check_bands(path, modality, pixels.shape[0], n_dates, problems)
    integer = np.issubdtype(pixels.dtype, np.integer)
    if pixels.dtype.name != spec.dtype:
        message = f"values are {pixels.dtype}, the release stores {modality} as {spec.dtype}"
        problems.append(Problem(path, message, spec.label and not integer))
    if pixels.shape[1:] != (side, side):
        message = f"is {pixels.shape[2]}x{pixels.shape[1]} pixels, {modality} patches are {side}x{side}"
        problems.append(Problem(path, message, True))
    if spec.label and integer:
        _check_labels(path, modality, pixels, problems)
    if modality == S2_MASKS and pixels.size and pixels.max() > 100:
        problems.append(Problem(path, f"holds probabilities up to {pixels.max()}, masks are 0-100", False))
    crs = profile.get("crs")
    if crs is None or crs.to_epsg() != LAMBERT93.to_epsg():
        message = f"CRS is {crs or 'missing'}, FLAIR-HUB patches are in Lambert-93 (EPSG:2154)"
        problems.append(Problem(path, message, False))
    transform = profile.get("transform")
    bounds = None
    if transform is not None:
        left, top = transform.c, transform.f
        bounds = (left, top + transform.e * pixels.shape[1], left + transform.a * pixels.shape[2], top)
    return _FileInfo(dates, bounds, crs)


@dataclass
class _Context:
    modalities: list[str]
    sides: dict[str, int]
    dates: dict[str, dict[str, tuple[dt.date, ...]] | None]


def _check_patch(patch_id: str, files: dict[str, Path], root: Path, context: _Context) -> list[Problem]:
    problems: list[Problem] = []
    infos: dict[str, _FileInfo] = {}
    for modality in context.modalities:
        path = files.get(modality)
        if path is None:
            expected = patch_file(root, patch_id, modality)
            problems.append(Problem(expected, f"patch {patch_id} has no {modality} file", True))
            continue
        n_dates = None
        dates = context.dates.get(modality)
        if dates is not None:
            if patch_id in dates:
                n_dates = len(dates[patch_id])
            elif modality in DATES_FILES:  # the masks share the series' dates, reported once
                gpkg = DATES_FILES[modality]
                problems.append(Problem(path, f"patch {patch_id} has no acquisition dates in {gpkg}", True))
        info = _check_file(path, modality, context.sides[modality], n_dates, problems)
        if info is not None:
            infos[modality] = info
    series, masks = infos.get(S2), infos.get(S2_MASKS)
    if series and masks and series.dates is not None and masks.dates is not None and series.dates != masks.dates:
        problems.append(
            Problem(
                files[S2_MASKS], f"holds {masks.dates} date(s) of masks, its Sentinel-2 series {series.dates}", True
            )
        )
    reference = next((m for m in ("AERIAL_RGBI", COSIA, *context.modalities) if m in infos), None)
    if reference is not None:
        anchor = infos[reference]
        for modality, info in infos.items():
            if info.crs != anchor.crs:
                problems.append(Problem(files[modality], f"CRS differs from the patch's {reference}", False))
            elif (
                info.bounds
                and anchor.bounds
                and max(abs(a - b) for a, b in zip(info.bounds, anchor.bounds, strict=True)) > ALIGNMENT_TOLERANCE
            ):
                problems.append(
                    Problem(files[modality], f"does not cover the same ground as the patch's {reference}", False)
                )
    return problems


def _read_dates(gpkg: Path, problems: list[Problem]) -> dict[str, tuple[dt.date, ...]] | None:
    if not gpkg.is_file():
        problems.append(Problem(gpkg, "not found: the dates of this series cannot be checked or read", True))
        return None
    try:
        return read_dates_gpkg(gpkg)
    except DataError as error:
        problems.append(problem_from_error(gpkg, error))
        return None


def _check_splits(metadata: Path, patch_ids: set[str], problems: list[Problem], rows: list[tuple[str, str]]) -> None:
    gpkg = metadata / SPLIT_FILE
    if not gpkg.is_file():
        problems.append(Problem(gpkg, "not found: give split CSVs (data.hub.train_csv, ...) to train", False))
        rows.append(("splits", "no split file"))
        return
    try:
        columns = split_columns(gpkg)
        listed = {column: read_split_gpkg(gpkg, column) for column in columns}
    except DataError as error:
        problems.append(problem_from_error(gpkg, error))
        return
    for column, splits in listed.items():
        counts = Counter(value for patch_id, value in splits.items() if patch_id in patch_ids)
        unlisted = len(patch_ids - set(splits))
        summary = ", ".join(f"{counts.get(v, 0)} {v}" for v in dict.fromkeys(SPLIT_VALUES.values()))
        rows.append((f"split {column}", summary + (f", {unlisted} in none" if unlisted else "")))
        if patch_ids and not counts:
            problems.append(Problem(gpkg, f"column {column} puts none of the folder's patches in a split", False))


def check_hub_dataset(
    root: Path,
    *,
    modalities: Sequence[str] | None = None,
    expected_size: int | None = None,
    max_workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CheckReport:
    """Check every modality of every patch of a FLAIR-HUB folder; see the module docstring.

    ``modalities``: those every patch must have (default: every modality present in the folder).
    ``expected_size``: the aerial side of a patch (default: the most common among the first patches; 512 in
    the release).
    ``progress`` is called with (patches done, total).
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root} does not exist; give a FLAIR-HUB folder")
    folder = scan_folder(root)
    report = CheckReport(root)
    problems = report.problems
    unknown = [m for m in modalities or [] if m not in MODALITIES]
    if unknown:
        raise DataError(f"unknown FLAIR-HUB modalities {unknown}; choose among {', '.join(MODALITIES)}")
    selected = [m for m in CSV_COLUMNS if m in (modalities or folder.modalities)]
    if not folder.patches:
        problems.append(
            Problem(root, "holds no {DOM}-{YEAR}_{MOD}/{ROI}/{DOM}-{YEAR}_{MOD}_{ROI}_{r}-{c}.tif file", True)
        )
    problems.extend(
        Problem(path, "not named as its folder says ({folder}_{ROI}_{r}-{c}.tif) or of no patch", False)
        for path in folder.unmatched
    )

    sample = [folder.patches[p] for p in sorted(folder.patches)[:SIZE_SAMPLE]]
    sides = Counter(_width(files[m]) for files in sample for m in ("AERIAL_RGBI", COSIA) if m in files)
    aerial_side = expected_size or (next((w for w, _ in sides.most_common() if w), AERIAL_SIDE))
    metadata = root / METADATA_FOLDER
    dates = {m: _read_dates(metadata / DATES_FILES[m], problems) for m in selected if m in DATES_FILES}
    if S2_MASKS in selected and S2 in dates:
        dates[S2_MASKS] = dates[S2]
    context = _Context(selected, {m: MODALITIES[m].side(aerial_side) for m in selected}, dates)

    workers = max_workers or min(8, (os.cpu_count() or 1) + 2)
    patch_ids = sorted(folder.patches)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda p: _check_patch(p, folder.patches[p], root, context), patch_ids)
        for done, patch_problems in enumerate(results, 1):
            problems.extend(patch_problems)
            if progress is not None:
                progress(done, len(patch_ids))

    rows = [("source", str(root)), ("layout", "FLAIR-HUB folder")]
    _check_splits(metadata, set(patch_ids), problems, rows)
    problems.sort(key=lambda p: (not p.fatal, str(p.path), p.message))
    parsed = [PatchId.parse(p) for p in patch_ids]
    report.n_patches = len(patch_ids)
    report.n_domains = len({p.domain_year for p in parsed})
    report.n_areas = len({(p.domain_year, p.roi) for p in parsed})
    rows.insert(2, ("patches", f"{report.n_patches} in {report.n_domains} domain-year(s), {report.n_areas} ROI(s)"))
    rows.insert(3, ("patch size", f"{aerial_side}x{aerial_side} aerial pixels"))
    for modality in selected:
        count = sum(modality in files for files in folder.patches.values())
        rows.append((modality, f"{count}/{report.n_patches} patches, {context.sides[modality]} px"))
    for modality, by_patch in dates.items():
        if modality in DATES_FILES:
            rows.append(
                (DATES_FILES[modality], "unreadable or missing" if by_patch is None else f"{len(by_patch)} patches")
            )
    rows.append(("fatal problems", str(report.n_fatal)))
    rows.append(("warnings", str(report.n_warnings)))
    report.summary = rows
    return report
