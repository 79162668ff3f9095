"""FLAIR-1 CSV path lists, FLAIR #2 folder discovery, domain splits and dataset-wide files."""

from __future__ import annotations

from pathlib import Path

import pytest

from flairkit.data.discovery import (
    CENTROIDS_FILES,
    PatchRecord,
    discover_folder,
    find_dataset_file,
    make_record,
    read_csv_list,
    split_by_domain,
    write_csv_list,
)
from flairkit.errors import DataError, OutputExistsError

AREAS = {"D004_2021": ["Z10_AU", "Z2_AB"], "D012_2019": ["Z13_AA"], "D030_2020": ["Z1_UF", "Z5_AB"]}


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def build_flair2(root: Path, split: str = "train", sentinel: bool = True, labels: bool = True) -> list[str]:
    """Empty files in the FLAIR #2 layout; returns the image ids in discovery order."""
    names = {
        "train": ("flair_aerial_train", "flair_labels_train", "flair_sen_train"),
        "test": ("flair_2_aerial_test", "flair_2_labels_test", "flair_2_sen_test"),
    }[split]
    ids = []
    number = 100 if split == "train" else 500
    for domain, zones in sorted(AREAS.items()):
        for zone in sorted(zones):
            for _ in range(2):
                number += 1
                touch(root / names[0] / domain / zone / "img" / f"IMG_{number:06d}.tif")
                if labels:
                    touch(root / names[1] / domain / zone / "msk" / f"MSK_{number:06d}.tif")
                ids.append(f"IMG_{number:06d}")
            if sentinel:
                (root / names[2] / domain / zone / "sen").mkdir(parents=True)
    return ids


@pytest.fixture(scope="module")
def flair2(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("flair2")
    build_flair2(root, "train")
    build_flair2(root, "test", labels=False)
    return root


@pytest.fixture
def csv_world(tmp_path) -> Path:
    data = tmp_path / "data" / "flair_aerial_train" / "D004_2021" / "Z10_AU"
    for i in (1, 2):
        touch(data / "img" / f"IMG_00000{i}.tif")
        touch(data / "msk" / f"MSK_00000{i}.tif")
    (tmp_path / "csv").mkdir()
    return tmp_path


def csv_text(line_end: str, blank_lines: bool = False) -> str:
    base = "../data/flair_aerial_train/D004_2021/Z10_AU"
    lines = [f"{base}/img/IMG_00000{i}.tif,{base}/msk/MSK_00000{i}.tif" for i in (1, 2)]
    if blank_lines:
        lines = ["", lines[0], "", "  ", lines[1], ""]
    return line_end.join(lines) + line_end


@pytest.mark.parametrize("line_end", ["\n", "\r\n"])
def test_csv_relative_paths_start_at_the_csv_folder(csv_world, line_end):
    csv_path = csv_world / "csv" / "train.csv"
    csv_path.write_bytes(csv_text(line_end).encode())
    records = read_csv_list(csv_path)
    folder = csv_world / "data" / "flair_aerial_train" / "D004_2021" / "Z10_AU"
    assert [r.image for r in records] == [folder / "img" / f"IMG_00000{i}.tif" for i in (1, 2)]
    assert [r.mask for r in records] == [folder / "msk" / f"MSK_00000{i}.tif" for i in (1, 2)]
    assert [r.patch_id for r in records] == ["IMG_000001", "IMG_000002"]
    assert {(r.domain, r.zone) for r in records} == {("D004_2021", "Z10_AU")}


def test_csv_blank_lines_are_ignored(csv_world):
    csv_path = csv_world / "csv" / "train.csv"
    csv_path.write_bytes(csv_text("\r\n", blank_lines=True).encode())
    assert len(read_csv_list(csv_path)) == 2


def test_csv_single_column_means_no_labels(csv_world):
    csv_path = csv_world / "csv" / "test.csv"
    csv_path.write_text("../data/flair_aerial_train/D004_2021/Z10_AU/img/IMG_000001.tif\n")
    (record,) = read_csv_list(csv_path)
    assert record.mask is None


def test_csv_absolute_paths_are_kept(csv_world):
    image = csv_world / "data" / "flair_aerial_train" / "D004_2021" / "Z10_AU" / "img" / "IMG_000001.tif"
    csv_path = csv_world / "csv" / "abs.csv"
    csv_path.write_text(f"{image},{image.parent.parent / 'msk' / 'MSK_000001.tif'}\n")
    assert read_csv_list(csv_path)[0].image == image


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("a.tif,b.tif\r\na.tif,b.tif,c.tif\r\n", "line 2"),
        ("a.tif,b.tif\n\na.tif\n", "line 3"),
        ("image,mask\na.tif,b.tif\n", "header"),
        (",b.tif\n", "line 1"),
        ("\r\n\r\n", "empty"),
        ("", "empty"),
    ],
)
def test_malformed_csv_names_the_file_and_line(tmp_path, content, expected):
    csv_path = tmp_path / "bad.csv"
    csv_path.write_bytes(content.encode())
    with pytest.raises(DataError, match=expected) as info:
        read_csv_list(csv_path, check_exists=False)
    assert "bad.csv" in str(info.value)


