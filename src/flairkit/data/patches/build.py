"""``flair data patches``: cut orthophotos and labels into a FLAIR-layout dataset, split by area.

Layout written in ``out`` (the layout :mod:`flairkit.data.synth` writes and flairkit reads)::

    flair_aerial_train/<D>/<Z>/img/IMG_<id>.tif    train and val areas: the selected bands of the imagery, uint8
    flair_labels_train/<D>/<Z>/msk/MSK_<id>.tif    one band uint8 of the nomenclature's mask values; unlabelled
                                                   pixels hold its ignore value (0, or 255 when 0 is a class value)
    flair_2_aerial_test/..., flair_2_labels_test/...   test areas
    train.csv, val.csv, test.csv                   FLAIR-1 path lists (no header, relative paths, CRLF)
    flair_aerial_metadata.json                     only when the acquisition (camera, date, time, altitude) is given
    patches_report.json, patches_report.md         class frequencies per split, areas, notes, every patch

``<D>`` is ``D<nnn>_<year>``, one domain per input file (a mosaic of tiles is best given as one VRT); ``<Z>`` is
``Z<n>_<letters of the area's name>``, one zone per area. Patches are cut on a grid of each input (``stride``
apart, whole patches only) and belong to the area holding their centre. ``balanced`` sampling picks, among those
patches, one at a time from the class with the fewest pixels so far. A patch with no labelled pixel (or fewer
than ``min_labelled``) is left out, so an area without labels is skipped, and said so.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from rasterio.transform import Affine, array_bounds

from flairkit.atomic import atomic_folder, check_folder_free
from flairkit.data.discovery import METADATA_FILES, PatchRecord, make_record, write_csv_list
from flairkit.data.metadata import encode_metadata
from flairkit.data.patches.areas import SPLITS, Areas, FileAreas, GridAreas, split_areas, zone_name
from flairkit.data.patches.labels import Labels, open_labels
from flairkit.data.patches.report import class_frequencies, frequency_markdown
from flairkit.data.patches.vectors import note
from flairkit.data.rasters import write_raster
from flairkit.data.scenes import InputRaster, SceneReader, Span, expand_inputs, inspect_input
from flairkit.errors import ConfigError, DataError
from flairkit.nomenclature import INVALID_TARGET, Nomenclature, get_nomenclature

SPLIT_FOLDERS = {
    "train": ("flair_aerial_train", "flair_labels_train"),
    "val": ("flair_aerial_train", "flair_labels_train"),
    "test": ("flair_2_aerial_test", "flair_2_labels_test"),
}
"""(images, masks) root folders of each split, as in the FLAIR #2 release and the synthetic worlds."""
METADATA_FILE = METADATA_FILES[0]
REPORT_FILE = "patches_report.json"
REPORT_MARKDOWN = "patches_report.md"
Sampling = Literal["grid", "balanced"]
Progress = Callable[[str, int, int], None]
"""Called with (stage, done, total): stage ``scanning`` (patch positions of an input), then ``writing``."""


@dataclass
class PatchOptions:
    """How :func:`make_patches` cuts a dataset."""

    nomenclature: str = "15cl"
    """A built-in nomenclature or the path of a nomenclature YAML: the classes the masks hold."""
    patch_size: int = 512
    stride: int | None = None
    """Pixels between patch origins (default: the patch size: patches side by side)."""
    sampling: Sampling = "grid"
    """grid: every patch with labels; balanced: max_patches picked one at a time from the rarest class so far."""
    max_patches: int | None = None
    """At most this many patches, shared between the splits as their patches are (required by balanced)."""
    min_labelled: float = 0.0
    """Share of a patch's pixels that must be labelled (a patch with no labelled pixel is always left out)."""
    bands: list[int] | None = None
    """1-based bands of the imagery to write (default: all)."""
    class_field: str | None = None
    """Polygons: the attribute holding each polygon's class."""
    layer: str | None = None
    """Polygons: the layer of a multi-layer file."""
    mapping: Path | None = None
    """Mapping table from label values to class codes or names (CSV value,class or YAML/JSON)."""
    labels_start_at: int | None = None
    """0 or 1: where label values start (default: detected)."""
    background: str | None = None
    """Polygons: the class of pixels no polygon covers (default: unlabelled)."""
    areas: Path | None = None
    """Polygons of the areas (zones); default: a grid of grid_km."""
    area_field: str | None = None
    """The attribute naming each area."""
    split_field: str | None = None
    """An attribute of the areas holding train, val or test (empty: drawn)."""
    areas_layer: str | None = None
    grid_km: float = 1.0
    """Side of the grid cells used as areas when no areas file is given."""
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    """Shares of patches for train, val and test, drawn by area."""
    seed: int = 2022
    year: int | None = None
    """Acquisition year in the domain names (default: the date's, else 0000)."""
    camera: str | None = None
    date: str | None = None
    """Acquisition date, YYYY-MM-DD."""
    time: str | None = None
    """Acquisition time, HHhMM."""
    altitude: float | None = None
    """Mean ground altitude (m) of the patches, for the aerial metadata."""


