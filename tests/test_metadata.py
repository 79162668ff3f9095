"""The 45-value aerial metadata encoding, on hand-computed examples, and the metadata JSON."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from flairkit.data.discovery import make_record
from flairkit.data.metadata import (
    MAX_ALTITUDE,
    METADATA_SIZE,
    encode_metadata,
    load_aerial_metadata,
    metadata_for,
)
from flairkit.errors import DataError

ENTRY = {
    "patch_centroid_x": 1e8 * math.pi / 2,
    "patch_centroid_y": 1e8 * math.pi,
    "patch_centroid_z": MAX_ALTITUDE / 2,
    "camera": "UCE-M3-f120000-f100",
    "date": "2019-04-30",
    "time": "06h00",
}


def test_layout_on_a_hand_computed_example():
    values = encode_metadata(ENTRY, "corrected")
    assert values.shape == (METADATA_SIZE,) and values.dtype == np.float32
    # position: x' = pi/2, y' = pi; sin and cos interleaved, frequency 10**-i, x first
    assert values[0:2] == pytest.approx([1.0, 0.0], abs=1e-7)
    assert values[2:4] == pytest.approx([math.sin(math.pi / 20), math.cos(math.pi / 20)])
    assert values[14:16] == pytest.approx([math.sin(math.pi / 2e7), math.cos(math.pi / 2e7)])
    assert values[16:18] == pytest.approx([0.0, -1.0], abs=1e-7)
    assert values[18:20] == pytest.approx([math.sin(math.pi / 10), math.cos(math.pi / 10)])
    assert values[32] == pytest.approx(0.5)
    assert values[33:35].tolist() == [1.0, 0.0]
    assert values[35:39].tolist() == [0.0, 1.0, 0.0, 0.0]
    # corrected month 4: phase 3/12 -> sin 1, cos 0 -> (v + 1) / 2
    assert values[39:41] == pytest.approx([1.0, 0.5], abs=1e-7)
    # day 30 / 31
    assert values[41:43] == pytest.approx(
        [(math.sin(2 * math.pi * 30 / 31) + 1) / 2, (math.cos(2 * math.pi * 30 / 31) + 1) / 2]
    )
    # 06h00 = a quarter of the day
    assert values[43:45] == pytest.approx([1.0, 0.5], abs=1e-7)


@pytest.mark.parametrize("month", range(1, 13))
def test_official_month_term_is_the_same_for_every_month(month):
    values = encode_metadata({**ENTRY, "date": f"2020-{month:02d}-15"}, "official")
    # sin(2 pi (m - 1/12)) = sin(-pi/6) = -0.5 and cos = sqrt(3)/2, whatever the month
    assert values[39:41] == pytest.approx([0.25, (math.sqrt(3) / 2 + 1) / 2])
    assert values[35:39].tolist() == [0.0, 0.0, 1.0, 0.0]


def test_corrected_months_differ_and_only_the_month_changes():
    official = encode_metadata({**ENTRY, "date": "2021-07-01"}, "official")
    corrected = encode_metadata({**ENTRY, "date": "2021-07-01"}, "corrected")
    assert corrected[39:41] == pytest.approx([0.5, 0.0], abs=1e-7)  # phase 6/12: sin 0, cos -1
    np.testing.assert_array_equal(np.delete(official, [39, 40]), np.delete(corrected, [39, 40]))


def test_camera_year_and_time_variants():
    values = encode_metadata({**ENTRY, "camera": "DMC-III", "date": "2018-01-01", "time": "12h00"})
    assert values[33:35].tolist() == [0.0, 1.0]
    assert values[35:39].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert values[43:45] == pytest.approx([0.5, 0.0], abs=1e-7)
    assert encode_metadata({**ENTRY, "date": "2023-05-02"})[35:39].tolist() == [0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("change", "field"),
    [({"date": "15/04/2019"}, "date"), ({"time": "10:35"}, "time"), ({"patch_centroid_z": "high"}, "patch_centroid_z")],
)
def test_bad_fields_are_named(change, field):
    with pytest.raises(DataError, match=field):
        encode_metadata({**ENTRY, **change})
    entry = dict(ENTRY)
    del entry[field]
    with pytest.raises(DataError, match=field):
        encode_metadata(entry)


def test_unknown_encoding():
    with pytest.raises(DataError, match="corrected"):
        encode_metadata(ENTRY, "fixed")


def test_metadata_for_records_and_missing_entries(tmp_path):
    path = tmp_path / "flair_aerial_metadata.json"
    path.write_text(json.dumps({"IMG_000001": ENTRY, "IMG_000002": {**ENTRY, "camera": "DMC"}}))
    metadata = load_aerial_metadata(path)
    records = [make_record(tmp_path / f"IMG_00000{i}.tif", None) for i in (2, 1)]
    rows = metadata_for(records, metadata, "official")
    assert rows.shape == (2, METADATA_SIZE) and rows.dtype == np.float32
    np.testing.assert_array_equal(rows[1], encode_metadata(ENTRY))
    assert rows[0, 33:35].tolist() == [0.0, 1.0]
    missing = [*records, make_record(tmp_path / "IMG_000003.tif", None)]
    with pytest.raises(DataError, match=r"IMG_000003.*flair_aerial_metadata\.json"):
        metadata_for(missing, metadata)
    broken = load_aerial_metadata(path)
    broken["IMG_000001"] = {**ENTRY, "time": "noon"}
    with pytest.raises(DataError, match=r"flair_aerial_metadata\.json, entry IMG_000001: .*time"):
        metadata_for(records, broken)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"IMG_1": 3}'])
def test_bad_metadata_files(tmp_path, content):
    path = tmp_path / "meta.json"
    path.write_text(content)
    with pytest.raises(DataError, match=r"meta\.json"):
        load_aerial_metadata(path)
    with pytest.raises(DataError, match="not found"):
        load_aerial_metadata(tmp_path / "absent.json")
