"""The 19 FLAIR land-cover classes and the nomenclatures that map mask values to training targets.

This module is the only place in flairkit that knows class codes, names and colours.
A mask value is the FLAIR class code (1..19) stored in ``MSK_*.tif`` files; a *target* is the
0-based index of a model logit. Each :class:`Nomenclature` says how values become targets, which
targets are disabled (loss weight 0, never predicted) and which targets the metrics average over.
Its ignore value (0) marks unlabelled pixels: they become target 255, left out of losses and metrics.
Your own nomenclatures are YAML files (:func:`load_nomenclature`), accepted wherever a built-in name is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from flairkit.errors import ConfigError, DataError

INVALID_TARGET = 255
"""Target assigned to mask values that belong to no class (0, 20..255)."""
NOMENCLATURE_SUFFIXES = (".yaml", ".yml")
"""A ``data.nomenclature`` ending so is the path of a nomenclature YAML (see :func:`load_nomenclature`)."""


@dataclass(frozen=True)
class FlairClass:
    """One FLAIR land-cover class as stored in the masks."""

    code: int
    name: str
    colour: str

    @property
    def rgb(self) -> tuple[int, int, int]:
        """The class colour as an (r, g, b) triple of 0..255 integers."""
        hex_digits = self.colour.lstrip("#")
        return tuple(int(hex_digits[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]


FLAIR_CLASSES: tuple[FlairClass, ...] = (
    FlairClass(1, "building", "#db0e9a"),
    FlairClass(2, "pervious surface", "#938e7b"),
    FlairClass(3, "impervious surface", "#f80c00"),
    FlairClass(4, "bare soil", "#a97101"),
    FlairClass(5, "water", "#1553ae"),
    FlairClass(6, "coniferous", "#194a26"),
    FlairClass(7, "deciduous", "#46e483"),
    FlairClass(8, "brushwood", "#f3a60d"),
    FlairClass(9, "vineyard", "#660082"),
    FlairClass(10, "herbaceous vegetation", "#55ff00"),
    FlairClass(11, "agricultural land", "#fff30d"),
    FlairClass(12, "plowed land", "#e4df7c"),
    FlairClass(13, "swimming pool", "#3de6eb"),
    FlairClass(14, "snow", "#ffffff"),
    FlairClass(15, "clear cut", "#8ab3a0"),
    FlairClass(16, "mixed", "#6b714f"),
    FlairClass(17, "ligneous", "#c5dc42"),
    FlairClass(18, "greenhouse", "#9999ff"),
    FlairClass(19, "other", "#000000"),
)
CLASS_BY_CODE: dict[int, FlairClass] = {c.code: c for c in FLAIR_CLASSES}
CLASS_BY_NAME: dict[str, FlairClass] = {c.name: c for c in FLAIR_CLASSES}
MIN_CODE, MAX_CODE = 1, 19


def class_code(name: str) -> int:
    """The FLAIR code of a class given by name (e.g. ``"water"`` -> 5)."""
    try:
        return CLASS_BY_NAME[name].code
    except KeyError:
        known = ", ".join(CLASS_BY_NAME)
        raise KeyError(f"unknown FLAIR class {name!r}; known classes: {known}") from None


@dataclass(frozen=True)
class Target:
    """One logit of a model: its name, colour, the FLAIR code it is written as, and its loss weight."""

    index: int
    name: str
    colour: str
    code: int
    weight: float
    flair: tuple[int, ...] = ()
    """FLAIR codes this target groups, when a nomenclature YAML relates its classes to FLAIR's."""

    @property
    def enabled(self) -> bool:
        """Whether the target is learnt and may be predicted."""
        return self.weight > 0


