"""``flair data check``: find every problem of a FLAIR dataset before a long training run meets it.

Reads every image and mask in full (a truncated TIFF often has a valid header), checks bands, types,
sizes, georeferencing and mask values against a nomenclature, the metadata and centroid entries of
each patch, and the consistency of each area's Sentinel-2 files. Every problem is collected.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flairkit.data.discovery import (
    CENTROIDS_FILES,
    METADATA_FILES,
    PatchRecord,
    find_dataset_file,
    read_csv_list,
    records_in,
    split_roots,
)
from flairkit.data.metadata import encode_metadata, load_aerial_metadata
from flairkit.data.rasters import AERIAL_RESOLUTION, LAMBERT93, read_profile, read_raster
from flairkit.data.sentinel import (
    N_BANDS,
    crop_super_patch,
    largest_crop,
    load_centroids,
    open_super_area,
    sentinel_files,
)
from flairkit.errors import ConfigError, DataError
from flairkit.nomenclature import Nomenclature, get_nomenclature, label_origin

IMAGE_BANDS = 5
RESOLUTION_TOLERANCE = 0.01
MIN_SAT_PATCH_SIZE = 8
"""The smallest super-patch U-TAE accepts: checked around every centroid when no size is given."""


@dataclass
class Problem:
    """One thing wrong with a file; ``fatal`` when it would break training."""

    path: Path
    message: str
    fatal: bool


@dataclass
class CheckReport:
    """What :func:`check_dataset` found."""

    source: Path
    n_patches: int = 0
    n_domains: int = 0
    n_areas: int = 0
    problems: list[Problem] = field(default_factory=list)
    summary: list[tuple[str, str]] = field(default_factory=list)
    """(what, value) rows describing the dataset, for a table."""

    @property
    def ok(self) -> bool:
        """True when no problem is fatal."""
        return not any(p.fatal for p in self.problems)

    @property
    def n_fatal(self) -> int:
        """Number of fatal problems."""
        return sum(p.fatal for p in self.problems)

    @property
    def n_warnings(self) -> int:
        """Number of non-fatal problems."""
        return len(self.problems) - self.n_fatal


@dataclass(frozen=True)
class _AreaInfo:
    data: Path
    height: int
    width: int


def problem_from_error(path: Path, error: Exception, fatal: bool = True) -> Problem:
    """A problem from a library error, without repeating the path its message starts with."""
    message = str(error)
    prefix = f"{path}: "
    return Problem(Path(path), message[len(prefix) :] if message.startswith(prefix) else message, fatal)


@dataclass
class _Context:
    nomenclature: Nomenclature
    expected_size: int | None
    metadata: dict[str, dict] | None
    metadata_path: Path | None
    centroids: dict[str, tuple[int, int]] | None
    areas: dict[Path, _AreaInfo | None]
    check_sentinel: bool
    sat_patch_size: int | None


def _check_image(path: Path, context: _Context, problems: list[Problem]) -> tuple[dict[str, Any], np.ndarray] | None:
    if not path.is_file():
        problems.append(Problem(path, "image file is missing", True))
        return None
    try:
        profile = read_profile(path)
        pixels = read_raster(path)
    except DataError as error:
        problems.append(problem_from_error(path, error))
        return None
    if pixels.dtype != np.uint8:
        problems.append(Problem(path, f"bands are {pixels.dtype}, FLAIR images are uint8; convert the file", True))
    size = context.expected_size
    if size is not None and pixels.shape[1:] != (size, size):
        problems.append(Problem(path, f"is {pixels.shape[1]}x{pixels.shape[2]} pixels, expected {size}x{size}", True))
    crs = profile.get("crs")
    if crs is None or crs.to_epsg() != LAMBERT93.to_epsg():
        problems.append(Problem(path, f"CRS is {crs or 'missing'}, FLAIR patches are in Lambert-93 (EPSG:2154)", False))
    transform = profile.get("transform")
    if transform is not None:
        resolution = (abs(transform.a), abs(transform.e))
        if any(abs(r - AERIAL_RESOLUTION) > RESOLUTION_TOLERANCE for r in resolution):
            problems.append(
                Problem(
                    path,
                    f"pixel size is {resolution[0]:g} x {resolution[1]:g}, FLAIR uses {AERIAL_RESOLUTION} m",
                    False,
                )
            )
    return profile, pixels


def _check_mask(
    path: Path, image: tuple[dict[str, Any], np.ndarray] | None, context: _Context, problems: list[Problem]
) -> set[int]:
    """Check a mask; the distinct values it holds (none when it cannot be read as uint8)."""
    if not path.is_file():
        problems.append(Problem(path, "mask file is missing; every image of a labelled split needs its mask", True))
        return set()
    try:
        profile = read_profile(path)
        mask = read_raster(path)
    except DataError as error:
        problems.append(problem_from_error(path, error))
        return set()
    values: set[int] = set()
    if mask.shape[0] != 1:
        problems.append(Problem(path, f"has {mask.shape[0]} bands, FLAIR masks have 1", True))
    if mask.dtype != np.uint8:
        problems.append(Problem(path, f"values are {mask.dtype}, FLAIR masks are uint8 class codes; convert it", True))
    else:
        values = set(np.unique(mask).tolist())
        invalid = context.nomenclature.invalid_values(mask)
        if invalid.size:
            problems.append(
                Problem(
                    path,
                    f"values {invalid.tolist()} are no class of the {context.nomenclature.name} nomenclature "
                    f"(class values are {context.nomenclature.describe_values()}); fix the mask",
                    True,
                )
            )
    if image is not None:
        image_profile, pixels = image
        if mask.shape[1:] != pixels.shape[1:]:
            problems.append(
                Problem(
                    path,
                    f"mask is {mask.shape[1]}x{mask.shape[2]} but its image is {pixels.shape[1]}x{pixels.shape[2]}",
                    True,
                )
            )
        elif profile.get("transform") != image_profile.get("transform"):
            problems.append(Problem(path, "mask and image are not georeferenced alike (transforms differ)", False))
    return values


def _origin_problem(source: Path, values: set[int], nomenclature: Nomenclature) -> Problem | None:
    """A warning when the masks' values look shifted from the nomenclature's (e.g. labels that start at 0)."""
    try:
        origin = label_origin(values, nomenclature, "the masks")
    except DataError:
        return None  # each mask with values outside the classes is reported already
    if origin.shift == 0:
        return None
    start = min(nomenclature.class_values) - origin.shift
    declare = f"declare first_code: {start} in a nomenclature YAML (README, 'Your own data')"
    if start == nomenclature.ignore_value:
        fix = f"if {start} is a class there, {declare}; if it marks unlabelled pixels, nothing to do"
    else:
        fix = f"{declare}, or rewrite the masks with flair data patches"
    return Problem(
        source,
        f"the masks' values {sorted(values)} may be labels that start at {start} (codes shifted by "
        f"{origin.shift:+d}): {fix}",
        False,
    )


def _check_sentinel(record: PatchRecord, context: _Context, problems: list[Problem]) -> int | None:
    """Check a patch's centroid and crop; returns the largest super-patch side that fits around it."""
    key = record.image.name
    if context.centroids is not None and key not in context.centroids:
        problems.append(Problem(record.image, f"{key} has no entry in the Sentinel-2 centroids JSON", True))
        return None
    if record.sentinel_dir is None:
        problems.append(Problem(record.image, "no Sentinel-2 folder (.../<DOMAIN>/<ZONE>/sen) for this area", True))
        return None
    area = context.areas.get(record.sentinel_dir)
    if area is None or context.centroids is None:
        return None  # the area's own problem (or the missing centroids file) is reported once
    centroid = context.centroids[key]
    size = context.sat_patch_size or MIN_SAT_PATCH_SIZE
    try:
        # an empty (0, 0, H, W) array: the bounds check without reading the super-area
        crop_super_patch(np.empty((0, 0, area.height, area.width)), centroid, size, f"super-area {area.data}")
    except DataError as error:
        problems.append(Problem(record.image, str(error), True))
    return largest_crop((area.height, area.width), centroid)


