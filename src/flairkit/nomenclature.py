"""The 19 FLAIR land-cover classes and the nomenclatures that map mask values to training targets.

This module is the only place in flairkit that knows class codes, names and colours.
A mask value is the FLAIR class code (1..19) stored in ``MSK_*.tif`` files; a *target* is the
0-based index of a model logit. Each :class:`Nomenclature` says how values become targets, which
targets are disabled (loss weight 0, never predicted) and which targets the metrics average over.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

INVALID_TARGET = 255
"""Target assigned to mask values that belong to no class (0, 20..255)."""


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
        """FLAIR class code written for each target (uint8 lookup indexed by target)."""
        return np.array([t.code for t in self.targets], dtype=np.uint8)

    def map_mask(self, mask: np.ndarray) -> np.ndarray:
        """Map a mask of FLAIR codes to uint8 targets; values outside every class (any dtype) become 255."""
        return self.lookup[_as_code_index(mask)]

    def targets_to_codes(self, targets: np.ndarray) -> np.ndarray:
        """Map 0-based targets back to FLAIR class codes (for writing maps)."""
        return self.codes[np.asarray(targets)]

    def invalid_values(self, mask: np.ndarray) -> np.ndarray:
        """The sorted distinct mask values that map to no target."""
        values = np.unique(np.asarray(mask))
        return values[self.lookup[_as_code_index(values)] == INVALID_TARGET]


def _as_code_index(mask: np.ndarray) -> np.ndarray:
    """``mask`` as uint8 indexes of the lookup table; values outside 0..255 become 0 (no class)."""
    array = np.asarray(mask)
    if array.dtype == np.uint8:
        return array
    outside = (
        (array < 0) | (array > 255) | ~np.isfinite(array) if array.dtype.kind == "f" else (array < 0) | (array > 255)
    )
    return np.where(outside, 0, array).astype(np.uint8)


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


def get_nomenclature(name: str) -> Nomenclature:
    """The nomenclature registered under ``name`` (one of :data:`NOMENCLATURES`)."""
    try:
        return NOMENCLATURES[name]
    except KeyError:
        known = ", ".join(NOMENCLATURES)
        raise KeyError(f"unknown nomenclature {name!r}; choose one of: {known}") from None
