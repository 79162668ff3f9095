"""A synthetic FLAIR-HUB world: every modality of IGN's release, in its exact layout, worth learning.

Built with the FLAIR #2 world's machinery (:mod:`flairkit.synth.world` and its layout, rendering and Sentinel-2
modules): the same vector layouts, aerial looks and class calendars. Each ROI is one layout whose patches are
cut as a grid, and every modality comes from the same land cover:

- AERIAL_RGBI (0.2 m, uint8 R, G, B, NIR); AERIAL_LABEL-COSIA (0-based FLAIR-HUB classes); ALL_LABEL-LPIS
  (crop types at the 3 levels: wheat, grasses, other arable crops, vineyard, fruit orchards, background);
- DEM_ELEV (0.2 m, float32 DSM, DTM): a smooth terrain plus the rendered heights above ground;
- SPOT_RGBI (1.6 m, uint16) and AERIAL-RLT_PAN (``{DOM}-195X``, 0.4 m, uint8 grey with film grain), from the
  aerial image;
- SENTINEL2_TS (10.24 m, T x 10 uint16) and SENTINEL2_MSK-SC (T x 2 uint8 snow, cloud): the FLAIR #2 world's
  series, clouds and snow; SENTINEL1-ASC_TS and SENTINEL1-DESC_TS (T x 2 float32 VV, VH in dB) from the same
  class calendars, with speckle;
- GLOBAL_ALL_MTD: GLOBAL_ALL_MTD_SPLIT.gpkg (split_1..split_5, the domains taking turns as valid and test)
  and the three dates GeoPackages; ``csv/``: IGN's split CSVs of split_1.

**Crop types only the series tell apart.** Wheat (COSIA agricultural land) and grasses (herbaceous
vegetation) are the FLAIR #2 world's aerial twins: almost alike from the air, different over the year in
Sentinel-2 and Sentinel-1 (a winter crop harvested in July, a grassland green all year).

Generation is deterministic for a seed.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from rasterio.transform import Affine

from flairkit.data.hub.layout import (
    AERIAL_RESOLUTION,
    COSIA,
    DATES_FILES,
    LPIS,
    METADATA_FOLDER,
    MODALITIES,
    SPLIT_FILE,
    HubPatch,
    PatchId,
    dates_cell,
    patch_file,
    write_geopackage,
    write_split_csv,
)
from flairkit.data.rasters import LAMBERT93, write_raster
from flairkit.errors import ConfigError
from flairkit.nomenclature import FLAIR_CLASSES, MAX_CODE, class_code, get_nomenclature, lpis_classes
from flairkit.synth.render import ELEVATION_PER_METRE, AerialRenderer, Radiometry, ValueNoise
from flairkit.synth.sentinel import (
    ENDMEMBERS,
    acquisition_dates,
    class_fractions,
    class_mixture,
    simulate_series,
)
from flairkit.synth.world import StagingFolder, SynthOptions, focused_layout, layout_scale, patch_grid, texture_scale

SENTINEL_RESOLUTION = MODALITIES["SENTINEL2_TS"].resolution
SIDE_STEP = 256
"""Aerial patch sides are multiples of this, so that a patch spans whole Sentinel pixels (256 px = 5 x 10.24 m)."""
SPLIT_COLUMNS = tuple(f"split_{k}" for k in range(1, 6))
SPLIT_NAMES = {"train": "TRAIN", "valid": "VALID", "test": "TEST"}
ROI_LETTERS = ("AA", "AF", "AU", "FA", "FF", "FU", "NA", "NF", "NN", "UA", "UN", "UU")
CROPS = {
    "agricultural land": ("wheat", "wheat", "winter wheat"),
    "herbaceous vegetation": ("grasses", "grasses", "grasses monoculture"),
    "plowed land": ("other arable crops", "other arable crops", "other arable crops"),
    "vineyard": ("vineyard", "vineyard", "vineyard"),
    "ligneous": ("fruits orchards", "fruit orchards", "fruit orchards"),
}
"""LPIS crop type at levels 1, 2, 3 of the land-cover classes that are crops; every other class is background."""
BACKSCATTER_DB = {
    "leaves": (-9.5, -15.5),
    "needles": (-8.5, -14.0),
    "dry": (-11.5, -19.0),
    "soil": (-12.0, -21.0),
    "water": (-22.0, -29.0),
    "urban": (-3.0, -10.0),
    "snow": (-13.0, -22.0),
    "pool": (-20.0, -27.0),
    "plastic": (-7.0, -15.0),
    "dark": (-5.0, -12.0),
}
"""Sentinel-1 VV and VH backscatter (dB) of each endmember of the Sentinel-2 class mixtures."""
SPECKLE_LOOKS = 4.0
SPOT_GAIN = (4.1, 4.6, 4.2, 6.5)
"""SPOT reflectance-like values per aerial DN (R, G, B, NIR)."""
GENERATOR = "flairkit.data.hub.synth"
"""The generator name recorded in the world's metadata: the module's name before it moved to flairkit.synth,
kept so that a world stays byte-identical to one written by earlier versions."""


@dataclass
class HubSynthOptions:
    """What to generate; see :func:`synthesize_hub_world`."""

    n_domains: int = 3
    """Domains ``D0xx-YYYY``, each with its own radiometry, year and place."""
    areas_per_domain: int = 2
    """ROIs per domain; each is one layout whose patches form a grid."""
    patches_per_area: int = 4
    """Patches of an ROI (rows x cols, as square as the count allows)."""
    patch_size: int = 512
    """Aerial pixels across a patch (512 as released; a multiple of 256)."""
    seed: int = 0
    test_domains: int = 1
    """The last domains are the test split of split_1."""
    val_domains: int = 1
    """The domains before them are the valid split of split_1; the others are train."""


@dataclass
class HubSynthSummary:
    """What :func:`synthesize_hub_world` wrote."""

    root: Path
    counts: dict[str, int]
    """Patches per split of split_1 (train, valid, test)."""
    domains: dict[str, list[str]]
    """Domain-years per split of split_1."""
    csv: dict[str, Path]
    """IGN split CSV of each split of split_1."""
    metadata_dir: Path
    class_histogram: dict[int, int]
    """Pixels per COSIA value over every patch."""


@dataclass
class _Domain:
    name: str
    """``D0xx-YYYY``."""
    roles: tuple[str, ...]
    """The split of the domain in split_1..split_5."""
    radiometry: Radiometry
    s2_gain: tuple[float, ...]
    origin: tuple[float, float]
    altitude: float


@dataclass
class _Area:
    domain: _Domain
    roi: str
    first: tuple[int, int]
    """Row and column numbers of the ROI's top-left patch."""
    origin: tuple[float, float]
    """Lambert-93 (x, y) of the top-left corner of the ROI's first patch."""
    seed: np.random.SeedSequence


