"""Another country: orthophotos, vector labels and a class set that are not FLAIR's.

The proof that a FLAIR model adapts to someone else's data (``flair data synth --country``): the land cover
of the synthetic FLAIR world (:mod:`~flairkit.synth.layout`, :mod:`~flairkit.synth.render`), seen by another
sensor (RGB only, a warm and hazy colour balance far from any FLAIR domain), in another CRS (Korea 2000 /
Central Belt 2010, EPSG:5186), labelled by a national survey with its own 6 classes (FLAIR's grouped) as
polygons with a code attribute, and a table from those codes to the classes. FLAIR's *other* class has no
counterpart: its pixels are covered by no polygon and stay unlabelled.

Layout in ``out``::

    orthophotos/ORTHO_<i>.tif   3-band uint8 R,G,B at 0.2 m, EPSG:5186
    labels.gpkg                 layer "landcover": polygons with the integer attribute "lc" (the survey's codes)
    mapping.csv                 value,class: each survey code to a class of nomenclature.yaml
    nomenclature.yaml           the 6 classes (codes 1..6, colours, the FLAIR classes each one groups)
    areas.gpkg                  layer "areas": quarters of each orthophoto, attributes "name" and "split"
    README.txt

For a seed, the orthophotos, polygons and tables are the same (GeoPackages differ only in their timestamps).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import fiona
import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.features import shapes
from rasterio.transform import Affine
from rasterio.windows import Window
from shapely.geometry import box, mapping

from flairkit.data.rasters import AERIAL_RESOLUTION
from flairkit.errors import ConfigError
from flairkit.nomenclature import MAX_CODE, class_code
from flairkit.synth.layout import build_layout
from flairkit.synth.render import AerialRenderer, Radiometry
from flairkit.synth.world import FULL_SCALE_SIDE, MIN_SCALE, ORTHO_BLOCK, StagingFolder, texture_scale

COUNTRY_CRS = CRS.from_epsg(5186)
LABELS_LAYER = "landcover"
CLASS_FIELD = "lc"
AREAS_LAYER = "areas"
SENSOR = Radiometry(gain=(1.16, 1.04, 0.8, 1.0), offset=(22.0, 12.0, 6.0, 0.0))
"""Another camera's colour balance (R, G, B gains and offsets; the NIR pair is unused): warm and hazy."""


@dataclass(frozen=True)
class CountryClass:
    """One class of the country's nomenclature."""

    name: str
    survey_code: int
    """The value of the polygons' ``lc`` attribute."""
    colour: str
    flair: tuple[str, ...]
    """The FLAIR classes it groups."""


COUNTRY_CLASSES = (
    CountryClass("built", 11, "#db0e9a", ("building", "swimming pool", "greenhouse")),
    CountryClass("sealed", 12, "#f80c00", ("impervious surface",)),
    CountryClass("bare", 31, "#a97101", ("pervious surface", "bare soil", "plowed land", "snow")),
    CountryClass("water", 51, "#1553ae", ("water",)),
    CountryClass(
        "woody", 42, "#194a26", ("coniferous", "deciduous", "brushwood", "vineyard", "clear cut", "mixed", "ligneous")
    ),
    CountryClass("herbaceous", 43, "#55ff00", ("herbaceous vegetation", "agricultural land")),
)


@dataclass
class CountryOptions:
    """What :func:`synthesize_country` writes."""

    n_orthos: int = 2
    ortho_size: int = 1024
    """Side in pixels of each orthophoto (0.2 m pixels)."""
    seed: int = 0
    scale: float = 0.375
    """Feature sizes relative to real ones: the demo world's (128 px patches in 3 x 4 areas)."""


@dataclass
class CountrySummary:
    """What :func:`synthesize_country` wrote."""

    root: Path
    orthos: list[Path]
    labels: Path
    mapping: Path
    nomenclature: Path
    areas: Path
    polygons: int
    pixels: dict[str, int]
    """Pixels per class over all orthophotos (``unlabelled``: FLAIR's *other*)."""


