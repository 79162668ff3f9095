"""Sharing the blocks of a map between processes (ranks), on one machine or many.

Each rank computes a disjoint, interleaved share of the missing blocks and writes them into the shared
work folder; rank 0 then assembles the map. Ranks meet with ``torch.distributed``: an existing process
group (Lightning, ``torchrun``) is reused, otherwise one is started from the usual ``MASTER_ADDR`` /
``MASTER_PORT`` environment variables. Coordination messages are tiny, so they always go through a gloo
group, whatever backend the model uses.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch.distributed as dist

from flairkit.errors import ConfigError, FlairError

T = TypeVar("T")
TIMEOUT = datetime.timedelta(hours=24)
"""How long a rank waits for the others (one map can take hours on a slow rank)."""


def env_rank_and_world_size() -> tuple[int, int]:
    """(rank, world size) from torchrun / Lightning / SLURM style environment variables; (0, 1) if none."""
    for rank_key, size_key in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if rank_key in os.environ and size_key in os.environ:
            return int(os.environ[rank_key]), int(os.environ[size_key])
    return 0, 1


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """The interleaved share of ``items`` of ``rank`` (neighbouring blocks go to different ranks)."""
    return list(items[rank::world_size])


class RankFailedError(FlairError):
    """Another rank stopped with an error."""


@dataclass
class Ranks:
    """This process's place among the ranks, and the collectives detection needs."""

    rank: int = 0
    world_size: int = 1
    group: Any = None
    owns_process_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier(group=self.group)

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank."""
        if self.world_size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value``, in rank order."""
        if self.world_size == 1:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value, group=self.group)
        return values

    def agree(self, error: BaseException | None) -> None:
        """Meet the other ranks; raise here if any rank reports an error (this rank's own error first)."""
        if self.world_size > 1:
            reports: list[str | None] = [None] * self.world_size
            dist.all_gather_object(reports, None if error is None else f"{type(error).__name__}: {error}", self.group)
        else:
            reports = [None]
        if error is not None:
            raise error
        failed = [(r, message) for r, message in enumerate(reports) if message is not None]
        if failed:
            rank, message = failed[0]
            raise RankFailedError(f"rank {rank} failed: {message}; fix it and rerun with --resume")

    def close(self) -> None:
        if self.owns_process_group and dist.is_initialized():
            dist.destroy_process_group()


def init_ranks(rank: int = 0, world_size: int = 1) -> Ranks:
    """Join the other ranks (no-op for a single process)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is not in 0..world_size-1 with world_size={world_size}")
    if world_size == 1:
        return Ranks()
    owns = False
    if dist.is_initialized():
        if (dist.get_rank(), dist.get_world_size()) != (rank, world_size):
            raise ConfigError(
                f"the running process group is rank {dist.get_rank()} of {dist.get_world_size()}, "
                f"but detection was asked for rank {rank} of {world_size}; pass the group's own values"
            )
    else:
        missing = [key for key in ("MASTER_ADDR", "MASTER_PORT") if key not in os.environ]
        if missing:
            raise ConfigError(
                f"world_size={world_size} needs {' and '.join(missing)} in the environment to meet the other "
                f"ranks; launch with torchrun (or set MASTER_ADDR/MASTER_PORT, RANK, WORLD_SIZE)"
            )
        dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=TIMEOUT)
        owns = True
    group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo", timeout=TIMEOUT)
    return Ranks(rank, world_size, group, owns)
