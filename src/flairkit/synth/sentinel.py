"""Sentinel-2 time series of a synthetic FLAIR super-area: seasonal class profiles mixed by land-cover fractions.

Each class is a time-varying mixture of endmember spectra (soil, green leaves, needles, dry vegetation,
water, urban, snow, pool water, plastic, dark panels). The vegetation share follows the class calendar:
deciduous trees leaf out in April and drop their leaves in October, conifers stay green, winter crops
("agricultural land") green up in March, ripen in June and are harvested in July, leaving straw then bare
soil until sowing in October, plowed land stays bare until a cover crop in autumn, herbaceous vegetation
stays green all year. A 10 m pixel mixes the class spectra by the class fractions of its 100 m2, with
per-pixel vigour and timing variations, per-date atmospheric noise, clouds and winter snow; the masks give
the cloud and snow probabilities (0..100) of every pixel and date.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine

from flairkit.atomic import write_text_atomic
from flairkit.nomenclature import FLAIR_CLASSES, class_code
from flairkit.synth.render import ValueNoise

S2_RESOLUTION = 10.0
N_BANDS = 10
ORTHO_SERIES_YEAR = 2021
ORTHO_SERIES_FOLDER = "{stem}_S2"
"""Folder, next to an orthophoto, of its Sentinel-2 acquisitions (see :func:`write_ortho_series`)."""
ACQUISITIONS_FILE = "acquisitions.json"

ENDMEMBERS = {
    # B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12 reflectances x 10000
    "soil": (900, 1150, 1450, 1700, 1900, 2000, 2150, 2250, 3000, 2500),
    "leaves": (250, 600, 300, 1000, 3000, 3800, 4100, 4200, 2100, 1000),
    "needles": (180, 380, 200, 650, 1800, 2300, 2500, 2600, 1200, 550),
    "dry": (700, 1000, 1300, 1650, 2000, 2200, 2400, 2500, 3600, 2900),
    "water": (600, 550, 350, 250, 200, 180, 150, 140, 90, 70),
    "urban": (1100, 1200, 1300, 1400, 1500, 1550, 1600, 1650, 1900, 1700),
    "snow": (9200, 9100, 8900, 8700, 8500, 8300, 8000, 7800, 900, 700),
    "pool": (1600, 1500, 900, 600, 450, 400, 350, 330, 200, 150),
    "plastic": (2800, 2900, 3000, 3050, 3100, 3150, 3200, 3250, 3000, 2600),
    "dark": (500, 550, 600, 650, 700, 720, 750, 760, 800, 700),
}
CLOUD = np.array((5600, 5700, 5800, 5900, 6000, 6000, 6100, 6100, 5200, 4200), dtype=np.float32)
SNOW = np.array(ENDMEMBERS["snow"], dtype=np.float32)
_MEMBERS = list(ENDMEMBERS)
_SPECTRA = np.array([ENDMEMBERS[k] for k in _MEMBERS], dtype=np.float32)

TIMED_CLASSES = ("agricultural land", "plowed land", "vineyard", "deciduous")
"""Classes whose calendar shifts by a few days from pixel to pixel."""


def _rise(doy: np.ndarray, centre: float, width: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(doy - centre) / width))


def _season(doy: np.ndarray, start: float, end: float, width: float) -> np.ndarray:
    return _rise(doy, start, width) * (1.0 - _rise(doy, end, width))


def class_mixture(name: str, doy: np.ndarray) -> dict[str, np.ndarray]:
    """Endmember weights (each (T,), summing to 1) of class ``name`` on days of year ``doy``."""
    doy = np.asarray(doy, dtype=np.float64)
    one = np.ones_like(doy)
    if name in ("building", "impervious surface"):
        return {"urban": 0.85 * one, "dark": 0.15 * one} if name == "building" else {"urban": one}
    if name == "bare soil":
        return {"soil": one}
    if name == "water":
        return {"water": one}
    if name == "swimming pool":
        return {"pool": one}
    if name == "snow":
        return {"snow": one}
    if name == "greenhouse":
        return {"plastic": 0.9 * one, "leaves": 0.1 * one}
    if name == "other":
        return {"dark": 0.7 * one, "urban": 0.3 * one}
    if name == "coniferous":
        return {"needles": 0.85 * one, "soil": 0.15 * one}
    if name == "mixed":
        deciduous = class_mixture("deciduous", doy)
        return {"needles": 0.5 * one, **{k: 0.5 * v for k, v in deciduous.items()}}
    if name == "agricultural land":
        # Winter cereal: green from March, ripe (dry) in June-July, harvested mid July, sown in October.
        green = 0.22 * (1 - _rise(doy, 200, 4)) + 0.7 * _season(doy, 75, 168, 9) + 0.25 * _rise(doy, 295, 8)
        green = np.clip(green, 0, 0.92)
        dry = (1 - green) * _season(doy, 160, 202, 4)
        return {"leaves": green, "dry": dry, "soil": 1 - green - dry}
    if name == "plowed land":
        green = 0.08 + 0.35 * _rise(doy, 285, 8)
        return {"leaves": green, "soil": 1 - green}
    green, rest = {
        "pervious surface": (0.35 + 0.15 * _season(doy, 95, 290, 15), "soil"),
        "deciduous": (0.1 + 0.78 * _season(doy, 108, 292, 8), "dry"),
        "brushwood": (0.35 + 0.35 * _season(doy, 110, 285, 12), "dry"),
        "vineyard": (0.1 + 0.45 * _season(doy, 130, 275, 9), "soil"),
        "herbaceous vegetation": (0.64 + 0.06 * np.cos(2 * np.pi * (doy - 140) / 365), "dry"),
        "clear cut": (0.2 + 0.2 * _season(doy, 120, 270, 15), "soil"),
        "ligneous": (0.3 + 0.3 * _season(doy, 110, 290, 12), "dry"),
    }[name]
    return {"leaves": green, rest: 1 - green}


def class_spectra(doy: np.ndarray) -> np.ndarray:
    """(20, T, 10) reflectances of each FLAIR code (index 0 unused) on days of year ``doy``."""
    doy = np.asarray(doy, dtype=np.float64)
    out = np.zeros((20, len(doy), N_BANDS), dtype=np.float32)
    for cls in FLAIR_CLASSES:
        for member, weight in class_mixture(cls.name, doy).items():
            out[cls.code] += weight[:, None].astype(np.float32) * _SPECTRA[_MEMBERS.index(member)]
    return out


def acquisition_dates(rng: np.random.Generator, year: int) -> list[dt.date]:
    """20 to 60 distinct dates of ``year``, sorted."""
    count = int(rng.integers(20, 61))
    days = np.sort(rng.choice(365, size=count, replace=False))
    return [dt.date(year, 1, 1) + dt.timedelta(days=int(d)) for d in days]


def product_names(rng: np.random.Generator, dates: list[dt.date], tile: str) -> list[str]:
    """Theia-style product names, ``SENTINEL2A_20210415-105852-123_L2A_T31TCJ_C_V2-2`` (MMDD at 15:19)."""
    names = []
    for date in dates:
        seconds = int(rng.integers(10 * 3600 + 1800, 11 * 3600 + 600))
        clock = f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"
        names.append(
            f"SENTINEL2{'AB'[int(rng.integers(0, 2))]}_{date:%Y%m%d}-{clock}-{int(rng.integers(0, 1000)):03d}"
            f"_L2A_T{tile}_C_V2-2"
        )
    return names


def class_fractions(codes: np.ndarray, factor: int) -> np.ndarray:
    """(20, H, W) class fractions of (H * factor, W * factor) fine class codes, block by block."""
    fine_h, fine_w = codes.shape
    h, w = fine_h // factor, fine_w // factor
    block = (np.arange(h * factor) // factor)[:, None] * w + (np.arange(w * factor) // factor)[None, :]
    flat = block * 20 + codes[: h * factor, : w * factor].astype(np.int64)
    counts = np.bincount(flat.ravel(), minlength=h * w * 20).reshape(h, w, 20)
    return (counts / float(factor * factor)).transpose(2, 0, 1).astype(np.float32)


def simulate_series(
    rng: np.random.Generator, fractions: np.ndarray, dates: list[dt.date], gain: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(T, 10, H, W) uint16 reflectances and (T, 2, H, W) uint8 snow and cloud probabilities."""
    _, h, w = fractions.shape
    t = len(dates)
    doy = np.array([d.timetuple().tm_yday for d in dates], dtype=np.float64)
    spectra = class_spectra(doy)
    # Calendar shifts per pixel (days), to first order: S(t + delta) ~ S(t) + delta * dS/dt.
    delay = (ValueNoise(rng, h, w, 3.0).sample(0, 0, h, w) - 0.5) * 40
    slope = (class_spectra(doy + 1.0) - class_spectra(doy - 1.0)) / 2.0
    timed = [class_code(n) for n in TIMED_CLASSES]
    vigour = 1 + (ValueNoise(rng, h, w, 2.0).sample(0, 0, h, w) - 0.5) * 0.2
    features = np.concatenate([fractions * vigour, fractions[timed] * delay]).reshape(20 + len(timed), -1)
    basis = np.concatenate([spectra, slope[timed]])
    basis *= (gain[None, :] * rng.normal(1.0, 0.025, (t, N_BANDS))).astype(np.float32)  # atmosphere and domain
    data = (basis.reshape(20 + len(timed), t * N_BANDS).T @ features).reshape(t, N_BANDS, h, w)
    noise = rng.standard_normal((t, 1, h, w), dtype=np.float32)
    data *= 1 + 0.015 * noise
    data += 25 * noise

    masks = np.zeros((t, 2, h, w), dtype=np.uint8)
    snow_class = fractions[class_code("snow")]
    masks[:, 0] = np.rint(np.clip(snow_class * 100, 0, 100)).astype(np.uint8)
    for i, date in enumerate(dates):
        weather = rng.random()
        if weather < 0.35:
            cover = 1.1 if weather < 0.08 else rng.uniform(0.15, 0.9)
            field = ValueNoise(rng, h, w, rng.uniform(4, 12)).sample(0, 0, h, w)
            threshold = np.quantile(field, 1 - min(cover, 1.0)) if cover < 1 else -1.0
            opacity = np.clip((field - threshold) / 0.12, 0, 1)
            data[i] += (CLOUD * rng.uniform(0.85, 1.15))[:, None, None] * opacity - data[i] * opacity
            masks[i, 1] = np.rint(opacity * 100).astype(np.uint8)
        if date.month in (12, 1, 2) and rng.random() < 0.4:
            field = ValueNoise(rng, h, w, 8.0).sample(0, 0, h, w)
            threshold = np.quantile(field, 1 - rng.uniform(0.2, 1.0))
            cover = np.clip((field - threshold) / 0.1, 0, 1) * (1 - masks[i, 1] / 100)
            data[i] += (SNOW[:, None, None] - data[i]) * cover
            masks[i, 0] = np.maximum(masks[i, 0], np.rint(cover * 100).astype(np.uint8))
    data += 0.5  # the cast below truncates
    return np.clip(data, 0, 65535, out=data).astype(np.uint16), masks


