"""The Lightning data module: finds the splits of a config's dataset and serves uint8 batches."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from flairkit.config.schema import FlairConfig
from flairkit.data.datasets import EpochShuffleSampler, PatchDataset, SentinelSource, collate_patches
from flairkit.data.discovery import (
    CENTROIDS_FILES,
    METADATA_FILES,
    PatchRecord,
    discover_folder,
    find_dataset_file,
    read_csv_list,
    split_by_domain,
)
from flairkit.data.hub.aerial import HubAerialDataset, hub_records, hub_settings
from flairkit.data.metadata import load_aerial_metadata, metadata_for
from flairkit.data.sentinel import load_centroids
from flairkit.devices import default_num_workers, ensure_worker_socket_dir
from flairkit.errors import ConfigError, DataError
from flairkit.nomenclature import INVALID_TARGET, get_nomenclature

SPLITS = ("train", "val", "test")


def split_records(config: FlairConfig, split: str) -> list[PatchRecord]:
    """The patch records of ``split`` (train, val or test) for the config's dataset (FLAIR-HUB: its official split)."""
    data = config.data
    hub = hub_settings(data)
    if hub is not None:
        return hub_records(hub, split)
    csv_path = {"train": data.train_csv, "val": data.val_csv, "test": data.test_csv}[split]
    if csv_path is not None:
        return read_csv_list(csv_path)
    if data.root is None:
        key = f"data.{split}_csv"
        raise ConfigError(f"no data for the {split} split: set data.root (a FLAIR #2 folder) or {key} (a CSV list)")
    if split == "test":
        return discover_folder(data.root, "test")
    train, val = split_by_domain(discover_folder(data.root, "train"), data.val_fraction, data.split_seed)
    return train if split == "train" else val


def _dataset_root(config: FlairConfig, records: Sequence[PatchRecord]) -> Path:
    if config.data.root is not None:
        return Path(config.data.root)
    csv = config.data.train_csv or config.data.val_csv or config.data.test_csv
    return Path(csv).parent if csv is not None else Path(records[0].image).parent


def build_dataset(config: FlairConfig, records: Sequence[PatchRecord], with_labels: bool = True) -> PatchDataset:
    """A :class:`PatchDataset` over ``records`` with the config's bands, nomenclature, metadata and Sentinel-2."""
    if not records:
        raise DataError("the split holds no patch; check data.root / the CSV lists")
    data = config.data
    if hub_settings(data) is not None:
        return HubAerialDataset(records, data.channels, get_nomenclature(data.nomenclature), with_labels)
    root = _dataset_root(config, records)
    metadata = None
    if data.metadata:
        path = find_dataset_file(root, METADATA_FILES)
        if path is None:
            raise DataError(
                f"data.metadata is on but no {METADATA_FILES[0]} was found at or above {root}; add it there "
                "or set data.metadata=false"
            )
        metadata = metadata_for(records, load_aerial_metadata(path), data.metadata_encoding)
    sentinel = None
    if data.sentinel.enabled:
        path = find_dataset_file(root, CENTROIDS_FILES)
        if path is None:
            raise DataError(
                f"data.sentinel.enabled is on but no {CENTROIDS_FILES[0]} was found at or above {root}; "
                "add it or set data.sentinel.enabled=false"
            )
        sentinel = SentinelSource(load_centroids(path), data.sentinel)
    return PatchDataset(
        records,
        data.channels,
        get_nomenclature(data.nomenclature),
        metadata=metadata,
        sentinel=sentinel,
        with_labels=with_labels,
    )


class FlairDataModule(L.LightningDataModule):
    """Train, val and test loaders of uint8 patches; normalisation and augmentation happen on the device."""

    def __init__(self, config: FlairConfig):
        super().__init__()
        self.config = config
        self.datasets: dict[str, PatchDataset] = {}
        self._train_pixels: np.ndarray | None = None

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage or "", SPLITS)
        for split in wanted:
            if split not in self.datasets:
                self.datasets[split] = build_dataset(self.config, split_records(self.config, split))

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_patch_pixels(self) -> np.ndarray:
        """Pixels per target of every train mask (:func:`patch_class_pixels`), read once for the class balancing
        of the loss and the class-aware sampler."""
        if self._train_pixels is None:
            self.setup("fit")
            self._train_pixels = patch_class_pixels(self.datasets["train"])
        return self._train_pixels

    def _local_world_size(self) -> int | None:
        """Training processes sharing this machine's CPUs (None: as the launcher says, see default_num_workers).

        Lightning starts its local processes without LOCAL_WORLD_SIZE, so the trainer's device count is used;
        srun with --cpus-per-task already gives each task its own CPUs.
        """
        if self.trainer is None or "SLURM_CPUS_PER_TASK" in os.environ:
            return None
        return self.trainer.num_devices

    def _loader(self, split: str, shuffle: bool, batch_size: int) -> DataLoader:
        data = self.config.data
        rank, world = self._rank_and_world()
        dataset = self.datasets[split]
        weights = None
        if split == "train" and data.class_aware_sampling > 0:
            weights = class_aware_patch_weights(
                self.train_patch_pixels(), dataset.nomenclature.weights, data.class_aware_sampling
            ).tolist()
        # Every rank gets as many batches; val and test flag their padded repeats so that no patch counts twice.
        sampler = EpochShuffleSampler(
            len(dataset),
            self.config.train.seed,
            rank,
            world,
            shuffle=shuffle,
            mark_padding=split != "train",
            weights=weights,
        )
        workers = default_num_workers(self._local_world_size()) if data.num_workers is None else data.num_workers
        if workers:
            ensure_worker_socket_dir()
        pin = torch.cuda.is_available() if data.pin_memory is None else data.pin_memory
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            pin_memory=pin,
            collate_fn=collate_patches,
            persistent_workers=workers > 0,
            prefetch_factor=data.prefetch_factor if workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True, batch_size=self.config.data.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False, batch_size=self.config.data.batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False, batch_size=self.config.evaluate.batch_size)


def patch_class_pixels(dataset: PatchDataset) -> np.ndarray:
    """Pixels per target of every mask of ``dataset`` (int64, one row per patch, one column per target)."""
    n = dataset.nomenclature.n_targets
    counts = np.zeros((len(dataset.records), n), dtype=np.int64)
    for row, record in zip(counts, dataset.records, strict=True):
        targets = dataset.read_target(record)
        row += np.bincount(targets[targets != INVALID_TARGET].ravel(), minlength=n)[:n]
    return counts


def class_aware_patch_weights(per_patch: np.ndarray, class_weights: Sequence[float], power: float) -> np.ndarray:
    """Sampling weight of each patch: the rarity of its rarest class to the power ``power``.

    A class's rarity is the total pixel count over its own count, over the classes of non-zero weight present
    in ``per_patch`` (patches x targets pixel counts); a patch without such a class weighs as the commonest class.
    """
    counts = per_patch.sum(axis=0).astype(np.float64)
    counted = (np.asarray(class_weights) > 0) & (counts > 0)
    if not counted.any():
        return np.ones(len(per_patch))
    rarity = np.zeros_like(counts)
    rarity[counted] = (counts[counted].sum() / counts[counted]) ** power
    present = (per_patch > 0) * rarity
    return np.maximum(present.max(axis=1), rarity[counted].min())