@dataclass(frozen=True)
class Nomenclature:
    """How mask values (FLAIR codes) become 0-based training targets, and how targets are scored."""

    name: str
    description: str
    targets: tuple[Target, ...]
    value_to_target: dict[int, int]
    average_over: str = "enabled"
    """Which targets the official mIoU averages over: ``"enabled"`` (weight > 0) or ``"first_n"``."""
    source: Path | None = field(default=None, compare=False)
    """The YAML file it was read from; None for a built-in nomenclature."""
    flair_masks: bool = True
    """Whether mask values are FLAIR codes (built-in nomenclatures, YAML with ``mask_values: flair``)."""
    lookup: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        table = np.full(256, INVALID_TARGET, dtype=np.uint8)
        for value, target in self.value_to_target.items():
            table[value] = target
        table.setflags(write=False)
        object.__setattr__(self, "lookup", table)

    @property
    def n_targets(self) -> int:
        """Number of model logits."""
        return len(self.targets)

    @property
    def weights(self) -> list[float]:
        """Per-target loss weights (0 for disabled targets)."""
        return [t.weight for t in self.targets]

    @property
    def disabled(self) -> list[int]:
        """Indices of targets with weight 0: never learnt, never predicted."""
        return [t.index for t in self.targets if not t.enabled]

    @property
    def enabled(self) -> list[int]:
        """Indices of targets with a positive weight."""
        return [t.index for t in self.targets if t.enabled]

    @property
    def names(self) -> list[str]:
        """Target names in logit order."""
        return [t.name for t in self.targets]

    @property
    def codes(self) -> np.ndarray:
        """Class code written for each target in maps (uint8 lookup indexed by target; FLAIR codes when built in)."""
        return np.array([t.code for t in self.targets], dtype=np.uint8)

    @property
    def class_values(self) -> list[int]:
        """The sorted mask values that map to a target."""
        return sorted(self.value_to_target)

    @property
    def ignore_value(self) -> int:
        """The mask value of unlabelled pixels: 0 as in FLAIR masks, or 255 when 0 is a class value."""
        return 255 if 0 in self.value_to_target else 0

    def describe_values(self) -> str:
        """The class values as short text for messages, e.g. ``1..19`` or ``0..4, 9``."""
        runs: list[list[int]] = []
        for value in self.class_values:
            if runs and value == runs[-1][-1] + 1:
                runs[-1].append(value)
            else:
                runs.append([value])
        return ", ".join(str(run[0]) if len(run) == 1 else f"{run[0]}..{run[-1]}" for run in runs)

    def target_of(self, key: int | str) -> int | None:
        """The target of a class given by its code or its name (case-insensitive); None when no class matches."""
        for target in self.targets:
            if (key == target.code) if isinstance(key, int) else (str(key).casefold() == target.name.casefold()):
                return target.index
        return None

    def mask_value(self, target: int) -> int:
        """The mask value that stands for ``target``: its code when masks hold it, else the smallest value of it."""
        values = [value for value, t in self.value_to_target.items() if t == target]
        code = self.targets[target].code
        return code if code in values else min(values)

    def value_of(self, key: int | str) -> int | None:
        """The mask value of a class given by its code or name, or of a FLAIR class given by name when masks hold
        FLAIR codes; None when there is none."""
        target = self.target_of(key)
        if target is not None:
            return self.mask_value(target)
        flair = CLASS_BY_NAME.get(key.casefold()) if isinstance(key, str) and self.flair_masks else None
        return flair.code if flair is not None and flair.code in self.value_to_target else None

    @property
    def classes_text(self) -> str:
        """The classes that mask values must belong to, for messages: ``FLAIR classes (1..19)`` when built in."""
        where = "FLAIR classes" if self.source is None else f"classes of {self.source}"
        return f"{where} ({self.describe_values()})"

    def map_mask(self, mask: np.ndarray) -> np.ndarray:
        """Map a mask of class values to uint8 targets; values outside every class (any dtype) become 255."""
        array = np.asarray(mask)
        if array.dtype == np.uint8:
            return self.lookup[array]
        inside = _within_uint8(array)
        return np.where(inside, self.lookup[np.where(inside, array, 0).astype(np.uint8)], np.uint8(INVALID_TARGET))

    def map_targets(self, targets: np.ndarray | int, codes: bool = True, nodata: int | None = None) -> np.ndarray:
        """Map 0-based targets to the uint8 values written in maps: class codes, or the targets themselves when not
        ``codes``. Other values become ``nodata``; without ``nodata`` they are an IndexError."""
        array = np.asarray(targets)
        values = self.codes if codes else np.arange(self.n_targets, dtype=np.uint8)
        if nodata is None:
            return values[array]
        inside = (array >= 0) & (array < self.n_targets)
        return np.where(inside, values[np.where(inside, array, 0)], np.uint8(nodata)).astype(np.uint8)

    def invalid_values(self, mask: np.ndarray) -> np.ndarray:
        """The sorted distinct mask values that map to no target, other than :attr:`ignore_value` (unlabelled)."""
        values = np.unique(np.asarray(mask))
        return values[(self.map_mask(values) == INVALID_TARGET) & (values != self.ignore_value)]


