"""Turning tile logits into finished blocks of the map, on the device where the model runs.

A finished block is a (bands, rows, cols) uint8 array: band 0 holds 0-based target indices
(:data:`NODATA_TARGET` where the input is missing), then one band per requested class probability and
an optional confidence band, all ``round(255 * p)`` (0 where the input is missing). Disabled targets
(loss weight 0) are never predicted: their logits are left out before argmax and softmax.
"""

from __future__ import annotations

import abc
import math
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flairkit.detection.tiling import Block, Tile, TilePlan, hann_window
from flairkit.nomenclature import INVALID_TARGET, Nomenclature

NODATA_TARGET = INVALID_TARGET
"""Band-0 value of pixels whose input is missing."""
KEPT_BYTES = 16 << 30
"""Most bytes of tile probabilities that blend stitching on the CPU keeps on disk for later blocks."""
KEPT_DEVICE_BYTES = 1 << 30
"""The same on a GPU, where they stay in the GPU's memory (reading them back from disk would cost more than the
tile)."""


@dataclass(frozen=True)
class OutputBands:
    """Which bands a finished block holds besides the class band."""

    enabled: tuple[int, ...]
    """Targets that may be predicted, in target order."""
    probabilities: tuple[int, ...] = ()
    """Targets whose probability band is written."""
    confidence: bool = False

    @classmethod
    def for_nomenclature(
        cls, nomenclature: Nomenclature, probabilities: Sequence[int] = (), confidence: bool = False
    ) -> OutputBands:
        return cls(tuple(nomenclature.enabled), tuple(probabilities), confidence)

    @property
    def count(self) -> int:
        return 1 + len(self.probabilities) + int(self.confidence)

    @property
    def scores(self) -> bool:
        """Whether probabilities or confidence are written."""
        return self.count > 1


def _window(tile: Tile, block: Block, origin_row: int, origin_col: int) -> tuple[slice, slice, slice, slice] | None:
    """(tile rows, tile cols, block rows, block cols) slices where ``tile`` provides pixels of ``block``.

    ``origin_row``/``origin_col`` give the map position of the first row/column of the tile array.
    """
    rows = tile.keep_rows.intersect(block.rows)
    cols = tile.keep_cols.intersect(block.cols)
    if rows is None or cols is None:
        return None
    return (
        slice(rows.start - origin_row, rows.stop - origin_row),
        slice(cols.start - origin_col, cols.stop - origin_col),
        slice(rows.start - block.rows.start, rows.stop - block.rows.start),
        slice(cols.start - block.cols.start, cols.stop - block.cols.start),
    )


def contributes(tile: Tile, block: Block, valid: np.ndarray | None) -> bool:
    """Whether ``tile`` provides at least one non-missing pixel of ``block`` (else it need not run)."""
    rows, cols = tile.keep_rows.intersect(block.rows), tile.keep_cols.intersect(block.cols)
    if rows is None or cols is None:
        return False
    if valid is None:
        return True
    r0, c0 = block.rows.start, block.cols.start
    return bool(valid[rows.start - r0 : rows.stop - r0, cols.start - c0 : cols.stop - c0].any())


def _on_device(index: slice | np.ndarray, device: torch.device) -> slice | torch.Tensor:
    return index if isinstance(index, slice) else torch.as_tensor(index, device=device)


def _to_uint8(probabilities: torch.Tensor) -> torch.Tensor:
    return torch.round(probabilities * 255).to(torch.uint8)


class BlockAssembler(abc.ABC):
    """Collects the predictions of a block's tiles; ``finish`` returns the block's bands."""

    def __init__(self, plan: TilePlan, bands: OutputBands, device: torch.device | str):
        self.plan = plan
        self.bands = bands
        self.device = torch.device(device)
        self._enabled = torch.as_tensor(bands.enabled, device=self.device)
        self._position = {target: i for i, target in enumerate(bands.enabled)}
        self._block: Block | None = None
        self._valid: np.ndarray | None = None

    def start(self, block: Block, valid: np.ndarray | None) -> None:
        """Begin ``block``; ``valid`` marks its non-missing pixels (None: all)."""
        self._block, self._valid = block, valid

    def reuse(self, tile: Tile) -> bool:
        """Add ``tile``'s prediction kept from an earlier block, if there is one; return whether it did."""
        return False

    @abc.abstractmethod
    def close(self) -> None:
        """Free what is kept for later blocks."""

    @abc.abstractmethod
    def add(self, logits: torch.Tensor, tiles: Sequence[Tile]) -> None:
        """Add the (B, K, T, T) logits of ``tiles`` (targets in nomenclature order)."""

    @abc.abstractmethod
    def _finish(self) -> torch.Tensor:
        """The block's (bands, rows, cols) uint8 tensor, before missing pixels are blanked."""

    def finish(self) -> np.ndarray:
        """The finished block as a (bands, rows, cols) uint8 numpy array."""
        out = self._finish().cpu().numpy()
        if self._valid is not None:
            missing = ~self._valid
            out[0][missing] = NODATA_TARGET
            out[1:, missing] = 0
        self._block = self._valid = None
        return out

    def _score_bands(self, probabilities: torch.Tensor) -> list[torch.Tensor]:
        """uint8 bands of the requested probabilities and the confidence; dim 1 holds the enabled targets."""
        out = [_to_uint8(probabilities[:, self._position[t]]) for t in self.bands.probabilities]
        if self.bands.confidence:
            out.append(_to_uint8(probabilities.amax(dim=1)))
        return out