def _check_record(
    record: PatchRecord, context: _Context
) -> tuple[list[Problem], tuple[int, int, int] | None, int | None, set[int]]:
    """A patch's problems, its image's (bands, height, width), the largest super-patch around it, its mask values."""
    problems: list[Problem] = []
    image = _check_image(record.image, context, problems)
    values = _check_mask(record.mask, image, context, problems) if record.mask is not None else set()
    if context.metadata is not None:
        entry = context.metadata.get(record.patch_id)
        if entry is None:
            problems.append(Problem(record.image, f"{record.patch_id} has no entry in {context.metadata_path}", True))
        else:
            try:
                encode_metadata(entry)
            except DataError as error:
                problems.append(
                    Problem(record.image, f"entry {record.patch_id} of {context.metadata_path}: {error}", True)
                )
    fits = _check_sentinel(record, context, problems) if context.check_sentinel else None
    return problems, (None if image is None else image[1].shape), fits, values


def _check_area(sentinel_dir: Path) -> tuple[_AreaInfo | None, list[Problem]]:
    try:
        files = sentinel_files(sentinel_dir)
    except DataError as error:
        return None, [problem_from_error(sentinel_dir, error)]
    try:
        data, _, _ = open_super_area(files)
    except DataError as error:
        for path in (files.data, files.masks, files.products):
            if str(error).startswith(f"{path}"):
                return None, [problem_from_error(path, error)]
        return None, [problem_from_error(sentinel_dir, error)]
    problems = []
    if data.shape[1] != N_BANDS:
        problems.append(Problem(files.data, f"holds {data.shape[1]} bands per date, FLAIR #2 has {N_BANDS}", True))
    if data.dtype != np.uint16:
        problems.append(Problem(files.data, f"values are {data.dtype}, FLAIR #2 reflectances are uint16", False))
    return _AreaInfo(files.data, data.shape[2], data.shape[3]), problems