@dataclass
class PatchSummary:
    """What :func:`make_patches` wrote."""

    root: Path
    counts: dict[str, int]
    """Patches per split."""
    areas: dict[str, list[str]]
    """Area names per split."""
    csv: dict[str, Path]
    report: Path
    report_markdown: Path
    metadata: Path | None
    frequencies: list[dict[str, Any]]
    """Class frequency rows (see :func:`flairkit.data.patches.report.class_frequencies`)."""
    channels: list[int]
    nomenclature: str
    notes: list[str] = field(default_factory=list)


@dataclass
class _Candidate:
    source: int
    row: int
    col: int
    area: str
    histogram: np.ndarray
    """Pixels per target (256 bins, 255: unlabelled)."""


def _validate(options: PatchOptions) -> None:
    checks = [
        (options.patch_size >= 16, "patch_size (--patch-size)", "at least 16 pixels"),
        (options.stride is None or options.stride >= 1, "stride (--stride)", "at least 1 pixel"),
        (options.sampling in ("grid", "balanced"), "sampling (--sampling)", "grid or balanced"),
        (options.max_patches is None or options.max_patches >= 1, "max_patches (--max-patches)", "at least 1"),
        (0 <= options.min_labelled <= 1, "min_labelled (--min-labelled)", "a share between 0 and 1"),
        (options.labels_start_at in (None, 0, 1), "labels_start_at (--labels-start-at)", "0 or 1"),
        (options.grid_km > 0, "grid_km (--grid-km)", "a positive number of kilometres"),
        (len(options.split) == 3 and all(s >= 0 for s in options.split), "split (--split)", "3 shares >= 0"),
        (options.year is None or 0 <= options.year <= 9999, "year (--year)", "a year such as 2021"),
    ]
    for ok, key, need in checks:
        if not ok:
            raise ConfigError(f"{key} must be {need}")
    if options.split[0] <= 0:
        raise ConfigError("split (--split): the train share must be positive, e.g. 0.7,0.15,0.15")
    if options.sampling == "balanced" and options.max_patches is None:
        raise ConfigError("sampling=balanced picks max_patches (--max-patches) patches; give how many")
    if options.areas is None and (options.area_field or options.split_field or options.areas_layer):
        raise ConfigError("area_field, split_field and areas_layer apply to an areas file (--areas)")
    if options.bands is not None and (not options.bands or len(set(options.bands)) != len(options.bands)):
        raise ConfigError(f"bands (--bands) must list distinct 1-based bands, got {options.bands}")
    if options.date is not None:
        try:
            dt.date.fromisoformat(options.date)
        except ValueError:
            raise ConfigError(f"date (--date) must be YYYY-MM-DD, e.g. 2021-06-14; got {options.date!r}") from None


def _nomenclature(name: str) -> Nomenclature:
    try:
        return get_nomenclature(name)
    except KeyError as error:
        raise ConfigError(str(error.args[0])) from None


def _refuse_inside(out: Path, paths: Sequence[Path]) -> None:
    """Refuse inputs inside ``out``: the finished dataset replaces the whole folder."""
    folder = Path(os.path.abspath(out))
    for path in paths:
        if folder in Path(os.path.abspath(path)).parents:
            raise DataError(
                f"{path} lies in the output folder {out}, which the dataset replaces; choose another output folder"
            )