class MarginAssembler(BlockAssembler):
    """Official flair-detect stitching: each tile's centre is pasted, later tiles over earlier ones."""

    def start(self, block: Block, valid: np.ndarray | None) -> None:
        super().start(block, valid)
        self._out = torch.full((self.bands.count, *block.shape), NODATA_TARGET, dtype=torch.uint8, device=self.device)

    def add(self, logits: torch.Tensor, tiles: Sequence[Tile]) -> None:
        assert self._block is not None, "start() a block first"
        margin, step = self.plan.margin, self.plan.step
        # Kept windows always lie in the tile centre: drop the margins before any per-pixel work.
        centre = logits[:, self._enabled, margin : margin + step, margin : margin + step]
        classes = self._enabled[centre.argmax(dim=1)].to(torch.uint8)
        planes = [classes]
        if self.bands.scores:
            planes.extend(self._score_bands(torch.softmax(centre, dim=1)))
        stacked = torch.stack(planes, dim=1)
        block = self._block
        for i, tile in enumerate(tiles):
            rows, cols = tile.keep_rows.intersect(block.rows), tile.keep_cols.intersect(block.cols)
            if rows is None or cols is None:
                continue
            tile_rows, tile_cols = (_on_device(p, self.device) for p in tile.pixels(rows, cols, first=margin))
            block_rows = slice(rows.start - block.rows.start, rows.stop - block.rows.start)
            block_cols = slice(cols.start - block.cols.start, cols.stop - block.cols.start)
            self._out[:, block_rows, block_cols] = stacked[i][:, tile_rows][:, :, tile_cols]

    def _finish(self) -> torch.Tensor:
        return self._out

    def close(self) -> None:
        """Nothing is kept between blocks."""


class KeptParts:
    """Parts of tile probabilities kept for later blocks. From the CPU, each goes to a file of a temporary folder made
    in ``folder`` (default: the system's): in memory, a row of tiles' worth would grow with the raster's width. From
    a GPU they stay in its memory."""

    def __init__(self, device: torch.device, folder: Path | None = None):
        self._folder = (
            tempfile.TemporaryDirectory(prefix="flairkit-kept-", dir=folder) if device.type == "cpu" else None
        )
        self._parts: dict[Tile, tuple[int, int, tuple[int, ...], Path | torch.Tensor]] = {}
        self._written = 0
        self.size = 0
        """Bytes kept."""

    def __contains__(self, tile: Tile) -> bool:
        return tile in self._parts

    def __iter__(self) -> Iterator[Tile]:
        return iter(list(self._parts))

    def put(self, tile: Tile, row0: int, col0: int, probabilities: torch.Tensor) -> None:
        """Keep ``probabilities`` of ``tile`` whose first row and column are at map position ``row0``, ``col0``."""
        if self._folder is None:
            kept: Path | torch.Tensor = probabilities.float().clone()
        else:
            kept = Path(self._folder.name) / f"{self._written}.f32"
            self._written += 1
            probabilities.float().contiguous().numpy().tofile(kept)
        self._parts[tile] = (row0, col0, tuple(probabilities.shape), kept)
        self.size += probabilities.numel() * 4

    def get(self, tile: Tile, device: torch.device) -> tuple[int, int, torch.Tensor]:
        """The kept (row0, col0, probabilities) of ``tile``, on ``device``."""
        row0, col0, shape, kept = self._parts[tile]
        if isinstance(kept, Path):
            kept = torch.from_numpy(np.fromfile(kept, dtype=np.float32).reshape(shape))
        return row0, col0, kept.to(device)

    def drop(self, tile: Tile) -> None:
        *_, shape, kept = self._parts.pop(tile)
        if isinstance(kept, Path):
            kept.unlink()
        self.size -= math.prod(shape) * 4

    def close(self) -> None:
        self._parts.clear()
        self.size = 0
        if self._folder is not None:
            self._folder.cleanup()


