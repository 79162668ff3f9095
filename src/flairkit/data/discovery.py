"""Finding FLAIR patches: FLAIR-1 CSV path lists, FLAIR #2 folder trees, and domain-wise splits.

After IGNF/FLAIR-1 (headerless ``image,mask`` CSV lists) and IGNF/FLAIR-2 ``load_data`` (walking
``<root>/<DOMAIN>/<ZONE>/img`` folders and splitting train/val by domain).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from flairkit.atomic import atomic_path
from flairkit.errors import DataError

logger = logging.getLogger(__name__)

DOMAIN_PATTERN = re.compile(r"^D\d+_\d{4}$")
ZONE_PATTERN = re.compile(r"^Z\d+_[A-Za-z]+$")

METADATA_FILES = ("flair_aerial_metadata.json", "flair-1_metadata_aerial.json")
"""Names of the aerial metadata JSON in FLAIR #2 and FLAIR #1 releases."""
CENTROIDS_FILES = ("flair-2_centroids_sp_to_patch.json", "flair_2_centroids_sp_to_patch.json")
"""Names of the Sentinel-2 centroid JSON (the second one is how IGN's sample config spells it)."""

_ROOT_NAMES: dict[str, dict[str, tuple[str, ...]]] = {
    "train": {
        "aerial": ("flair_aerial_train", "flair_2_toy_aerial_train"),
        "labels": ("flair_labels_train", "flair_2_toy_labels_train"),
        "sentinel": ("flair_sen_train", "flair_2_toy_sen_train"),
    },
    "test": {
        "aerial": ("flair_2_aerial_test", "flair_1_aerial_test", "flair_2_toy_aerial_test"),
        "labels": ("flair_2_labels_test", "flair_1_labels_test", "flair_2_toy_labels_test"),
        "sentinel": ("flair_2_sen_test", "flair_2_toy_sen_test"),
    },
}
_SEN_ROOT_OF_AERIAL = {
    "flair_aerial_train": "flair_sen_train",
    "flair_2_aerial_test": "flair_2_sen_test",
    "flair_1_aerial_test": "flair_2_sen_test",
    "flair_2_toy_aerial_train": "flair_2_toy_sen_train",
    "flair_2_toy_aerial_test": "flair_2_toy_sen_test",
}


@dataclass(frozen=True)
class PatchRecord:
    """One aerial patch, its mask (None when unlabelled) and where it sits in the FLAIR layout."""

    image: Path
    mask: Path | None
    patch_id: str
    """Image file name without extension, e.g. ``IMG_000826`` (the aerial metadata key)."""
    domain: str | None
    """``D012_2019``-style domain, when the path follows the FLAIR layout."""
    zone: str | None
    """``Z13_AA``-style area, when the path follows the FLAIR layout."""
    sentinel_dir: Path | None
    """The area's ``.../<DOMAIN>/<ZONE>/sen`` folder of Sentinel-2 files (FLAIR #2), else None.

    An area folder that holds the ``*_data.npy`` file itself (no ``sen`` level) is accepted too."""

    @property
    def area(self) -> tuple[str | None, str | None]:
        """The (domain, zone) pair identifying the patch's area."""
        return (self.domain, self.zone)


@dataclass(frozen=True)
class SplitRoots:
    """The folders holding one split of a FLAIR #2 style dataset."""

    aerial: Path
    labels: Path | None
    sentinel: Path | None
    direct: bool = False
    """True when the root directly holds ``<DOMAIN>/<ZONE>/img`` (masks in ``msk``, Sentinel-2 in ``sen``)."""


def _domain_zone(image: Path) -> tuple[str | None, str | None]:
    parts = image.parts
    if len(parts) >= 4 and parts[-2] == "img" and DOMAIN_PATTERN.match(parts[-4]) and ZONE_PATTERN.match(parts[-3]):
        return parts[-4], parts[-3]
    return None, None


def _sentinel_dir_for(image: Path, domain: str | None, zone: str | None) -> Path | None:
    """The FLAIR #2 Sentinel-2 folder of an image's area, when it exists on disk."""
    if domain is None or zone is None:
        return None
    area = image.parent.parent
    candidates = [area / "sen"]
    aerial_root = area.parent.parent
    sen_root_name = _SEN_ROOT_OF_AERIAL.get(aerial_root.name)
    if sen_root_name is not None:
        candidates.insert(0, _area_sentinel_dir(aerial_root.parent / sen_root_name / domain / zone))
    return next((c for c in candidates if c.is_dir()), None)


def make_record(image: Path, mask: Path | None, sentinel_dir: Path | None = None) -> PatchRecord:
    """A record for ``image``; domain, zone and (if not given) the Sentinel-2 folder come from its path."""
    image = Path(image)
    domain, zone = _domain_zone(image)
    if sentinel_dir is None:
        sentinel_dir = _sentinel_dir_for(image, domain, zone)
    return PatchRecord(image, None if mask is None else Path(mask), image.stem, domain, zone, sentinel_dir)