def _collect_splits(
    source: Path, problems: list[Problem], want_sentinel: bool | None
) -> tuple[str, dict[str, list[PatchRecord]]]:
    """The layout name and the records of each split found at ``source``."""
    if source.is_file():
        try:
            return "CSV list", {"csv": read_csv_list(source, check_exists=False)}
        except DataError as error:
            problems.append(problem_from_error(source, error))
            return "CSV list", {}
    splits: dict[str, list[PatchRecord]] = {}
    for split in ("train", "test"):
        roots = split_roots(source, split)
        if roots is not None and roots.direct:
            return "area folders", {"all": records_in(roots)}
        if roots is None:
            problems.append(
                Problem(source, f"no {split} split (e.g. flair_aerial_train / flair_2_aerial_test)", split == "train")
            )
            continue
        records = records_in(roots)
        if not records:
            problems.append(Problem(roots.aerial, "holds no <DOMAIN>/<ZONE>/img/IMG*.tif patch", split == "train"))
        if roots.labels is None:
            message = f"no labels folder for the {split} split ({roots.aerial.name} has no flair_labels_* partner)"
            problems.append(Problem(source, message, split == "train"))
        if want_sentinel and roots.sentinel is None:
            problems.append(Problem(source, f"no Sentinel-2 folder for the {split} split (e.g. flair_sen_train)", True))
        splits[split] = records
    return "FLAIR #2 folder", splits


def _orphan_masks(records: Sequence[PatchRecord]) -> list[Problem]:
    """Masks in the labels folders that no image points to."""
    expected = {r.mask for r in records if r.mask is not None}
    folders = {mask.parent for mask in expected if mask.parent.is_dir()}
    return [
        Problem(mask, "mask without an image (ignored)", False)
        for folder in sorted(folders)
        for mask in sorted(folder.glob("MSK*.tif"))
        if mask not in expected
    ]