class BlendAssembler(BlockAssembler):
    """Seamless stitching: probabilities of overlapping tiles averaged with a 2-D Hann window.

    Told the blocks it will assemble, in order (``upcoming``), it keeps the part of each tile's
    probabilities that later blocks need (up to ``kept_bytes``: :class:`KeptParts`, on disk in ``folder``), so
    that a tile shared by neighbouring blocks runs once. A kept part is added at the tile's place in the block's
    order: a block's bytes do not depend on what was kept, as long as a tile's logits do not depend on its batch
    (batches of one tile). Nothing here grows with the number of tiles or blocks but the block order.
    """

    def __init__(
        self,
        plan: TilePlan,
        bands: OutputBands,
        device: torch.device | str,
        upcoming: Sequence[Block] = (),
        kept_bytes: int | None = None,
        folder: Path | None = None,
    ):
        super().__init__(plan, bands, device)
        window = torch.from_numpy(hann_window(plan.tile_size)).to(self.device)
        self._weights = window[:, None] * window[None, :]
        self._upcoming = list(upcoming)
        self._order = {block.id: i for i, block in enumerate(self._upcoming)}
        self._kept = KeptParts(self.device, folder)
        if kept_bytes is None:
            kept_bytes = KEPT_BYTES if self.device.type == "cpu" else KEPT_DEVICE_BYTES
        self._kept_budget = kept_bytes
        self._current = -1

    def _users(self, tile: Tile) -> list[int]:
        """Positions in ``upcoming`` of the blocks that ``tile`` provides pixels of, in order."""
        return sorted(self._order[i] for i in self.plan.block_ids_for(tile) if i in self._order)

    def start(self, block: Block, valid: np.ndarray | None) -> None:
        super().start(block, valid)
        self._sum = torch.zeros((len(self.bands.enabled), *block.shape), dtype=torch.float32, device=self.device)
        self._weight_sum = torch.zeros(block.shape, dtype=torch.float32, device=self.device)
        self._current = self._order.get(block.id, -1)
        for tile in self._kept:
            if self._users(tile)[-1] < self._current:
                self._kept.drop(tile)

    @property
    def kept_size(self) -> int:
        """Bytes of tile probabilities kept for later blocks."""
        return self._kept.size

    def reuse(self, tile: Tile) -> bool:
        if tile not in self._kept:
            return False
        row0, col0, probabilities = self._kept.get(tile, self.device)
        self._accumulate(probabilities, tile, row0, col0)
        return True

    def add(self, logits: torch.Tensor, tiles: Sequence[Tile]) -> None:
        assert self._block is not None, "start() a block first"
        probabilities = torch.softmax(logits[:, self._enabled].float(), dim=1)
        for i, tile in enumerate(tiles):
            self._accumulate(probabilities[i], tile, tile.row, tile.col)
            self._keep(probabilities[i], tile)

    def _accumulate(self, probabilities: torch.Tensor, tile: Tile, row0: int, col0: int) -> None:
        """Add ``probabilities`` of ``tile`` (first row and column at map position ``row0``, ``col0``)."""
        window = _window(tile, self._block, row0, col0)
        if window is None:
            return
        rows, cols, block_rows, block_cols = window
        dr, dc = row0 - tile.row, col0 - tile.col
        weights = self._weights[rows.start + dr : rows.stop + dr, cols.start + dc : cols.stop + dc]
        self._sum[:, block_rows, block_cols].addcmul_(probabilities[:, rows, cols], weights)
        self._weight_sum[block_rows, block_cols] += weights

    def _keep(self, probabilities: torch.Tensor, tile: Tile) -> None:
        """Keep the part of ``probabilities`` that later blocks need, when the budget allows."""
        later = [self._upcoming[i] for i in self._users(tile) if i > self._current]
        if not later:
            return
        rows = [tile.keep_rows.intersect(block.rows) for block in later]
        cols = [tile.keep_cols.intersect(block.cols) for block in later]
        r0, r1 = min(r.start for r in rows) - tile.row, max(r.stop for r in rows) - tile.row
        c0, c1 = min(c.start for c in cols) - tile.col, max(c.stop for c in cols) - tile.col
        size = probabilities.shape[0] * (r1 - r0) * (c1 - c0) * 4
        if self._kept.size + size > self._kept_budget:
            return
        self._kept.put(tile, tile.row + r0, tile.col + c0, probabilities[:, r0:r1, c0:c1])

    def close(self) -> None:
        self._kept.close()

    def _finish(self) -> torch.Tensor:
        # Pixels no tile reached are missing ones (skipped tiles); the clamp keeps them finite.
        probabilities = (self._sum / self._weight_sum.clamp_min(1e-12)).unsqueeze(0)
        classes = self._enabled[probabilities.argmax(dim=1)].to(torch.uint8)
        planes = [classes]
        if self.bands.scores:
            planes.extend(self._score_bands(probabilities))
        return torch.cat(planes, dim=0)


def make_assembler(
    plan: TilePlan,
    bands: OutputBands,
    device: torch.device | str,
    upcoming: Sequence[Block] = (),
    folder: Path | None = None,
) -> BlockAssembler:
    """The assembler of ``plan.mode``; blend keeps tile predictions that the ``upcoming`` blocks share, in a
    temporary folder made in ``folder``."""
    if plan.mode == "margin":
        return MarginAssembler(plan, bands, device)
    return BlendAssembler(plan, bands, device, upcoming, folder=folder)