def _resolve(base: Path, text: str) -> Path:
    return Path(os.path.normpath(base / text.strip()))


def read_csv_list(csv_path: Path, check_exists: bool = True) -> list[PatchRecord]:
    """Read a FLAIR-1 path list: one ``image[,mask]`` line per patch, no header.

    Relative paths start at the CSV's folder; CRLF or LF line ends and blank lines are accepted.
    Every line must have the same number of columns (1: unlabelled images, 2: image and mask).
    With ``check_exists`` every listed file must exist.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: CSV list not found; check data.*_csv or the path given on the command line")
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{csv_path}: cannot read the CSV list ({error}); it must be a UTF-8 text file") from None
    base = Path(os.path.abspath(csv_path.parent))
    records: list[PatchRecord] = []
    lines: list[int] = []
    n_columns: int | None = None
    for line_number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [c.strip() for c in row]
        while cells and not cells[-1]:
            cells.pop()
        if not cells:
            continue
        if len(cells) > 2 or not all(cells):
            raise DataError(
                f"{csv_path}, line {line_number}: expected 'image_path,mask_path' or 'image_path', got {row!r}; "
                "write one patch per line with no header"
            )
        if n_columns is None:
            n_columns = len(cells)
        elif len(cells) != n_columns:
            raise DataError(
                f"{csv_path}, line {line_number}: has {len(cells)} column(s) but earlier lines have {n_columns}; "
                "give a mask on every line or on none"
            )
        if not records and not any("." in c or "/" in c or "\\" in c for c in cells):
            raise DataError(
                f"{csv_path}, line {line_number}: {row!r} holds no file path (a header line?); "
                "FLAIR path lists have no header, remove it"
            )
        image = _resolve(base, cells[0])
        mask = _resolve(base, cells[1]) if len(cells) == 2 else None
        records.append(make_record(image, mask))
        lines.append(line_number)
    if not records:
        raise DataError(f"{csv_path}: the CSV list is empty; add one 'image_path,mask_path' line per patch")
    if check_exists:
        missing = [
            (line, path)
            for line, record in zip(lines, records, strict=True)
            for path in (record.image, record.mask)
            if path is not None and not path.is_file()
        ]
        if missing:
            shown = "; ".join(f"line {line}: {path}" for line, path in missing[:5])
            more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
            raise DataError(
                f"{csv_path}: {len(missing)} listed file(s) do not exist: {shown}{more}; relative paths start at "
                f"the CSV's folder {base}; fix the paths or run `flair data check {csv_path}`"
            )
    return records


def _first_dir(root: Path, names: Sequence[str]) -> Path | None:
    return next((root / n for n in names if (root / n).is_dir()), None)


def split_roots(root: Path, split: str = "train") -> SplitRoots | None:
    """The folders of ``split`` under ``root``, or None when ``root`` holds no such split.

    Looks for the FLAIR #2 release names, the FLAIR #1 toy dataset names (``<split>/flair_1_toy_aerial_<split>``),
    then for a root that directly holds ``<DOMAIN>/<ZONE>/img``. Such a root has no splits: it is returned
    for every ``split``, its masks in ``<ZONE>/msk`` or in the ``*labels*`` folder beside it (e.g.
    ``flair_labels_train`` beside ``flair_aerial_train``).
    """
    if split not in _ROOT_NAMES:
        raise DataError(f"unknown split {split!r}; use 'train' or 'test'")
    root = Path(root)
    names = _ROOT_NAMES[split]
    aerial = _first_dir(root, names["aerial"])
    if aerial is not None:
        return SplitRoots(aerial, _first_dir(root, names["labels"]), _first_dir(root, names["sentinel"]))
    toy = root / split
    aerial = _first_dir(toy, (f"flair_1_toy_aerial_{split}",))
    if aerial is not None:
        return SplitRoots(aerial, _first_dir(toy, (f"flair_1_toy_labels_{split}",)), None)
    if root.is_dir() and any(root.glob("*/*/img/IMG*.tif")):
        labels = root if any(root.glob("*/*/msk")) else _sibling(root, root.name.replace("aerial", "labels"))
        sentinel = root if any(root.glob("*/*/sen")) else _sibling(root, _SEN_ROOT_OF_AERIAL.get(root.name))
        return SplitRoots(root, labels, sentinel, direct=True)
    return None


def _sibling(root: Path, name: str | None) -> Path | None:
    """The folder ``name`` beside ``root`` (e.g. flair_labels_train beside flair_aerial_train), if it exists."""
    if not name or name == root.name:
        return None
    folder = Path(os.path.abspath(root)).parent / name
    return folder if folder.is_dir() else None


def _looked_for(root: Path, split: str) -> str:
    names = [*_ROOT_NAMES[split]["aerial"], f"{split}/flair_1_toy_aerial_{split}", "<DOMAIN>/<ZONE>/img"]
    return ", ".join(str(root / n) for n in names)


def _area_sentinel_dir(area: Path) -> Path:
    """``<area>/sen`` as in the FLAIR #2 release, or the area folder itself when it holds the files directly."""
    sen = area / "sen"
    if not sen.is_dir() and any(area.glob("*_data.npy")):
        return area
    return sen