def _survey_lut() -> np.ndarray:
    """FLAIR code -> survey code (0: no polygon)."""
    lut = np.zeros(MAX_CODE + 1, dtype=np.uint8)
    for cls in COUNTRY_CLASSES:
        for flair_name in cls.flair:
            lut[class_code(flair_name)] = cls.survey_code
    return lut


def nomenclature_yaml() -> str:
    """The text of the country's nomenclature YAML (codes 1..6 in :data:`COUNTRY_CLASSES` order)."""
    lines = [
        "# Another country's 6 classes (flair data synth --country): FLAIR's grouped, codes 1..6.",
        "name: country-6cl",
        "description: built, sealed, bare, water, woody, herbaceous (a national survey's classes)",
        "classes:",
    ]
    for code, cls in enumerate(COUNTRY_CLASSES, start=1):
        lines += [
            f"  - name: {cls.name}",
            f"    code: {code}",
            f'    colour: "{cls.colour}"',
            f"    flair: [{', '.join(cls.flair)}]",
        ]
    return "\n".join(lines) + "\n"


def _validate(options: CountryOptions) -> None:
    checks = [
        (options.n_orthos >= 1, "n_orthos", "at least 1"),
        (options.ortho_size >= 64, "ortho_size", "at least 64 pixels"),
        (0 < options.scale <= 1, "scale", "in (0, 1]"),
    ]
    for ok, key, need in checks:
        if not ok:
            raise ConfigError(f"another-country option {key} must be {need}; got {getattr(options, key)!r}")


def _write_ortho(
    index: int, options: CountryOptions, seed: np.random.SeedSequence, path: Path, lut: np.ndarray
) -> tuple[np.ndarray, Affine]:
    """Write one RGB orthophoto; return its survey-code raster and its transform."""
    layout_seed, blocks_seed = seed.spawn(2)
    rng = np.random.default_rng(layout_seed)
    size = options.ortho_size
    side = size * AERIAL_RESOLUTION
    # Small orthophotos (tests) shrink the layout further so that they still hold several districts.
    scale = min(options.scale, max(MIN_SCALE, size / (2 * FULL_SCALE_SIDE)))
    layout = build_layout(rng, side, side, (0.0, 0.0, side, side), scale)
    renderer = AerialRenderer(layout, rng, texture_scale(scale), SENSOR, options.seed)
    transform = Affine(AERIAL_RESOLUTION, 0.0, 200_000.0 + index * 2_000.0, 0.0, -AERIAL_RESOLUTION, 550_000.0)
    block = 256 if size < 1024 else 512
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 3,
        "crs": COUNTRY_CRS,
        "transform": transform,
        "dtype": "uint8",
        "compress": "lzw",
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "photometric": "RGB",
    }
    survey = np.zeros((size, size), dtype=np.uint8)
    step = ORTHO_BLOCK
    block_seeds = blocks_seed.spawn(math.ceil(size / step) ** 2)
    with rasterio.open(path, "w", **profile) as dst:
        for k, (row, col) in enumerate((r, c) for r in range(0, size, step) for c in range(0, size, step)):
            h, w = min(step, size - row), min(step, size - col)
            fid = layout.rasterize(col * AERIAL_RESOLUTION, row * AERIAL_RESOLUTION, AERIAL_RESOLUTION, (h, w))
            image = renderer.render(fid, row, col, np.random.default_rng(block_seeds[k]))
            dst.write(image[:3], window=Window(col, row, w, h))
            survey[row : row + h, col : col + w] = lut[layout.codes[fid]]
    return survey, transform


