"""The synthetic FLAIR world generator: layout, formats, georeferencing, determinism, and a learnable world."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio

from flairkit.errors import ConfigError, OutputExistsError
from flairkit.nomenclature import class_code, get_nomenclature
from flairkit.synth import world as synth
from flairkit.synth.world import SynthOptions, SynthSummary, synthesize_world

OPTIONS = SynthOptions(
    n_domains=4,
    areas_per_domain=2,
    patches_per_area=6,
    patch_size=32,
    seed=11,
    sentinel=True,
    sat_patch_size=16,
    n_orthos=1,
    ortho_size=200,
)
FOLDERS = {
    "train": ("flair_aerial_train", "flair_labels_train", "flair_sen_train"),
    "val": ("flair_aerial_train", "flair_labels_train", "flair_sen_train"),
    "test": ("flair_2_aerial_test", "flair_2_labels_test", "flair_2_sen_test"),
}
IMG = re.compile(r"^IMG_(\d{6})\.tif$")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, SynthSummary]:
    root = tmp_path_factory.mktemp("synth") / "world"
    return root, synthesize_world(root, OPTIONS)


def _images(root: Path) -> list[Path]:
    return sorted(p for folder in ("flair_aerial_train", "flair_2_aerial_test") for p in (root / folder).rglob("*.tif"))


def _mask_of(image: Path) -> Path:
    parts = list(image.parts)
    parts[-5] = {"flair_aerial_train": "flair_labels_train", "flair_2_aerial_test": "flair_2_labels_test"}[parts[-5]]
    parts[-2] = "msk"
    parts[-1] = parts[-1].replace("IMG_", "MSK_")
    return Path(*parts)


def test_layout_and_naming(world):
    root, summary = world
    assert summary.root == root
    assert summary.domains["train"] and summary.domains["val"] and summary.domains["test"]
    assert summary.counts == {"train": 2 * 2 * 6, "val": 2 * 6, "test": 2 * 6}
    images = _images(root)
    assert len(images) == sum(summary.counts.values())
    ids = []
    for image in images:
        aerial_root, domain, zone, img, name = image.relative_to(root).parts
        assert re.fullmatch(r"D0\d\d_20(18|19|20|21)", domain) and re.fullmatch(r"Z\d+_[A-Z]{2}", zone)
        assert img == "img" and IMG.match(name)
        split = next(s for s, names in summary.domains.items() if domain in names)
        assert aerial_root == FOLDERS[split][0]
        assert _mask_of(image).is_file()
        ids.append(IMG.match(name).group(1))
    assert len(set(ids)) == len(ids)
    for split, domains in summary.domains.items():
        for domain in domains:
            sen = root / FOLDERS[split][2] / domain
            assert sorted(p.name for p in sen.iterdir()) == sorted(
                p.name for p in (root / FOLDERS[split][0] / domain).iterdir()
            )
    assert (root / "world.json").is_file() and (root / "README.txt").is_file()


def test_patch_rasters(world):
    root, _ = world
    origins: dict[Path, set[tuple[float, float]]] = {}
    for image in _images(root):
        with rasterio.open(image) as src, rasterio.open(_mask_of(image)) as msk:
            assert (src.count, src.dtypes[0], src.width, src.height) == (5, "uint8", 32, 32)
            assert (msk.count, msk.dtypes[0]) == (1, "uint8")
            assert src.crs.to_epsg() == 2154 and msk.crs == src.crs
            assert src.res == pytest.approx((0.2, 0.2)) and msk.transform == src.transform
            assert src.compression.name == "lzw" and msk.compression.name == "lzw"
            assert 100_000 < src.transform.c < 1_200_000 and 6_000_000 < src.transform.f < 7_200_000
            labels = msk.read(1)
            assert labels.min() >= 1 and labels.max() <= 19
            origins.setdefault(image.parent, set()).add((src.transform.c, src.transform.f))
    # The 6 patches of an area tile a contiguous 2 x 3 grid.
    for corners in origins.values():
        xs, ys = sorted({round(x, 3) for x, _ in corners}), sorted({round(y, 3) for _, y in corners})
        assert len(corners) == 6 and {len(xs), len(ys)} == {2, 3}
        assert np.allclose(np.diff(xs), 6.4) and np.allclose(np.diff(ys), 6.4)


def test_metadata_entries(world):
    root, _ = world
    metadata = json.loads((root / "flair_aerial_metadata.json").read_text())
    images = _images(root)
    assert set(metadata) == {p.stem for p in images}
    for image in images:
        entry = metadata[image.stem]
        with rasterio.open(image) as src:
            x, y = src.transform @ (16, 16)
        assert entry["patch_centroid_x"] == pytest.approx(x, abs=0.01)
        assert entry["patch_centroid_y"] == pytest.approx(y, abs=0.01)
        assert isinstance(entry["patch_centroid_z"], float)
        date = dt.date.fromisoformat(entry["date"])
        assert 2018 <= date.year <= 2021 and entry["domain"].endswith(str(date.year))
        assert re.fullmatch(r"\d\dh\d\d", entry["time"])
        assert (entry["domain"], entry["zone"]) == image.parts[-4:-2]
    cameras = {entry["camera"] for entry in metadata.values()}
    assert any("UCE" in c for c in cameras) and any("UCE" not in c for c in cameras)


def test_sentinel_super_areas(world):
    root, _ = world
    centroids = json.loads((root / "flair-2_centroids_sp_to_patch.json").read_text())
    images = _images(root)
    assert set(centroids) == {p.name for p in images}
    areas = {a["zone"]: a for a in json.loads((root / "world.json").read_text())["areas"]}
    for area_dir in {p.parent.parent for p in images}:
        aerial_root, domain, zone = area_dir.relative_to(root).parts
        sen_root = {"flair_aerial_train": "flair_sen_train", "flair_2_aerial_test": "flair_2_sen_test"}[aerial_root]
        stem = root / sen_root / domain / zone / "sen" / f"SEN2_sp_{domain}-{zone}"
        data = np.load(f"{stem}_data.npy")
        masks = np.load(f"{stem}_masks.npy")
        products = Path(f"{stem}_products.txt").read_text().splitlines()
        t, bands, height, width = data.shape
        assert data.dtype == np.uint16 and bands == 10 and 20 <= t <= 60
        assert masks.dtype == np.uint8 and masks.shape == (t, 2, height, width) and masks.max() <= 100
        assert masks[:, 1].max() > 60  # some cloudy dates
        assert len(products) == t
        dates = [dt.date(int(p[11:15]), int(p[15:17]), int(p[17:19])) for p in products]
        assert dates == sorted(dates) and len(set(dates)) == t
        assert all(p.startswith(("SENTINEL2A_", "SENTINEL2B_")) for p in products)
        transform = rasterio.Affine(*areas[zone]["super_area"]["transform"])
        half = OPTIONS.sat_patch_size // 2
        for image in (area_dir / "img").iterdir():
            row, col = centroids[image.name]
            assert isinstance(row, int) and isinstance(col, int)
            assert half <= row <= height - half and half <= col <= width - half
            with rasterio.open(image) as src:
                x, y = src.transform @ (16, 16)
            assert (row, col) == tuple(int(v) for v in ~transform @ (x, y))[::-1]


def test_csv_lists(world):
    root, summary = world
    for split in ("train", "val", "test"):
        raw = summary.csv[split].read_bytes()
        assert raw.endswith(b"\r\n") and raw.count(b"\r\n") == summary.counts[split] == raw.count(b"\n")
        for line in raw.decode().splitlines():
            image, mask = line.split(",")
            assert not Path(image).is_absolute() and (root / image).is_file() and (root / mask).is_file()
            assert Path(image).parts[1] in summary.domains[split]
            assert Path(mask).name == Path(image).name.replace("IMG_", "MSK_")


def test_orthophoto(world):
    root, summary = world
    ((image, labels),) = summary.orthos
    assert image == root / "orthophotos" / "ORTHO_0.tif" and labels == root / "orthophotos" / "LABELS_0.tif"
    with rasterio.open(image) as src, rasterio.open(labels) as lab:
        assert (src.count, src.dtypes[0], src.width, src.height) == (5, "uint8", 200, 200)
        assert src.crs.to_epsg() == 2154 and src.res == pytest.approx((0.2, 0.2))
        assert src.profile["tiled"] and src.compression.name == "lzw"
        assert (lab.count, lab.dtypes[0]) == (1, "uint8") and lab.transform == src.transform
        codes = lab.read(1)
        assert codes.min() >= 1 and codes.max() <= 19 and len(np.unique(codes)) >= 8
    ortho = json.loads((root / "world.json").read_text())["orthophotos"][0]
    assert ortho["domain"] in summary.domains["test"]


def test_every_class_in_every_split(world):
    root, summary = world
    nomenclature = get_nomenclature("15cl")
    enabled = {nomenclature.targets[i].code for i in nomenclature.enabled}
    disabled = {nomenclature.targets[i].code for i in nomenclature.disabled}
    found: dict[str, np.ndarray] = {}
    for image in _images(root):
        split = next(s for s, names in summary.domains.items() if image.parts[-4] in names)
        with rasterio.open(_mask_of(image)) as msk:
            counts = np.bincount(msk.read(1).ravel(), minlength=20)
        found[split] = found.get(split, 0) + counts
    for split, counts in found.items():
        assert {c for c in range(1, 20) if counts[c] > 0} >= enabled, split
        assert {code: int(counts[code]) for code in range(1, 20)} == summary.split_histograms[split]
    assert all(sum(found[s][c] for s in found) > 0 for c in disabled)
    assert summary.class_histogram == {c: sum(h[c] for h in summary.split_histograms.values()) for c in range(1, 20)}


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(world, tmp_path):
    root, _ = world
    synthesize_world(tmp_path / "again", OPTIONS)
    assert _tree(tmp_path / "again") == _tree(root)


SMALL = SynthOptions(
    n_domains=2, areas_per_domain=1, patches_per_area=1, patch_size=64, sentinel=False, ortho_size=0, val_domains=0
)


def test_other_seed_other_world(tmp_path):
    first = synthesize_world(tmp_path / "a", SMALL)
    second = synthesize_world(tmp_path / "b", SynthOptions(**{**SMALL.__dict__, "seed": 1}))
    assert first.counts == second.counts
    image_a, image_b = (next((tmp_path / name / "flair_aerial_train").rglob("*.tif")) for name in "ab")
    assert image_a.read_bytes() != image_b.read_bytes()


def test_parallel_workers_write_the_same_world(tmp_path):
    options = SynthOptions(**{**SMALL.__dict__, "sentinel": True, "sat_patch_size": 8})
    synthesize_world(tmp_path / "serial", options)
    synthesize_world(tmp_path / "parallel", SynthOptions(**{**options.__dict__, "workers": 2}))
    assert _tree(tmp_path / "serial") == _tree(tmp_path / "parallel")


def test_refuses_to_overwrite(tmp_path):
    out = tmp_path / "world"
    out.mkdir()
    synthesize_world(out, SMALL)  # an empty folder is fine
    with pytest.raises(OutputExistsError, match="overwrite"):
        synthesize_world(out, SMALL)
    (out / "stale.txt").write_text("old")
    synthesize_world(out, SMALL, overwrite=True)
    assert not (out / "stale.txt").exists() and (out / "train.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world"]


def test_failure_leaves_nothing(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synth, "_write_csv", broken)
    with pytest.raises(RuntimeError):
        synthesize_world(tmp_path / "world", SMALL)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "changes",
    [{"n_domains": 2, "test_domains": 1, "val_domains": 1}, {"patch_size": 4}, {"patches_per_area": 0}],
)
def test_invalid_options(tmp_path, changes):
    with pytest.raises(ConfigError):
        synthesize_world(tmp_path / "world", SynthOptions(**{**SMALL.__dict__, **changes}))
    assert not (tmp_path / "world").exists()


def test_patch_grid_and_buffer():
    assert synth.patch_grid(6) == (2, 3) and synth.patch_grid(16) == (4, 4) and synth.patch_grid(7) == (1, 7)
    assert synth.s2_buffer(SynthOptions(patch_size=512, sat_patch_size=40)) == 52  # 5 patches of 102.4 m
    assert synth.s2_buffer(SynthOptions(patch_size=32, sat_patch_size=40)) == 22  # room for a 40 px crop


@pytest.fixture(scope="module")
def twin_world(tmp_path_factory) -> Path:
    """Areas of 4 x 4 patches of 128 px (100 m): parcels big enough to hold pure 10 m Sentinel-2 pixels."""
    root = tmp_path_factory.mktemp("twins") / "world"
    options = SynthOptions(
        n_domains=2, areas_per_domain=2, patches_per_area=16, patch_size=128, seed=3, ortho_size=0, val_domains=0
    )
    synthesize_world(root, options)
    return root


def _aerial_pixels(root: Path) -> dict[int, np.ndarray]:
    pixels: dict[int, list[np.ndarray]] = {}
    for image in _images(root):
        with rasterio.open(image) as src, rasterio.open(_mask_of(image)) as msk:
            bands, labels = src.read().astype(np.float64), msk.read(1)
        for code in np.unique(labels):
            pixels.setdefault(int(code), []).append(bands[:, labels == code].T)
    return {code: np.concatenate(chunks) for code, chunks in pixels.items()}


def _distance(pixels: dict[int, np.ndarray], a: int, b: int) -> float:
    """Largest per-band gap between class means, in pooled standard deviations."""
    pa, pb = pixels[a], pixels[b]
    return float(np.max(np.abs(pa.mean(0) - pb.mean(0)) / np.sqrt((pa.var(0) + pb.var(0)) / 2)))


def _summer_ndvi(root: Path, code: int) -> list[float]:
    """Mean July-September NDVI of clear Sentinel-2 pixels covered at 60% or more by class ``code``."""
    world = json.loads((root / "world.json").read_text())
    centroids = json.loads((root / "flair-2_centroids_sp_to_patch.json").read_text())
    values = []
    for area in world["areas"]:
        _, labels, sen = FOLDERS[area["split"]]
        folder = root / labels / area["domain"] / area["zone"] / "msk"
        rows, cols = area["grid"]
        masks = sorted(folder.iterdir())
        size = rasterio.open(masks[0]).width
        canvas = np.zeros((rows * size, cols * size), dtype=np.uint8)
        for k, path in enumerate(masks):
            r, c = divmod(k, cols)
            canvas[r * size : (r + 1) * size, c * size : (c + 1) * size] = rasterio.open(path).read(1)
        first = centroids[masks[0].name.replace("MSK_", "IMG_")]
        top, left = first[0] - round(size * 0.2 / 20), first[1] - round(size * 0.2 / 20)
        stem = root / sen / area["domain"] / area["zone"] / "sen" / f"SEN2_sp_{area['domain']}-{area['zone']}"
        data = np.load(f"{stem}_data.npy").astype(np.float64)
        clouds = np.load(f"{stem}_masks.npy")
        months = np.array([int(p[15:17]) for p in Path(f"{stem}_products.txt").read_text().splitlines()])
        n_rows, n_cols = canvas.shape[0] // 50, canvas.shape[1] // 50  # 50 aerial pixels = 1 Sentinel-2 pixel
        share = (canvas[: n_rows * 50, : n_cols * 50] == code).reshape(n_rows, 50, n_cols, 50).mean(axis=(1, 3))
        for i, j in zip(*np.nonzero(share >= 0.6), strict=True):
            red, nir = data[:, 2, top + i, left + j], data[:, 6, top + i, left + j]
            clear = (clouds[:, :, top + i, left + j].max(axis=1) == 0) & (months >= 7) & (months <= 9)
            if clear.any():
                values.append(float(np.mean(((nir - red) / (nir + red))[clear])))
    return values


def test_aerial_twins_differ_only_in_sentinel2(twin_world):
    herbaceous, agricultural = class_code("herbaceous vegetation"), class_code("agricultural land")
    pixels = _aerial_pixels(twin_world)
    twins = _distance(pixels, herbaceous, agricultural)
    assert twins < 1.0
    # Classes that should look different do: the measure can tell classes apart.
    assert _distance(pixels, class_code("deciduous"), class_code("coniferous")) > 2 * twins
    assert _distance(pixels, agricultural, class_code("plowed land")) > 2 * twins
    herbaceous_ndvi, agricultural_ndvi = _summer_ndvi(twin_world, herbaceous), _summer_ndvi(twin_world, agricultural)
    assert herbaceous_ndvi and agricultural_ndvi
    assert np.mean(herbaceous_ndvi) > 0.5 and np.mean(agricultural_ndvi) < 0.4


def test_domain_shift_multiplies_the_domain_departures_and_leaves_default_worlds_unchanged(tmp_path):
    from flairkit.synth.render import Radiometry

    base = Radiometry.draw(np.random.default_rng(3))
    assert Radiometry.draw(np.random.default_rng(3), 1.0) == base
    strong = Radiometry.draw(np.random.default_rng(3), 3.0)
    np.testing.assert_allclose(np.subtract(strong.gain, 1), 3 * np.subtract(base.gain, 1), atol=2e-4)
    np.testing.assert_allclose(strong.offset, 3 * np.asarray(base.offset), atol=0.02)
    assert "domain_shift" not in synth._recorded(SynthOptions())  # world.json and README.txt as before
    assert synth._recorded(SynthOptions(domain_shift=3))["domain_shift"] == 3
    with pytest.raises(ConfigError, match="domain_shift must be between 0"):
        synthesize_world(tmp_path / "world", SynthOptions(**{**SMALL.__dict__, "domain_shift": 6}))
    assert not (tmp_path / "world").exists()
