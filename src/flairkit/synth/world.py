"""A synthetic FLAIR world: aerial patches, masks, metadata, Sentinel-2 super-areas and orthophotos.

The world is written with the exact file layout and formats of the FLAIR #2 release (see
``flair-compat.md`` sections 1-2), so every reader, trainer and checker of flairkit runs on it; it is also a
world worth learning: structured land cover (parcels, road network, houses with gardens and pools, forests,
vineyards in rows, plowed furrows, ponds, greenhouses...) with per-class colours, textures and heights, and
per-domain radiometric shifts. Feature sizes are real metres at 0.2 m pixels when an area is at least
1024 px across; smaller areas shrink the layout (not the textures below 0.5) so that every area still holds
every class. All 19 classes (a little snow, and a little of the four classes the 15-class nomenclature
disables: clear cut, mixed, ligneous, other) are placed in every area, so every split holds every class;
the layout is redrawn a few times when an area is too small to show them all, and the area then keeps
the layout that shows the most.

**Aerial twins.** *Agricultural land* and *herbaceous vegetation* look almost alike from the air (same
colours within a few DN, same grain, both about 0.3 m high; agricultural land only has faint 3 m drill
rows) but differ clearly over the year in Sentinel-2: herbaceous vegetation stays green (NDVI about 0.6 all
year) while agricultural land is a winter crop, green in spring, ripe in June, harvested in July and bare
until autumn. An aerial-only model confuses them; a model that also reads the time series can separate them.

Layout in ``out`` (``<D>`` = ``D0xx_YYYY`` domain, ``<Z>`` = ``Z<n>_<AA>`` area)::

    flair_aerial_train/<D>/<Z>/img/IMG_<id>.tif    train and val domains (5-band uint8 R,G,B,NIR,nDSM)
    flair_labels_train/<D>/<Z>/msk/MSK_<id>.tif    (1-band uint8 codes 1..19)
    flair_sen_train/<D>/<Z>/sen/SEN2_sp_<D>-<Z>_{data.npy,masks.npy,products.txt}
    flair_2_aerial_test/..., flair_2_labels_test/..., flair_2_sen_test/...   test domains
    flair_aerial_metadata.json, flair-2_centroids_sp_to_patch.json
    train.csv, val.csv, test.csv                   FLAIR-1 lists (no header, relative paths, CRLF)
    orthophotos/ORTHO_<i>.tif, orthophotos/LABELS_<i>.tif
    orthophotos/ORTHO_<i>_{RVB,IRC,DSM,DTM}.tif   with ``products``: the same as separate products
    world.json, README.txt

Generation is deterministic for a seed: the same options give byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.transform import Affine
from rasterio.windows import Window

from flairkit.data.rasters import AERIAL_RESOLUTION, LAMBERT93, write_raster
from flairkit.errors import ConfigError, OutputExistsError
from flairkit.nomenclature import FLAIR_CLASSES, MAX_CODE
from flairkit.synth.layout import LOT_SPACING, Layout, build_layout
from flairkit.synth.products import write_products
from flairkit.synth.render import AerialRenderer, Radiometry
from flairkit.synth.sentinel import (
    S2_RESOLUTION,
    acquisition_dates,
    class_fractions,
    product_names,
    simulate_series,
)

SPLIT_FOLDERS = {
    "train": ("flair_aerial_train", "flair_labels_train", "flair_sen_train"),
    "val": ("flair_aerial_train", "flair_labels_train", "flair_sen_train"),
    "test": ("flair_2_aerial_test", "flair_2_labels_test", "flair_2_sen_test"),
}
SPLITS = ("train", "val", "test")
METADATA_FILE = "flair_aerial_metadata.json"
CENTROIDS_FILE = "flair-2_centroids_sp_to_patch.json"
UCE_CAMERAS = ("UCE-M3-f100-s06", "UCE-M3-f120-s06", "UCE-M1-f100-s05")
OTHER_CAMERA = "DMC-III-f92-s03"
ZONE_LETTERS = ("UA", "UN", "UU", "AA", "AF", "AU", "NF", "NN", "FA", "FN")
FULL_SCALE_SIDE = 1024
"""An area at least this many pixels across has real-size features (scale 1)."""
MIN_SCALE = 1 / 16
LAYOUT_ATTEMPTS = 12
ORTHO_BLOCK = 1024
ORTHO_MAX_LOTS_ACROSS = 200
GENERATOR = "flairkit.data.synth"
"""The generator name recorded in world.json and README.txt: the module's name before it moved to
flairkit.synth, kept so that a world stays byte-identical to one written by earlier versions."""


@dataclass
class SynthOptions:
    """What to generate; see :func:`synthesize_world`."""

    n_domains: int = 4
    """Domains ``D0xx_YYYY``, each with its own radiometric shift, year, camera and place."""
    areas_per_domain: int = 2
    """Areas ``Z<n>_<AA>`` per domain; each is one contiguous canvas with its Sentinel-2 super-area."""
    patches_per_area: int = 6
    """Patches of an area, cut as a contiguous grid (rows x cols, as square as the count allows)."""
    patch_size: int = 512
    seed: int = 0
    sentinel: bool = True
    sat_patch_size: int = 40
    """The super-area is large enough for a crop of this side around every patch centre."""
    n_orthos: int = 1
    ortho_size: int = 4096
    """Side in pixels of each large orthophoto (0 = none)."""
    products: bool = False
    """Also write each orthophoto as separate RVB, IRC, DSM and DTM products (see :mod:`flairkit.synth.products`)."""
    products_crs: str | None = None
    """CRS of the products (default the orthophoto's), e.g. EPSG:3857: assembling them then warps between CRSs."""
    products_resolution: float | None = None
    """Pixel size of the RVB, IRC and DSM products in their CRS's units (default 0.2; the DTM stays at 1)."""
    test_domains: int = 1
    """The last domains form the test split."""
    val_domains: int = 1
    """The domains before them form the val split; the others are train."""
    workers: int = 1
    """Processes generating areas in parallel (the output does not depend on it)."""
    domain_shift: float = 1.0
    """Strength of the radiometric differences between domains: each domain's departure from no shift (gain 1,
    offset 0) is multiplied by it; 1 is the default world, 3 gives brightness changes of about ±40% between domains."""


@dataclass
class SynthSummary:
    """What :func:`synthesize_world` wrote."""

    root: Path
    counts: dict[str, int]
    """Patches per split."""
    domains: dict[str, list[str]]
    """Domain names per split."""
    csv: dict[str, Path]
    """FLAIR-1 path list of each non-empty split."""
    metadata: Path
    centroids: Path | None
    orthos: list[tuple[Path, Path]]
    """(image, labels) of each orthophoto."""
    class_histogram: dict[int, int]
    """Pixels per FLAIR code over all patch masks."""
    split_histograms: dict[str, dict[int, int]] = field(default_factory=dict)


@dataclass
class _Domain:
    name: str
    split: str
    year: int
    camera: str
    radiometry: Radiometry
    s2_gain: tuple[float, ...]
    tile: str
    origin: tuple[float, float]
    altitude: float


@dataclass
class _AreaJob:
    domain: _Domain
    zone: str
    index: int
    seed: np.random.SeedSequence
    patch_ids: list[int]
    grid: tuple[int, int]
    origin: tuple[float, float]
    """Lambert-93 (x, y) of the top-left corner of the area's aerial canvas."""
    buffer: int
    """Sentinel-2 pixels between the super-area border and the aerial canvas."""
    date: dt.date
    start_seconds: int


@dataclass
class _AreaResult:
    metadata: dict[str, dict[str, Any]]
    centroids: dict[str, list[int]]
    rows: list[tuple[str, str]]
    histogram: np.ndarray
    info: dict[str, Any]


def _validate(options: SynthOptions) -> None:
    checks = [
        (options.n_domains >= 1 and options.n_domains <= 95, "n_domains", "between 1 and 95"),
        (options.areas_per_domain >= 1, "areas_per_domain", "at least 1"),
        (options.patches_per_area >= 1, "patches_per_area", "at least 1"),
        (options.patch_size >= 16, "patch_size", "at least 16 pixels"),
        (options.sat_patch_size >= 2, "sat_patch_size", "at least 2 Sentinel-2 pixels"),
        (options.n_orthos >= 0, "n_orthos", "0 or more"),
        (options.ortho_size == 0 or options.ortho_size >= 16, "ortho_size", "0 (no orthophoto) or at least 16"),
        (options.test_domains >= 0 and options.val_domains >= 0, "test_domains/val_domains", "0 or more"),
        (options.workers >= 1, "workers", "at least 1"),
        (0 <= options.domain_shift <= 5, "domain_shift", "between 0 (no shift) and 5 (gains stay positive)"),
    ]
    for ok, key, need in checks:
        if not ok:
            raise ConfigError(f"synthetic world option {key} must be {need}; got {getattr(options, key, None)!r}")
    if options.test_domains + options.val_domains >= options.n_domains:
        raise ConfigError(
            f"n_domains={options.n_domains} leaves no train domain after test_domains={options.test_domains} and "
            f"val_domains={options.val_domains}; raise n_domains or lower the others"
        )


def patch_grid(n: int) -> tuple[int, int]:
    """(rows, cols) of an area's patch grid: the most square factorisation of ``n``."""
    rows = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return rows, n // rows


def layout_scale(options: SynthOptions) -> float:
    """Factor applied to feature sizes (1 = real sizes), set by the smaller side of an area."""
    rows, cols = patch_grid(options.patches_per_area)
    return float(np.clip(min(rows, cols) * options.patch_size / FULL_SCALE_SIDE, MIN_SCALE, 1.0))


def texture_scale(scale: float) -> float:
    """Factor applied to texture sizes (crowns, rows): like the layout's but never below 0.5."""
    return max(scale, 0.5)


def s2_buffer(options: SynthOptions) -> int:
    """Sentinel-2 pixels around an area: 5 aerial patches, and room for a super-patch around any patch.

    Without Sentinel-2 the margin only gives the layout some context: 2 patches.
    """
    patch = options.patch_size * AERIAL_RESOLUTION / S2_RESOLUTION
    if not options.sentinel:
        return math.ceil(2 * patch)
    return max(math.ceil(5 * patch), math.ceil(options.sat_patch_size / 2) + 2)


def _plan(options: SynthOptions) -> tuple[list[_Domain], list[_AreaJob]]:
    n_areas = options.n_domains * options.areas_per_domain
    plan_seed, *area_seeds = np.random.SeedSequence(options.seed, spawn_key=(0,)).spawn(1 + n_areas)
    rng = np.random.default_rng(plan_seed)
    n_test, n_val = options.test_domains, options.val_domains
    n_train = options.n_domains - n_test - n_val
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    departments = rng.choice(np.arange(1, 96), size=options.n_domains, replace=False)
    domains = []
    for i, (department, split) in enumerate(zip(departments, splits, strict=True)):
        year = int(rng.integers(2018, 2022))
        other_camera = i == 1 or rng.random() < 0.15
        domains.append(
            _Domain(
                name=f"D{int(department):03d}_{year}",
                split=split,
                year=year,
                camera=OTHER_CAMERA if other_camera else str(rng.choice(UCE_CAMERAS)),
                radiometry=Radiometry.draw(rng, options.domain_shift),
                s2_gain=tuple(np.round(rng.uniform(0.95, 1.05, 10), 4).tolist()),
                tile=f"{int(rng.integers(30, 33))}{rng.choice(['T', 'U'])}{''.join(rng.choice(list('CDEFGKLM'), 2))}",
                origin=(float(rng.integers(20, 100)) * 10_000, float(rng.integers(625, 700)) * 10_000),
                altitude=float(rng.uniform(20, 1200)),
            )
        )
    grid = patch_grid(options.patches_per_area)
    buffer = s2_buffer(options)
    jobs = []
    next_id = 1
    for d, domain in enumerate(domains):
        zone_numbers = rng.choice(np.arange(1, 40), size=options.areas_per_domain, replace=False)
        for a in range(options.areas_per_domain):
            month = int(rng.integers(4, 10))
            date = dt.date(domain.year, month, int(rng.integers(1, 29)))
            x = domain.origin[0] + a * 4000.0 + float(rng.integers(0, 200)) * 10
            y = domain.origin[1] - float(rng.integers(0, 300)) * 10
            ids = list(range(next_id, next_id + options.patches_per_area))
            next_id += options.patches_per_area
            jobs.append(
                _AreaJob(
                    domain=domain,
                    zone=f"Z{int(zone_numbers[a])}_{rng.choice(ZONE_LETTERS)}",
                    index=d * options.areas_per_domain + a,
                    seed=area_seeds[d * options.areas_per_domain + a],
                    patch_ids=ids,
                    grid=grid,
                    origin=(x, y),
                    buffer=buffer,
                    date=date,
                    start_seconds=int(rng.integers(8 * 3600, 15 * 3600)),
                )
            )
    return domains, jobs


def _required_codes() -> list[int]:
    return [c.code for c in FLAIR_CLASSES]


def focused_layout(
    rng: np.random.Generator, width: float, height: float, focus: tuple[float, float, float, float], scale: float
) -> tuple[Layout, np.ndarray]:
    """A layout whose focus holds every class (retrying a few times), and the focus feature ids at 0.2 m."""
    shape = (round((focus[3] - focus[1]) / AERIAL_RESOLUTION), round((focus[2] - focus[0]) / AERIAL_RESOLUTION))
    least = min(20, max(4, int(shape[0] * shape[1] * 5e-4)))
    best: tuple[int, Layout, np.ndarray] | None = None
    stale = 0
    for _ in range(LAYOUT_ATTEMPTS):
        layout = build_layout(rng, width, height, focus, scale)
        fid = layout.rasterize(focus[0], focus[1], AERIAL_RESOLUTION, shape)
        counts = np.bincount(layout.codes[fid].ravel(), minlength=MAX_CODE + 1)
        found = int((counts[_required_codes()] >= least).sum())
        stale = stale + 1 if best is not None and found <= best[0] else 0
        if best is None or found > best[0]:
            best = (found, layout, fid)
        # Stop when complete, or when a too small area stops improving.
        if found == len(_required_codes()) or stale == 3:
            break
    assert best is not None
    return best[1], best[2]


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _make_area(job: _AreaJob, options: SynthOptions, root: Path) -> _AreaResult:
    layout_seed, patches_seed = job.seed.spawn(2)
    rng = np.random.default_rng(layout_seed)
    size = options.patch_size
    rows, cols = job.grid
    res = AERIAL_RESOLUTION
    buffer_m = job.buffer * S2_RESOLUTION
    canvas_w, canvas_h = cols * size * res, rows * size * res
    s2_w = math.ceil(round(canvas_w / S2_RESOLUTION, 6)) + 2 * job.buffer
    s2_h = math.ceil(round(canvas_h / S2_RESOLUTION, 6)) + 2 * job.buffer
    focus = (buffer_m, buffer_m, buffer_m + canvas_w, buffer_m + canvas_h)
    scale = layout_scale(options)
    layout, fid = focused_layout(rng, s2_w * S2_RESOLUTION, s2_h * S2_RESOLUTION, focus, scale)
    renderer = AerialRenderer(layout, rng, texture_scale(scale), job.domain.radiometry, options.seed)
    domain, zone = job.domain.name, job.zone
    aerial_root, labels_root, sen_root = SPLIT_FOLDERS[job.domain.split]
    aerial_dir, labels_dir = root / aerial_root / domain / zone / "img", root / labels_root / domain / zone / "msk"
    sen_dir = root / sen_root / domain / zone / "sen"
    origin_row = origin_col = round(buffer_m / res)
    histogram = np.zeros(MAX_CODE + 1, dtype=np.int64)
    metadata, centroids, csv_rows = {}, {}, []
    patch_seeds = patches_seed.spawn(rows * cols)
    altitude = job.domain.altitude + rng.uniform(-60, 60)
    for k, patch_id in enumerate(job.patch_ids):
        r, c = divmod(k, cols)
        window = fid[r * size : (r + 1) * size, c * size : (c + 1) * size]
        image = renderer.render(
            window, origin_row + r * size, origin_col + c * size, np.random.default_rng(patch_seeds[k])
        )
        labels = layout.codes[window]
        histogram += np.bincount(labels.ravel(), minlength=MAX_CODE + 1)
        x0 = job.origin[0] + c * size * res
        y0 = job.origin[1] - r * size * res
        transform = Affine(res, 0.0, round(x0, 6), 0.0, -res, round(y0, 6))
        name = f"IMG_{patch_id:06d}"
        image_path = aerial_dir / f"{name}.tif"
        mask_path = labels_dir / f"MSK_{patch_id:06d}.tif"
        write_raster(image_path, image, crs=LAMBERT93, transform=transform)
        write_raster(mask_path, labels, crs=LAMBERT93, transform=transform)
        csv_rows.append((_relative(image_path, root), _relative(mask_path, root)))
        seconds = job.start_seconds + 14 * k
        metadata[name] = {
            "domain": domain,
            "zone": zone,
            "patch_centroid_x": round(x0 + size * res / 2, 2),
            "patch_centroid_y": round(y0 - size * res / 2, 2),
            "patch_centroid_z": round(altitude + float(rng.normal(0, 4)), 2),
            "camera": job.domain.camera,
            "date": job.date.isoformat(),
            "time": f"{seconds // 3600:02d}h{seconds // 60 % 60:02d}",
        }
        centre_y = buffer_m + (r + 0.5) * size * res
        centre_x = buffer_m + (c + 0.5) * size * res
        centroids[f"{name}.tif"] = [int(centre_y // S2_RESOLUTION), int(centre_x // S2_RESOLUTION)]
    info: dict[str, Any] = {
        "domain": domain,
        "zone": zone,
        "split": job.domain.split,
        "grid": [rows, cols],
        "aerial_origin": [job.origin[0], job.origin[1]],
        "layout_scale": scale,
        "features": len(layout.geoms),
    }
    if options.sentinel:
        info["super_area"] = _write_sentinel(job, layout, rng, sen_dir, (s2_h, s2_w))
    return _AreaResult(metadata, centroids, csv_rows, histogram, info)


def _write_sentinel(
    job: _AreaJob, layout: Layout, rng: np.random.Generator, sen_dir: Path, shape: tuple[int, int]
) -> dict[str, Any]:
    factor = 5
    fine = layout.codes[layout.rasterize(0.0, 0.0, S2_RESOLUTION / factor, (shape[0] * factor, shape[1] * factor))]
    fractions = class_fractions(fine, factor)
    dates = acquisition_dates(rng, job.domain.year)
    data, masks = simulate_series(rng, fractions, dates, np.asarray(job.domain.s2_gain, dtype=np.float32))
    products = product_names(rng, dates, job.domain.tile)
    stem = f"SEN2_sp_{job.domain.name}-{job.zone}"
    sen_dir.mkdir(parents=True, exist_ok=True)
    np.save(sen_dir / f"{stem}_data.npy", data)
    np.save(sen_dir / f"{stem}_masks.npy", masks)
    (sen_dir / f"{stem}_products.txt").write_text("\n".join(products) + "\n", encoding="utf-8")
    buffer_m = job.buffer * S2_RESOLUTION
    return {
        "shape": list(data.shape),
        "transform": [S2_RESOLUTION, 0.0, job.origin[0] - buffer_m, 0.0, -S2_RESOLUTION, job.origin[1] + buffer_m],
    }


def _write_ortho(
    index: int, domain: _Domain, options: SynthOptions, seed: np.random.SeedSequence, folder: Path
) -> tuple[Path, Path, np.ndarray, dict[str, Any]]:
    layout_seed, blocks_seed = seed.spawn(2)
    rng = np.random.default_rng(layout_seed)
    size = options.ortho_size
    side = size * AERIAL_RESOLUTION
    # The patches' scale, unless that would put hundreds of thousands of features in a large orthophoto.
    scale = max(layout_scale(options), min(1.0, side / ORTHO_MAX_LOTS_ACROSS / LOT_SPACING))
    layout = build_layout(rng, side, side, (0.0, 0.0, side, side), scale)
    renderer = AerialRenderer(layout, rng, texture_scale(scale), domain.radiometry, options.seed)
    x0 = domain.origin[0] + 30_000.0 + index * 5_000.0
    y0 = domain.origin[1] - 20_000.0
    transform = Affine(AERIAL_RESOLUTION, 0.0, x0, 0.0, -AERIAL_RESOLUTION, y0)
    block = 256 if size < 1024 else 512
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "crs": LAMBERT93,
        "transform": transform,
        "dtype": "uint8",
        "compress": "lzw",
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "BIGTIFF": "IF_SAFER",
    }
    folder.mkdir(parents=True, exist_ok=True)
    image_path, labels_path = folder / f"ORTHO_{index}.tif", folder / f"LABELS_{index}.tif"
    histogram = np.zeros(MAX_CODE + 1, dtype=np.int64)
    step = ORTHO_BLOCK
    block_seeds = blocks_seed.spawn(math.ceil(size / step) ** 2)
    with (
        rasterio.open(image_path, "w", count=5, **profile) as image_dst,
        rasterio.open(labels_path, "w", count=1, **profile) as labels_dst,
    ):
        for k, (row, col) in enumerate((r, c) for r in range(0, size, step) for c in range(0, size, step)):
            h, w = min(step, size - row), min(step, size - col)
            fid = layout.rasterize(col * AERIAL_RESOLUTION, row * AERIAL_RESOLUTION, AERIAL_RESOLUTION, (h, w))
            image = renderer.render(fid, row, col, np.random.default_rng(block_seeds[k]))
            labels = layout.codes[fid]
            histogram += np.bincount(labels.ravel(), minlength=MAX_CODE + 1)
            image_dst.write(image, window=Window(col, row, w, h))
            labels_dst.write(labels[None], window=Window(col, row, w, h))
    info = {"image": image_path.name, "labels": labels_path.name, "domain": domain.name, "size": size}
    return image_path, labels_path, histogram, info


def _recorded(options: SynthOptions) -> dict[str, Any]:
    """The options that decide the content (not ``workers``, so that the files do not depend on it; ``domain_shift``
    only when not 1 and the products' CRS and resolution only when given, so that default worlds stay byte-identical
    to those of earlier versions)."""
    recorded = {key: value for key, value in asdict(options).items() if key != "workers"}
    if options.domain_shift == 1.0:
        del recorded["domain_shift"]
    for key in ("products_crs", "products_resolution"):
        if recorded[key] is None:
            del recorded[key]
    return recorded


def _histogram_dict(histogram: np.ndarray) -> dict[int, int]:
    return {code: int(histogram[code]) for code in range(1, MAX_CODE + 1)}


def _readme(options: SynthOptions, domains: list[_Domain], histograms: dict[str, dict[int, int]]) -> str:
    names = {c.code: c.name for c in FLAIR_CLASSES}
    lines = [
        f"Synthetic FLAIR world generated by flairkit ({GENERATOR}).",
        "",
        "Same layout and formats as the FLAIR #2 release; not real data. Options:",
        *[f"  {key} = {value}" for key, value in _recorded(options).items()],
        "",
        "Domains:",
        *[f"  {d.name}: {d.split}, camera {d.camera}, gain {d.radiometry.gain}" for d in domains],
        "",
        "Aerial twins: 'agricultural land' and 'herbaceous vegetation' look almost alike in the aerial",
        "images; only their Sentinel-2 seasonal profiles differ (winter crop vs permanent grassland).",
        "",
        "Pixels per class in the patch masks:",
        f"  {'code':>4} {'class':<24}" + "".join(f"{split:>12}" for split in histograms),
    ]
    for code in range(1, MAX_CODE + 1):
        counts = "".join(f"{h[code]:>12}" for h in histograms.values())
        lines.append(f"  {code:>4} {names[code]:<24}{counts}")
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("".join(f"{image},{mask}\r\n" for image, mask in rows))


@dataclass
class StagingFolder:
    """The temporary sibling folder a world is written into before it is renamed to ``out``."""

    out: Path
    overwrite: bool
    tmp: Path = field(init=False)

    def __enter__(self) -> Path:
        out = self.out
        if out.exists() and not self.overwrite and not (out.is_dir() and not any(out.iterdir())):
            raise OutputExistsError(
                f"{out} already exists and is not empty; pass overwrite=True (--overwrite) to replace it, "
                "or choose another output folder"
            )
        out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent))
        return self.tmp

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        os.chmod(self.tmp, 0o755)
        if self.out.exists() or self.out.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".old", dir=self.out.parent))
            os.replace(self.out, old / "previous")
            os.replace(self.tmp, self.out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.out)


