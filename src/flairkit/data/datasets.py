"""PyTorch datasets of FLAIR patches: uint8 aerial bands, mapped targets, metadata and Sentinel-2 series."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from flairkit.config.schema import SentinelConfig
from flairkit.data.discovery import PatchRecord
from flairkit.data.rasters import read_raster
from flairkit.data.sentinel import load_sentinel_sample, pad_time_series
from flairkit.errors import DataError
from flairkit.nomenclature import Nomenclature


@dataclass(frozen=True)
class SentinelSource:
    """Where each patch's Sentinel-2 super-patch comes from."""

    centroids: dict[str, tuple[int, int]]
    config: SentinelConfig


class PatchDataset(Dataset):
    """FLAIR patches as dictionaries of tensors.

    Items hold ``image`` (C, H, W) uint8, ``target`` (H, W) uint8 (0-based targets) when labels exist,
    ``metadata`` (45,) float32 when given, ``sentinel`` (T, 10, S, S) float32 and ``dates`` (T,) when a
    Sentinel-2 source is given, plus ``index``; an ``(index, is_padding)`` key (an evaluation sampler's, see
    :class:`EpochShuffleSampler`) adds ``valid``, False for a padded repeat that metrics must not count.
    """

    def __init__(
        self,
        records: Sequence[PatchRecord],
        channels: Sequence[int],
        nomenclature: Nomenclature,
        *,
        metadata: np.ndarray | None = None,
        sentinel: SentinelSource | None = None,
        with_labels: bool = True,
    ):
        if metadata is not None and len(metadata) != len(records):
            raise ValueError("one metadata row per record is required")
        self.records = list(records)
        self.channels = list(channels)
        self.nomenclature = nomenclature
        self.metadata = None if metadata is None else torch.as_tensor(metadata, dtype=torch.float32)
        self.sentinel = sentinel
        self.with_labels = with_labels

    def __len__(self) -> int:
        return len(self.records)

    def read_target(self, record: PatchRecord) -> np.ndarray:
        """The 0-based targets of a patch's mask; out-of-range values are an error naming the file."""
        if record.mask is None:
            raise DataError(f"no mask for {record.image}; give image,mask pairs or predict without labels")
        mask = read_raster(record.mask, bands=[1])[0]
        if mask.dtype != np.uint8:
            # Mapping casts to uint8: a uint16 value 257 would silently become class 1.
            raise DataError(
                f"{record.mask}: mask values are {mask.dtype}, FLAIR masks are uint8 class codes (1..19); "
                "convert it (e.g. gdal_translate -ot Byte) or run `flair data check` to list every bad file"
            )
        invalid = self.nomenclature.invalid_values(mask)
        if invalid.size:
            raise DataError(
                f"{record.mask}: mask values {invalid.tolist()} are not {self.nomenclature.classes_text}; "
                "fix the mask or run `flair data check` to list every bad file"
            )
        return self.nomenclature.map_mask(mask)

    def __getitem__(self, key: int | tuple[int, bool]) -> dict[str, Any]:
        if isinstance(key, tuple):
            index, padding = key
            return {**self[index], "valid": not padding}
        index = key
        record = self.records[index]
        image = read_raster(record.image, bands=self.channels)
        if image.dtype != np.uint8:
            raise DataError(f"{record.image}: bands are {image.dtype}, FLAIR patches are uint8; convert the file")
        item: dict[str, Any] = {"image": torch.from_numpy(image), "index": index}
        if self.with_labels:
            target = self.read_target(record)
            if target.shape != image.shape[1:]:
                raise DataError(
                    f"{record.mask}: mask is {target.shape[0]}x{target.shape[1]} but image {record.image} is "
                    f"{image.shape[1]}x{image.shape[2]}; image and mask must have the same size"
                )
            item["target"] = torch.from_numpy(target)
        if self.metadata is not None:
            item["metadata"] = self.metadata[index]
        if self.sentinel is not None:
            item.update(self._sentinel_item(record))
        return item

    def _sentinel_item(self, record: PatchRecord) -> dict[str, torch.Tensor]:
        if record.sentinel_dir is None:
            raise DataError(f"{record.image}: no Sentinel-2 folder found for this patch's area")
        key = Path(record.image).name
        centroid = self.sentinel.centroids.get(key)
        if centroid is None:
            raise DataError(
                f"{key} has no entry in the centroids JSON (flair-2_centroids_sp_to_patch.json); "
                "add it or disable Sentinel-2 (data.sentinel.enabled=false)"
            )
        sample = load_sentinel_sample(record.sentinel_dir, key, centroid, self.sentinel.config)
        series = torch.from_numpy(sample.series) / self.sentinel.config.divisor
        return {"sentinel": series, "dates": torch.from_numpy(sample.dates)}