def check_dataset(
    source: Path,
    *,
    sentinel: bool | None = None,
    nomenclature: str = "15cl",
    expected_size: int | None = None,
    sat_patch_size: int | None = None,
    max_workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CheckReport:
    """Check a FLAIR #2 folder (train and test splits), a folder of areas, or a CSV list.

    ``sentinel``: None checks Sentinel-2 data when the dataset has some, True requires it, False skips it.
    ``expected_size``: required patch side; None requires every patch to have the most common size.
    ``sat_patch_size``: Sentinel-2 super-patch side that must fit around every patch; None requires the
    smallest one (8) to fit; the summary tells the largest side that fits around every patch.
    ``progress`` is called with (patches done, total).
    """
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source} does not exist; give a FLAIR dataset folder or a CSV list")
    try:
        nomen = get_nomenclature(nomenclature)
    except KeyError as error:
        raise ConfigError(str(error.args[0])) from None
    report = CheckReport(source)
    problems = report.problems
    layout, splits = _collect_splits(source, problems, sentinel)
    records = [r for split_records in splits.values() for r in split_records]

    metadata_path = find_dataset_file(source, METADATA_FILES)
    metadata = None
    if metadata_path is not None:
        try:
            metadata = load_aerial_metadata(metadata_path)
        except DataError as error:
            problems.append(problem_from_error(metadata_path, error))

    has_sentinel = any(r.sentinel_dir is not None for r in records)
    check_sentinel = bool(records) and (has_sentinel if sentinel is None else sentinel)
    centroids_path = find_dataset_file(source, CENTROIDS_FILES) if check_sentinel else None
    centroids = None
    if check_sentinel:
        if centroids_path is None:
            problems.append(Problem(source, f"no {CENTROIDS_FILES[0]} found at or above this folder", True))
        else:
            try:
                centroids = load_centroids(centroids_path)
            except DataError as error:
                problems.append(problem_from_error(centroids_path, error))

    workers = max_workers or min(8, (os.cpu_count() or 1) + 2)
    areas: dict[Path, _AreaInfo | None] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        if check_sentinel:
            dirs = sorted({r.sentinel_dir for r in records if r.sentinel_dir is not None})
            for sentinel_dir, (info, area_problems) in zip(dirs, pool.map(_check_area, dirs), strict=True):
                areas[sentinel_dir] = info
                problems.extend(area_problems)
        context = _Context(
            nomen, expected_size, metadata, metadata_path, centroids, areas, check_sentinel, sat_patch_size
        )
        sizes: list[tuple[int, int] | None] = []
        bands: list[int | None] = []
        fits: list[int] = []
        mask_values: set[int] = set()
        checked = pool.map(lambda r: _check_record(r, context), records)
        for done, (patch_problems, shape, fit, values) in enumerate(checked, 1):
            problems.extend(patch_problems)
            mask_values |= values
            sizes.append(None if shape is None else shape[1:])
            bands.append(None if shape is None else shape[0])
            if fit is not None:
                fits.append(fit)
            if progress is not None:
                progress(done, len(records))

    usual = Counter(s for s in sizes if s is not None).most_common(1)
    if expected_size is None and usual:
        common = usual[0][0]
        for record, size in zip(records, sizes, strict=True):
            if size is not None and size != common:
                problems.append(
                    Problem(
                        record.image,
                        f"is {size[0]}x{size[1]} pixels while most patches are "
                        f"{common[0]}x{common[1]}; patches of a batch must share a size",
                        True,
                    )
                )
    usual_bands = Counter(b for b in bands if b is not None).most_common(1)
    common_bands = usual_bands[0][0] if usual_bands else IMAGE_BANDS
    for record, count in zip(records, bands, strict=True):
        if count is not None and count != common_bands:
            expected = (
                f"FLAIR images have {IMAGE_BANDS} (R, G, B, NIR, elevation)"
                if common_bands == IMAGE_BANDS
                else f"most patches have {common_bands}"
            )
            problems.append(Problem(record.image, f"has {count} band(s), {expected}; patches must share bands", True))
    if layout == "FLAIR #2 folder":
        problems.extend(_orphan_masks(records))
    origin = _origin_problem(source, mask_values, nomen) if mask_values else None
    if origin is not None:
        problems.append(origin)
    for patch_id, count in Counter(r.patch_id for r in records).items():
        if count > 1:
            problems.append(
                Problem(
                    source, f"{count} patches are named {patch_id}; metadata and centroids are keyed by name", False
                )
            )
    problems.sort(key=lambda p: (not p.fatal, str(p.path), p.message))

    report.n_patches = len(records)
    report.n_domains = len({r.domain for r in records if r.domain is not None})
    report.n_areas = len({r.area for r in records if r.zone is not None})
    rows = [("source", str(source)), ("layout", layout)]
    for name, split_records in splits.items():
        n_masks = sum(r.mask is not None for r in split_records)
        domains = len({r.domain for r in split_records if r.domain is not None})
        areas_count = len({r.area for r in split_records if r.zone is not None})
        rows.append(
            (
                f"{name} patches",
                f"{len(split_records)} ({n_masks} with masks) in {domains} domain(s), {areas_count} area(s)",
            )
        )
    if usual:
        rows.append(("patch size", f"{usual[0][0][0]}x{usual[0][0][1]}"))
    if usual_bands and common_bands != IMAGE_BANDS:
        rows.append(
            ("bands", f"{common_bands} (FLAIR's are 5); data.channels must select bands within 1..{common_bands}")
        )
    rows.append(("nomenclature", f"{nomen.name}: {nomen.description}"))
    if mask_values:
        unlabelled = f" ({nomen.ignore_value}: unlabelled)" if nomen.ignore_value in mask_values else ""
        rows.append(("mask values", f"{', '.join(map(str, sorted(mask_values)))}{unlabelled}"))
    rows.append(("aerial metadata", str(metadata_path) if metadata_path else "not found (keep data.metadata off)"))
    if check_sentinel:
        rows.append(("Sentinel-2", f"{sum(a is not None for a in areas.values())}/{len(areas)} areas readable"))
        rows.append(("centroids", str(centroids_path) if centroids_path else "not found"))
        if fits:
            rows.append(("largest sat_patch_size", f"{min(fits)} (fits around every patch)"))
    else:
        rows.append(("Sentinel-2", "not checked" if sentinel is False else "not present"))
    rows.append(("fatal problems", str(report.n_fatal)))
    rows.append(("warnings", str(report.n_warnings)))
    report.summary = rows
    return report
