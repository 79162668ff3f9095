"""The report of ``flair data patches``: class frequencies per split, as JSON rows and as a markdown table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from flairkit.nomenclature import INVALID_TARGET, Nomenclature

UNLABELLED = "unlabelled"


def class_frequencies(nomenclature: Nomenclature, pixels: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """One row per class, then one for unlabelled pixels: the pixels of each split and their share (%).

    ``pixels`` holds, per split, a 256-bin histogram of targets (bin 255: unlabelled).
    """
    totals = {split: int(counts.sum()) for split, counts in pixels.items()}

    def row(code: int | None, name: str, index: int) -> dict[str, Any]:
        counts = {split: int(histogram[index]) for split, histogram in pixels.items()}
        shares = {split: round(100 * counts[split] / totals[split], 2) if totals[split] else 0.0 for split in counts}
        return {"code": code, "class": name, "pixels": counts, "percent": shares}

    rows = [row(target.code, target.name, target.index) for target in nomenclature.targets]
    rows.append(row(None, UNLABELLED, INVALID_TARGET))
    return rows


def frequency_markdown(rows: list[dict[str, Any]], patches: Mapping[str, int], areas: Mapping[str, int]) -> str:
    """The class frequencies as a markdown table, splits side by side, with patch and area counts on top."""
    splits = list(patches)
    header = "| code | class | " + " | ".join(f"{s} pixels | {s} %" for s in splits) + " |"
    lines = [
        "| split | patches | areas |",
        "|---|---|---|",
        *(f"| {s} | {patches[s]} | {areas[s]} |" for s in splits),
        "",
        header,
        "|---|---|" + "---|---|" * len(splits),
    ]
    for row in rows:
        code = "" if row["code"] is None else str(row["code"])
        cells = " | ".join(f"{row['pixels'][s]} | {row['percent'][s]:.2f}" for s in splits)
        lines.append(f"| {code} | {row['class']} | {cells} |")
    return "\n".join(lines) + "\n"