def synthesize_country(out: Path, options: CountryOptions | None = None, overwrite: bool = False) -> CountrySummary:
    """Write another country's orthophotos, vector labels, mapping, nomenclature and areas into ``out``.

    ``out`` must not exist or be empty, unless ``overwrite``; it is written in a temporary sibling folder first.
    """
    options = options or CountryOptions()
    _validate(options)
    out = Path(out)
    lut = _survey_lut()
    by_survey = {cls.survey_code: cls.name for cls in COUNTRY_CLASSES}
    pixels = {cls.name: 0 for cls in COUNTRY_CLASSES} | {"unlabelled": 0}
    seeds = np.random.SeedSequence(options.seed, spawn_key=(2,)).spawn(options.n_orthos)
    schema = {"geometry": "Polygon", "properties": {CLASS_FIELD: "int"}}
    area_schema = {"geometry": "Polygon", "properties": {"name": "str", "split": "str"}}
    splits = ("train", "train", "val", "test")
    polygons = 0
    with StagingFolder(out, overwrite) as tmp:
        (tmp / "orthophotos").mkdir()
        with (
            fiona.open(
                tmp / "labels.gpkg", "w", driver="GPKG", layer=LABELS_LAYER, schema=schema, crs=COUNTRY_CRS.to_wkt()
            ) as labels,
            fiona.open(
                tmp / "areas.gpkg", "w", driver="GPKG", layer=AREAS_LAYER, schema=area_schema, crs=COUNTRY_CRS.to_wkt()
            ) as areas,
        ):
            for i in range(options.n_orthos):
                survey, transform = _write_ortho(i, options, seeds[i], tmp / "orthophotos" / f"ORTHO_{i}.tif", lut)
                counts = np.bincount(survey.ravel(), minlength=256)
                pixels["unlabelled"] += int(counts[0])
                for code, name in by_survey.items():
                    pixels[name] += int(counts[code])
                features = shapes(survey, mask=survey > 0, connectivity=4, transform=transform)
                records = [{"geometry": geom, "properties": {CLASS_FIELD: int(value)}} for geom, value in features]
                labels.writerecords(records)
                polygons += len(records)
                # Quarters of the orthophoto as areas; the split of each is fixed so that every split has one.
                half = options.ortho_size // 2 * AERIAL_RESOLUTION
                x0, y0 = transform.c, transform.f
                for q, split in enumerate(splits if i == 0 else ("train",) * 4):
                    r, c = divmod(q, 2)
                    cell = box(x0 + c * half, y0 - (r + 1) * half, x0 + (c + 1) * half, y0 - r * half)
                    areas.write({"geometry": mapping(cell), "properties": {"name": f"O{i}Q{q}", "split": split}})
        mapping_rows = ["value,class", *(f"{cls.survey_code},{cls.name}" for cls in COUNTRY_CLASSES)]
        (tmp / "mapping.csv").write_text("\n".join(mapping_rows) + "\n", encoding="utf-8")
        (tmp / "nomenclature.yaml").write_text(nomenclature_yaml(), encoding="utf-8")
        (tmp / "README.txt").write_text(_readme(options, pixels), encoding="utf-8")
    return CountrySummary(
        root=out,
        orthos=[out / "orthophotos" / f"ORTHO_{i}.tif" for i in range(options.n_orthos)],
        labels=out / "labels.gpkg",
        mapping=out / "mapping.csv",
        nomenclature=out / "nomenclature.yaml",
        areas=out / "areas.gpkg",
        polygons=polygons,
        pixels=pixels,
    )


def _readme(options: CountryOptions, pixels: dict[str, int]) -> str:
    total = max(sum(pixels.values()), 1)
    lines = [
        "Another country, generated by flairkit (flairkit.synth.country): not real data, not FLAIR's layout.",
        "Options: " + " ".join(f"{key}={value}" for key, value in asdict(options).items()),
        f"Imagery: RGB only, EPSG:{COUNTRY_CRS.to_epsg()}, sensor gains {SENSOR.gain[:3]} offsets {SENSOR.offset[:3]}.",
        f"Labels: labels.gpkg layer {LABELS_LAYER}, attribute {CLASS_FIELD}; mapping.csv to nomenclature.yaml.",
        "Areas: areas.gpkg layer areas (name, split). Pixels per class:",
        *[f"  {name:<12}{count:>12} ({100 * count / total:.1f}%)" for name, count in pixels.items()],
    ]
    return "\n".join(lines) + "\n"