@dataclass
class _Written:
    patches: list[HubPatch] = field(default_factory=list)
    split_rows: list[dict[str, str]] = field(default_factory=list)
    dates_rows: dict[str, list[dict[str, str]]] = field(default_factory=lambda: {m: [] for m in DATES_FILES})
    footprints: list[dict[str, Any]] = field(default_factory=list)
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(MAX_CODE, dtype=np.int64))
    areas: list[dict[str, Any]] = field(default_factory=list)


def _validate(options: HubSynthOptions) -> None:
    checks = [
        (1 <= options.n_domains <= 95, "n_domains", "between 1 and 95"),
        (options.areas_per_domain >= 1, "areas_per_domain", "at least 1"),
        (options.patches_per_area >= 1, "patches_per_area", "at least 1"),
        (options.patch_size >= SIDE_STEP and options.patch_size % SIDE_STEP == 0, "patch_size", "a multiple of 256"),
        (options.test_domains >= 0 and options.val_domains >= 0, "test_domains/val_domains", "0 or more"),
    ]
    for ok, key, need in checks:
        if not ok:
            raise ConfigError(f"synthetic FLAIR-HUB option {key} must be {need}; got {getattr(options, key, None)!r}")
    if options.test_domains + options.val_domains >= options.n_domains:
        raise ConfigError(
            f"n_domains={options.n_domains} leaves no train domain after test_domains={options.test_domains} and "
            f"val_domains={options.val_domains}; raise n_domains or lower the others"
        )


