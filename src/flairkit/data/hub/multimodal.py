"""FLAIR-HUB for the multimodal network (``model.hub``): the official splits as collate_hub batches, and the classes
of each task (COSIA: the ``hub`` nomenclature; LPIS: ``lpis<level>``)."""

from __future__ import annotations

import os

import lightning as L
import torch
from torch.utils.data import DataLoader

from flairkit.config.schema import FlairConfig, HubDataConfig
from flairkit.data.datasets import EpochShuffleSampler
from flairkit.data.hub.aerial import HUB_NOMENCLATURE, hub_data
from flairkit.data.hub.dataset import SPLITS, HubDataset, build_hub_dataset, collate_hub
from flairkit.data.hub.layout import COSIA
from flairkit.data.transforms import RadiometricJitter
from flairkit.devices import default_num_workers, ensure_worker_socket_dir
from flairkit.errors import ConfigError
from flairkit.nomenclature import Nomenclature, get_nomenclature, lpis_nomenclature


def multimodal_settings(config: FlairConfig) -> HubDataConfig:
    """The ``data.hub`` section (root resolved) the multimodal network reads; an error when it names no data."""
    hub = hub_data(config.data)
    if hub is None:
        raise ConfigError(
            "model.hub reads FLAIR-HUB data: set data.root (or data.hub.root) to a FLAIR-HUB folder, "
            "or give IGN's split CSVs as data.hub.train_csv/val_csv/test_csv"
        )
    return hub


def task_nomenclature(task: str, lpis_level: int) -> Nomenclature:
    """The classes of a FLAIR-HUB task: COSIA's ``hub`` nomenclature, or LPIS at ``lpis_level``."""
    return get_nomenclature(HUB_NOMENCLATURE) if task == COSIA else lpis_nomenclature(lpis_level)


class HubDataModule(L.LightningDataModule):
    """Train, val and test loaders of collate_hub batches (raw values; the task normalises them on the device)."""

    def __init__(self, config: FlairConfig):
        super().__init__()
        if RadiometricJitter(config.data.radiometric, config.data.channels).enabled:
            raise ConfigError(
                "data.radiometric is not supported with model.hub (FLAIR-HUB's network): radiometric jitter works on "
                "0..255 aerial patches only; leave data.radiometric at its defaults (flips and rotations still apply)"
            )
        self.config = config
        self.hub = multimodal_settings(config)
        self.datasets: dict[str, HubDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage or "", SPLITS)
        for split in wanted:
            if split not in self.datasets:
                self.datasets[split] = build_hub_dataset(self.hub, split)

    def loader(self, split: str, shuffle: bool, batch_size: int, rank: int = 0, world: int = 1) -> DataLoader:
        """A loader of ``split``; val and test mark their padded repeats (``valid``) so that no patch counts twice."""
        data = self.config.data
        self.setup("test" if split == "test" else "fit")
        dataset = self.datasets[split]
        sampler = EpochShuffleSampler(
            len(dataset), self.config.train.seed, rank, world, shuffle=shuffle, mark_padding=split != "train"
        )
        local = None if self.trainer is None or "SLURM_CPUS_PER_TASK" in os.environ else self.trainer.num_devices
        workers = default_num_workers(local) if data.num_workers is None else data.num_workers
        if workers:
            ensure_worker_socket_dir()
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            pin_memory=torch.cuda.is_available() if data.pin_memory is None else data.pin_memory,
            collate_fn=collate_hub,
            persistent_workers=workers > 0,
            prefetch_factor=data.prefetch_factor if workers > 0 else None,
        )

    def _distributed(self, split: str, shuffle: bool, batch_size: int) -> DataLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return self.loader(split, shuffle, batch_size, rank, world)

    def train_dataloader(self) -> DataLoader:
        return self._distributed("train", shuffle=True, batch_size=self.config.data.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._distributed("val", shuffle=False, batch_size=self.config.data.batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._distributed("test", shuffle=False, batch_size=self.config.evaluate.batch_size)