def _inspect(files: Sequence[Path], bands: list[int] | None, notes: list[str]) -> tuple[list[InputRaster], list[int]]:
    """Check every input; the bands to write (default: all the first input's)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = inspect_input(files[0], bands or [1])
        channels = bands or list(range(1, first.count + 1))
        rasters = []
        for path in files:
            raster = inspect_input(path, channels)
            if bands is None and raster.count != first.count:
                raise DataError(
                    f"{path}: has {raster.count} bands but {files[0]} has {first.count}; choose the bands to "
                    "write (--bands 1,2,3)"
                )
            rasters.append(raster)
    for warning in caught:
        note(notes, str(warning.message))
    return rasters, channels


def _acquisition(options: PatchOptions, notes: list[str]) -> dict[str, Any] | None:
    """The acquisition fields of the aerial metadata, when all are given; None (said so) otherwise."""
    given = {"camera": options.camera, "date": options.date, "time": options.time, "altitude": options.altitude}
    missing = [f"--{key}" for key, value in given.items() if value is None]
    if missing:
        notes.append(
            f"aerial metadata not written: {', '.join(m.lstrip('-') for m in missing)} unknown (give "
            f"{', '.join(missing)}); patch centres are in {REPORT_FILE}; keep data.metadata=false"
        )
        return None
    entry = {
        "patch_centroid_z": float(options.altitude),  # type: ignore[arg-type]
        "camera": options.camera,
        "date": options.date,
        "time": options.time,
    }
    try:
        encode_metadata({"patch_centroid_x": 0.0, "patch_centroid_y": 0.0, **entry})
    except DataError as error:
        raise ConfigError(f"acquisition metadata (--camera, --date, --time, --altitude): {error}") from None
    return entry


def _year(options: PatchOptions) -> int:
    if options.year is not None:
        return options.year
    return int(options.date[:4]) if options.date else 0


def _patch_transform(raster: InputRaster, row: int, col: int) -> Affine:
    return raster.transform @ Affine.translation(col, row)


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _bounds(raster: InputRaster) -> tuple[float, float, float, float]:
    return tuple(array_bounds(raster.height, raster.width, raster.transform))  # type: ignore[return-value]


def _scan(
    rasters: Sequence[InputRaster],
    labels: Labels,
    areas: Areas,
    nomenclature: Nomenclature,
    options: PatchOptions,
    notes: list[str],
    progress: Progress | None,
) -> tuple[list[_Candidate], set[str]]:
    """Every patch position with labels, and the names of the areas any position fell in."""
    size = options.patch_size
    stride = options.stride or size
    needed = max(1, int(np.ceil(options.min_labelled * size * size)))
    outside_unlabelled = labels.fill == nomenclature.ignore_value
    candidates: list[_Candidate] = []
    reached: set[str] = set()
    overlapping = 0
    for index, raster in enumerate(rasters):
        image_bounds = _bounds(raster)
        label_bounds = labels.bounds_in(raster.crs)
        if outside_unlabelled and not _overlap(image_bounds, label_bounds):
            notes.append(f"{raster.path}: does not overlap the labels {labels.path}: skipped")
            continue
        overlapping += 1
        if not areas.intersects(raster.crs, image_bounds):
            notes.append(f"{raster.path}: lies in no area of {options.areas}: skipped")
            continue
        rows = np.arange(0, raster.height - size + 1, stride)
        cols = np.arange(0, raster.width - size + 1, stride)
        if not rows.size or not cols.size:
            notes.append(f"{raster.path}: {raster.width}x{raster.height} px holds no whole {size} px patch: skipped")
            continue
        grid_rows, grid_cols = (a.ravel() for a in np.meshgrid(rows, cols, indexing="ij"))
        t = raster.transform
        names = areas.names_at(raster.crs, t.c + (grid_cols + size / 2) * t.a, t.f + (grid_rows + size / 2) * t.e)
        for done, (row, col, name) in enumerate(zip(grid_rows.tolist(), grid_cols.tolist(), names, strict=True), 1):
            if progress is not None:
                progress("scanning", done, len(names))
            if name is None:
                continue
            reached.add(name)
            transform = _patch_transform(raster, row, col)
            patch_bounds = tuple(array_bounds(size, size, transform))
            if outside_unlabelled and not _overlap(patch_bounds, label_bounds):
                continue
            mask = labels.read(raster.crs, transform, (size, size))
            histogram = np.bincount(nomenclature.map_mask(mask).ravel(), minlength=256)
            if size * size - histogram[INVALID_TARGET] >= needed:
                candidates.append(_Candidate(index, row, col, name, histogram))
    if not overlapping:
        shown = "; ".join(
            f"{r.path}: {tuple(round(v, 2) for v in _bounds(r))} in {r.crs.to_string()}" for r in rasters[:3]
        )
        label_bounds = tuple(round(v, 2) for v in labels.bounds_in(rasters[0].crs))
        raise DataError(
            f"{labels.path}: the labels (bounds {label_bounds} in {rasters[0].crs.to_string()}) do not overlap any "
            f"orthophoto ({shown}); check that both cover the same place and that their CRS are declared right"
        )
    return candidates, reached


def _balanced(candidates: Sequence[_Candidate], enabled: list[int], budget: int, size: int, seed: int) -> list[int]:
    """Indices of ``budget`` candidates picked one at a time: the one with the most pixels of the class with the
    fewest pixels picked so far. Candidates that overlap a picked one are dropped."""
    order = np.random.default_rng(seed).permutation(len(candidates))
    pixels = np.stack([candidates[i].histogram[enabled] for i in order]).astype(np.int64)
    where = np.array([(candidates[i].source, candidates[i].row, candidates[i].col) for i in order])
    available = np.ones(len(order), dtype=bool)
    totals = np.zeros(len(enabled), dtype=np.int64)
    picked: list[int] = []
    while len(picked) < budget and available.any():
        present = (pixels[available] > 0).any(axis=0)
        if present.any():
            rarest = int(np.argmin(np.where(present, totals, np.iinfo(np.int64).max)))
            best = int(np.argmax(np.where(available, pixels[:, rarest], -1)))
        else:
            best = int(np.argmax(available))
        picked.append(int(order[best]))
        totals += pixels[best]
        same_source = where[:, 0] == where[best, 0]
        close = (np.abs(where[:, 1] - where[best, 1]) < size) & (np.abs(where[:, 2] - where[best, 2]) < size)
        available &= ~(same_source & close)
    return picked


def _select(
    candidates: list[_Candidate], split_of: dict[str, str], nomenclature: Nomenclature, options: PatchOptions
) -> list[_Candidate]:
    """The candidates to write: all of them, or ``max_patches`` shared between splits as their candidates are."""
    if options.max_patches is None or (options.sampling == "grid" and options.max_patches >= len(candidates)):
        return candidates
    chosen: list[_Candidate] = []
    for n, split in enumerate(SPLITS):
        members = [c for c in candidates if split_of[c.area] == split]
        if not members:
            continue
        budget = max(1, round(options.max_patches * len(members) / len(candidates)))
        if options.sampling == "balanced":
            picks = _balanced(members, nomenclature.enabled, budget, options.patch_size, options.seed + n)
        else:
            rng = np.random.default_rng(options.seed + n)
            picks = rng.choice(len(members), size=min(budget, len(members)), replace=False).tolist()
        chosen.extend(members[i] for i in picks)
    return sorted(chosen, key=lambda c: (c.source, c.row, c.col))


def _write(
    tmp: Path,
    chosen: Sequence[_Candidate],
    rasters: Sequence[InputRaster],
    channels: list[int],
    labels: Labels,
    nomenclature: Nomenclature,
    places: dict[str, tuple[str, str]],
    domains: list[str],
    options: PatchOptions,
    progress: Progress | None,
) -> tuple[dict[str, list[PatchRecord]], dict[str, np.ndarray], list[dict[str, Any]], int]:
    """Write the chosen patches: records and target histograms per split, patch descriptions, patches left out."""
    size = options.patch_size
    needed = max(1, int(np.ceil(options.min_labelled * size * size)))
    records: dict[str, list[PatchRecord]] = {split: [] for split in SPLITS}
    pixels = {split: np.zeros(256, dtype=np.int64) for split in SPLITS}
    patches: list[dict[str, Any]] = []
    missing_imagery = 0
    readers: dict[int, SceneReader] = {}
    try:
        for done, candidate in enumerate(chosen, 1):
            raster = rasters[candidate.source]
            if candidate.source not in readers:
                readers[candidate.source] = SceneReader(raster, channels)
            reader = readers[candidate.source]
            rows, cols = Span(candidate.row, candidate.row + size), Span(candidate.col, candidate.col + size)
            image = reader.read_region(rows, cols, "zero")
            transform = _patch_transform(raster, candidate.row, candidate.col)
            mask = labels.read(raster.crs, transform, (size, size))
            valid = reader.valid(rows, cols, image)
            if valid is not None:
                mask[~valid] = nomenclature.ignore_value
            histogram = np.bincount(nomenclature.map_mask(mask).ravel(), minlength=256)
            if size * size - histogram[INVALID_TARGET] < needed:
                missing_imagery += 1
                continue
            split, zone = places[candidate.area]
            aerial_root, labels_root = SPLIT_FOLDERS[split]
            patch_id = f"{len(patches) + 1:06d}"
            domain = domains[candidate.source]
            image_path = tmp / aerial_root / domain / zone / "img" / f"IMG_{patch_id}.tif"
            mask_path = tmp / labels_root / domain / zone / "msk" / f"MSK_{patch_id}.tif"
            write_raster(image_path, image, crs=raster.crs, transform=transform)
            write_raster(mask_path, mask, crs=raster.crs, transform=transform)
            records[split].append(make_record(image_path, mask_path))
            pixels[split] += histogram
            x, y = transform @ (size / 2, size / 2)
            patches.append(
                {
                    "id": f"IMG_{patch_id}",
                    "split": split,
                    "domain": domain,
                    "zone": zone,
                    "area": candidate.area,
                    "source": str(raster.path),
                    "window": [candidate.col, candidate.row, size, size],
                    "patch_centroid_x": round(x, 3),
                    "patch_centroid_y": round(y, 3),
                }
            )
            if progress is not None:
                progress("writing", done, len(chosen))
    finally:
        for reader in readers.values():
            reader.close()
    return records, pixels, patches, missing_imagery


def make_patches(
    images: Sequence[Path],
    labels: Path,
    out: Path,
    options: PatchOptions | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> PatchSummary:
    """Cut orthophotos ``images`` (files or folders) and ``labels`` (a label raster, or polygons) into a FLAIR-layout
    dataset in ``out``, split by area (see the module docstring).

    ``out`` must not exist or be empty, unless ``overwrite``; it is written in a temporary sibling folder that
    replaces it only once complete. Raises :class:`DataError` rather than write an empty dataset.
    """
    options = options or PatchOptions()
    _validate(options)
    nomenclature = _nomenclature(options.nomenclature)
    out = Path(out)
    check_folder_free(out, overwrite)
    files = expand_inputs(images)
    notes: list[str] = []
    rasters, channels = _inspect(files, options.bands, notes)
    inputs = [*(s for r in rasters for s in r.sources), Path(labels)]
    _refuse_inside(out, inputs + [p for p in (options.areas, options.mapping) if p is not None])
    acquisition = _acquisition(options, notes)
    label_source = open_labels(
        labels,
        nomenclature,
        class_field=options.class_field,
        layer=options.layer,
        mapping=options.mapping,
        start=options.labels_start_at,
        background=options.background,
        notes=notes,
    )
    try:
        if options.areas is not None:
            areas: Areas = FileAreas(options.areas, options.area_field, options.split_field, options.areas_layer, notes)
        else:
            areas = GridAreas(options.grid_km)
        candidates, reached = _scan(rasters, label_source, areas, nomenclature, options, notes, progress)
        sizes: dict[str, int] = {}
        for candidate in candidates:
            sizes[candidate.area] = sizes.get(candidate.area, 0) + 1
        unlabelled = sorted(reached - set(sizes))
        if unlabelled:
            shown = ", ".join(unlabelled[:10]) + (f" (and {len(unlabelled) - 10} more)" if len(unlabelled) > 10 else "")
            notes.append(f"{len(unlabelled)} area(s) hold no patch with labels: skipped ({shown})")
        if not candidates:
            raise DataError(
                f"no patch of {options.patch_size} px holds labelled pixels (min_labelled={options.min_labelled}) in "
                f"the {len(reached)} area(s) the orthophotos reach; check that the labels {labels} cover the areas, "
                "or lower --patch-size / --min-labelled"
            )
        split_of = split_areas(sizes, options.split, options.seed, areas.fixed)
        chosen = _select(candidates, split_of, nomenclature, options)
        names = sorted({c.area for c in chosen})
        places = {name: (split_of[name], zone_name(i, name)) for i, name in enumerate(names, 1)}
        year = _year(options)
        domains = [f"D{i:03d}_{year:04d}" for i in range(1, len(rasters) + 1)]
        with atomic_folder(out, overwrite) as tmp:
            records, pixels, patches, missing = _write(
                tmp, chosen, rasters, channels, label_source, nomenclature, places, domains, options, progress
            )
            if missing:
                notes.append(f"{missing} patch(es) left out: their imagery is missing (nodata) where they had labels")
            if not patches:
                raise DataError("every patch with labels has missing imagery (nodata); check the orthophotos")
            summary = _finish(
                tmp,
                out,
                records,
                pixels,
                patches,
                places,
                domains,
                rasters,
                channels,
                acquisition,
                nomenclature,
                labels,
                options,
                notes,
            )
    finally:
        label_source.close()
    return summary


def _finish(
    tmp: Path,
    out: Path,
    records: dict[str, list[PatchRecord]],
    pixels: dict[str, np.ndarray],
    patches: list[dict[str, Any]],
    places: dict[str, tuple[str, str]],
    domains: list[str],
    rasters: Sequence[InputRaster],
    channels: list[int],
    acquisition: dict[str, Any] | None,
    nomenclature: Nomenclature,
    labels: Path,
    options: PatchOptions,
    notes: list[str],
) -> PatchSummary:
    """Write the CSV lists, the metadata and the report in ``tmp`` (the future ``out``)."""
    present = [split for split in SPLITS if records[split]]
    for split in SPLITS:
        if options.split[SPLITS.index(split)] > 0 and split not in present:
            notes.append(f"the {split} split is empty: every patch of its areas was left out")
    csv_paths = {}
    for split in present:
        write_csv_list(tmp / f"{split}.csv", records[split])
        csv_paths[split] = out / f"{split}.csv"
    metadata_path = None
    if acquisition is not None:
        entries = {
            p["id"]: {
                "domain": p["domain"],
                "zone": p["zone"],
                "patch_centroid_x": p["patch_centroid_x"],
                "patch_centroid_y": p["patch_centroid_y"],
                **acquisition,
            }
            for p in patches
        }
        (tmp / METADATA_FILE).write_text(json.dumps(entries, indent=1) + "\n", encoding="utf-8")
        metadata_path = out / METADATA_FILE
        crs = {r.crs.to_string() for r in rasters}
        if crs != {"EPSG:2154"}:
            notes.append(f"aerial metadata: patch centres are in {', '.join(sorted(crs))}, not Lambert-93 as FLAIR's")
    counts = {split: len(records[split]) for split in present}
    area_names = {split: sorted({p["area"] for p in patches if p["split"] == split}) for split in present}
    frequencies = class_frequencies(nomenclature, {split: pixels[split] for split in present})
    report = {
        "generator": "flairkit.data.patches",
        "inputs": [
            {"path": str(r.path), "domain": d, "crs": r.crs.to_string(), "resolution": list(r.resolution)}
            for r, d in zip(rasters, domains, strict=True)
        ],
        "labels": str(labels),
        "nomenclature": {
            "name": nomenclature.name,
            "source": options.nomenclature,
            "ignore_value": nomenclature.ignore_value,
        },
        "channels": channels,
        "options": {key: (str(v) if isinstance(v, Path) else v) for key, v in asdict(options).items()},
        "patches_per_split": counts,
        "class_frequencies": frequencies,
        "areas": [
            {"name": name, "zone": zone, "split": split, "patches": sum(p["area"] == name for p in patches)}
            for name, (split, zone) in places.items()
        ],
        "notes": notes,
        "patches": patches,
    }
    (tmp / REPORT_FILE).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    markdown = frequency_markdown(frequencies, counts, {split: len(area_names[split]) for split in present})
    notes_text = "".join(f"- {n}\n" for n in notes)
    (tmp / REPORT_MARKDOWN).write_text(
        f"# Patches of {out.name}\n\nNomenclature `{nomenclature.name}`, bands {channels}.\n\n{markdown}"
        + (f"\n## Notes\n\n{notes_text}" if notes else ""),
        encoding="utf-8",
    )
    return PatchSummary(
        root=out,
        counts=counts,
        areas=area_names,
        csv=csv_paths,
        report=out / REPORT_FILE,
        report_markdown=out / REPORT_MARKDOWN,
        metadata=metadata_path,
        frequencies=frequencies,
        channels=channels,
        nomenclature=options.nomenclature,
        notes=notes,
    )