def test_csv_listing_a_missing_file_names_it_and_its_line(csv_world):
    csv_path = csv_world / "csv" / "train.csv"
    csv_path.write_text(csv_text("\n") + "../data/nowhere/IMG_9.tif,../data/nowhere/MSK_9.tif\n")
    with pytest.raises(DataError, match=r"line 3: .*IMG_9\.tif") as info:
        read_csv_list(csv_path)
    assert "2 listed file(s)" in str(info.value)
    assert len(read_csv_list(csv_path, check_exists=False)) == 3


def test_missing_csv_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv"):
        read_csv_list(tmp_path / "nope.csv")


def test_write_csv_list_is_flair1_format_and_round_trips(csv_world):
    csv_path = csv_world / "csv" / "train.csv"
    csv_path.write_text(csv_text("\n"))
    records = read_csv_list(csv_path)
    out = csv_world / "lists" / "copy.csv"
    write_csv_list(out, records)
    raw = out.read_bytes()
    assert raw.count(b"\r\n") == 2
    assert raw.startswith(b"../data/flair_aerial_train/D004_2021/Z10_AU/img/IMG_000001.tif,")
    assert read_csv_list(out) == records
    with pytest.raises(OutputExistsError):
        write_csv_list(out, records[:1])
    write_csv_list(out, records[:1], overwrite=True)
    assert len(read_csv_list(out)) == 1


def test_write_csv_list_refuses_mixed_labels(tmp_path):
    records = [make_record(tmp_path / "IMG_1.tif", tmp_path / "MSK_1.tif"), make_record(tmp_path / "IMG_2.tif", None)]
    with pytest.raises(DataError, match="separate lists"):
        write_csv_list(tmp_path / "x.csv", records)


def test_discover_train_split(flair2):
    records = discover_folder(flair2, "train")
    assert [r.patch_id for r in records] == [f"IMG_{n:06d}" for n in range(101, 111)]
    first = records[0]
    assert (first.domain, first.zone) == ("D004_2021", "Z10_AU")
    assert first.image == flair2 / "flair_aerial_train" / "D004_2021" / "Z10_AU" / "img" / "IMG_000101.tif"
    assert first.mask == flair2 / "flair_labels_train" / "D004_2021" / "Z10_AU" / "msk" / "MSK_000101.tif"
    assert first.sentinel_dir == flair2 / "flair_sen_train" / "D004_2021" / "Z10_AU" / "sen"
    assert discover_folder(flair2, "train") == records


def test_discover_test_split_without_labels(flair2):
    records = discover_folder(flair2, "test")
    assert len(records) == 10
    assert all(r.mask is None for r in records)
    assert all(r.sentinel_dir is not None and r.sentinel_dir.parts[-4] == "flair_2_sen_test" for r in records)


def test_discover_flair1_test_names(tmp_path):
    touch(tmp_path / "flair_1_aerial_test" / "D022_2021" / "Z1_NN" / "img" / "IMG_000900.tif")
    touch(tmp_path / "flair_1_labels_test" / "D022_2021" / "Z1_NN" / "msk" / "MSK_000900.tif")
    (record,) = discover_folder(tmp_path, "test")
    assert record.mask is not None and record.mask.is_file()
    assert record.sentinel_dir is None