def _within_uint8(array: np.ndarray) -> np.ndarray:
    """Where ``array`` holds a value of 0..255 (a lookup index); NaN and infinities are outside."""
    if array.dtype.kind == "f":
        return np.isfinite(array) & (array >= 0) & (array <= 255)
    return (array >= 0) & (array <= 255)


def _targets_from_codes(codes: list[int], disabled_codes: set[int]) -> tuple[Target, ...]:
    return tuple(
        Target(i, CLASS_BY_CODE[c].name, CLASS_BY_CODE[c].colour, c, 0.0 if c in disabled_codes else 1.0)
        for i, c in enumerate(codes)
    )


def _flair19(disabled_codes: set[int], name: str, description: str) -> Nomenclature:
    codes = [c.code for c in FLAIR_CLASSES]
    return Nomenclature(
        name=name,
        description=description,
        targets=_targets_from_codes(codes, disabled_codes),
        value_to_target={c: c - 1 for c in codes},
    )


def _flair13(name: str, description: str) -> Nomenclature:
    targets = _targets_from_codes(list(range(1, 13)), set()) + (Target(12, "other", CLASS_BY_CODE[19].colour, 19, 0.0),)
    return Nomenclature(
        name=name,
        description=description,
        targets=targets,
        value_to_target={c: min(c, 13) - 1 for c in range(MIN_CODE, MAX_CODE + 1)},
        average_over="first_n",
    )


HUB_ORDER: tuple[int, ...] = (1, 18, 13, 3, 2, 4, 5, 14, 10, 11, 12, 9, 7, 6, 8, 15, 17, 16, 19)
"""FLAIR codes in FLAIR-HUB's 0-based target order (building, greenhouse, swimming pool, ...)."""

DISABLED_15CL = {15, 16, 17, 19}


def _hub() -> Nomenclature:
    targets = list(_targets_from_codes(list(HUB_ORDER), DISABLED_15CL))
    targets[18] = Target(18, "undefined", CLASS_BY_CODE[19].colour, 19, 0.0)
    return Nomenclature(
        name="hub",
        description="FLAIR-HUB 0-based order, 19 logits, 15 learnt classes",
        targets=tuple(targets),
        value_to_target={code: i for i, code in enumerate(HUB_ORDER)},
    )


NOMENCLATURES: dict[str, Nomenclature] = {
    n.name: n
    for n in (
        _flair19(set(), "19cl", "all 19 FLAIR classes, target = value - 1"),
        _flair19(
            DISABLED_15CL,
            "15cl",
            "19 logits, target = value - 1; clear cut, mixed, ligneous, other have weight 0 (FLAIR-1, FLAIR-INC)",
        ),
        _flair13("13cl", "FLAIR #2: values > 13 -> other (weight 0); mIoU over the first 12"),
        _flair13("12cl", "FLAIR-INC 12-class models: 13 logits as FLAIR #2, 'other' disabled"),
        _hub(),
    )
}


def is_nomenclature_file(name: str | Path) -> bool:
    """Whether ``name`` is the path of a nomenclature YAML (ends in .yaml, or is a file) rather than a built-in."""
    text = str(name)
    if text in NOMENCLATURES:
        return False
    return Path(text).suffix.lower() in NOMENCLATURE_SUFFIXES or Path(text).is_file()


