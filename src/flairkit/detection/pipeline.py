"""The streaming pipeline of one map: read blocks ahead, run the model on batches of tiles, write behind.

A reader thread reads each block's neighbourhood once (GDAL decoding with this process's loader-worker
share of the CPUs) and decides which tiles are worth running (not wholly on missing pixels), then, for a
multimodal model, each of those tiles' other inputs one tile ahead of the network; the calling
thread runs the model (batches cross to a GPU from pinned memory, without waiting) and stitches; a writer
thread hands finished blocks to ``store``. At most :data:`QUEUE_DEPTH` blocks wait on either side, so
memory depends on the block size only (blend stitching keeps predictions shared with later blocks on disk,
at most :data:`~flairkit.detection.stitching.KEPT_BYTES`). A block's tiles are always batched the same way, so
a block gives the same bytes whichever run or rank computes it; in blend mode with batches of one tile, a tile
shared with earlier blocks is not run again (its kept prediction gives the same bytes).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch

from flairkit.allocator import release_freed_memory
from flairkit.data.assembly import open_scene
from flairkit.data.hub.tiles import HubSources, HubTileReader
from flairkit.data.scenes import Fill, InputRaster, Span
from flairkit.data.sentinel import pad_time_series
from flairkit.data.series import SentinelSeries, SeriesReader
from flairkit.detection.stitching import OutputBands, contributes, make_assembler
from flairkit.detection.tiling import Block, Tile, TilePlan
from flairkit.detection.writing import GDAL_CACHE_BYTES
from flairkit.devices import autocast, default_num_workers, math_settings

QUEUE_DEPTH = 1
"""Blocks read ahead and blocks waiting to be written: one hides the reads and writes behind the network, and each
more holds another block's input (40 MB for a 2560 px block of 5 bands) for nothing."""


def _fill(plan: TilePlan) -> Fill:
    # margin mode reads outside the scene as zeros, as flair-detect's boundless reads do.
    return "zero" if plan.mode == "margin" else "reflect"


@dataclass
class _BlockInput:
    block: Block
    valid: np.ndarray | None
    tiles: list[Tile]
    region: np.ndarray
    row0: int
    col0: int


@dataclass
class _TileInput:
    """One tile's other inputs: Sentinel-2 series and day offsets (U-T&T models), or the item of every other
    modality (FLAIR-HUB models). The reader sends them after their block, tile by tile: only the running tiles' and
    the next one's are held (a FLAIR-HUB elevation alone is 19 MB for a 1536 px tile), not a whole block's."""

    tile: Tile
    item: Any


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


_END = object()