def write_ortho_series(ortho: Path, labels: Path, seed: int, index: int, buffer: int) -> Path:
    """Write the Sentinel-2 series of orthophoto ``ortho`` from its class raster ``labels``, as a U-T&T zone detection
    reads it: one 10-band uint16 GeoTIFF and one snow/cloud mask GeoTIFF (2 bands, probabilities 0..100) per date,
    on a 10 m grid in the orthophoto's CRS covering it and ``buffer`` pixels around (class fractions continued from
    its edges), and an acquisitions JSON listing them (see :mod:`flairkit.data.series`); returns the JSON's path.

    The series is drawn as the super-areas' (:func:`simulate_series`), in ``ORTHO_SERIES_YEAR``, from the world's
    ``seed`` and the orthophoto's ``index``.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, index)))
    with rasterio.open(labels) as src:
        codes, crs, transform = src.read(1), src.crs, src.transform
    factor = round(S2_RESOLUTION / transform.a)
    height, width = (-(-side // factor) * factor for side in codes.shape)
    codes = np.pad(codes, ((0, height - codes.shape[0]), (0, width - codes.shape[1])), mode="edge")
    fractions = np.pad(class_fractions(codes, factor), ((0, 0), (buffer, buffer), (buffer, buffer)), mode="edge")
    dates = acquisition_dates(rng, ORTHO_SERIES_YEAR)
    data, masks = simulate_series(rng, fractions, dates, np.ones(N_BANDS, dtype=np.float32))
    margin = buffer * S2_RESOLUTION
    grid = Affine(S2_RESOLUTION, 0.0, transform.c - margin, 0.0, -S2_RESOLUTION, transform.f + margin)
    folder = ortho.with_name(ORTHO_SERIES_FOLDER.format(stem=ortho.stem))
    folder.mkdir(exist_ok=True)
    profile = {"driver": "GTiff", "width": data.shape[3], "height": data.shape[2], "crs": crs, "transform": grid}
    entries = []
    for date, series, mask in zip(dates, data, masks, strict=True):
        name = f"S2_{date:%Y%m%d}"
        with rasterio.open(
            folder / f"{name}.tif", "w", count=N_BANDS, dtype="uint16", compress="deflate", **profile
        ) as dst:
            dst.write(series)
        with rasterio.open(
            folder / f"{name}_MASK.tif", "w", count=2, dtype="uint8", compress="deflate", **profile
        ) as dst:
            dst.descriptions = ("snow probability", "cloud probability")
            dst.write(mask)
        entries.append({"date": date.isoformat(), "path": f"{name}.tif", "mask": f"{name}_MASK.tif"})
    return write_text_atomic(folder / ACQUISITIONS_FILE, json.dumps({"acquisitions": entries}, indent=1) + "\n")
