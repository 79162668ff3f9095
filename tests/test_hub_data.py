"""FLAIR-HUB data: layout, split CSVs and GeoPackages, series, elevation, dataset, collate, check, synthetic world.

Besides flairkit's own synthetic world, the reader is tested on files written as torchgeo writes its fake
FLAIR-HUB data (``tests/data/flair/data.py`` of torchgeo: its dtypes, sizes, transform and split GeoPackage),
so that it reads files flairkit did not write.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import fiona
import numpy as np
import pytest
import rasterio
import torch
from rasterio.crs import CRS
from rasterio.transform import Affine
from typer.testing import CliRunner

from flairkit.cli.data import data_app
from flairkit.config import config_from_dict
from flairkit.config.schema import HubDataConfig
from flairkit.data.hub.check import check_hub_dataset
from flairkit.data.hub.dataset import HubDataset, SeriesDates, build_hub_dataset, collate_hub, split_patches
from flairkit.data.hub.elevation import elevation_channels
from flairkit.data.hub.layout import (
    CSV_COLUMNS,
    DATES_FILES,
    INPUT_MODALITIES,
    METADATA_FOLDER,
    MODALITIES,
    SPLIT_FILE,
    HubPatch,
    PatchId,
    dates_cell,
    is_hub_folder,
    modality_folders,
    needed_metadata,
    needed_modalities,
    patch_file,
    read_dates_gpkg,
    read_split_csv,
    read_split_gpkg,
    scan_folder,
    write_geopackage,
    write_split_csv,
)
from flairkit.data.hub.sentinel import clear_dates, date_offsets, monthly_average
from flairkit.data.rasters import LAMBERT93, write_raster
from flairkit.data.sentinel import day_offsets
from flairkit.errors import ConfigError, DataError, OutputExistsError
from flairkit.nomenclature import LPIS_CLASSES, get_nomenclature
from flairkit.synth.hub import HubSynthOptions, synthesize_hub_world

WORLD = HubSynthOptions(n_domains=3, areas_per_domain=1, patches_per_area=4, patch_size=256, seed=3)
"""12 patches of 256 aerial pixels (5 Sentinel pixels), one ROI per domain: train, valid, test."""
ALL_INPUTS = list(INPUT_MODALITIES)
BOTH_LABELS = ["AERIAL_LABEL-COSIA", "ALL_LABEL-LPIS"]
FOOTPRINT = {"type": "Polygon", "coordinates": [[(0, 0), (1, 0), (1, 1), (0, 1), (0, 0)]]}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hub") / "world"
    synthesize_hub_world(root, WORLD)
    return root


def hub_config(root: Path, **keys) -> HubDataConfig:
    return config_from_dict({"data": {"hub": {"root": str(root), **keys}}}).data.hub


def _rewrite(path: Path, array: np.ndarray) -> None:
    with rasterio.open(path) as src:
        crs, transform = src.crs, src.transform
    write_raster(path, array, crs=crs, transform=transform, overwrite=True)


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


# Layout: patch ids, paths, split CSVs, GeoPackages.


def test_patch_ids_and_release_paths(tmp_path):
    patch = PatchId.parse("D024047-2021_AA-S1-V18_10-22")
    assert (patch.domain, patch.year, patch.roi, patch.row, patch.col) == ("D024047", "2021", "AA-S1-V18", "10", "22")
    assert str(patch) == "D024047-2021_AA-S1-V18_10-22" and patch.domain_year == "D024047-2021"
    assert patch_file(tmp_path, patch, "SPOT_RGBI") == (
        tmp_path / "D024047-2021_SPOT_RGBI" / "AA-S1-V18" / "D024047-2021_SPOT_RGBI_AA-S1-V18_10-22.tif"
    )
    assert patch_file(tmp_path, "D006-2020_FF-S1-14_5-5", "AERIAL-RLT_PAN") == (
        tmp_path / "D006-195X_AERIAL-RLT_PAN" / "FF-S1-14" / "D006-195X_AERIAL-RLT_PAN_FF-S1-14_5-5.tif"
    )
    for bad in ("D006_2020_FF-S1-14_5-5", "D006-2020_FF_S1_5-5", "IMG_000123", "D006-195X_FF-S1-14_5-5"):
        with pytest.raises(DataError, match="not a FLAIR-HUB patch id"):
            PatchId.parse(bad)
    assert modality_folders(["D006-2020", "D017-2018", "D017-2021"], ["AERIAL-RLT_PAN", "SENTINEL2_TS"]) == [
        "D006-195X_AERIAL-RLT_PAN",
        "D006-2020_SENTINEL2_TS",
        "D017-195X_AERIAL-RLT_PAN",
        "D017-2018_SENTINEL2_TS",
        "D017-2021_SENTINEL2_TS",
    ]


def test_what_a_config_needs(tmp_path):
    config = hub_config(
        tmp_path, modalities=["AERIAL_RGBI", "SENTINEL2_TS", "SENTINEL1-ASC_TS"], labels=["ALL_LABEL-LPIS"]
    )
    assert needed_modalities(config) == (
        "AERIAL_RGBI",
        "SENTINEL2_TS",
        "SENTINEL1-ASC_TS",
        "ALL_LABEL-LPIS",
        "SENTINEL2_MSK-SC",
    )
    unfiltered = hub_config(tmp_path, modalities=["SENTINEL2_TS"], sentinel2={"filter_clouds": False}, labels=[])
    assert needed_modalities(unfiltered) == ("SENTINEL2_TS",)
    assert needed_metadata(unfiltered.model_copy(update={"train_csv": tmp_path})) == (
        "GLOBAL_SENTINEL2_MTD_DATES.gpkg",
    )
    assert needed_metadata(config) == (
        SPLIT_FILE,
        "GLOBAL_SENTINEL2_MTD_DATES.gpkg",
        "GLOBAL_SENTINEL1-ASC_MTD_DATES.gpkg",
    )


def test_split_csv_as_ign_writes_it(tmp_path):
    ids = ["D006-2020_FF-S1-14_5-5", "D006-2020_FU-S2-12_9-5"]
    patches = [HubPatch(i, {m: patch_file(tmp_path, i, m) for m in CSV_COLUMNS[1:]}) for i in ids]
    csv_path = write_split_csv(tmp_path / "csv" / "TRAIN.csv", patches)
    lines = csv_path.read_text().splitlines()
    assert lines[0] == ",".join(CSV_COLUMNS)
    assert lines[1].split(",")[1] == "../D006-195X_AERIAL-RLT_PAN/FF-S1-14/D006-195X_AERIAL-RLT_PAN_FF-S1-14_5-5.tif"
    assert read_split_csv(csv_path) == patches
    with pytest.raises(OutputExistsError):
        write_split_csv(csv_path, patches)

    odd = tmp_path / "odd.csv"
    odd.write_text("patch_id,AERIAL_RGBI,comment\nD006-2020_FF-S1-14_5-5,,x\n")
    assert read_split_csv(odd) == [HubPatch("D006-2020_FF-S1-14_5-5", {})]
    for text, message in (
        ("id,AERIAL_RGBI\nD006-2020_FF-S1-14_5-5,a.tif\n", "no patch_id column"),
        (
            "patch_id\nD006-2020_FF-S1-14_5-5\nD006-2020_FF-S1-14_5-5\n",
            "line 3: patch D006-2020_FF-S1-14_5-5 is listed twice",
        ),
        ("patch_id\nIMG_1\n", "line 2: 'IMG_1' is not a FLAIR-HUB patch id"),
    ):
        odd.write_text(text)
        with pytest.raises(DataError, match=message):
            read_split_csv(odd)


def test_geopackage_dates_and_splits(tmp_path):
    gpkg = tmp_path / "dates.gpkg"
    rows = [
        {
            "patch_id": "D006-2020_A-S1-1_1-1",
            "acquisition_dates": dates_cell([dt.date(2020, 3, 2), dt.date(2020, 1, 9)]),
        },
        {"patch_id": "D006-2020_A-S1-1_1-2", "acquisition_dates": json.dumps(["20201231"])},
    ]
    write_geopackage(gpkg, rows, [FOOTPRINT] * 2, "EPSG:2154")
    assert read_dates_gpkg(gpkg) == {
        "D006-2020_A-S1-1_1-1": (dt.date(2020, 3, 2), dt.date(2020, 1, 9)),  # band order, not sorted
        "D006-2020_A-S1-1_1-2": (dt.date(2020, 12, 31),),
    }
    assert list(read_dates_gpkg(gpkg, ["D006-2020_A-S1-1_1-2"])) == ["D006-2020_A-S1-1_1-2"]
    rows[1]["acquisition_dates"] = json.dumps({"0": "2020-12-31"})
    write_geopackage(tmp_path / "bad.gpkg", rows, [FOOTPRINT] * 2, "EPSG:2154")
    with pytest.raises(DataError, match=r"patch D006-2020_A-S1-1_1-2: acquisition date '2020-12-31' is not a YYYYMMDD"):
        read_dates_gpkg(tmp_path / "bad.gpkg")

    splits = tmp_path / "split.gpkg"
    values = ["train", "valid", "test", "excluded"]
    ids = [f"D006-2020_A-S1-1_1-{k}" for k in range(4)]
    write_geopackage(
        splits, [{"patch_id": i, "split_1": v} for i, v in zip(ids, values, strict=True)], [FOOTPRINT] * 4, "EPSG:2154"
    )
    assert read_split_gpkg(splits, "split_1") == {ids[0]: "train", ids[1]: "val", ids[2]: "test"}
    with pytest.raises(DataError, match=r"no split column 'split_2'; set data.hub.split to one of split_1"):
        read_split_gpkg(splits, "split_2")
    with pytest.raises(DataError, match="no acquisition_dates column"):
        read_dates_gpkg(splits)
    with pytest.raises(DataError, match="file not found"):
        read_dates_gpkg(tmp_path / "absent.gpkg")


# Series: offsets, cloud and snow filtering, monthly means.


def test_date_offsets_are_date_minus_reference_in_each_year():
    dates = [dt.date(2021, 5, 15), dt.date(2021, 5, 10), dt.date(2020, 6, 14), dt.date(2019, 1, 1)]
    assert date_offsets(dates, "05-15").tolist() == [0, -5, 30, -134]
    # The opposite sign of FLAIR #2's offsets for dates of the reference year.
    same_year = dates[:2]
    assert date_offsets(same_year).tolist() == (-day_offsets([(d.month, d.day) for d in same_year])).tolist()


def _masks(cloud: list[float], snow: list[float], probability: int = 80) -> np.ndarray:
    """(T, 2, 10, 10) masks whose date t has the first cloud[t] (snow[t]) fraction of pixels at ``probability``."""
    masks = np.zeros((len(cloud), 2, 10, 10), dtype=np.uint8)
    for t, (c, s) in enumerate(zip(cloud, snow, strict=True)):
        masks[t, 1].flat[: round(c * 100)] = probability
        masks[t, 0].flat[100 - round(s * 100) :] = probability
    return masks


def test_cloud_and_snow_filter_thresholds():
    masks = _masks(cloud=[0, 0.5, 0.03, 0.10, 0], snow=[0, 0, 0, 0, 0.2])
    assert clear_dates(masks).tolist() == [0, 2]  # at most 5% of pixels above probability 1
    assert clear_dates(masks, max_cover=0.15).tolist() == [0, 2, 3]
    assert clear_dates(masks, max_cover=0.2).tolist() == [0, 2, 3, 4]
    assert clear_dates(masks, cloud_threshold=80).tolist() == [0, 1, 2, 3]  # clouds at 80 no longer count
    assert clear_dates(masks, snow_threshold=80).tolist() == [0, 2, 4]
    assert clear_dates(_masks([0.02], [0], probability=1)).tolist() == [0]  # at the threshold is clear


def test_when_no_date_is_clear():
    # As IGN: clouds are ignored when they cover every date.
    assert clear_dates(_masks(cloud=[0.5, 0.9], snow=[0, 0])).tolist() == [0, 1]
    # Snow on every date: flairkit keeps the least covered date (IGN would return an empty series).
    assert clear_dates(_masks(cloud=[0.5, 0.1, 0.3], snow=[0.3, 0.2, 0.25])).tolist() == [1]
    assert clear_dates(np.zeros((0, 2, 10, 10))).tolist() == []


def test_monthly_average():
    dates = [dt.date(2021, 2, 3), dt.date(2021, 2, 20), dt.date(2021, 4, 10)]
    series = np.array([1.0, 3.0, 10.0], dtype=np.float32).reshape(3, 1, 1, 1) * np.ones((3, 2, 2, 2), np.float32)
    means, offsets = monthly_average(series, dates, "05-15")
    assert means[:, 0, 0, 0].tolist() == [2.0, 10.0] and means.shape == (2, 2, 2, 2) and means.dtype == np.float32
    assert offsets.tolist() == [-89, -30]  # 15 February and 15 April minus 15 May
    filled, filled_offsets = monthly_average(series, dates, "05-15", fill_empty_months=True)
    assert filled[:, 0, 0, 0].tolist() == [0.0, 2.0, 2.0, 10.0] + [10.0] * 8
    assert filled_offsets.tolist() == [0, -89, -89, -30] + [-30] * 8
    assert series[:, 0, 0, 0].tolist() == [1.0, 3.0, 10.0]


def test_elevation_modes():
    dem = np.array([[[110.5]], [[100.0]]], dtype=np.float32)
    assert elevation_channels(dem, "dsm_ndsm", "f").ravel().tolist() == [110.5, 10.5]
    assert elevation_channels(dem, "dsm_dtm", "f").ravel().tolist() == [110.5, 100.0]
    assert elevation_channels(dem.astype(np.uint16), "ndsm", "f").ravel().tolist() == [10.0]
    with pytest.raises(DataError, match=r"dem.tif: has 1 band"):
        elevation_channels(dem[:1], "dsm_ndsm", "dem.tif")


def test_config_section_refuses_bad_keys(tmp_path):
    for keys, message in (
        ({"modalities": ["AERIAL_RGBI", "LIDAR"]}, "data.hub.modalities.1"),
        ({"modalities": []}, "at least one input modality"),
        ({"channels": {"SPOT_RGBI": [0, 5]}}, r"SPOT_RGBI: \[0, 5\] must list distinct 1-based bands within 1..4"),
        ({"channels": {"DEM_ELEV": [1]}}, "choose its bands with data.hub.elevation"),
        ({"labels": ["ALL_LABEL-LPIS", "ALL_LABEL-LPIS"]}, "listed twice"),
        ({"lpis_level": 4}, "data.hub.lpis_level"),
        ({"reference_date": "02-29"}, "not a MM-DD date of every year"),
        ({"elevation": "dtm"}, "data.hub.elevation"),
        ({"sentinel2": {"max_cover": 1.5}}, "data.hub.sentinel2.max_cover"),
    ):
        with pytest.raises(ConfigError, match=message):
            hub_config(tmp_path, **keys)
    with pytest.raises(ConfigError, match=r"data.hub.root"):
        hub_config(tmp_path / "absent")


# The dataset and its collate, on the synthetic world.


@pytest.mark.parametrize(
    ("modalities", "labels"),
    [
        (["AERIAL_RGBI"], ["AERIAL_LABEL-COSIA"]),
        (["SENTINEL2_TS", "SENTINEL1-ASC_TS", "SENTINEL1-DESC_TS"], ["ALL_LABEL-LPIS"]),
        (["AERIAL-RLT_PAN", "DEM_ELEV", "SPOT_RGBI"], []),
        (ALL_INPUTS, BOTH_LABELS),
    ],
)
def test_items_hold_exactly_the_chosen_modalities(world, modalities, labels):
    dataset = build_hub_dataset(hub_config(world, modalities=modalities, labels=labels), "train")
    item = dataset[0]
    series = [m for m in modalities if MODALITIES[m].series]
    dates = [m.replace("_TS", "_DATES") for m in series]
    assert set(item) == {"patch_id", "index", *modalities, *labels, *dates}
    sides = {"AERIAL_RGBI": 256, "AERIAL-RLT_PAN": 128, "DEM_ELEV": 256, "SPOT_RGBI": 32}
    for modality in modalities:
        tensor = item[modality]
        if modality in series:
            assert tensor.shape[1:] == (MODALITIES[modality].bands, 5, 5) and tensor.dtype == torch.float32
            assert item[modality.replace("_TS", "_DATES")].shape == (tensor.shape[0],)
        else:
            assert tensor.shape == (MODALITIES[modality].bands, sides[modality], sides[modality])
            assert tensor.dtype == (torch.float32 if modality in ("DEM_ELEV", "SPOT_RGBI") else torch.uint8)
    for label in labels:
        assert item[label].shape == (256, 256) and item[label].dtype == torch.uint8


def test_values_channels_elevation_and_lpis_level(world):
    config = hub_config(
        world,
        modalities=["AERIAL_RGBI", "DEM_ELEV", "SENTINEL1-ASC_TS"],
        channels={"AERIAL_RGBI": [4, 1, 2], "SENTINEL1-ASC_TS": [2]},
        labels=BOTH_LABELS,
        lpis_level=3,
        elevation="dsm_ndsm",
    )
    dataset = build_hub_dataset(config, "val")
    item = dataset[1]
    patch = dataset.patches[1]
    aerial = _read(patch.files["AERIAL_RGBI"])
    assert torch.equal(item["AERIAL_RGBI"], torch.from_numpy(aerial[[3, 0, 1]]))
    dem = _read(patch.files["DEM_ELEV"])
    assert torch.allclose(item["DEM_ELEV"], torch.from_numpy(np.stack([dem[0], dem[0] - dem[1]])))
    s1 = _read(patch.files["SENTINEL1-ASC_TS"])
    assert torch.equal(item["SENTINEL1-ASC_TS"][:, 0], torch.from_numpy(s1[1::2]))
    assert torch.equal(item["ALL_LABEL-LPIS"], torch.from_numpy(_read(patch.files["ALL_LABEL-LPIS"])[2]))
    assert torch.equal(item["AERIAL_LABEL-COSIA"], torch.from_numpy(_read(patch.files["AERIAL_LABEL-COSIA"])[0]))
    assert int(item["ALL_LABEL-LPIS"].max()) < len(LPIS_CLASSES[2])
    dates = read_dates_gpkg(world / METADATA_FOLDER / DATES_FILES["SENTINEL1-ASC_TS"])[patch.patch_id]
    assert item["SENTINEL1-ASC_DATES"].tolist() == date_offsets(dates).tolist()


def test_sentinel2_filtering_and_monthly_means_in_items(world):
    keys = {"modalities": ["SENTINEL2_TS"], "labels": []}
    raw = build_hub_dataset(hub_config(world, **keys, sentinel2={"filter_clouds": False}), "train")
    filtered = build_hub_dataset(hub_config(world, **keys), "train")
    monthly = build_hub_dataset(hub_config(world, **keys, sentinel2={"monthly_average": True}), "train")
    lengths = [(len(raw[i]["SENTINEL2_DATES"]), len(filtered[i]["SENTINEL2_DATES"])) for i in range(len(raw))]
    assert all(0 < kept <= every for every, kept in lengths) and any(kept < every for every, kept in lengths)
    item = monthly[0]
    assert len(item["SENTINEL2_DATES"]) <= 12 and item["SENTINEL2_DATES"].tolist() == sorted(
        item["SENTINEL2_DATES"].tolist()
    )
    strict = hub_config(world, **keys, sentinel2={"cloud_threshold": 0, "snow_threshold": 0, "max_cover": 0})
    assert all(len(build_hub_dataset(strict, "train")[i]["SENTINEL2_TS"]) >= 1 for i in range(len(raw)))


def test_filtering_never_changes_shared_state(world):
    dataset = build_hub_dataset(hub_config(world, modalities=["SENTINEL2_TS"], labels=[]), "train")
    before = copy.deepcopy(dataset.dates)
    first = dataset[0]
    for index in [*range(len(dataset)), 0, 2, 1]:
        dataset[index]
    again = dataset[0]
    assert dataset.dates == before
    assert torch.equal(first["SENTINEL2_TS"], again["SENTINEL2_TS"])
    assert torch.equal(first["SENTINEL2_DATES"], again["SENTINEL2_DATES"])
    masks = np.full((3, 2, 4, 4), 50, dtype=np.uint8)
    clear_dates(masks)
    assert (masks == 50).all()


def test_collate_pads_series_and_marks_padding(world):
    config = hub_config(world, modalities=["AERIAL_RGBI", "SENTINEL2_TS", "SENTINEL1-DESC_TS"], labels=BOTH_LABELS)
    dataset = build_hub_dataset(config, "train")
    items = [dataset[i] for i in range(len(dataset))]
    lengths = [len(it["SENTINEL2_DATES"]) for it in items]
    assert len(set(lengths)) > 1, "the test needs series of different lengths"
    batch = collate_hub(items)
    assert batch["patch_id"] == [p.patch_id for p in dataset.patches] and batch["index"].tolist() == [0, 1, 2, 3]
    assert batch["AERIAL_RGBI"].shape == (4, 4, 256, 256) and batch["ALL_LABEL-LPIS"].shape == (4, 256, 256)
    longest = max(lengths)
    assert batch["SENTINEL2_TS"].shape == (4, longest, 10, 5, 5)
    for i, length in enumerate(lengths):
        assert batch["SENTINEL2_PAD_MASK"][i].tolist() == [False] * length + [True] * (longest - length)
        assert torch.equal(batch["SENTINEL2_TS"][i, :length], items[i]["SENTINEL2_TS"])
        assert (
            batch["SENTINEL2_TS"][i, length:].abs().sum() == 0 and batch["SENTINEL2_DATES"][i, length:].abs().sum() == 0
        )
    assert batch["SENTINEL1-DESC_PAD_MASK"].shape == batch["SENTINEL1-DESC_DATES"].shape
    odd = dict(items[1], AERIAL_RGBI=items[1]["AERIAL_RGBI"][:, :128])
    with pytest.raises(DataError, match=f"AERIAL_RGBI of {items[1]['patch_id']} is .* in the same batch"):
        collate_hub([items[0], odd])
    padded = collate_hub([dataset[(0, False)], dataset[(1, True)]])
    assert padded["valid"].tolist() == [True, False]


def test_dataset_survives_pickling_for_loader_workers(world):
    dataset = build_hub_dataset(hub_config(world, modalities=["AERIAL_RGBI", "SENTINEL2_TS"]), "test")
    copy_in_worker = pickle.loads(pickle.dumps(dataset))
    for key, value in dataset[3].items():
        assert torch.equal(value, copy_in_worker[3][key]) if torch.is_tensor(value) else value == copy_in_worker[3][key]


def test_split_patches_from_csv_match_the_layout(world):
    csv_path = world / "csv" / "FLAIR-HUB_SYNTH-DATASET_TEST.csv"
    from_csv = split_patches(hub_config(world, test_csv=str(csv_path)), "test")
    from_layout = split_patches(hub_config(world, modalities=ALL_INPUTS, labels=BOTH_LABELS), "test")
    assert {p.patch_id: dict(p.files) for p in from_csv} == {p.patch_id: dict(p.files) for p in from_layout}
    with pytest.raises(DataError, match="no split column 'split_9'"):
        split_patches(hub_config(world, split="split_9"), "train")


# Bad input: a clear error naming the file, or the documented fallback.


@pytest.fixture
def copy_of(world, tmp_path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(world, root)
    return root


def test_a_patch_missing_one_modality_names_the_file(copy_of):
    config = hub_config(copy_of, modalities=["AERIAL_RGBI", "SENTINEL1-ASC_TS"])
    patch = split_patches(config, "train")[2]
    patch.files["SENTINEL1-ASC_TS"].unlink()
    with pytest.raises(
        DataError, match=rf"{patch.files['SENTINEL1-ASC_TS'].name}: is missing .* leave SENTINEL1-ASC_TS out"
    ):
        build_hub_dataset(config, "train")
    # A split CSV without the column: the patch is named.
    csv_path = copy_of / "train.csv"
    csv_path.write_text(f"patch_id,AERIAL_RGBI\n{patch.patch_id},{patch.files['AERIAL_RGBI']}\n")
    config = hub_config(copy_of, train_csv=str(csv_path), labels=[])
    assert len(build_hub_dataset(config, "train")) == 1
    with pytest.raises(DataError, match=f"patch {patch.patch_id}: has no DEM_ELEV path in its split CSV"):
        build_hub_dataset(config.model_copy(update={"modalities": ["DEM_ELEV"]}), "train")


def test_domains_without_any_folder_are_left_out(copy_of):
    config = hub_config(copy_of, modalities=["AERIAL_RGBI"], labels=[])
    test_domain = split_patches(config, "test")[0].patch_id.split("_")[0]
    for folder in copy_of.glob(f"{test_domain}_*"):
        shutil.rmtree(folder)
    with pytest.raises(DataError, match=r"puts no patch of the domains .* in the test split"):
        split_patches(config, "test")
    assert len(split_patches(config, "train")) == 4


def test_mismatched_dates_are_clear_errors(copy_of):
    config = hub_config(copy_of, modalities=["SENTINEL2_TS"], labels=[])
    patches = split_patches(config, "train")
    gpkg = copy_of / METADATA_FOLDER / DATES_FILES["SENTINEL2_TS"]
    dates = read_dates_gpkg(gpkg)
    victim = patches[1].patch_id
    rows = [{"patch_id": p, "acquisition_dates": dates_cell(d[:-1] if p == victim else d)} for p, d in dates.items()]
    gpkg.unlink()
    write_geopackage(gpkg, rows, [FOOTPRINT] * len(rows), "EPSG:2154")
    dataset = build_hub_dataset(config, "train")
    dataset[0]
    n = len(dates[victim])
    name = patches[1].files["SENTINEL2_TS"].name
    with pytest.raises(DataError, match=rf"{name}: holds {n} date\(s\) but .*_MTD_DATES.gpkg lists {n - 1} for"):
        dataset[1]
    # Masks with fewer dates than their series.
    masks = patches[0].files["SENTINEL2_MSK-SC"]
    _rewrite(masks, _read(masks)[:-2])
    with pytest.raises(DataError, match=f"{masks.name}: holds .* date\\(s\\) of masks but the Sentinel-2 series"):
        dataset[0]
    # Patches absent from the dates file.
    other = gpkg.with_name("other.gpkg")
    write_geopackage(other, [r for r in rows if r["patch_id"] == patches[0].patch_id], [FOOTPRINT], "EPSG:2154")
    with pytest.raises(DataError, match=r"other.gpkg: no acquisition dates for 3 patch\(es\), e.g. "):
        HubDataset(patches, config, {"SENTINEL2_TS": SeriesDates(other, read_dates_gpkg(other))})
    with pytest.raises(DataError, match="no acquisition dates were given for SENTINEL2_TS"):
        HubDataset(patches, config, {})


def test_bad_label_values_and_band_counts_name_the_file(copy_of):
    config = hub_config(copy_of, modalities=["AERIAL_RGBI"], labels=BOTH_LABELS, lpis_level=2)
    patch = split_patches(config, "train")[0]
    lpis = _read(patch.files["ALL_LABEL-LPIS"])
    lpis[1, 0, 0] = 31
    _rewrite(patch.files["ALL_LABEL-LPIS"], lpis)
    dataset = build_hub_dataset(config, "train")
    with pytest.raises(DataError, match=r"ALL_LABEL-LPIS.*: band 2 holds values \[31\] outside 0..30"):
        dataset[0]
    assert build_hub_dataset(config.model_copy(update={"lpis_level": 3}), "train")[0]["ALL_LABEL-LPIS"].shape == (
        256,
        256,
    )
    _rewrite(patch.files["AERIAL_RGBI"], _read(patch.files["AERIAL_RGBI"])[:3])
    with pytest.raises(DataError, match=r"AERIAL_RGBI.*: has 3 band\(s\), FLAIR-HUB AERIAL_RGBI has 4"):
        dataset[0]


def test_missing_split_file_or_root(tmp_path, copy_of):
    (copy_of / METADATA_FOLDER / SPLIT_FILE).unlink()
    with pytest.raises(DataError, match=rf"{SPLIT_FILE}: not found; .*\(data.hub.train_csv\)"):
        split_patches(hub_config(copy_of), "train")
    with pytest.raises(ConfigError, match=r"set data.hub.root"):
        split_patches(HubDataConfig(), "val")


# flair data check on a FLAIR-HUB folder.


def test_check_passes_the_synthetic_world(world):
    assert is_hub_folder(world) and not is_hub_folder(world / "csv")
    report = check_hub_dataset(world)
    assert report.ok and not report.problems, report.problems
    assert report.n_patches == 12 and report.n_domains == 3
    assert ("patch size", "256x256 aerial pixels") in report.summary
    result = CliRunner().invoke(data_app, ["check", str(world)])
    assert result.exit_code == 0, result.output
    assert "FLAIR-HUB folder" in result.output and "no fatal problem" in result.output


def _first(root: Path, modality: str) -> Path:
    return sorted(root.glob(f"*_{modality}/*/*.tif"))[0]


def damage_missing_file(root: Path) -> tuple[Path, str]:
    path = _first(root, "SPOT_RGBI")
    path.unlink()
    return path, "has no SPOT_RGBI file"


def damage_band_count(root: Path) -> tuple[Path, str]:
    path = _first(root, "AERIAL_RGBI")
    _rewrite(path, _read(path)[:3])
    return path, "has 3 band(s), FLAIR-HUB AERIAL_RGBI has 4"


def damage_size(root: Path) -> tuple[Path, str]:
    path = _first(root, "AERIAL-RLT_PAN")
    _rewrite(path, _read(path)[:, :100, :100])
    return path, "is 100x100 pixels, AERIAL-RLT_PAN patches are 128x128"


def damage_dates_count(root: Path) -> tuple[Path, str]:
    path = _first(root, "SENTINEL1-DESC_TS")
    _rewrite(path, _read(path)[:-2])
    return path, "but GLOBAL_SENTINEL1-DESC_MTD_DATES.gpkg lists"


def damage_mask_dates(root: Path) -> tuple[Path, str]:
    path = _first(root, "SENTINEL2_MSK-SC")
    _rewrite(path, np.concatenate([_read(path)] * 2))
    return path, "its Sentinel-2 series"


def damage_label_values(root: Path) -> tuple[Path, str]:
    path = _first(root, "AERIAL_LABEL-COSIA")
    values = _read(path)
    values[0, :2, :2] = 19
    _rewrite(path, values)
    return path, "band 1 holds values [19] outside 0..18"


def damage_dates_file(root: Path) -> tuple[Path, str]:
    path = root / METADATA_FOLDER / DATES_FILES["SENTINEL2_TS"]
    path.unlink()
    return path, "not found"


def damage_truncated(root: Path) -> tuple[Path, str]:
    path = _first(root, "DEM_ELEV")
    path.write_bytes(path.read_bytes()[:300])
    return path, "cannot read"


@pytest.mark.parametrize(
    "damage",
    [
        damage_missing_file,
        damage_band_count,
        damage_size,
        damage_dates_count,
        damage_mask_dates,
        damage_label_values,
        damage_dates_file,
        damage_truncated,
    ],
)
def test_check_reports_each_problem_with_its_file(copy_of, damage: Callable[[Path], tuple[Path, str]]):
    path, message = damage(copy_of)
    report = check_hub_dataset(copy_of)
    assert not report.ok
    fatal = [p for p in report.problems if p.fatal]
    assert any(p.path == path and message in p.message for p in fatal), fatal
    if damage is damage_missing_file:
        result = CliRunner().invoke(data_app, ["check", str(copy_of)])
        assert result.exit_code == 1 and "fatal problem" in result.output


def test_check_modalities_option(copy_of):
    damage_missing_file(copy_of)
    assert check_hub_dataset(copy_of, modalities=["AERIAL_RGBI", "AERIAL_LABEL-COSIA"]).ok
    result = CliRunner().invoke(data_app, ["check", str(copy_of), "--modalities", "AERIAL_RGBI,DEM_ELEV"])
    assert result.exit_code == 0, result.output
    with pytest.raises(DataError, match="unknown FLAIR-HUB modalities"):
        check_hub_dataset(copy_of, modalities=["LIDAR"])


# The synthetic world: layout round trip, determinism, and crop types only the series tell apart.


def test_synth_world_round_trip(world):
    found = scan_folder(world)
    assert len(found.patches) == 12 and not found.unmatched
    assert all(set(files) == set(CSV_COLUMNS[1:]) for files in found.patches.values())
    for split, role in (("train", "TRAIN"), ("val", "VALID"), ("test", "TEST")):
        from_csv = read_split_csv(world / "csv" / f"FLAIR-HUB_SYNTH-DATASET_{role}.csv")
        assert all(found.patches[p.patch_id] == dict(p.files) for p in from_csv)
        official = read_split_gpkg(world / METADATA_FOLDER / SPLIT_FILE, "split_1")
        assert sorted(p.patch_id for p in from_csv) == sorted(k for k, v in official.items() if v == split)
    folds = [read_split_gpkg(world / METADATA_FOLDER / SPLIT_FILE, f"split_{k}") for k in range(1, 6)]
    assert len({tuple(sorted(fold.items())) for fold in folds}) == 3  # the 3 domains take turns
    with rasterio.open(_first(world, "SENTINEL2_TS")) as src:
        assert src.crs == LAMBERT93 and src.res == (10.24, 10.24) and src.dtypes[0] == "uint16"
    with rasterio.open(_first(world, "DEM_ELEV")) as src:
        assert src.dtypes[0] == "float32" and src.count == 2
    cosia = np.concatenate([_read(p).ravel() for p in world.glob("*_AERIAL_LABEL-COSIA/*/*.tif")])
    assert cosia.max() <= 18 and len(np.unique(cosia)) >= 15


def test_synth_is_deterministic_and_refuses_to_overwrite(world, tmp_path):
    small = HubSynthOptions(n_domains=2, areas_per_domain=1, patches_per_area=1, patch_size=256, seed=3, val_domains=0)
    a, b = tmp_path / "a", tmp_path / "b"
    synthesize_hub_world(a, small)
    synthesize_hub_world(b, small)
    for path in sorted(a.rglob("*.tif")):
        assert path.read_bytes() == (b / path.relative_to(a)).read_bytes()
    assert (a / "csv" / "FLAIR-HUB_SYNTH-DATASET_TRAIN.csv").read_text() == (
        b / "csv" / "FLAIR-HUB_SYNTH-DATASET_TRAIN.csv"
    ).read_text()
    with pytest.raises(OutputExistsError):
        synthesize_hub_world(a, small)
    for bad in ({"patch_size": 300}, {"n_domains": 2, "test_domains": 1, "val_domains": 1}):
        with pytest.raises(ConfigError, match=r"synthetic FLAIR-HUB option|leaves no train domain"):
            synthesize_hub_world(tmp_path / "c", HubSynthOptions(**{**small.__dict__, **bad}))
    arguments = ["synth", str(tmp_path / "d"), "--layout", "hub", "--sat-patch-size", "8"]
    result = CliRunner().invoke(data_app, arguments, env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "--sat-patch-size applies to --layout flair2 only" in result.output
    assert not (tmp_path / "d").exists()


@pytest.fixture(scope="module")
def twin_world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("twins") / "world"
    options = HubSynthOptions(
        n_domains=1, areas_per_domain=2, patches_per_area=4, patch_size=512, seed=5, test_domains=0, val_domains=0
    )
    synthesize_hub_world(root, options)
    return root


def test_wheat_and_grasses_differ_only_through_the_series(twin_world):
    lpis = LPIS_CLASSES[0]
    wheat, grasses = lpis.index("wheat"), lpis.index("grasses")
    aerial: dict[int, list[np.ndarray]] = {wheat: [], grasses: []}
    summer: dict[int, list[float]] = {wheat: [], grasses: []}
    vh: dict[int, list[float]] = {wheat: [], grasses: []}
    s2_dates = read_dates_gpkg(twin_world / METADATA_FOLDER / DATES_FILES["SENTINEL2_TS"])
    s1_dates = read_dates_gpkg(twin_world / METADATA_FOLDER / DATES_FILES["SENTINEL1-ASC_TS"])
    for patch_id, files in scan_folder(twin_world).patches.items():
        crops = _read(files["ALL_LABEL-LPIS"])[0]
        image = _read(files["AERIAL_RGBI"]).reshape(4, -1).T
        s2 = _read(files["SENTINEL2_TS"]).reshape(-1, 10, 10, 10).astype(np.float64)
        clouds = _read(files["SENTINEL2_MSK-SC"]).reshape(-1, 2, 10, 10)
        s1 = _read(files["SENTINEL1-ASC_TS"]).reshape(-1, 2, 10, 10)
        months2 = np.array([d.month for d in s2_dates[patch_id]])
        months1 = np.array([d.month for d in s1_dates[patch_id]])
        # Share of each crop in each 10.24 m pixel (512 aerial pixels = 10 Sentinel pixels).
        cell = (np.arange(512) * 10) // 512
        for crop in (wheat, grasses):
            aerial[crop].append(image[crops.ravel() == crop])
            share = np.zeros((10, 10))
            np.add.at(share, (cell[:, None], cell[None, :]), (crops == crop).astype(np.float64))
            share /= (512 / 10) ** 2
            for i, j in zip(*np.nonzero(share >= 0.6), strict=True):
                clear = (clouds[:, :, i, j].max(axis=1) == 0) & (months2 >= 7) & (months2 <= 9)
                red, nir = s2[:, 2, i, j], s2[:, 6, i, j]
                if clear.any():
                    summer[crop].append(float(np.mean(((nir - red) / (nir + red))[clear])))
                vh[crop].append(float(np.mean(s1[(months1 >= 7) & (months1 <= 9), 1, i, j])))
    pixels = {crop: np.concatenate(values) for crop, values in aerial.items()}
    pooled = np.sqrt((pixels[wheat].var(0) + pixels[grasses].var(0)) / 2)
    assert np.max(np.abs(pixels[wheat].mean(0) - pixels[grasses].mean(0)) / pooled) < 1.0
    assert summer[wheat] and summer[grasses] and vh[wheat] and vh[grasses]
    assert np.mean(summer[grasses]) > 0.5 and np.mean(summer[wheat]) < 0.4
    assert np.mean(vh[grasses]) - np.mean(vh[wheat]) > 1.0  # dB: green grassland vs harvested stubble


# Files written by someone else: torchgeo's fake FLAIR-HUB data.

TORCHGEO_PATCHES = {
    "D006-2020": ("FF-S1-14", "5-5"),
    "D012-2019": ("AF-S1-27", "5-10"),
    "D032-2019": ("AA-S1-V18", "10-22"),
}
TORCHGEO_MODALITIES = {
    # channels, dtype, value range, size, as torchgeo's tests/data/flair/data.py writes them
    "AERIAL_RGBI": (4, np.uint8, (0, 200), 512),
    "AERIAL_LABEL-COSIA": (1, np.uint8, (0, 18), 512),
    "ALL_LABEL-LPIS": (3, np.uint8, (0, 22), 512),
    "DEM_ELEV": (2, np.uint16, (300, 350), 512),
    "AERIAL-RLT_PAN": (1, np.uint8, (0, 200), 256),
    "SPOT_RGBI": (4, np.uint8, (0, 255), 64),
    "SENTINEL2_TS": (20, np.uint16, (0, 10000), 10),
    "SENTINEL2_MSK-SC": (4, np.uint16, (0, 100), 10),
    "SENTINEL1-ASC_TS": (20, np.uint16, (0, 1000), 10),
    "SENTINEL1-DESC_TS": (20, np.uint16, (0, 1000), 10),
}
TORCHGEO_EVERYWHERE = {"AERIAL_LABEL-COSIA", "ALL_LABEL-LPIS", "AERIAL_RGBI", "SPOT_RGBI", "DEM_ELEV", "AERIAL-RLT_PAN"}
"""The modalities of every domain; the series exist for D006-2020 only."""


@pytest.fixture(scope="module")
def torchgeo_root(tmp_path_factory) -> Path:
    """A folder laid out and typed as torchgeo's fake FLAIR-HUB data (random values, 0.4 m transform everywhere)."""
    root = tmp_path_factory.mktemp("torchgeo") / "FLAIR-HUB"
    rng = np.random.default_rng(0)
    for domain_year, (roi, position) in TORCHGEO_PATCHES.items():
        for modality, (count, dtype, (low, high), size) in TORCHGEO_MODALITIES.items():
            if modality not in TORCHGEO_EVERYWHERE and domain_year != "D006-2020":
                continue
            year = "195X" if modality == "AERIAL-RLT_PAN" else domain_year[-4:]
            folder = f"{domain_year[:-5]}-{year}_{modality}"
            path = root / folder / roi / f"{folder}_{roi}_{position}.tif"
            path.parent.mkdir(parents=True, exist_ok=True)
            profile = {
                "driver": "GTiff",
                "height": size,
                "width": size,
                "count": count,
                "dtype": dtype,
                "crs": CRS.from_epsg(2154),
                "transform": Affine(0.4, 0.0, 1022361.6, 0.0, -0.4, 6313574.4),
                "compress": "lzw",
            }
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(rng.integers(low, high, size=(count, size, size)).astype(dtype))
    ids = [f"{d}_{roi}_{position}" for d, (roi, position) in TORCHGEO_PATCHES.items()]
    schema = {"geometry": "Point", "properties": {"patch_id": "str", "split_1": "str"}}
    (root / METADATA_FOLDER).mkdir()
    with fiona.open(root / METADATA_FOLDER / SPLIT_FILE, "w", driver="GPKG", schema=schema, crs="EPSG:4326") as dst:
        for patch_id, split in zip(ids, ["train", "valid", "test"], strict=True):
            dst.write(
                {
                    "geometry": {"type": "Point", "coordinates": (0.0, 0.0)},
                    "properties": {"patch_id": patch_id, "split_1": split},
                }
            )
    return root