def _roles(options: HubSynthOptions) -> list[tuple[str, ...]]:
    """Each domain's split in split_1..split_5: split_k shifts the roles of split_1 by k - 1 domains."""
    n_train = options.n_domains - options.test_domains - options.val_domains
    base = ["train"] * n_train + ["valid"] * options.val_domains + ["test"] * options.test_domains
    return [
        tuple(base[(d - k) % options.n_domains] for k in range(len(SPLIT_COLUMNS))) for d in range(options.n_domains)
    ]


def _plan(options: HubSynthOptions) -> list[_Area]:
    n_areas = options.n_domains * options.areas_per_domain
    plan_seed, *area_seeds = np.random.SeedSequence(options.seed, spawn_key=(2,)).spawn(1 + n_areas)
    rng = np.random.default_rng(plan_seed)
    departments = rng.choice(np.arange(1, 96), size=options.n_domains, replace=False)
    areas = []
    for d, (department, roles) in enumerate(zip(departments, _roles(options), strict=True)):
        domain = _Domain(
            name=f"D{int(department):03d}-{int(rng.integers(2018, 2023))}",
            roles=roles,
            radiometry=Radiometry.draw(rng),
            s2_gain=tuple(np.round(rng.uniform(0.95, 1.05, 10), 4).tolist()),
            origin=(float(rng.integers(20, 100)) * 10_000, float(rng.integers(625, 700)) * 10_000),
            altitude=float(rng.uniform(20, 1200)),
        )
        numbers = rng.choice(np.arange(1, 40), size=options.areas_per_domain, replace=False)
        for a in range(options.areas_per_domain):
            roi = f"{rng.choice(ROI_LETTERS)}-S{int(rng.integers(1, 3))}-{int(numbers[a])}"
            x = domain.origin[0] + a * 4000.0 + float(rng.integers(0, 200)) * 10
            y = domain.origin[1] - float(rng.integers(0, 300)) * 10
            first = (int(rng.integers(1, 20)), int(rng.integers(1, 20)))
            areas.append(_Area(domain, roi, first, (x, y), area_seeds[d * options.areas_per_domain + a]))
    return areas


def _lpis_table() -> np.ndarray:
    """(20, 3) LPIS values at the 3 levels of each FLAIR code."""
    levels = [lpis_classes(level) for level in (1, 2, 3)]
    table = np.array([[len(names) - 1 for names in levels]] * (MAX_CODE + 1), dtype=np.uint8)
    for name, crops in CROPS.items():
        table[class_code(name)] = [names.index(crop) for names, crop in zip(levels, crops, strict=True)]
    return table


def orbit_dates(rng: np.random.Generator, year: int) -> list[dt.date]:
    """A Sentinel-1 orbit's dates of ``year``: every 6 days from a random start, about one in ten missing."""
    start = dt.date(year, 1, 1) + dt.timedelta(days=int(rng.integers(0, 6)))
    days = [start + dt.timedelta(days=6 * k) for k in range(61)]
    return [d for d in days if d.year == year and rng.random() > 0.1]


def simulate_backscatter(
    rng: np.random.Generator, fractions: np.ndarray, dates: list[dt.date], offset_db: float
) -> np.ndarray:
    """(T, 2, H, W) float32 VV and VH (dB) of class fractions (20, H, W): class mixtures in power, with speckle."""
    doy = np.array([d.timetuple().tm_yday for d in dates], dtype=np.float64)
    power = {member: 10 ** (np.asarray(BACKSCATTER_DB[member]) / 10) for member in ENDMEMBERS}
    signatures = np.zeros((MAX_CODE + 1, len(dates), 2))
    for cls in FLAIR_CLASSES:
        for member, weight in class_mixture(cls.name, doy).items():
            signatures[cls.code] += weight[:, None] * power[member]
    mixed = np.einsum("ktp,khw->tphw", signatures, fractions.astype(np.float64))
    speckle = rng.gamma(SPECKLE_LOOKS, 1 / SPECKLE_LOOKS, mixed.shape)
    return (10 * np.log10(np.maximum(mixed * speckle, 1e-6)) + offset_db).astype(np.float32)