def get_nomenclature(name: str | Path) -> Nomenclature:
    """The built-in nomenclature ``name`` (one of :data:`NOMENCLATURES`), or the nomenclature YAML at that path."""
    if str(name) in NOMENCLATURES:
        return NOMENCLATURES[str(name)]
    if is_nomenclature_file(name):
        return load_nomenclature(Path(name))
    raise KeyError(
        f"unknown nomenclature {str(name)!r}; choose one of: {', '.join(NOMENCLATURES)}, "
        "or give the path of a nomenclature YAML (.yaml)"
    )


MAX_CLASS_VALUE = 254
"""Largest class code or mask value of a nomenclature YAML: 255 stays free for unlabelled pixels."""
MASK_VALUES = ("codes", "flair")
_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
_TOP_KEYS = ("name", "description", "mask_values", "first_code", "classes")
_CLASS_KEYS = ("name", "code", "colour", "weight", "flair")


def _refuse(path: Path, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{path}: {key}: {problem}; see the nomenclature YAML format in the README ('Your own data')")


def _integer(value: Any, path: Path, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _refuse(path, key, f"expected a whole number in {low}..{high}, got {value!r}")
    return value


def _flair_codes(value: Any, path: Path, key: str) -> tuple[int, ...]:
    items = value if isinstance(value, list) else [value]
    codes = []
    for item in items:
        if isinstance(item, str) and item in CLASS_BY_NAME:
            codes.append(CLASS_BY_NAME[item].code)
        elif not isinstance(item, bool) and isinstance(item, int) and item in CLASS_BY_CODE:
            codes.append(item)
        else:
            raise _refuse(path, key, f"{item!r} is no FLAIR class; give codes 1..19 or names such as 'building'")
    if len(set(codes)) != len(codes):
        raise _refuse(path, key, "a FLAIR class is listed twice")
    return tuple(codes)


def _class_entry(item: Any, index: int, path: Path) -> dict[str, Any]:
    key = f"classes[{index}]"
    if not isinstance(item, dict):
        raise _refuse(path, key, f"expected a mapping with name, colour (and code, weight, flair), got {item!r}")
    unknown = sorted(set(item) - set(_CLASS_KEYS))
    if unknown:
        raise _refuse(path, f"{key}.{unknown[0]}", f"unknown key; a class has {', '.join(_CLASS_KEYS)}")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _refuse(path, f"{key}.name", f"expected the class name, got {name!r}")
    colour = item.get("colour")
    if not isinstance(colour, str) or not _COLOUR.match(colour):
        raise _refuse(path, f"{key}.colour", f"expected a colour such as '#db0e9a' (quoted), got {colour!r}")
    weight = item.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight < float("inf"):
        raise _refuse(
            path, f"{key}.weight", f"expected a loss weight >= 0 (0: never learnt nor predicted), got {weight!r}"
        )
    code = _integer(item.get("code", index + 1), path, f"{key}.code", 1, MAX_CLASS_VALUE)
    flair = _flair_codes(item["flair"], path, f"{key}.flair") if "flair" in item else ()
    return {"name": name.strip(), "colour": colour.lower(), "weight": float(weight), "code": code, "flair": flair}


def _first_duplicate(values: Iterable[Any]) -> Any:
    seen = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    return None


def _value_to_target(
    data: dict[str, Any], entries: list[dict[str, Any]], mask_values: str, path: Path
) -> dict[int, int]:
    """Mask value -> target: the FLAIR codes each class groups, or the class codes shifted to ``first_code``."""
    if mask_values == "flair":
        if "first_code" in data:
            raise _refuse(path, "first_code", "masks of FLAIR codes start at 1; remove first_code or mask_values")
        ungrouped = [e["name"] for e in entries if not e["flair"]]
        if ungrouped:
            raise _refuse(path, "mask_values", f"class {ungrouped[0]!r} has no 'flair' list of FLAIR classes to group")
        return {code: i for i, e in enumerate(entries) for code in e["flair"]}
    smallest = min(e["code"] for e in entries)
    first = _integer(data.get("first_code", smallest), path, "first_code", 0, MAX_CLASS_VALUE)
    shift = first - smallest
    top = max(e["code"] for e in entries) + shift
    if top > MAX_CLASS_VALUE:
        raise _refuse(path, "first_code", f"puts the largest mask value at {top}, above {MAX_CLASS_VALUE}")
    return {e["code"] + shift: i for i, e in enumerate(entries)}


def load_nomenclature(path: Path) -> Nomenclature:
    """Read and validate a nomenclature YAML; :class:`~flairkit.errors.ConfigError` names the file and the key.

    Keys: ``classes`` (a list of ``name``, ``colour`` and optional ``code`` (default: position + 1, 1..254),
    ``weight`` (default 1; 0 disables the class) and ``flair`` (the FLAIR classes it groups)), and optional
    ``name``, ``description``, ``mask_values`` (``codes``: masks hold the class codes, ``flair``: masks hold
    FLAIR codes 1..19, grouped by the ``flair`` lists) and ``first_code`` (the mask value of the class with
    the smallest code, e.g. 0 for masks that start at 0; default: that code). Unlabelled pixels are 0 in
    masks, or 255 when 0 is a class value.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path}: nomenclature file not found; give a built-in nomenclature ({', '.join(NOMENCLATURES)}) "
            "or the path of a nomenclature YAML"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConfigError(
            f"{path}: cannot read the nomenclature YAML ({' '.join(str(error).split())}); fix it"
        ) from None
    if not isinstance(data, dict):
        raise _refuse(path, "(top level)", f"expected a mapping with a 'classes' list, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        raise _refuse(path, unknown[0], f"unknown key; a nomenclature has {', '.join(_TOP_KEYS)}")
    items = data.get("classes")
    if not isinstance(items, list) or len(items) < 2:
        raise _refuse(path, "classes", f"expected a list of at least 2 classes, got {items!r}")
    entries = [_class_entry(item, i, path) for i, item in enumerate(items)]
    for key in ("name", "code"):
        duplicate = _first_duplicate(e[key] for e in entries)
        if duplicate is not None:
            raise _refuse(path, f"classes[*].{key}", f"{duplicate!r} is given to two classes; each class needs its own")
    grouped = _first_duplicate(code for e in entries for code in e["flair"])
    if grouped is not None:
        raise _refuse(path, "classes[*].flair", f"FLAIR class {grouped} is grouped into two classes; keep it in one")
    if not any(e["weight"] > 0 for e in entries):
        raise _refuse(path, "classes[*].weight", "every class has weight 0; at least one class must be learnt")
    mask_values = data.get("mask_values", "codes")
    if mask_values not in MASK_VALUES:
        raise _refuse(path, "mask_values", f"expected one of {', '.join(MASK_VALUES)}, got {mask_values!r}")
    value_to_target = _value_to_target(data, entries, mask_values, path)
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name.strip():
        raise _refuse(path, "name", f"expected a short name, got {name!r}")
    if name in NOMENCLATURES:
        raise _refuse(path, "name", f"{name!r} is a built-in nomenclature's name; choose another")
    description = data.get("description", f"{len(entries)} classes from {path.name}")
    targets = tuple(
        Target(i, e["name"], e["colour"], e["code"], e["weight"], e["flair"]) for i, e in enumerate(entries)
    )
    return Nomenclature(
        name.strip(), str(description), targets, value_to_target, source=path, flair_masks=mask_values == "flair"
    )


@dataclass(frozen=True)
class LabelOrigin:
    """How the values of a label file become a nomenclature's class values."""

    shift: int
    """Added to every label value: +1 for labels that start at 0 read with a nomenclature that starts at 1."""
    unlabelled: tuple[int, ...]
    """Label values that are no class and mark unlabelled pixels (0 as in FLAIR masks, 255)."""
    note: str
    """What was found and decided, in one sentence for the user."""


def label_origin(
    values: Iterable[int], nomenclature: Nomenclature, source: str, start: int | None = None
) -> LabelOrigin:
    """Whether labels ``values`` (found in ``source``) start at 0 or 1 and how they map to ``nomenclature``.

    ``start`` (0 or 1) says where the labels start; None detects it: labels that hold 0, no class value 0 and
    reach the nomenclature's largest value once shifted by one start at 0; otherwise a value 0 that is no class
    marks unlabelled pixels, as in FLAIR masks. Value 255, when it is no class, is unlabelled. Raises
    :class:`~flairkit.errors.DataError` listing the values that no class takes.
    """
    classes = set(nomenclature.class_values)
    first, last = min(classes), max(classes)
    seen = {int(v) for v in values}
    unlabelled = seen & ({255} - classes)
    labels = seen - unlabelled

    def fits(shift: int, zero_unlabelled: bool = False) -> bool:
        kept = labels - {0} if zero_unlabelled else labels
        return all(v + shift in classes for v in kept)

    if start is not None:
        shift = first - start
        zero_unlabelled = shift == 0 and 0 not in classes
    elif fits(0):
        shift, zero_unlabelled = 0, False
    elif first > 0 and 0 in labels and fits(first) and max(labels) + first == last:
        shift, zero_unlabelled = first, False
    elif first == 0 and labels and min(labels) == 1 and fits(-1) and max(labels) - 1 == last:
        shift, zero_unlabelled = -1, False
    else:
        shift, zero_unlabelled = 0, 0 in labels and 0 not in classes
    if zero_unlabelled and 0 in labels:
        unlabelled.add(0)
        labels.discard(0)
    bad = sorted(v for v in labels if v + shift not in classes)
    if bad:
        shown = bad if shift == 0 else [f"{v} (read as {v + shift})" for v in bad]
        raise DataError(
            f"{source}: label values {shown} are no class of nomenclature {nomenclature.name!r} (class values "
            f"{nomenclature.describe_values()}); map them with a mapping table, or a nomenclature YAML that has them"
        )
    if shift:
        begins = min(labels) if labels else first - shift
        note = (
            f"{source}: labels start at {begins}: codes are shifted by {shift:+d} "
            f"(label {begins} is read as class value {begins + shift})"
        )
    else:
        note = f"{source}: labels use the class values of nomenclature {nomenclature.name!r} as they are"
    if unlabelled:
        note += f"; value(s) {sorted(unlabelled)} are no class: read as unlabelled"
    return LabelOrigin(shift, tuple(sorted(unlabelled)), note)


LPIS_CLASSES: tuple[tuple[str, ...], ...] = (
    (
        "grasses",
        "wheat",
        "barley",
        "maize",
        "other cereals",
        "rice",
        "flax/hemp/tobacco",
        "sunflower",
        "rapeseed",
        "other oilseed crops",
        "soy",
        "other protein crops",
        "fodder legumes",
        "beetroots",
        "potatoes",
        "other arable crops",
        "vineyard",
        "olive groves",
        "fruits orchards",
        "nut orchards",
        "other permanent crops",
        "mixed crops",
        "background",
    ),
    (
        "grasses",
        "wheat",
        "barley",
        "maize",
        "sorghum/millet",
        "other winter cereals",
        "other spring cereals",
        "other cereals",
        "rice",
        "hemp/tobacco",
        "flax",
        "sunflower",
        "rapeseed",
        "other oilseed crops",
        "soy",
        "other protein crops",
        "alfalfa",
        "other fodder legumes",
        "beetroots",
        "potatoes",
        "fruits and vegetables",
        "aromatic/medicinal plants",
        "other arable crops",
        "vineyard",
        "olive groves",
        "fruit orchards",
        "nut orchards",
        "lavandin",
        "other permanent crops",
        "mixed crops",
        "background",
    ),
    (
        "grasses monoculture",
        "grasses mixture",
        "winter wheat",
        "spring wheat",
        "winter barley",
        "spring barley",
        "maize",
        "sorghum",
        "millet / foxtail millet",
        "winter durum wheat",
        "winter triticale",
        "winter oat",
        "winter rye",
        "spring oat",
        "other spring cereals",
        "other cereals",
        "rice",
        "hemp/tobacco",
        "fiber flax",
        "other flax",
        "sunflower",
        "rapeseed",
        "mustard",
        "other oilseed crops",
        "soy",
        "spring peas",
        "winter protein crops",
        "other protein crops",
        "alfalfa",
        "clover",
        "other fodder legumes",
        "beetroots",
        "potatoes",
        "fruits and vegetables",
        "aromatic/medicinal plants",
        "buckwheat",
        "other arable crops",
        "vineyard",
        "olive groves",
        "fruit orchards",
        "nut orchards",
        "lavandin",
        "berries",
        "other permanent crops",
        "mixed crops",
        "background",
    ),
)
"""FLAIR-HUB crop types (ALL_LABEL-LPIS) by nomenclature level 1, 2, 3 (the file's bands 1, 2, 3): the
0-based value of a pixel indexes its level's tuple."""


def lpis_classes(level: int) -> tuple[str, ...]:
    """The crop-type names of LPIS nomenclature ``level`` (1, 2 or 3), in value order."""
    if level not in (1, 2, 3):
        raise KeyError(f"unknown LPIS level {level!r}; choose 1 (23 classes), 2 (31) or 3 (46)")
    return LPIS_CLASSES[level - 1]


LPIS_COLOURS: tuple[str, ...] = (
    "#92d050",
    "#d7e600",
    "#e0e000",
    "#fff100",
    "#ffff00",
    "#e8e8e8",
    "#dceaf7",
    "#d29ead",
    "#d29ed0",
    "#ffbe99",
    "#ffc000",
    "#ff9000",
    "#009999",
    "#808000",
    "#a7a700",
    "#89896d",
    "#f2cfee",
    "#6f6633",
    "#ac8141",
    "#996633",
    "#80c1d7",
    "#000000",
    "#000000",
)
"""Colours of the LPIS level-1 crop types, as IGN's FLAIR-HUB README lists them; finer classes take their parent's."""
LPIS_PARENTS: dict[int, tuple[int, ...]] = {
    2: (0, 1, 2, 3, 4, 4, 4, 4, 5, 6, 6, 7, 8, 9, 10, 11, 12, 12, 13, 14, 15, 15, 15, 16, 17, 18, 19, 20, 20, 21, 22),
    3: (
        *(0, 0, 1, 1, 2, 2, 3, 4, 4, 5, 5, 5, 5, 6, 6, 7, 8, 9, 10, 10, 11, 12, 13, 13),
        *(14, 15, 15, 15, 16, 17, 17, 18, 19, 20, 21, 22, 22, 23, 24, 25, 26, 27, 28, 28, 29, 30),
    ),
}
"""Per LPIS level 2 and 3: the value, one level coarser, of each class. IGN publishes no table: this is read from
the names and their order (each finer list keeps the classes of one coarser class together, in the coarser
order), e.g. level 3 winter durum wheat, between millet and winter triticale, is level 2 other winter cereals."""
LPIS_NOMENCLATURE_PREFIX = "lpis"
"""LPIS level n is the nomenclature ``lpis<n>`` (as presets record it)."""


def lpis_parents(fine: int, coarse: int) -> np.ndarray:
    """The value at LPIS level ``coarse`` of each value of the finer (or same) level ``fine`` (int64, by value)."""
    n_fine = len(lpis_classes(fine))
    if len(lpis_classes(coarse)) > n_fine:
        raise ValueError(f"LPIS level {coarse} is finer than level {fine}; values collapse only to coarser levels")
    parents = np.arange(n_fine, dtype=np.int64)
    for level in range(fine, coarse, -1):
        parents = np.asarray(LPIS_PARENTS[level], dtype=np.int64)[parents]
    return parents


def lpis_nomenclature(level: int) -> Nomenclature:
    """LPIS ``level`` as a nomenclature ``lpis<level>``: 0-based label values are the targets, every class is
    scored (IGN's FLAIR-HUB gives no crop type weight 0, background included)."""
    names = lpis_classes(level)
    colours = [LPIS_COLOURS[parent] for parent in lpis_parents(level, 1)]
    return Nomenclature(
        name=f"{LPIS_NOMENCLATURE_PREFIX}{level}",
        description=f"FLAIR-HUB crop types, LPIS level {level} ({len(names)} classes, 0-based values)",
        targets=tuple(Target(i, name, colours[i], i, 1.0) for i, name in enumerate(names)),
        value_to_target={i: i for i in range(len(names))},
        flair_masks=False,
    )