def test_discover_root_holding_areas(tmp_path):
    touch(tmp_path / "D001_2020" / "Z1_AA" / "img" / "IMG_000002.tif")
    touch(tmp_path / "D001_2020" / "Z1_AA" / "img" / "IMG_000001.tif")
    touch(tmp_path / "D001_2020" / "Z1_AA" / "msk" / "MSK_000001.tif")
    records = discover_folder(tmp_path)
    assert [r.patch_id for r in records] == ["IMG_000001", "IMG_000002"]
    assert records[0].mask == tmp_path / "D001_2020" / "Z1_AA" / "msk" / "MSK_000001.tif"


def test_discover_an_aerial_root_finds_its_labels(flair2):
    records = discover_folder(flair2 / "flair_aerial_train", "test")
    assert records == discover_folder(flair2, "train")


def test_sentinel_files_directly_in_the_area_folder(tmp_path):
    touch(tmp_path / "flair_aerial_train" / "D001_2020" / "Z1_AA" / "img" / "IMG_000001.tif")
    area = tmp_path / "flair_sen_train" / "D001_2020" / "Z1_AA"
    touch(area / "SEN2_sp_D001_2020-Z1_AA_data.npy")
    (record,) = discover_folder(tmp_path)
    assert record.sentinel_dir == area
    (area / "sen").mkdir()
    assert discover_folder(tmp_path)[0].sentinel_dir == area / "sen"


def test_discover_nothing_says_where_it_looked(tmp_path):
    (tmp_path / "something_else").mkdir()
    with pytest.raises(DataError, match="flair_aerial_train"):
        discover_folder(tmp_path, "train")
    with pytest.raises(DataError, match="not found"):
        discover_folder(tmp_path / "absent")


def test_csv_records_find_their_sentinel_folder(flair2, tmp_path):
    image = flair2 / "flair_aerial_train" / "D012_2019" / "Z13_AA" / "img" / "IMG_000105.tif"
    csv_path = tmp_path / "one.csv"
    csv_path.write_text(f"{image}\n")
    (record,) = read_csv_list(csv_path)
    assert record.sentinel_dir == flair2 / "flair_sen_train" / "D012_2019" / "Z13_AA" / "sen"


def test_split_by_domain_is_deterministic_and_domain_wise(flair2):
    records = discover_folder(flair2, "train")
    train, val = split_by_domain(records, 0.2, seed=2022)
    assert (train, val) == split_by_domain(records, 0.2, seed=2022)
    assert len(train) + len(val) == len(records)
    train_domains, val_domains = {r.domain for r in train}, {r.domain for r in val}
    assert not train_domains & val_domains
    assert len(val_domains) == 1 and len(train_domains) == 2
    seen = {frozenset(r.domain for r in split_by_domain(records, 0.2, seed)[1]) for seed in range(20)}
    assert len(seen) > 1
    _, big_val = split_by_domain(records, 0.9, seed=1)
    assert len({r.domain for r in big_val}) == 2


def test_split_falls_back_to_areas_then_patches(tmp_path):
    one_domain = [make_record(tmp_path / "D001_2020" / z / "img" / f"IMG_{i}.tif", None) for i, z in enumerate("AB")]
    assert all(r.domain is None for r in one_domain)
    records = [PatchRecord(r.image, None, r.patch_id, "D001_2020", f"Z{i}_AA", None) for i, r in enumerate(one_domain)]
    train, val = split_by_domain(records, 0.5, seed=0)
    assert len(train) == len(val) == 1 and train[0].zone != val[0].zone
    same_area = [PatchRecord(r.image, None, r.patch_id, "D001_2020", "Z1_AA", None) for r in one_domain]
    assert all(len(side) == 1 for side in split_by_domain(same_area, 0.5, seed=0))
    with pytest.raises(DataError, match="cannot split"):
        split_by_domain(records[:1], 0.2, seed=0)


def test_find_dataset_file_at_root_or_above_a_csv(tmp_path):
    touch(tmp_path / CENTROIDS_FILES[1])
    csv_path = touch(tmp_path / "lists" / "train.csv")
    assert find_dataset_file(tmp_path, CENTROIDS_FILES) == tmp_path / CENTROIDS_FILES[1]
    assert find_dataset_file(csv_path, CENTROIDS_FILES) == tmp_path / CENTROIDS_FILES[1]
    touch(tmp_path / "lists" / CENTROIDS_FILES[0])
    assert find_dataset_file(csv_path, CENTROIDS_FILES) == tmp_path / "lists" / CENTROIDS_FILES[0]
    assert find_dataset_file(tmp_path, "flair_aerial_metadata.json") is None
