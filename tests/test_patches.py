"""`flair data patches`: your orthophoto and labels (a raster, or polygons) as a FLAIR-layout dataset split by
area, and each bad input as a clear error or a stated fallback."""

from __future__ import annotations

import json
from pathlib import Path

import fiona
import fiona.crs
import fiona.transform
import numpy as np
import pytest
import rasterio
import shapely
import yaml
from rasterio.crs import CRS
from rasterio.features import shapes
from rasterio.transform import from_origin
from rasterio.warp import Resampling, calculate_default_transform, reproject
from shapely.geometry import mapping, shape
from typer.testing import CliRunner

from flairkit.cli.main import app
from flairkit.config import load_config
from flairkit.data.check import check_dataset
from flairkit.data.datamodule import build_dataset
from flairkit.data.discovery import read_csv_list
from flairkit.data.metadata import encode_metadata, load_aerial_metadata
from flairkit.data.patches import PatchOptions, make_patches
from flairkit.data.patches.areas import split_areas
from flairkit.errors import DataError, OutputExistsError
from flairkit.nomenclature import INVALID_TARGET

PATCH = 16
HEIGHT, WIDTH = 96, 128
# 6.4 m grid cells (0.0064 km) hold 2 x 2 patches of 16 px at 0.2 m: the origin sits on a cell corner.
TRANSFORM = from_origin(843_001.6, 6_519_001.6, 0.2, 0.2)
CELL_KM = 0.0064
LAMBERT93 = CRS.from_epsg(2154)
NAMES = {1: "Bati", 3: "Route", 5: "Eau", 10: "Prairie", 11: "Culture"}
MAPPING = "value,class\nBati,building\nRoute,3\nEau,water\nPrairie,herbaceous vegetation\nCulture,11\n"


def label_array() -> np.ndarray:
    """Grass west, crops east, a road across, buildings on a grid and one small pond (the rare class)."""
    labels = np.full((HEIGHT, WIDTH), 10, dtype=np.uint8)
    labels[:, 64:] = 11
    labels[40:48, :] = 3
    for row in range(4, 90, 24):
        for col in range(4, 120, 28):
            labels[row : row + 8, col : col + 10] = 1
    labels[70:76, 100:106] = 5
    return labels