def _blocks(array: np.ndarray, k: int) -> np.ndarray:
    """Means of k x k blocks of a (C, H, W) array."""
    c, h, w = array.shape
    return array.reshape(c, h // k, k, w // k, k).mean(axis=(2, 4))


def _make_area(area: _Area, options: HubSynthOptions, root: Path, written: _Written) -> None:
    layout_seed, series_seed, patches_seed = area.seed.spawn(3)
    rng = np.random.default_rng(layout_seed)
    size, res = options.patch_size, AERIAL_RESOLUTION
    rows, cols = patch_grid(options.patches_per_area)
    patch_m = size * res
    # One patch of context around the ROI; every length is a whole number of Sentinel pixels.
    width, height = (cols + 2) * patch_m, (rows + 2) * patch_m
    focus = (patch_m, patch_m, patch_m * (cols + 1), patch_m * (rows + 1))
    scale = layout_scale(SynthOptions(patches_per_area=options.patches_per_area, patch_size=size))
    layout, fid = focused_layout(rng, width, height, focus, scale)
    renderer = AerialRenderer(layout, rng, texture_scale(scale), area.domain.radiometry, options.seed)
    terrain = ValueNoise(rng, rows * size, cols * size, size * 0.75)
    relief = float(rng.uniform(5, 40))

    series_rng = np.random.default_rng(series_seed)
    factor = 5
    s_h, s_w = round(height / SENTINEL_RESOLUTION), round(width / SENTINEL_RESOLUTION)
    fine = layout.codes[layout.rasterize(0.0, 0.0, SENTINEL_RESOLUTION / factor, (s_h * factor, s_w * factor))]
    fractions = class_fractions(fine, factor)
    year = int(area.domain.name[-4:])
    s2_dates = acquisition_dates(series_rng, year)
    s2, s2_masks = simulate_series(series_rng, fractions, s2_dates, np.asarray(area.domain.s2_gain, np.float32))
    # The masks flag snow land cover on every date; keep only snowfall, or IGN's filter (5% of a patch at
    # most) would drop every date of the patches holding a little snow land cover.
    permanent = np.rint(np.clip(fractions[class_code("snow")] * 100, 0, 100)).astype(np.uint8)
    s2_masks[:, 0][s2_masks[:, 0] == permanent[None]] = 0
    s1_dates = {m: orbit_dates(series_rng, year) for m in ("SENTINEL1-ASC_TS", "SENTINEL1-DESC_TS")}
    s1 = {
        m: simulate_backscatter(series_rng, fractions, dates, 0.0 if "ASC" in m else -0.7)
        for m, dates in s1_dates.items()
    }
    series_dates = {"SENTINEL2_TS": s2_dates, **s1_dates}

    hub = get_nomenclature("hub")
    lpis_table = _lpis_table()
    s_side = round(patch_m / SENTINEL_RESOLUTION)
    patch_seeds = patches_seed.spawn(rows * cols)
    domain, roi = area.domain, area.roi
    for k in range(rows * cols):
        r, c = divmod(k, cols)
        patch_id = PatchId(*domain.name.split("-"), roi, str(area.first[0] + r), str(area.first[1] + c))
        patch_rng = np.random.default_rng(patch_seeds[k])
        window = fid[r * size : (r + 1) * size, c * size : (c + 1) * size]
        image = renderer.render(window, size + r * size, size + c * size, patch_rng)
        codes = layout.codes[window]
        written.histogram += np.bincount(hub.map_mask(codes).ravel(), minlength=MAX_CODE)[:MAX_CODE]
        dtm = domain.altitude + relief * terrain.sample(r * size, c * size, size, size)
        dsm = dtm + image[4].astype(np.float32) / ELEVATION_PER_METRE
        rgbi = image[:4].astype(np.float32)
        spot = _blocks(rgbi, 8) * np.asarray(SPOT_GAIN)[:, None, None] + patch_rng.normal(
            0, 12, (4, size // 8, size // 8)
        )
        grey = 0.3 * rgbi[0] + 0.55 * rgbi[1] + 0.15 * rgbi[2]
        pan = 0.8 * _blocks(grey[None], 2) + 25 + patch_rng.normal(0, 7, (1, size // 2, size // 2))
        top, left = s_side * (1 + r), s_side * (1 + c)
        cut = (slice(None), slice(None), slice(top, top + s_side), slice(left, left + s_side))
        arrays = {
            "AERIAL_RGBI": image[:4],
            "AERIAL-RLT_PAN": np.clip(np.rint(pan), 0, 255).astype(np.uint8),
            "DEM_ELEV": np.round(np.stack([dsm, dtm]), 2).astype(np.float32),
            "SPOT_RGBI": np.clip(np.rint(spot), 0, 65535).astype(np.uint16),
            "SENTINEL2_TS": s2[cut].reshape(-1, s_side, s_side),
            "SENTINEL2_MSK-SC": s2_masks[cut].reshape(-1, s_side, s_side),
            "SENTINEL1-ASC_TS": s1["SENTINEL1-ASC_TS"][cut].reshape(-1, s_side, s_side),
            "SENTINEL1-DESC_TS": s1["SENTINEL1-DESC_TS"][cut].reshape(-1, s_side, s_side),
            COSIA: hub.map_mask(codes),
            LPIS: lpis_table[codes].transpose(2, 0, 1),
        }
        x0, y0 = round(area.origin[0] + c * patch_m, 2), round(area.origin[1] - r * patch_m, 2)
        files = {}
        for modality, array in arrays.items():
            pixel = MODALITIES[modality].resolution
            path = patch_file(root, patch_id, modality)
            write_raster(path, array, crs=LAMBERT93, transform=Affine(pixel, 0.0, x0, 0.0, -pixel, y0))
            files[modality] = path
        written.patches.append(HubPatch(str(patch_id), files))
        written.split_rows.append({"patch_id": str(patch_id), **dict(zip(SPLIT_COLUMNS, domain.roles, strict=True))})
        for modality, dates in series_dates.items():
            written.dates_rows[modality].append({"patch_id": str(patch_id), "acquisition_dates": dates_cell(dates)})
        written.footprints.append(shapely.geometry.mapping(shapely.box(x0, y0 - patch_m, x0 + patch_m, y0)))
    written.areas.append(
        {
            "domain": domain.name,
            "roi": roi,
            "grid": [rows, cols],
            "dates": {modality: len(dates) for modality, dates in series_dates.items()},
        }
    )


def synthesize_hub_world(out: Path, options: HubSynthOptions | None = None, overwrite: bool = False) -> HubSynthSummary:
    """Generate a synthetic FLAIR-HUB world into ``out`` (see the module docstring) and summarise it.

    ``out`` must not exist or be empty, unless ``overwrite``; the world is written into a temporary sibling
    folder that replaces ``out`` only once complete.
    """
    options = options or HubSynthOptions()
    _validate(options)
    out = Path(out)
    areas = _plan(options)
    written = _Written()
    with StagingFolder(out, overwrite) as tmp:
        for area in areas:
            _make_area(area, options, tmp, written)
        metadata = tmp / METADATA_FOLDER
        write_geopackage(metadata / SPLIT_FILE, written.split_rows, written.footprints, "EPSG:2154")
        for modality, name in DATES_FILES.items():
            write_geopackage(metadata / name, written.dates_rows[modality], written.footprints, "EPSG:2154")
        roles = {row["patch_id"]: row["split_1"] for row in written.split_rows}
        csv_paths = {}
        for role, suffix in SPLIT_NAMES.items():
            patches = [p for p in written.patches if roles[p.patch_id] == role]
            if patches:
                name = f"csv/FLAIR-HUB_SYNTH-DATASET_{suffix}.csv"
                write_split_csv(tmp / name, patches)
                csv_paths[role] = out / name
        domains = {role: sorted({a.domain.name for a in areas if a.domain.roles[0] == role}) for role in SPLIT_NAMES}
        world = {
            "generator": GENERATOR,
            "options": asdict(options),
            "domains": [
                {"name": a.domain.name, "splits": dict(zip(SPLIT_COLUMNS, a.domain.roles, strict=True))}
                for a in areas[:: options.areas_per_domain]
            ],
            "areas": written.areas,
            "crops": {name: list(crops) for name, crops in CROPS.items()},
            "series_twins": ["wheat (agricultural land)", "grasses (herbaceous vegetation)"],
        }
        (tmp / "world.json").write_text(json.dumps(world, indent=1) + "\n", encoding="utf-8")
    return HubSynthSummary(
        root=out,
        counts={role: sum(r == role for r in roles.values()) for role in SPLIT_NAMES},
        domains=domains,
        csv=csv_paths,
        metadata_dir=out / METADATA_FOLDER,
        class_histogram={value: int(count) for value, count in enumerate(written.histogram)},
    )
