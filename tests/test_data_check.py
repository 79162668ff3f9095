"""``check_dataset`` and ``flair data check``: a clean dataset passes, each kind of damage is reported."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from rasterio.crs import CRS
from rasterio.transform import Affine
from typer.testing import CliRunner

from flairkit.cli.data import data_app
from flairkit.data.check import CheckReport, check_dataset
from flairkit.data.rasters import LAMBERT93, write_raster

SIZE = 16
TRANSFORM = Affine(0.2, 0.0, 650000.0, 0.0, -0.2, 6860000.0)
SUPER = 24
SAT = 8
PRODUCTS = ["SENTINEL2A_20210401-105852-555_L2A", "SENTINEL2B_20210520-105853-123_L2A"]
SPLITS = {
    "train": ("flair_aerial_train", "flair_labels_train", "flair_sen_train", {"D001_2020": 100, "D002_2021": 200}),
    "test": ("flair_2_aerial_test", "flair_2_labels_test", "flair_2_sen_test", {"D003_2019": 300}),
}


def area_paths(root: Path, split: str, domain: str) -> tuple[Path, Path, Path]:
    aerial, labels, sen, _ = SPLITS[split]
    zone = "Z1_AA"
    return (
        root / aerial / domain / zone / "img",
        root / labels / domain / zone / "msk",
        root / sen / domain / zone / "sen",
    )


def patch(root: Path, split: str, domain: str, number: int) -> tuple[Path, Path]:
    img, msk, _ = area_paths(root, split, domain)
    return img / f"IMG_{number:06d}.tif", msk / f"MSK_{number:06d}.tif"


def write_image(path: Path, rng: np.random.Generator, bands: int = 5, dtype=np.uint8, crs=LAMBERT93) -> None:
    pixels = rng.integers(0, 255, size=(bands, SIZE, SIZE)).astype(dtype)
    write_raster(path, pixels, crs=crs, transform=TRANSFORM, overwrite=True)


def write_mask(path: Path, rng: np.random.Generator, values=(1, 14), size: int = SIZE) -> None:
    mask = rng.integers(values[0], values[1], size=(size, size)).astype(np.uint8)
    write_raster(path, mask, crs=LAMBERT93, transform=TRANSFORM, overwrite=True)


def build_world(root: Path) -> None:
    """Two train domains and one test domain, one area each, two 16 px patches per area, all modalities."""
    rng = np.random.default_rng(0)
    metadata, centroids = {}, {}
    for split, (_, _, _, domains) in SPLITS.items():
        for domain, first in domains.items():
            _, _, sen = area_paths(root, split, domain)
            sen.mkdir(parents=True)
            stem = f"SEN2_sp_{domain}-Z1_AA"
            np.save(sen / f"{stem}_data.npy", rng.integers(1, 5000, (2, 10, SUPER, SUPER), dtype=np.uint16))
            np.save(sen / f"{stem}_masks.npy", np.zeros((2, 2, SUPER, SUPER), dtype=np.uint8))
            (sen / f"{stem}_products.txt").write_text("\n".join(PRODUCTS) + "\n")
            for number in (first + 1, first + 2):
                image, mask = patch(root, split, domain, number)
                write_image(image, rng)
                write_mask(mask, rng)
                metadata[image.stem] = {
                    "patch_centroid_x": 650000.0,
                    "patch_centroid_y": 6860000.0,
                    "patch_centroid_z": 120.5,
                    "camera": "UCE-M3",
                    "date": "2020-06-01",
                    "time": "11h20",
                }
                centroids[image.name] = [SUPER // 2, SUPER // 2 - 1]
    (root / "flair_aerial_metadata.json").write_text(json.dumps(metadata))
    (root / "flair-2_centroids_sp_to_patch.json").write_text(json.dumps(centroids))


@pytest.fixture(scope="module")
def clean_world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("check") / "flair"
    build_world(root)
    return root


@pytest.fixture
def world(clean_world, tmp_path) -> Path:
    copy = tmp_path / "flair"
    shutil.copytree(clean_world, copy)
    return copy


def run_check(root: Path, **kwargs) -> CheckReport:
    return check_dataset(root, expected_size=SIZE, sat_patch_size=SAT, max_workers=2, **kwargs)


def fatal_about(report: CheckReport, name: str) -> list[str]:
    return [p.message for p in report.problems if p.fatal and name in str(p.path)]


def test_clean_dataset_passes(clean_world):
    report = run_check(clean_world)
    assert report.ok, report.problems
    assert report.problems == []
    assert (report.n_patches, report.n_domains, report.n_areas) == (6, 3, 3)
    rows = dict(report.summary)
    assert rows["train patches"].startswith("4 (4 with masks) in 2 domain(s)")
    assert rows["Sentinel-2"] == "3/3 areas readable"
    assert rows["patch size"] == f"{SIZE}x{SIZE}"
    assert rows["largest sat_patch_size"].startswith("16 ")
    assert check_dataset(clean_world, max_workers=2).ok
    too_big = check_dataset(clean_world, sat_patch_size=24, max_workers=2)
    assert too_big.n_fatal == 6
    assert all("at most 16 fits" in p.message for p in too_big.problems)


def test_cli_check_clean_dataset_exits_0(clean_world):
    result = CliRunner().invoke(data_app, ["check", str(clean_world), "--size", str(SIZE)])
    assert result.exit_code == 0, result.output
    assert "no fatal problem" in result.output
    assert "train patches" in result.output


def damage_missing_mask(root: Path) -> str:
    _, mask = patch(root, "train", "D001_2020", 101)
    mask.unlink()
    return mask.name


def damage_band_count(root: Path) -> str:
    image, _ = patch(root, "train", "D002_2021", 202)
    write_image(image, np.random.default_rng(1), bands=3)
    return image.name


def damage_dtype(root: Path) -> str:
    image, _ = patch(root, "test", "D003_2019", 301)
    write_image(image, np.random.default_rng(1), dtype=np.uint16)
    return image.name


def damage_mask_values(root: Path) -> str:
    _, mask = patch(root, "train", "D001_2020", 102)
    write_mask(mask, np.random.default_rng(1), values=(0, 30))
    return mask.name


def damage_metadata(root: Path) -> str:
    path = root / "flair_aerial_metadata.json"
    entries = json.loads(path.read_text())
    del entries["IMG_000201"]
    path.write_text(json.dumps(entries))
    return "IMG_000201.tif"


def damage_centroids(root: Path) -> str:
    path = root / "flair-2_centroids_sp_to_patch.json"
    entries = json.loads(path.read_text())
    del entries["IMG_000302.tif"]
    path.write_text(json.dumps(entries))
    return "IMG_000302.tif"


def damage_truncated(root: Path) -> str:
    image, _ = patch(root, "train", "D002_2021", 201)
    raw = image.read_bytes()
    image.write_bytes(raw[: len(raw) * 2 // 3])
    return image.name


def damage_crop(root: Path) -> str:
    path = root / "flair-2_centroids_sp_to_patch.json"
    entries = json.loads(path.read_text())
    entries["IMG_000102.tif"] = [2, 12]
    path.write_text(json.dumps(entries))
    return "IMG_000102.tif"


def damage_mask_size(root: Path) -> str:
    _, mask = patch(root, "test", "D003_2019", 302)
    write_mask(mask, np.random.default_rng(1), size=SIZE // 2)
    return mask.name


def damage_products(root: Path) -> str:
    _, _, sen = area_paths(root, "train", "D002_2021")
    products = sen / "SEN2_sp_D002_2021-Z1_AA_products.txt"
    products.write_text(PRODUCTS[0] + "\n")
    return products.name


def damage_sentinel_file(root: Path) -> str:
    _, _, sen = area_paths(root, "test", "D003_2019")
    (sen / "SEN2_sp_D003_2019-Z1_AA_masks.npy").unlink()
    return "D003_2019/Z1_AA/sen"


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (damage_missing_mask, "missing"),
        (damage_band_count, "3 band"),
        (damage_dtype, "uint16"),
        (damage_mask_values, "values [20, 21"),
        (damage_metadata, "no entry in"),
        (damage_centroids, "no entry in the Sentinel-2 centroids"),
        (damage_truncated, "corrupt or truncated"),
        (damage_crop, "sat_patch_size"),
        (damage_mask_size, "mask is 8x8"),
        (damage_products, "lists 1 product"),
        (damage_sentinel_file, "_masks.npy"),
    ],
)
def test_each_damage_is_reported_with_its_file(world, damage: Callable[[Path], str], expected):
    name = damage(world)
    report = run_check(world)
    assert not report.ok
    messages = fatal_about(report, name)
    assert any(expected in m for m in messages), report.problems
    result = CliRunner().invoke(data_app, ["check", str(world), "--size", str(SIZE), "--sat-patch-size", "8"])
    assert result.exit_code == 1
    assert name in result.output.replace("\n", "")


def test_every_problem_is_collected(world):
    names = [damage(world) for damage in (damage_missing_mask, damage_band_count, damage_metadata, damage_crop)]
    report = run_check(world)
    assert report.n_fatal == 4
    assert all(fatal_about(report, name) for name in names)
    assert report.problems == sorted(report.problems, key=lambda p: (not p.fatal, str(p.path), p.message))


def test_warnings_do_not_fail(world):
    image, _ = patch(world, "train", "D001_2020", 101)
    write_image(image, np.random.default_rng(3), crs=CRS.from_epsg(4326))
    report = run_check(world)
    assert report.ok
    assert [p.path.name for p in report.problems] == [image.name]
    assert "EPSG:2154" in report.problems[0].message


def test_size_mismatch(world):
    report = check_dataset(world, expected_size=32, sat_patch_size=SAT, max_workers=2)
    assert report.n_fatal == 6
    _, mask = patch(world, "train", "D001_2020", 101)
    write_mask(mask, np.random.default_rng(1), size=SIZE // 2)
    image, _ = patch(world, "train", "D001_2020", 101)
    rng = np.random.default_rng(2)
    write_raster(
        image,
        rng.integers(0, 255, (5, 8, 8)).astype(np.uint8),
        crs=LAMBERT93,
        transform=TRANSFORM,
        overwrite=True,
    )
    report = check_dataset(world, sat_patch_size=SAT, max_workers=2)
    assert any("while most patches are 16x16" in m for m in fatal_about(report, image.name))


def test_sentinel_options(world):
    assert run_check(world, sentinel=False).ok
    shutil.rmtree(world / "flair_sen_train")
    report = run_check(world)
    assert any("no Sentinel-2 folder" in p.message for p in report.problems if p.fatal)
    assert run_check(world, sentinel=False).ok
    command = ["check", str(world), "--size", str(SIZE), "--sat-patch-size", "8"]
    assert CliRunner().invoke(data_app, command).exit_code == 1
    assert CliRunner().invoke(data_app, [*command, "--no-sentinel"]).exit_code == 0
    required = run_check(world, sentinel=True)
    assert any("flair_sen_train" in p.message for p in required.problems if p.fatal)


def test_missing_test_split_is_a_warning(world):
    shutil.rmtree(world / "flair_2_aerial_test")
    report = run_check(world)
    assert report.ok
    assert any("no test split" in p.message and not p.fatal for p in report.problems)


def test_csv_source(world, tmp_path):
    lines = [f"{image},{mask}" for image, mask in (patch(world, "train", "D001_2020", n) for n in (101, 102))]
    csv_path = world / "train.csv"
    csv_path.write_text("\r\n".join(lines) + "\r\n")
    report = run_check(csv_path)
    assert report.ok, report.problems
    assert report.n_patches == 2
    damage_mask_values(world)
    assert fatal_about(run_check(csv_path), "MSK_000102.tif")
    bad = tmp_path / "bad.csv"
    bad.write_text("a.tif,b.tif,c.tif\n")
    report = run_check(bad)
    assert not report.ok and "line 1" in report.problems[0].message


def test_nomenclature_and_missing_source(clean_world, tmp_path):
    result = CliRunner().invoke(data_app, ["check", str(clean_world), "--nomenclature", "7cl"])
    assert result.exit_code == 2
    assert "unknown nomenclature" in result.output
    result = CliRunner().invoke(data_app, ["check", str(tmp_path / "absent")])
    assert result.exit_code == 2
    assert "does not exist" in " ".join(result.output.split())


def test_synth_world_passes_the_check(tmp_path):
    out = tmp_path / "world"
    options = ["--domains", "3", "--areas", "1", "--patches", "2", "--patch-size", "32", "--orthos", "0"]
    result = CliRunner().invoke(data_app, ["synth", str(out), *options, "--sat-patch-size", "16", "--seed", "5"])
    assert result.exit_code == 0, result.output
    assert "train patches" in result.output
    report = check_dataset(out, sat_patch_size=16, max_workers=2)
    assert report.ok, report.problems
    assert report.n_patches == 6 and report.n_domains == 3
    assert dict(report.summary)["Sentinel-2"] == "3/3 areas readable"
    assert check_dataset(out / "train.csv", sat_patch_size=16, max_workers=2).ok
    again = CliRunner().invoke(data_app, ["synth", str(out), *options])
    assert again.exit_code == 2
    assert "--overwrite" in again.output