def records_in(roots: SplitRoots) -> list[PatchRecord]:
    """Every ``IMG*.tif`` patch under ``roots.aerial``, sorted by domain, zone and id."""
    records = []
    sentinel_dirs: dict[tuple[str, str], Path] = {}
    for image in sorted(roots.aerial.glob("*/*/img/IMG*.tif")):
        area = image.parent.parent
        domain, zone = area.parent.name, area.name
        mask = None
        if roots.labels is not None:
            mask = roots.labels / domain / zone / "msk" / f"MSK{image.name[3:]}"
        sentinel_dir = None
        if roots.sentinel is not None:
            if (domain, zone) not in sentinel_dirs:
                sentinel_dirs[domain, zone] = _area_sentinel_dir(roots.sentinel / domain / zone)
            sentinel_dir = sentinel_dirs[domain, zone]
        records.append(PatchRecord(image, mask, image.stem, domain, zone, sentinel_dir))
    return records


def discover_folder(root: Path, split: str = "train") -> list[PatchRecord]:
    """The patches of ``split`` ("train" or "test") of a FLAIR #2 style folder, sorted.

    Masks are expected at ``<labels root>/<DOMAIN>/<ZONE>/msk/MSK_<id>.tif`` when the labels folder exists
    (the path is given even if the file is missing, so that a missing mask fails loudly); the Sentinel-2
    folder is set when the split's ``flair_*sen*`` folder exists.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found; check data.root")
    roots = split_roots(root, split)
    records = records_in(roots) if roots is not None else []
    if not records:
        raise DataError(
            f"{root}: no {split} patch found; looked for <DOMAIN>/<ZONE>/img/IMG*.tif under "
            f"{_looked_for(root, split)}; "
            "point data.root at the folder that holds flair_aerial_train (or give CSV lists)"
        )
    return records


def split_by_domain(
    records: Sequence[PatchRecord], val_fraction: float, seed: int
) -> tuple[list[PatchRecord], list[PatchRecord]]:
    """Split records into (train, val) by domain, as FLAIR #2 does, with a fixed seed.

    Validation gets ``round(n_domains * val_fraction)`` domains, at least one and never all. With fewer
    than two domains the split falls back to areas, then to single patches.
    """
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be between 0 and 1, got {val_fraction}; e.g. data.val_fraction=0.2")
    if len(records) < 2:
        raise DataError(f"cannot split {len(records)} patch(es) into train and val; give more patches or a val CSV")
    keyings = (
        lambda r: (r.domain or "",),
        lambda r: (r.domain or "", r.zone or ""),
        lambda r: (r.domain or "", r.zone or "", str(r.image)),
    )
    for level, key in zip(("domains", "areas", "patches"), keyings, strict=True):
        groups = sorted({key(r) for r in records})
        if len(groups) >= 2:
            break
        logger.warning("fewer than two %s to split by; splitting train/val by smaller units", level)
    if len(groups) < 2:
        raise DataError("every record is the same image; cannot split train and val, give a val CSV")
    random.Random(seed).shuffle(groups)
    n_val = min(max(1, round(len(groups) * val_fraction)), len(groups) - 1)
    val_groups = set(groups[:n_val])
    train = [r for r in records if key(r) not in val_groups]
    val = [r for r in records if key(r) in val_groups]
    return train, val


def _relative(path: Path, base: Path) -> str:
    return Path(os.path.relpath(os.path.abspath(path), base)).as_posix()


def write_csv_list(path: Path, records: Iterable[PatchRecord], overwrite: bool = False) -> Path:
    """Write a FLAIR-1 path list (``image,mask`` per line, CRLF, paths relative to the CSV's folder)."""
    path = Path(path)
    records = list(records)
    if not records:
        raise DataError(f"{path}: no patch to write; the CSV list would be empty")
    if len({r.mask is None for r in records}) > 1:
        raise DataError(f"{path}: some patches have a mask and others do not; write them to separate lists")
    base = Path(os.path.abspath(path.parent))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for record in records:
        row = [_relative(record.image, base)]
        if record.mask is not None:
            row.append(_relative(record.mask, base))
        writer.writerow(row)
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(buffer.getvalue().encode("utf-8"))
    return path


def find_dataset_file(root: Path, name: str | Sequence[str], levels: int = 3) -> Path | None:
    """A dataset-wide file (e.g. ``flair_aerial_metadata.json``) at ``root`` or up to ``levels`` folders above.

    ``root`` may be a CSV list, in which case the search starts at its folder; ``name`` may list
    alternative file names, tried in order at each level.
    """
    names = (name,) if isinstance(name, str) else tuple(name)
    folder = Path(os.path.abspath(root))
    if folder.is_file():
        folder = folder.parent
    for _ in range(levels + 1):
        for candidate in names:
            if (folder / candidate).is_file():
                return folder / candidate
        if folder.parent == folder:
            break
        folder = folder.parent
    return None