def _put(target: queue.Queue, item: object, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            target.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _host_batch(tiles: Sequence[np.ndarray], pin: bool) -> torch.Tensor:
    """``tiles`` stacked into one host tensor, in pinned memory with ``pin`` (for an asynchronous copy to a GPU)."""
    first = torch.from_numpy(tiles[0])
    batch = torch.empty((len(tiles), *first.shape), dtype=first.dtype, pin_memory=pin)
    return torch.stack([torch.from_numpy(tile) for tile in tiles], out=batch)


def _tile_input(inbox: queue.Queue, tile: Tile) -> Any:
    """The next tile's other inputs from the reader, which sends them in the order the tiles run."""
    got = inbox.get()
    if isinstance(got, _Failure):
        raise got.error
    assert isinstance(got, _TileInput) and got.tile == tile, "the reader sends tile inputs in the tiles' order"
    return got.item


def _extra_inputs(items: Sequence[Any], device: torch.device) -> list[Any]:
    """The model's inputs after the aerial batch, from each tile's other inputs."""
    if isinstance(items[0], dict):
        return HubTileReader.batch(items)
    sentinel, dates, _ = pad_time_series(items)
    return [sentinel.to(device), dates.to(device)]


def read_blocks(
    blocks: Sequence[Block],
    plan: TilePlan,
    raster: InputRaster,
    channels: Sequence[int],
    fill: Fill,
    series: SentinelSeries | HubSources | None = None,
) -> Iterator[_BlockInput | _TileInput]:
    """Each block with the tiles worth running and the input rectangle they cover (read once), and with ``series``
    each of those tiles' other inputs after it (:meth:`~flairkit.data.series.SeriesReader.tile_input`,
    :meth:`~flairkit.data.hub.tiles.HubTileReader.tile_input`), read only when the consumer asks for the next."""
    with (
        open_scene(raster, channels) as reader,
        contextlib.nullcontext()
        if series is None
        else SeriesReader(series, raster.crs, raster.transform, raster.width, raster.height)
        if isinstance(series, SentinelSeries)
        else HubTileReader(series, raster.crs, raster.transform, raster.width, raster.height, plan.tile_size) as s2,
    ):
        for block in blocks:
            tiles = plan.tiles_for(block)
            rows = Span(min(t.row for t in tiles), max(t.row for t in tiles) + plan.tile_size)
            cols = Span(min(t.col for t in tiles), max(t.col for t in tiles) + plan.tile_size)
            region = reader.read_region(rows, cols, fill)
            inside = region[
                :,
                block.rows.start - rows.start : block.rows.stop - rows.start,
                block.cols.start - cols.start : block.cols.stop - cols.start,
            ]
            valid = reader.valid(block.rows, block.cols, inside)
            if valid is not None and valid.all():
                valid = None
            run = [t for t in tiles if contributes(t, block, valid)]
            yield _BlockInput(block, valid, run, region, rows.start, cols.start)
            region = inside = valid = None
            for tile in run if s2 is not None else ():
                yield _TileInput(tile, s2.tile_input(tile.row, tile.col, plan.tile_size))


def compute_blocks(
    blocks: Sequence[Block],
    plan: TilePlan,
    raster: InputRaster,
    channels: Sequence[int],
    bands: OutputBands,
    batch_size: int,
    model: torch.nn.Module,
    normalizer: torch.nn.Module,
    device: torch.device,
    store: Callable[[Block, np.ndarray], None],
    precision: torch.dtype | None = None,
    series: SentinelSeries | HubSources | None = None,
    kept_folder: Path | None = None,
) -> int:
    """Compute ``blocks`` and hand each finished one to ``store`` (in a writer thread); return tiles run.

    The forward pass runs under autocast to ``precision`` (None: float32); stitching works on float32 logits. With
    ``series`` (a U-T&T model) ``model`` is called on each batch's tiles, Sentinel-2 series and day offsets; with
    FLAIR-HUB sources, on each batch's tiles and the collate_hub batch of its other modalities. Blend stitching
    keeps tile predictions that later blocks share on disk, in a temporary folder made in ``kept_folder``.
    """
    stop = threading.Event()
    inbox: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)
    outbox: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)
    writer_error: list[BaseException] = []

    def read() -> None:
        try:
            with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES, GDAL_NUM_THREADS=max(1, default_num_workers())):
                for item in read_blocks(blocks, plan, raster, channels, _fill(plan), series):
                    _put(inbox, item, stop)
                    # The next block (or tile input) is read once this one is taken: two at most, not three.
                    while inbox.qsize() and not stop.is_set():
                        time.sleep(0.01)
                    if stop.is_set():
                        return
            _put(inbox, _END, stop)
        except BaseException as error:
            _put(inbox, _Failure(error), stop)

    def write() -> None:
        while True:
            item = outbox.get()
            if item is _END:
                return
            try:
                store(*item)
            except BaseException as error:
                writer_error.append(error)
                stop.set()
                return

    reader = threading.Thread(target=read, name="flairkit-detect-read", daemon=True)
    writer = threading.Thread(target=write, name="flairkit-detect-write", daemon=True)
    reader.start()
    writer.start()
    # Kept predictions equal recomputed ones only when a tile's logits do not depend on its batch.
    assembler = make_assembler(plan, bands, device, upcoming=blocks if batch_size == 1 else (), folder=kept_folder)
    size, tiles_run = plan.tile_size, 0
    pin = device.type == "cuda"
    try:
        with torch.inference_mode(), math_settings(device):
            while True:
                item = inbox.get()
                if item is _END or writer_error:
                    break
                if isinstance(item, _Failure):
                    raise item.error
                assembler.start(item.block, item.valid)
                for start in range(0, len(item.tiles), batch_size):
                    chunk = item.tiles[start : start + batch_size]
                    extra = None if series is None else [_tile_input(inbox, tile) for tile in chunk]
                    if len(chunk) == 1 and assembler.reuse(chunk[0]):
                        continue
                    batch = _host_batch(
                        [
                            item.region[
                                :,
                                t.row - item.row0 : t.row - item.row0 + size,
                                t.col - item.col0 : t.col - item.col0 + size,
                            ]
                            for t in chunk
                        ],
                        pin,
                    )
                    # uint8 crosses to the device: a quarter of the float32 bytes.
                    inputs = [normalizer(batch.to(device, non_blocking=pin))]
                    if extra is not None:
                        inputs += _extra_inputs(extra, device)
                    with autocast(device, precision):
                        logits = model(*inputs)
                    assembler.add(logits.float(), chunk)
                    tiles_run += len(chunk)
                finished = assembler.finish()
                while not stop.is_set():
                    try:
                        outbox.put((item.block, finished), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                # Hold neither this block's input nor its last tensors while the next block is read; hand freed
                # memory back: memory then stays flat over thousands of blocks.
                item = finished = batch = inputs = logits = extra = None
                release_freed_memory()
    finally:
        stop.set()
        # Blocks already finished are still written: they are valid work, and resume will skip them.
        while writer.is_alive():
            try:
                outbox.put(_END, timeout=0.1)
                break
            except queue.Full:
                continue
        writer.join()
        reader.join(timeout=5)
        assembler.close()
    if writer_error:
        raise writer_error[0]
    return tiles_run
