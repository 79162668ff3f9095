"""Runs IGN's own FLAIR-HUB metric code on random confusion matrices and writes the fixtures of
tests/test_protocols.py (flairkit's ``flairhub`` protocol must give the same figures to 1e-9).

This file imports nothing from flairkit. IGN's metric code (``src/flair_hub/writer/metrics_utils.py`` and
``metrics_core.py``, read at 3d5693b) imports only numpy; this script adds PyYAML to read IGN's
``configs/train/config_supervision.yaml``. flairkit's own environment has both, so no separate one is needed::

    git clone https://github.com/IGNF/FLAIR-HUB /tmp/flair-hub-src   # or any checkout of it
    .venv/bin/python benchmarks/hub_metrics_official.py --checkout /tmp/flair-hub-src \\
        --out tests/fixtures/hub_metrics

For each case (3 per task) it draws a random confusion matrix (rows = truth), with some empty rows (classes
absent from the truth), empty columns (never predicted), in the second case a class both absent and never
predicted, and in the third, for COSIA, extra pixels predicted as a disabled class; then it calls
IGN's ``compute_and_save_metrics`` with a config laid out as IGN's (``labels_configs.<TASK>.value_name`` and
``value_weights``, ``modalities.inputs``, ``paths.out_model_name``) in a temporary folder, and keeps the
``metrics.json`` it writes. COSIA uses the class names and weights of the checkout's config_supervision.yaml
(classes 15..18 weight 0). LPIS uses that file's weights (none 0) at each of the three levels; the level 1 names
come from the file, and levels 2 and 3 (which IGN's config does not list; its code only needs their number)
get placeholder names. IGN's code prints its tables; they are silenced. The fixture ``cases.json`` holds, per
case: the task, the LPIS level, the matrix and IGN's metrics.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

COSIA, LPIS = "AERIAL_LABEL-COSIA", "ALL_LABEL-LPIS"
LPIS_SIZES = {1: 23, 2: 31, 3: 46}
"""Classes per LPIS level (the bands of ALL_LABEL-LPIS)."""
SEED = 2025
CASES_PER_TASK = 3


def _commit(checkout: Path) -> str:
    """The checkout's commit, or "unknown" when it is no git work tree (e.g. an extracted archive)."""
    done = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def _supervision(checkout: Path) -> dict:
    return yaml.safe_load((checkout / "configs" / "train" / "config_supervision.yaml").read_text())


def _label_config(supervision: dict, task: str, level: int) -> dict:
    """IGN's ``labels_configs.<task>`` for a level: its weights, and the class names of that level."""
    config = dict(supervision["labels_configs"][task])
    if task == LPIS and level != 1:
        config["value_name"] = {i: f"lpis{level} class {i}" for i in range(LPIS_SIZES[level])}
        config["label_channel_nomenclature"] = level
    return config


def _disabled(label_config: dict) -> list[int]:
    exceptions = (label_config.get("value_weights") or {}).get("default_exceptions") or {}
    return sorted(int(i) for i, weight in exceptions.items() if weight == 0)


def draw_matrix(rng: np.random.Generator, n: int, disabled: list[int], variant: int) -> np.ndarray:
    """A random (n, n) int64 matrix: heavy diagonal, some empty rows and columns; variant 1 also has a class with
    an empty row and column, variant 2 pixels of two classes predicted as the first disabled class (if any)."""
    matrix = rng.integers(0, 50, size=(n, n)) * (rng.random((n, n)) < 0.3)
    matrix += np.diag(rng.integers(0, 5000, size=n))
    enabled = [i for i in range(n) if i not in disabled]
    empty_rows = rng.choice(enabled, size=max(1, n // 8), replace=False)
    matrix[empty_rows, :] = 0
    empty_cols = rng.choice(enabled, size=max(1, n // 10), replace=False)
    matrix[:, empty_cols] = 0
    if variant == 1:
        both = rng.choice(enabled, size=1)
        matrix[both, :] = 0
        matrix[:, both] = 0
    if variant == 2 and disabled:
        rows = rng.choice(enabled, size=2, replace=False)
        matrix[rows, disabled[0]] += rng.integers(100, 1000, size=2)
    return matrix.astype(np.int64)


def ign_metrics(matrix: np.ndarray, task: str, label_config: dict) -> dict:
    """The metrics.json that IGN's ``compute_and_save_metrics`` (the checkout is on sys.path) writes for ``matrix``."""
    from flair_hub.writer.metrics_utils import compute_and_save_metrics

    config = {
        "labels_configs": {task: label_config},
        "modalities": {"inputs": {"AERIAL_RGBI": True, "SENTINEL2_TS": True}},
        "paths": {"out_model_name": "fixture"},
    }
    quiet = np.errstate(divide="ignore", invalid="ignore")  # IGN's 0/0, which it then sets to 0
    with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stdout(io.StringIO()), quiet:
        compute_and_save_metrics(matrix, config, folder, task, mode="predict")
        return json.loads((Path(folder) / "metrics_fixture" / task / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, required=True, help="a checkout of IGNF/FLAIR-HUB")
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/hub_metrics"))
    args = parser.parse_args()
    if not (args.checkout / "src" / "flair_hub" / "writer" / "metrics_utils.py").is_file():
        sys.exit(f"{args.checkout}: no src/flair_hub/writer/metrics_utils.py; give a checkout of IGNF/FLAIR-HUB")
    sys.path.insert(0, str(args.checkout / "src"))
    supervision = _supervision(args.checkout)
    rng = np.random.default_rng(SEED)
    cases = []
    tasks = [(COSIA, 0)] + [(LPIS, level) for level in LPIS_SIZES]
    for task, level in tasks:
        label_config = _label_config(supervision, task, level)
        n = len(label_config["value_name"])
        for variant in range(CASES_PER_TASK):
            matrix = draw_matrix(rng, n, _disabled(label_config), variant)
            metrics = ign_metrics(matrix, task, label_config)
            cases.append({"task": task, "lpis_level": level, "confmat": matrix.tolist(), "ign": metrics})
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / "cases.json"
    # allow_nan=False: IGN's code turns every undefined ratio into 0, so a NaN here would be a drawing mistake.
    target.write_text(json.dumps({"ign_commit": _commit(args.checkout), "cases": cases}, allow_nan=False) + "\n")
    print(f"wrote {len(cases)} cases to {target}")


if __name__ == "__main__":
    main()