def test_reads_torchgeo_written_files(torchgeo_root):
    assert is_hub_folder(torchgeo_root)
    found = scan_folder(torchgeo_root)
    assert sorted(found.patches) == sorted(f"{d}_{r}_{p}" for d, (r, p) in TORCHGEO_PATCHES.items())
    assert set(found.patches["D012-2019_AF-S1-27_5-10"]) == TORCHGEO_EVERYWHERE
    assert len(found.patches["D006-2020_FF-S1-14_5-5"]) == 10 and not found.unmatched
    modalities = ["AERIAL_RGBI", "AERIAL-RLT_PAN", "DEM_ELEV", "SPOT_RGBI"]
    for split, patch_id in zip(("train", "val", "test"), sorted(found.patches), strict=True):
        dataset = build_hub_dataset(
            hub_config(torchgeo_root, modalities=modalities, labels=BOTH_LABELS, lpis_level=3), split
        )
        item = dataset[0]
        assert item["patch_id"] == patch_id
        assert item["AERIAL_RGBI"].shape == (4, 512, 512) and item["AERIAL-RLT_PAN"].shape == (1, 256, 256)
        assert item["SPOT_RGBI"].shape == (4, 64, 64) and item["SPOT_RGBI"].dtype == torch.uint8
        dem = _read(found.patches[patch_id]["DEM_ELEV"]).astype(np.float32)
        assert torch.equal(item["DEM_ELEV"][1], torch.from_numpy(dem[0] - dem[1]))
        assert item["ALL_LABEL-LPIS"].shape == (512, 512) and int(item["AERIAL_LABEL-COSIA"].max()) <= 17


