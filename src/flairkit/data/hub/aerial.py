"""FLAIR-HUB as single-date aerial training data: AERIAL_RGBI patches with COSIA labels for `flair train/evaluate`.

The training data module speaks :class:`~flairkit.data.datasets.PatchDataset` (records, ``read_target``,
nomenclature); this module gives it FLAIR-HUB's official splits as records and reads their COSIA labels,
which the release stores 0-based in the order of the ``hub`` nomenclature.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from flairkit.config.schema import DataConfig, HubDataConfig
from flairkit.data.datasets import PatchDataset
from flairkit.data.discovery import PatchRecord
from flairkit.data.hub.dataset import read_label, split_patches
from flairkit.data.hub.layout import COSIA, SERIES, PatchId, is_hub_folder
from flairkit.errors import ConfigError, DataError
from flairkit.nomenclature import Nomenclature

AERIAL = "AERIAL_RGBI"
HUB_NOMENCLATURE = "hub"
"""COSIA's 19 classes in FLAIR-HUB's 0-based order, 15 learnt (targets 15-18 weigh 0)."""


def hub_settings(data: DataConfig) -> HubDataConfig | None:
    """The ``data.hub`` section to train on when the config names FLAIR-HUB data, else None (see :func:`hub_data`);
    the config must then describe a single-date aerial model."""
    hub = hub_data(data)
    if hub is not None:
        _check_aerial(data, hub)
    return hub


def hub_data(data: DataConfig) -> HubDataConfig | None:
    """The ``data.hub`` section, its root resolved, when the config names FLAIR-HUB data, else None.

    FLAIR-HUB is used when ``data.root`` is a FLAIR-HUB folder (it becomes ``data.hub.root``), or when
    ``data.hub.root`` or a ``data.hub.*_csv`` is set.
    """
    hub = data.hub
    root_is_hub = data.root is not None and is_hub_folder(Path(data.root))
    if not (root_is_hub or hub.root is not None or hub.train_csv or hub.val_csv or hub.test_csv):
        return None
    if data.root is not None and hub.root is not None and Path(data.root) != Path(hub.root):
        raise ConfigError(
            f"data.root={data.root} and data.hub.root={hub.root} name different datasets; set only one of them"
        )
    if data.root is not None and not root_is_hub:
        raise ConfigError(
            f"data.root={data.root} is no FLAIR-HUB folder (no GLOBAL_ALL_MTD nor {{DOM}}-{{YEAR}}_{{MOD}} folder) "
            "while data.hub is set; give the FLAIR-HUB folder as data.root or data.hub.root"
        )
    if root_is_hub and hub.root is None:
        hub = hub.model_copy(update={"root": Path(data.root)})
    return hub


def _check_aerial(data: DataConfig, hub: HubDataConfig) -> None:
    series = [m for m in hub.modalities if m in SERIES]
    if series:
        raise ConfigError(
            f"data.hub.modalities: {series[0]} is a time series; training on FLAIR-HUB series (multimodal models) is "
            f"not supported yet: set data.hub.modalities=[{AERIAL}]"
        )
    if hub.modalities != [AERIAL]:
        raise ConfigError(
            f"data.hub.modalities={hub.modalities}: flair train reads FLAIR-HUB's {AERIAL} alone for now; "
            f"set data.hub.modalities=[{AERIAL}]"
        )
    if hub.labels != [COSIA]:
        raise ConfigError(
            f"data.hub.labels={hub.labels}: flair train learns FLAIR-HUB's land cover ({COSIA}) for now; "
            f"set data.hub.labels=[{COSIA}]"
        )
    if data.nomenclature != HUB_NOMENCLATURE:
        raise ConfigError(
            f"data.nomenclature={data.nomenclature}: FLAIR-HUB's COSIA labels are 0-based in FLAIR-HUB's class order; "
            f"set data.nomenclature={HUB_NOMENCLATURE}"
        )
    if any(not 1 <= band <= 4 for band in data.channels):
        raise ConfigError(
            f"data.channels={data.channels}: FLAIR-HUB {AERIAL} has bands 1..4 (R, G, B, NIR) and no elevation band; "
            "set data.channels=[1, 2, 3, 4]"
        )
    chosen = hub.channels.get(AERIAL)
    if chosen is not None and chosen != data.channels:
        raise ConfigError(
            f"data.hub.channels.{AERIAL}={chosen} differs from data.channels={data.channels}, the bands the model "
            f"reads; remove data.hub.channels.{AERIAL} or make them equal"
        )
    if data.metadata or data.sentinel.enabled:
        key = "data.metadata" if data.metadata else "data.sentinel.enabled"
        raise ConfigError(f"{key} is on but FLAIR-HUB has no FLAIR-1 metadata nor FLAIR #2 Sentinel-2; set it to false")


def hub_records(hub: HubDataConfig, split: str) -> list[PatchRecord]:
    """The records of ``split`` (train, val or test) of FLAIR-HUB: each patch's aerial image and COSIA label."""
    records = []
    for patch in split_patches(hub, split):
        parsed = PatchId.parse(patch.patch_id)
        records.append(
            PatchRecord(
                image=Path(patch.files[AERIAL]),
                mask=Path(patch.files[COSIA]) if COSIA in patch.files else None,
                patch_id=patch.patch_id,
                domain=parsed.domain_year,
                zone=parsed.roi,
                sentinel_dir=None,
            )
        )
    return records


class HubAerialDataset(PatchDataset):
    """A :class:`PatchDataset` of FLAIR-HUB aerial patches whose masks are 0-based COSIA labels."""

    def __init__(
        self, records: Sequence[PatchRecord], channels: Sequence[int], nomenclature: Nomenclature, with_labels: bool
    ):
        if nomenclature.name != HUB_NOMENCLATURE:
            raise ValueError(f"FLAIR-HUB COSIA labels need the {HUB_NOMENCLATURE} nomenclature")
        missing = [r.image for r in records if not Path(r.image).is_file()]
        if with_labels:
            missing += [r.mask for r in records if r.mask is not None and not Path(r.mask).is_file()]
        if missing:
            raise DataError(
                f"{missing[0]}: missing ({len(missing)} FLAIR-HUB file(s) of {AERIAL}/{COSIA} missing in all); "
                "download them, `flair data check` lists every problem"
            )
        super().__init__(records, channels, nomenclature, with_labels=with_labels)

    def read_target(self, record: PatchRecord) -> np.ndarray:
        """The 0-based targets of a patch's COSIA label (FLAIR-HUB stores them as such)."""
        if record.mask is None:
            raise DataError(f"no {COSIA} label for {record.image}; give it in the split CSV or predict without labels")
        return read_label(record.mask, COSIA)