def collate_patches(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack patch items into a batch; Sentinel-2 series are zero-padded on time with a pad mask."""
    batch: dict[str, Any] = {"image": torch.stack([it["image"] for it in items])}
    batch["index"] = torch.tensor([it["index"] for it in items])
    if "target" in items[0]:
        batch["target"] = torch.stack([it["target"] for it in items])
    if "metadata" in items[0]:
        batch["metadata"] = torch.stack([it["metadata"] for it in items])
    if "valid" in items[0]:
        batch["valid"] = torch.tensor([it["valid"] for it in items])
    if "sentinel" in items[0]:
        series, dates, pad_mask = pad_time_series([(it["sentinel"], it["dates"]) for it in items])
        batch.update(sentinel=series, dates=dates, pad_mask=pad_mask)
    return batch


class EpochShuffleSampler(Sampler[int | tuple[int, bool]]):
    """Shuffle per epoch and share the epoch's order between ranks as ``DistributedSampler`` does.

    The order (the same permutation as :class:`torch.utils.data.DistributedSampler`, or the split's own
    order without shuffling) is padded with its first indices up to a multiple of ``world_size``, and rank
    ``r`` takes every ``world_size``-th index from position ``r``: every rank gets the same number of
    indices, hence of batches, so DDP steps and their collective calls never wait for a rank that is done.
    With batches of ``b`` per rank, the ranks' batches of a step hold together the indices of one process's
    batch of ``b * world_size`` (a DDP run and a one-process run with the same global batch train on the
    same patches, step by step); only the last step is completed with repeats.

    With ``mark_padding`` (evaluation loaders) the sampler yields ``(index, is_padding)`` pairs instead,
    ``is_padding`` true for the repeats, so that metrics count every patch exactly once.

    With ``weights`` (one per index, class-aware sampling), each epoch's order is ``length`` indices drawn
    with replacement in proportion to them instead of a permutation; it is padded and shared out alike.
    """

    def __init__(
        self,
        length: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        mark_padding: bool = False,
        weights: Sequence[float] | None = None,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside 0..{world_size - 1} for a world of {world_size} processes")
        if weights is not None and (len(weights) != length or min(weights) < 0 or sum(weights) <= 0):
            raise ValueError(f"sampling weights must be {length} non-negative numbers, not all zero")
        self.length, self.seed, self.rank, self.world_size, self.shuffle = length, seed, rank, world_size, shuffle
        self.mark_padding = mark_padding
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the permutation of the next pass (Lightning calls this every epoch)."""
        self.epoch = epoch

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.length))
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        if self.weights is not None:
            return torch.multinomial(self.weights, self.length, replacement=True, generator=generator).tolist()
        return torch.randperm(self.length, generator=generator).tolist()

    def __iter__(self) -> Iterator[int | tuple[int, bool]]:
        order = self._order()
        positions = range(self.rank, len(self) * self.world_size, self.world_size)
        # Positions past the order's end repeat it from its start (several times over when it is shorter
        # than the world).
        if self.mark_padding:
            return iter([(order[p % self.length], p >= self.length) for p in positions])
        return iter([order[p % self.length] for p in positions])

    def __len__(self) -> int:
        return -(-self.length // self.world_size)