def test_torchgeo_series_need_their_dates_file(torchgeo_root, tmp_path):
    root = tmp_path / "FLAIR-HUB"
    shutil.copytree(torchgeo_root, root)
    config = hub_config(root, modalities=["SENTINEL2_TS", "SENTINEL1-ASC_TS"], labels=[])
    with pytest.raises(DataError, match=r"GLOBAL_SENTINEL2_MTD_DATES.gpkg: file not found"):
        build_hub_dataset(config, "train")
    patch_id = "D006-2020_FF-S1-14_5-5"
    for modality, dates in (
        ("SENTINEL2_TS", ["20200301", "20200812"]),
        ("SENTINEL1-ASC_TS", [f"2020{m:02d}01" for m in range(1, 11)]),
    ):
        write_geopackage(
            root / METADATA_FOLDER / DATES_FILES[modality],
            [{"patch_id": patch_id, "acquisition_dates": json.dumps(dates)}],
            [FOOTPRINT],
            "EPSG:2154",
        )
    item = build_hub_dataset(config, "train")[0]
    assert 1 <= item["SENTINEL2_TS"].shape[0] <= 2 and item["SENTINEL2_TS"].shape[1:] == (10, 10, 10)
    assert item["SENTINEL1-ASC_TS"].shape == (10, 2, 10, 10) and item["SENTINEL1-ASC_DATES"][0] == -135
    report = check_hub_dataset(root)
    missing = {(p.path.name, p.fatal) for p in report.problems if "has no SENTINEL2_TS file" in p.message}
    assert ("D012-2019_SENTINEL2_TS_AF-S1-27_5-10.tif", True) in missing
    assert any("DEM_ELEV" in p.path.name and "uint16" in p.message and not p.fatal for p in report.problems)
    assert any("does not cover the same ground" in p.message and not p.fatal for p in report.problems)
    assert not any("pixels," in p.message for p in report.problems)  # every size is the release's
    assert get_nomenclature("hub").names[:3] == ["building", "greenhouse", "swimming pool"]
