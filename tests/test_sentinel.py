"""Sentinel-2 super-areas: dates, crops, cloud filtering, monthly averages, loading and padding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flairkit.config.schema import SentinelConfig
from flairkit.data.sentinel import (
    SentinelSample,
    cloud_cover,
    crop_super_patch,
    day_offsets,
    filter_cloudy_dates,
    load_centroids,
    load_sentinel_sample,
    monthly_average,
    pad_time_series,
    product_dates,
    read_products,
)
from flairkit.errors import ConfigError, DataError

PRODUCTS = [
    "SENTINEL2A_20210401-105852-555_L2A_T31TCJ_C_V2-2",
    "SENTINEL2B_20210420-105853-123_L2A_T31TCJ_C_V2-2",
    "SENTINEL2A_20210503-110000-000_L2A_T31TCJ_C_V2-2",
    "SENTINEL2B_20200710-110000-000_L2A_T31TCJ_C_V2-2",
]


def write_area(folder: Path, data: np.ndarray, masks: np.ndarray, products: list[str]) -> Path:
    sen = folder / "D001_2021" / "Z1_AA" / "sen"
    sen.mkdir(parents=True)
    np.save(sen / "SEN2_sp_D001_2021-Z1_AA_data.npy", data)
    np.save(sen / "SEN2_sp_D001_2021-Z1_AA_masks.npy", masks)
    (sen / "SEN2_sp_D001_2021-Z1_AA_products.txt").write_text("\n".join(products) + "\n")
    return sen


@pytest.fixture
def area(tmp_path) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    data = rng.integers(1, 10000, size=(4, 10, 24, 24), dtype=np.uint16)
    masks = np.zeros((4, 2, 24, 24), dtype=np.uint8)
    masks[1, 1] = 100  # the second date is fully cloudy
    return write_area(tmp_path, data, masks, PRODUCTS), data, masks


def test_products_dates_and_offsets(tmp_path):
    path = tmp_path / "products.txt"
    path.write_text("\n".join([PRODUCTS[0], "", PRODUCTS[3]]) + "\n")
    assert product_dates(path) == [(4, 1), (7, 10)]
    assert [d.year for d in read_products(path)] == [2021, 2020]
    # (2021-05-15 - date in 2021).days, the acquisition year ignored
    np.testing.assert_array_equal(day_offsets([(4, 1), (7, 10), (5, 15), (12, 31)]), [44, -56, 0, -230])
    assert day_offsets([(4, 1)], "2020-04-11").tolist() == [10]
    assert day_offsets([(2, 29)]).tolist() == day_offsets([(2, 28)]).tolist()
    with pytest.raises(ConfigError, match="reference_date"):
        day_offsets([(4, 1)], "15/05/2021")


def test_bad_product_line_is_named(tmp_path):
    path = tmp_path / "products.txt"
    path.write_text(f"{PRODUCTS[0]}\nSENTINEL2A_garbage\n")
    with pytest.raises(DataError, match=r"products\.txt, line 2"):
        product_dates(path)


def test_load_centroids(tmp_path):
    path = tmp_path / "centroids.json"
    path.write_text(json.dumps({"IMG_000001.tif": [12, 30]}))
    assert load_centroids(path) == {"IMG_000001.tif": (12, 30)}
    path.write_text(json.dumps({"IMG_000001.tif": [12]}))
    with pytest.raises(DataError, match=r"IMG_000001\.tif"):
        load_centroids(path)
    path.write_text("{")
    with pytest.raises(DataError, match="not a valid JSON"):
        load_centroids(path)


def test_crop_is_centred_as_official():
    array = np.arange(2 * 1 * 20 * 30).reshape(2, 1, 20, 30)
    crop = crop_super_patch(array, (10, 12), 8, "here")
    np.testing.assert_array_equal(crop, array[:, :, 6:14, 8:16])


@pytest.mark.parametrize("centre", [(3, 15), (10, 27), (18, 15), (-4, 10), (10, 40)])
def test_crop_leaving_the_super_area_is_an_error(centre):
    array = np.zeros((1, 1, 20, 30))
    with pytest.raises(DataError, match=r"IMG_000001\.tif in area.*sat_patch_size"):
        crop_super_patch(array, centre, 8, "IMG_000001.tif in area")


def test_crop_error_says_what_fits():
    with pytest.raises(DataError, match="at most 16 fits"):
        crop_super_patch(np.zeros((1, 1, 100, 100)), (9, 50), 40, "x")
    with pytest.raises(DataError, match="3 pixel"):
        crop_super_patch(np.zeros((1, 1, 100, 100)), (3, 50), 8, "x")
    with pytest.raises(DataError, match="outside"):
        crop_super_patch(np.zeros((1, 1, 100, 100)), (50, 100), 8, "x")


def cloudy_masks() -> np.ndarray:
    masks = np.zeros((3, 2, 4, 4), dtype=np.uint8)
    masks[0, 0, 0] = 80  # 4 snow pixels
    masks[0, 1, 1] = 60  # 4 cloud pixels at the threshold: counted
    masks[2, 1, 2, :2] = 59  # below the threshold
    masks[2, 1, 3, :3] = 100
    return masks


def test_cloud_cover_counts_snow_plus_cloud():
    np.testing.assert_allclose(cloud_cover(cloudy_masks()), [8 / 16, 0, 3 / 16])
    np.testing.assert_allclose(cloud_cover(cloudy_masks(), probability=50), [8 / 16, 0, 5 / 16])
    both = np.full((1, 2, 2, 2), 100)
    assert cloud_cover(both).tolist() == [2.0]


def test_filter_keeps_dates_below_max_cover():
    data = np.arange(3)[:, None, None, None] * np.ones((3, 10, 4, 4))
    kept, offsets = filter_cloudy_dates(data, cloudy_masks(), np.array([30, 20, 10]))
    assert offsets.tolist() == [20, 10]
    np.testing.assert_array_equal(kept[:, 0, 0, 0], [1, 2])
    kept, offsets = filter_cloudy_dates(data, cloudy_masks(), np.array([30, 20, 10]), max_cover=0.6)
    assert offsets.tolist() == [30, 20, 10]


def test_filter_never_empties_the_series():
    data = np.arange(3)[:, None, None, None] * np.ones((3, 10, 4, 4))
    masks = np.full((3, 2, 4, 4), 100, dtype=np.uint8)
    masks[2, 1] = 0  # date 2: snow everywhere only, cover 1.0 (the others: 2.0)
    with pytest.warns(RuntimeWarning, match="least covered"):
        kept, offsets = filter_cloudy_dates(data, masks, np.array([30, 20, 10]))
    assert offsets.tolist() == [10]
    assert kept.shape == (1, 10, 4, 4) and kept[0, 0, 0, 0] == 2


def test_monthly_average():
    offsets = day_offsets([(4, 1), (4, 20), (5, 3), (7, 10)])
    data = np.array([1.0, 3.0, 5.0, 7.0])[:, None, None, None] * np.ones((4, 2, 3, 3), dtype=np.uint16)
    averaged, dates = monthly_average(data, offsets)
    np.testing.assert_array_equal(averaged[:, 0, 0, 0], [2.0, 5.0, 7.0])
    # the 15th of April, May and July; June has no date and is skipped
    assert dates.tolist() == [30, 0, -61]
    assert averaged.shape == (3, 2, 3, 3)


def test_load_sample_reads_the_crop(area):
    sen, data, _ = area
    sample = load_sentinel_sample(sen, "IMG_000001.tif", (12, 10), SentinelConfig(sat_patch_size=8))
    assert sample.series.dtype == np.float32 and sample.dates.dtype == np.int64
    np.testing.assert_array_equal(sample.series, data[:, :, 8:16, 6:14].astype(np.float32))
    assert sample.dates.tolist() == day_offsets([(4, 1), (4, 20), (5, 3), (7, 10)]).tolist()


def test_load_sample_filters_and_averages(area):
    sen, data, _ = area
    config = SentinelConfig(sat_patch_size=8, filter_clouds=True, monthly_average=True)
    sample = load_sentinel_sample(sen, "IMG_000001.tif", (12, 12), config)
    # date 1 (20 April) is cloudy: April keeps only the 1st; May and July keep theirs
    assert sample.dates.tolist() == [30, 0, -61]
    np.testing.assert_allclose(sample.series[0], data[0, :, 8:16, 8:16])
    filtered = load_sentinel_sample(
        sen, "IMG_000001.tif", (12, 12), SentinelConfig(sat_patch_size=8, filter_clouds=True)
    )
    assert filtered.series.shape == (3, 10, 8, 8)


def test_load_sample_drops_empty_dates(tmp_path):
    data = np.ones((3, 10, 16, 16), dtype=np.float32)
    data[0] = 0
    data[2, 3, 6, 6] = np.nan  # inside the crop (rows and columns 4..11)
    masks = np.zeros((3, 2, 16, 16), dtype=np.uint8)
    sen = write_area(tmp_path, data, masks, PRODUCTS[:3])
    sample = load_sentinel_sample(sen, "IMG_1.tif", (8, 8), SentinelConfig(sat_patch_size=8))
    assert sample.dates.tolist() == day_offsets([(4, 20)]).tolist()
    data[:] = 0
    empty = write_area(tmp_path / "empty", data, masks, PRODUCTS[:3])
    with pytest.warns(RuntimeWarning, match="empty"):
        sample = load_sentinel_sample(empty, "IMG_1.tif", (8, 8), SentinelConfig(sat_patch_size=8))
    assert sample.series.shape == (3, 10, 8, 8) and not sample.series.any()


def test_load_sample_errors_name_the_file(area):
    sen, _, masks = area
    config = SentinelConfig(sat_patch_size=8)
    with pytest.raises(DataError, match=r"IMG_000001\.tif in .*_data\.npy.*sat_patch_size"):
        load_sentinel_sample(sen, "IMG_000001.tif", (2, 12), config)
    products = sen / "SEN2_sp_D001_2021-Z1_AA_products.txt"
    products.write_text("\n".join(PRODUCTS[:3]))
    with pytest.raises(DataError, match=r"products\.txt: lists 3 product\(s\) but .* holds 4"):
        load_sentinel_sample(sen, "IMG_000001.tif", (12, 12), config)
    products.write_text("\n".join(PRODUCTS))
    np.save(sen / "SEN2_sp_D001_2021-Z1_AA_masks.npy", masks[:3])
    with pytest.raises(DataError, match=r"_masks\.npy: shape"):
        load_sentinel_sample(sen, "IMG_000001.tif", (12, 12), config)
    data_file = sen / "SEN2_sp_D001_2021-Z1_AA_data.npy"
    data_file.write_bytes(data_file.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"_data\.npy: cannot read"):
        load_sentinel_sample(sen, "IMG_000001.tif", (12, 12), config)
    data_file.unlink()
    with pytest.raises(DataError, match=r"no file named \*_data\.npy"):
        load_sentinel_sample(sen, "IMG_000001.tif", (12, 12), config)
    with pytest.raises(DataError, match="folder not found"):
        load_sentinel_sample(sen.parent / "nowhere", "IMG_000001.tif", (12, 12), config)


def test_pad_time_series():
    short = SentinelSample(np.ones((2, 10, 4, 4), dtype=np.float32), np.array([30, 10]))
    long = SentinelSample(np.full((3, 10, 4, 4), 2, dtype=np.float32), np.array([40, 20, 0]))
    series, dates, pad_mask = pad_time_series([short, long])
    assert series.shape == (2, 3, 10, 4, 4) and series.dtype == torch.float32
    assert dates.tolist() == [[30, 10, 0], [40, 20, 0]]
    assert pad_mask.tolist() == [[False, False, True], [False, False, False]]
    assert series[0, 2].abs().sum() == 0 and series[0, :2].eq(1).all() and series[1].eq(2).all()
    pairs = [(torch.from_numpy(s.series), torch.from_numpy(s.dates)) for s in (short, long)]
    for a, b in zip(pad_time_series(pairs), (series, dates, pad_mask), strict=True):
        assert torch.equal(a, b)
    odd = SentinelSample(np.ones((1, 10, 8, 8), dtype=np.float32), np.array([0]))
    with pytest.raises(DataError, match="sat_patch_size"):
        pad_time_series([short, odd])