def write_geotiff(path: Path, array: np.ndarray, crs: CRS = LAMBERT93, transform=TRANSFORM, nodata=None) -> Path:
    data = array if array.ndim == 3 else array[None]
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0]}
    with rasterio.open(path, "w", **profile, dtype=data.dtype, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(data)
    return path


def write_polygons(path: Path, features: list[tuple[object, dict]], crs: str = "EPSG:2154", **fields: str) -> Path:
    schema = {"geometry": "Unknown", "properties": fields or {"nature": "str"}}
    with fiona.open(path, "w", driver="GPKG", crs=fiona.crs.CRS.from_string(crs), schema=schema) as dst:
        for geometry, properties in features:
            dst.write({"geometry": mapping(geometry), "properties": properties})
    return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> dict[str, Path]:
    """An RGB orthophoto, its label raster, the same labels as named polygons, and their mapping table."""
    folder = tmp_path_factory.mktemp("scene")
    labels = label_array()
    noise = np.random.default_rng(0).integers(0, 20, (3, HEIGHT, WIDTH))
    image = (labels[None] * np.array([20, 15, 10])[:, None, None] + noise).astype(np.uint8)
    polygons = [(shape(g), {"nature": NAMES[int(v)]}) for g, v in shapes(labels, transform=TRANSFORM)]
    (folder / "mapping.csv").write_text(MAPPING)
    return {
        "ortho": write_geotiff(folder / "ortho.tif", image),
        "labels": write_geotiff(folder / "labels.tif", labels),
        "polygons": write_polygons(folder / "labels.gpkg", polygons),
        "mapping": folder / "mapping.csv",
        "folder": folder,
    }


def options(**changes) -> PatchOptions:
    return PatchOptions(**{"patch_size": PATCH, "grid_km": CELL_KM, **changes})


def masks_by_window(report_path: Path, root: Path) -> dict[tuple[int, int], np.ndarray]:
    """(row, col) of each patch in its orthophoto -> its mask."""
    report = json.loads(report_path.read_text())
    found = {}
    for patch in report["patches"]:
        folder = "flair_2_labels_test" if patch["split"] == "test" else "flair_labels_train"
        mask = root / folder / patch["domain"] / patch["zone"] / "msk" / f"MSK{patch['id'][3:]}.tif"
        with rasterio.open(mask) as src:
            found[patch["window"][1], patch["window"][0]] = src.read(1)
    return found


def test_a_label_raster_becomes_patches_masks_csv_lists_and_a_report_flairkit_reads(scene, tmp_path):
    out = tmp_path / "dataset"
    summary = make_patches([scene["ortho"]], scene["labels"], out, options())
    assert sum(summary.counts.values()) == (HEIGHT // PATCH) * (WIDTH // PATCH)
    labels, split_patches = label_array(), {}
    with rasterio.open(scene["ortho"]) as ortho:
        for split, csv_path in summary.csv.items():
            split_patches[split] = read_csv_list(csv_path)
            for record in split_patches[split]:
                with rasterio.open(record.image) as image, rasterio.open(record.mask) as mask:
                    col, row = ~TRANSFORM @ (image.transform.c, image.transform.f)
                    window = rasterio.windows.Window(round(col), round(row), PATCH, PATCH)
                    assert image.crs == LAMBERT93 and image.count == 3 and mask.dtypes == ("uint8",)
                    assert (image.read() == ortho.read(window=window)).all()
                    assert (
                        mask.read(1) == labels[round(row) : round(row) + PATCH, round(col) : round(col) + PATCH]
                    ).all()
                assert record.domain == "D001_0000" and record.zone.startswith("Z")
    assert set(split_patches) == {"train", "val", "test"}
    report = json.loads(summary.report.read_text())
    pixels = {row["class"]: sum(row["pixels"].values()) for row in report["class_frequencies"]}
    assert pixels["water"] == 36 and pixels["unlabelled"] == 0 and sum(pixels.values()) == HEIGHT * WIDTH
    assert "| 5 | water |" in summary.report_markdown.read_text()
    assert check_dataset(out).ok


def test_polygons_are_rasterised_on_the_imagery_grid_into_the_same_masks_as_the_raster(scene, tmp_path):
    from_raster = make_patches([scene["ortho"]], scene["labels"], tmp_path / "r", options())
    from_polygons = make_patches(
        [scene["ortho"]],
        scene["polygons"],
        tmp_path / "p",
        options(class_field="nature", mapping=scene["mapping"]),
    )
    raster_masks = masks_by_window(from_raster.report, tmp_path / "r")
    polygon_masks = masks_by_window(from_polygons.report, tmp_path / "p")
    assert raster_masks.keys() == polygon_masks.keys()
    assert all((raster_masks[k] == polygon_masks[k]).all() for k in raster_masks)
    assert any(f"label values mapped to classes by {scene['mapping']}" in n for n in from_polygons.notes)


def test_splits_are_drawn_by_area_never_patch_by_patch(scene, tmp_path):
    summary = make_patches([scene["ortho"]], scene["labels"], tmp_path / "d", options(split=(0.5, 0.25, 0.25)))
    report = json.loads(summary.report.read_text())
    split_of_area: dict[str, set[str]] = {}
    for patch in report["patches"]:
        split_of_area.setdefault(patch["area"], set()).add(patch["split"])
    assert len(split_of_area) == 12 and all(len(splits) == 1 for splits in split_of_area.values())
    assert summary.counts == {"train": 24, "val": 12, "test": 12}  # 12 areas of 4 patches: 6, 3, 3 areas


def test_the_split_of_areas_follows_the_shares_and_fills_every_split():
    sizes = {f"a{i}": 10 for i in range(10)}
    chosen = split_areas(sizes, (0.7, 0.15, 0.15), seed=1, fixed={"a0": "test"})
    assert chosen["a0"] == "test"
    assert sorted(chosen.values()).count("train") == 7
    assert set(split_areas({"a": 5, "b": 50, "c": 1}, (0.8, 0.1, 0.1), seed=0, fixed={}).values()) == {
        "train",
        "val",
        "test",
    }
    with pytest.raises(DataError, match=r"2 area.* cannot fill the train, val, test splits"):
        split_areas({"a": 5, "b": 5}, (0.7, 0.15, 0.15), seed=0, fixed={})


def test_areas_from_a_file_become_zones_with_their_given_splits(scene, tmp_path):
    left, top = TRANSFORM.c, TRANSFORM.f
    west = shapely.box(left, top - HEIGHT * 0.2, left + 12.8, top)
    east = shapely.box(left + 12.8, top - HEIGHT * 0.2, left + 19.2, top)  # the last 32 px are in no area
    areas = write_polygons(
        tmp_path / "areas.gpkg",
        [(west, {"name": "West side", "split": "train"}), (east, {"name": "East", "split": "test"})],
        name="str",
        split="str",
    )
    summary = make_patches(
        [scene["ortho"]],
        scene["labels"],
        tmp_path / "d",
        options(areas=areas, area_field="name", split_field="split", split=(1.0, 0.0, 0.0)),
    )
    assert summary.counts == {"train": 24, "test": 12} and summary.areas == {"train": ["West side"], "test": ["East"]}
    zones = {p.name for p in (tmp_path / "d" / "flair_aerial_train" / "D001_0000").iterdir()}
    assert zones == {"Z2_Westside"}


def test_balanced_sampling_picks_patches_of_the_rarest_class_first(scene, tmp_path):
    grid = make_patches([scene["ortho"]], scene["labels"], tmp_path / "g", options(split=(1.0, 0.0, 0.0)))
    balanced = make_patches(
        [scene["ortho"]],
        scene["labels"],
        tmp_path / "b",
        options(sampling="balanced", max_patches=6, split=(1.0, 0.0, 0.0)),
    )

    def share(summary, name: str) -> float:
        return next(r["percent"]["train"] for r in summary.frequencies if r["class"] == name)

    assert balanced.counts == {"train": 6}
    assert share(balanced, "water") > 3 * share(grid, "water") and share(balanced, "water") > 0


def test_labels_in_another_crs_are_reprojected_and_said(scene, tmp_path):
    reference = masks_by_window(
        make_patches([scene["ortho"]], scene["labels"], tmp_path / "r", options()).report, tmp_path / "r"
    )
    source = fiona.open(scene["polygons"])
    moved = fiona.transform.transform_geom("EPSG:2154", "EPSG:4326", [f.geometry for f in source])
    polygons = write_polygons(
        tmp_path / "wgs84.gpkg",
        [(shape(g), dict(f.properties)) for g, f in zip(moved, source, strict=True)],
        crs="EPSG:4326",
    )
    source.close()
    summary = make_patches(
        [scene["ortho"]], polygons, tmp_path / "v", options(class_field="nature", mapping=scene["mapping"])
    )
    assert any("labels are in EPSG:4326, the imagery in EPSG:2154: reprojected" in n for n in summary.notes)
    masks = masks_by_window(summary.report, tmp_path / "v")
    agreement = np.mean([(masks[k] == reference[k]).mean() for k in reference])
    assert agreement > 0.99

    dst_crs = CRS.from_epsg(3857)
    transform, width, height = calculate_default_transform(
        LAMBERT93, dst_crs, WIDTH, HEIGHT, *rasterio.transform.array_bounds(HEIGHT, WIDTH, TRANSFORM)[::1]
    )
    warped = np.zeros((height, width), np.uint8)
    reproject(
        label_array(),
        warped,
        src_transform=TRANSFORM,
        src_crs=LAMBERT93,
        dst_transform=transform,
        dst_crs=dst_crs,
        resampling=Resampling.nearest,
    )
    raster = write_geotiff(tmp_path / "labels_3857.tif", warped, crs=dst_crs, transform=transform)
    summary = make_patches([scene["ortho"]], raster, tmp_path / "w", options())
    assert any("labels are in EPSG:3857" in n for n in summary.notes)
    masks = masks_by_window(summary.report, tmp_path / "w")
    assert np.mean([(masks[k] == reference[k]).mean() for k in reference]) > 0.9


def test_invalid_polygons_are_repaired_with_make_valid_and_said(scene, tmp_path):
    left, top = TRANSFORM.c, TRANSFORM.f
    bowtie = shapely.Polygon([(left, top), (left + 6.4, top - 6.4), (left + 6.4, top), (left, top - 6.4)])
    assert not bowtie.is_valid
    polygons = write_polygons(tmp_path / "bowtie.gpkg", [(bowtie, {"nature": "Eau"})])
    summary = make_patches(
        [scene["ortho"]],
        polygons,
        tmp_path / "d",
        options(class_field="nature", mapping=scene["mapping"], split=(1.0, 0.0, 0.0)),
    )
    assert any("1 invalid polygon(s) repaired with shapely make_valid (features 1)" in n for n in summary.notes)
    water = next(r for r in summary.frequencies if r["class"] == "water")
    assert 480 <= water["pixels"]["train"] <= 544  # the two triangles of the bowtie: 512 px in area


def test_class_values_missing_from_the_mapping_are_listed_with_the_mapping_file(scene, tmp_path):
    partial = tmp_path / "partial.yaml"
    partial.write_text(yaml.safe_dump({"Bati": "building", "Route": 3}))
    with pytest.raises(DataError) as error:
        make_patches(
            [scene["ortho"]], scene["polygons"], tmp_path / "d", options(class_field="nature", mapping=partial)
        )
    message = str(error.value)
    assert "label value(s) 'Culture', 'Eau', 'Prairie' are missing from the mapping table" in message
    assert str(partial) in message and not (tmp_path / "d").exists()


def test_an_area_without_labels_is_skipped_and_said(scene, tmp_path):
    west_only = [(g, p) for g, p in fiona_features(scene["polygons"]) if g.bounds[0] < TRANSFORM.c + 12.8]
    polygons = write_polygons(
        tmp_path / "west.gpkg", [(shapely.clip_by_rect(g, 0, 0, TRANSFORM.c + 12.8, 1e8), p) for g, p in west_only]
    )
    summary = make_patches(
        [scene["ortho"]], polygons, tmp_path / "d", options(class_field="nature", mapping=scene["mapping"])
    )
    assert any("6 area(s) hold no patch with labels: skipped (grid_" in n for n in summary.notes)
    assert sum(len(names) for names in summary.areas.values()) == 6


def fiona_features(path: Path) -> list[tuple[object, dict]]:
    with fiona.open(path) as src:
        return [(shape(f.geometry), dict(f.properties)) for f in src]


def test_overlapping_polygons_of_different_classes_the_smallest_wins_whatever_their_order(scene, tmp_path):
    left, top = TRANSFORM.c, TRANSFORM.f
    parcel = shapely.box(left, top - 6.4, left + 6.4, top)
    house = shapely.box(left + 1.6, top - 3.2, left + 3.2, top - 1.6)  # 8 x 8 px inside the parcel
    polygons = write_polygons(tmp_path / "o.gpkg", [(house, {"nature": "Bati"}), (parcel, {"nature": "Culture"})])
    summary = make_patches(
        [scene["ortho"]],
        polygons,
        tmp_path / "d",
        options(class_field="nature", mapping=scene["mapping"], split=(1.0, 0.0, 0.0)),
    )
    assert any(
        "1 pair(s) of polygons of different classes overlap: the smallest polygon wins" in n for n in summary.notes
    )
    counts = {r["class"]: r["pixels"]["train"] for r in summary.frequencies}
    assert counts["building"] == 64 and counts["agricultural land"] == 32 * 32 - 64


def test_imagery_and_labels_that_do_not_overlap_are_an_error_not_an_empty_dataset(scene, tmp_path):
    far = write_polygons(tmp_path / "far.gpkg", [(shapely.box(0, 0, 10, 10), {"nature": "Bati"})])
    with pytest.raises(DataError, match=r"far.gpkg: the labels \(bounds .* do not overlap any orthophoto"):
        make_patches([scene["ortho"]], far, tmp_path / "d", options(class_field="nature", mapping=scene["mapping"]))
    assert not (tmp_path / "d").exists() and not list(tmp_path.glob(".d.*"))


def test_labels_that_start_at_0_are_shifted_to_the_nomenclature_codes_and_said(scene, tmp_path):
    codes = {1: 1, 3: 2, 5: 3, 10: 4, 11: 5}
    five = {"name": "five", "classes": [{"name": NAMES[c], "colour": "#000000"} for c in codes]}
    nomenclature = tmp_path / "five.yaml"
    nomenclature.write_text(yaml.safe_dump(five))
    zero_based = np.vectorize(lambda v: codes[v] - 1)(label_array()).astype(np.uint8)
    labels = write_geotiff(tmp_path / "zero.tif", zero_based)
    summary = make_patches([scene["ortho"]], labels, tmp_path / "d", options(nomenclature=str(nomenclature)))
    assert any("zero.tif: labels start at 0: codes are shifted by +1" in n for n in summary.notes)
    masks = masks_by_window(summary.report, tmp_path / "d")
    assert all((mask == zero_based[r : r + PATCH, c : c + PATCH] + 1).all() for (r, c), mask in masks.items())


def test_unlabelled_pixels_are_the_ignore_value_and_training_reads_them_as_no_target(scene, tmp_path):
    left, top = TRANSFORM.c, TRANSFORM.f
    polygons = write_polygons(
        tmp_path / "one.gpkg", [(shapely.box(left, top - 1.6, left + 1.6, top), {"nature": "Eau"})]
    )
    summary = make_patches(
        [scene["ortho"]],
        polygons,
        tmp_path / "d",
        options(class_field="nature", mapping=scene["mapping"], split=(1.0, 0.0, 0.0)),
    )
    assert summary.counts == {"train": 1}
    config = load_config(None, [f"data.train_csv={summary.csv['train']}", "data.channels=[1,2,3]"])
    target = build_dataset(config, read_csv_list(summary.csv["train"]))[0]["target"].numpy()
    assert (target[:8, :8] == 4).all() and (target == INVALID_TARGET).sum() == PATCH * PATCH - 64


def test_background_gives_the_pixels_no_polygon_covers_a_class(scene, tmp_path):
    left, top = TRANSFORM.c, TRANSFORM.f
    pond = write_polygons(tmp_path / "pond.gpkg", [(shapely.box(left, top - 1.6, left + 1.6, top), {"nature": "Eau"})])
    summary = make_patches(
        [scene["ortho"]],
        pond,
        tmp_path / "d",
        options(class_field="nature", mapping=scene["mapping"], background="herbaceous vegetation"),
    )
    pixels = {r["class"]: sum(r["pixels"].values()) for r in summary.frequencies}
    assert pixels["water"] == 64 and pixels["unlabelled"] == 0
    assert pixels["herbaceous vegetation"] == HEIGHT * WIDTH - 64


def test_aerial_metadata_is_written_only_when_the_acquisition_is_known(scene, tmp_path):
    known = options(camera="UCE-M3-f100-s06", date="2021-06-14", time="10h35", altitude=120.0)
    summary = make_patches([scene["ortho"]], scene["labels"], tmp_path / "m", known)
    metadata = load_aerial_metadata(summary.metadata)
    assert len(metadata) == sum(summary.counts.values())
    assert all(encode_metadata(entry).shape == (45,) for entry in metadata.values())
    unknown = make_patches([scene["ortho"]], scene["labels"], tmp_path / "u", options(camera="UCE"))
    assert unknown.metadata is None
    assert any("aerial metadata not written: date, time, altitude unknown" in n for n in unknown.notes)


def test_an_existing_output_is_kept_without_overwrite_and_an_output_holding_the_inputs_is_refused(scene, tmp_path):
    out = tmp_path / "d"
    make_patches([scene["ortho"]], scene["labels"], out, options())
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        make_patches([scene["ortho"]], scene["labels"], out, options())
    make_patches([scene["ortho"]], scene["labels"], out, options(), overwrite=True)
    with pytest.raises(DataError, match="lies in the output folder"):
        make_patches([scene["ortho"]], scene["labels"], scene["folder"], options(), overwrite=True)
    assert scene["ortho"].is_file()


def test_the_command_prints_the_class_frequencies_and_exits_2_on_bad_input(scene, tmp_path):
    runner = CliRunner()
    args = ["data", "patches", str(scene["ortho"]), "-l", str(scene["polygons"]), "-o", str(tmp_path / "d")]
    args += ["--class-field", "nature", "--mapping", str(scene["mapping"]), "--patch-size", "16", "--grid-km", "0.0064"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "class frequencies" in result.output and "unlabelled" in result.output and "water" in result.output
    assert "note:" in result.output and "data.train_csv=" in result.output
    bad = runner.invoke(app, [*args[:-6], "--class-field", "missing", "--overwrite"])
    assert bad.exit_code == 2 and "has no field 'missing' (class field); its fields: nature" in bad.stderr