def _run_areas(jobs: list[_AreaJob], options: SynthOptions, root: Path) -> Iterator[_AreaResult]:
    if options.workers == 1 or len(jobs) == 1:
        yield from (_make_area(job, options, root) for job in jobs)
        return
    # Spawned, not forked: the caller may hold threads (torch) that a fork would copy in a broken state.
    with ProcessPoolExecutor(max_workers=options.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(_make_area, jobs, [options] * len(jobs), [root] * len(jobs))


def synthesize_world(out: Path, options: SynthOptions | None = None, overwrite: bool = False) -> SynthSummary:
    """Generate a synthetic FLAIR world into ``out`` (see the module docstring) and summarise it.

    ``out`` must not exist or be empty, unless ``overwrite``. Everything is written into a temporary
    sibling folder first, which replaces ``out`` only once complete.
    """
    options = options or SynthOptions()
    _validate(options)
    out = Path(out)
    domains, jobs = _plan(options)
    histograms = {split: np.zeros(MAX_CODE + 1, dtype=np.int64) for split in SPLITS}
    rows: dict[str, list[tuple[str, str]]] = {split: [] for split in SPLITS}
    metadata: dict[str, dict[str, Any]] = {}
    centroids: dict[str, list[int]] = {}
    areas = []
    with StagingFolder(out, overwrite) as tmp:
        for job, result in zip(jobs, _run_areas(jobs, options, tmp), strict=True):
            split = job.domain.split
            histograms[split] += result.histogram
            rows[split].extend(result.rows)
            metadata.update(result.metadata)
            centroids.update(result.centroids)
            areas.append(result.info)
        csv_paths = {}
        for split in SPLITS:
            if rows[split]:
                _write_csv(tmp / f"{split}.csv", rows[split])
                csv_paths[split] = out / f"{split}.csv"
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=1) + "\n", encoding="utf-8")
        if options.sentinel:
            (tmp / CENTROIDS_FILE).write_text(json.dumps(centroids, indent=1) + "\n", encoding="utf-8")
        orthos, ortho_info = [], []
        if options.n_orthos and options.ortho_size:
            test = [d for d in domains if d.split == "test"]
            domain = (test or domains)[-1]
            # Spawn keys (1, i) of the world seed never meet those of the plan and areas, (0, i).
            ortho_seeds = np.random.SeedSequence(options.seed, spawn_key=(1,)).spawn(options.n_orthos)
            for i in range(options.n_orthos):
                image, labels, histogram, info = _write_ortho(i, domain, options, ortho_seeds[i], tmp / "orthophotos")
                orthos.append((out / image.relative_to(tmp), out / labels.relative_to(tmp)))
                info["class_histogram"] = _histogram_dict(histogram)
                if options.products:
                    written = write_products(image, options.products_crs, options.products_resolution)
                    info["products"] = {kind: path.name for kind, path in written.items()}
                ortho_info.append(info)
        split_histograms = {split: _histogram_dict(histograms[split]) for split in SPLITS if rows[split]}
        world = {
            "generator": GENERATOR,
            "options": _recorded(options),
            "domains": [
                {
                    "name": d.name,
                    "split": d.split,
                    "camera": d.camera,
                    "gain": list(d.radiometry.gain),
                    "offset": list(d.radiometry.offset),
                    "sentinel_gain": list(d.s2_gain),
                }
                for d in domains
            ],
            "areas": areas,
            "aerial_twins": ["agricultural land", "herbaceous vegetation"],
            "class_histogram": split_histograms,
            "orthophotos": ortho_info,
        }
        (tmp / "world.json").write_text(json.dumps(world, indent=1) + "\n", encoding="utf-8")
        (tmp / "README.txt").write_text(_readme(options, domains, split_histograms), encoding="utf-8")
    total = sum(histograms.values())
    return SynthSummary(
        root=out,
        counts={split: len(rows[split]) for split in SPLITS},
        domains={split: [d.name for d in domains if d.split == split] for split in SPLITS},
        csv=csv_paths,
        metadata=out / METADATA_FILE,
        centroids=out / CENTROIDS_FILE if options.sentinel else None,
        orthos=orthos,
        class_histogram=_histogram_dict(total),
        split_histograms=split_histograms,
    )
