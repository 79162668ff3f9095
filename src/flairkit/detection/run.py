"""``detect``: land-cover maps of orthophotos of any size, streamed block by block.

For each input the map is cut into blocks (:mod:`~flairkit.detection.tiling`). A reader thread reads each
block's neighbourhood once and cuts its tiles; the main thread runs the model on batches of tiles and
stitches them (:mod:`~flairkit.detection.stitching`); a writer thread puts finished blocks in place and
journals them (:mod:`~flairkit.detection.resume`). Memory depends on the block size, never on the raster
size. Ranks share the blocks (:mod:`~flairkit.detection.distributed`); rank 0 writes the final files
(:mod:`~flairkit.detection.writing`).
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.errors import RasterioError
from rasterio.windows import Window
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from flairkit.atomic import atomic_path, check_writable, write_text_atomic
from flairkit.config.schema import FlairConfig
from flairkit.data.transforms import Normalizer
from flairkit.detection.distributed import Ranks, init_ranks, shard
from flairkit.detection.reading import Fill, InputRaster, SceneReader, expand_inputs, inspect_input
from flairkit.detection.resume import WorkDir
from flairkit.detection.stitching import NODATA_TARGET, OutputBands, contributes, make_assembler
from flairkit.detection.tiling import Block, Span, StitchingMode, Tile, TilePlan, resolve_block_size
from flairkit.detection.vectorize import write_polygons
from flairkit.detection.writing import (
    GDAL_CACHE_BYTES,
    RawRaster,
    convert_to_cog,
    legend,
    qml_style,
    windows,
    write_class_map,
    write_scores,
)
from flairkit.errors import ConfigError, DataError, OutputExistsError
from flairkit.nomenclature import Nomenclature, get_nomenclature

logger = logging.getLogger(__name__)

MAP_SUFFIXES = (".tif", ".tiff")
MAP_NAME = "{stem}_landcover.tif"
"""Name of each map when ``output`` is a folder."""
QUEUE_DEPTH = 2
"""Blocks read ahead and blocks waiting to be written."""


@dataclass(frozen=True)
class _Settings:
    """The detection settings of a run, resolved once."""

    channels: tuple[int, ...]
    nomenclature: Nomenclature
    normalization: dict[str, Any]
    tile_size: int
    margin: int
    mode: StitchingMode
    block_size: int
    batch_size: int
    codes: bool
    bands: OutputBands
    nodata: float | None
    cog: bool
    vectorize: bool
    min_area: float
    simplify: float

    @property
    def fill(self) -> Fill:
        # margin mode reads outside the scene as zeros, as flair-detect's boundless reads do.
        return "zero" if self.mode == "margin" else "reflect"

    @property
    def score_names(self) -> list[str]:
        names = [f"p({self.nomenclature.names[t]})" for t in self.bands.probabilities]
        return names + (["confidence"] if self.bands.confidence else [])

    def plan(self, raster: InputRaster) -> TilePlan:
        return TilePlan(raster.width, raster.height, self.tile_size, self.margin, self.mode, self.block_size)

    def manifest(self) -> dict[str, Any]:
        return {
            "channels": list(self.channels),
            "normalization": self.normalization,
            "nomenclature": self.nomenclature.name,
            "tile_size": self.tile_size,
            "margin": self.margin,
            "stitching": self.mode,
            "block_size": self.block_size,
            "batch_size": self.batch_size,
            "bands": [list(self.bands.probabilities), self.bands.confidence],
            "nodata": self.nodata,
        }


def _resolve_settings(config: FlairConfig, block_size: int | None) -> _Settings:
    if config.data.metadata or config.model.multimodal:
        raise ConfigError(
            "zone detection feeds orthophoto pixels only, but this config uses "
            + ("aerial metadata (data.metadata=true)" if config.data.metadata else "Sentinel-2 (model.multimodal)")
            + "; use a model trained on images alone"
        )
    detect = config.detect
    nomenclature = get_nomenclature(config.data.nomenclature)
    enabled_names = [nomenclature.names[t] for t in nomenclature.enabled]
    probabilities = []
    for name in detect.probabilities:
        if name not in enabled_names:
            raise ConfigError(
                f"detect.probabilities: {name!r} is not a class the {nomenclature.name} models predict; "
                f"choose among {', '.join(enabled_names)}"
            )
        probabilities.append(nomenclature.names.index(name))
    return _Settings(
        channels=tuple(config.data.channels),
        nomenclature=nomenclature,
        normalization=config.data.normalization.model_dump(mode="json"),
        tile_size=detect.tile_size,
        margin=detect.margin,
        mode=detect.stitching,
        block_size=resolve_block_size(detect.tile_size, detect.margin, block_size),
        batch_size=detect.batch_size,
        codes=detect.output_codes == "flair",
        bands=OutputBands.for_nomenclature(nomenclature, probabilities, detect.confidence),
        nodata=detect.nodata,
        cog=detect.cog,
        vectorize=detect.vectorize,
        min_area=detect.min_polygon_area,
        simplify=detect.simplify_tolerance,
    )


@dataclass(frozen=True)
class _Job:
    """One input and the files it produces."""

    raster: InputRaster
    map: Path
    scores: Path | None
    style: Path
    polygons: Path | None
    evaluation: Path | None

    @property
    def outputs(self) -> list[Path]:
        return [p for p in (self.map, self.scores, self.style, self.polygons) if p is not None]


def _map_paths(inputs: Sequence[Path], output: Path) -> list[Path]:
    output = Path(output)
    if output.suffix.lower() in MAP_SUFFIXES:
        if len(inputs) > 1:
            raise ConfigError(
                f"{len(inputs)} inputs cannot all be written to the single file {output}; give a folder as output"
            )
        return [output]
    maps = [output / MAP_NAME.format(stem=p.stem) for p in inputs]
    seen: dict[Path, Path] = {}
    for source, target in zip(inputs, maps, strict=True):
        if target in seen:
            raise DataError(
                f"{seen[target]} and {source} would both be written to {target}; rename one of them "
                f"or run them into different output folders"
            )
        seen[target] = source
    return maps


def _plan_jobs(inputs: Sequence[Path], output: Path, settings: _Settings, evaluate_labels: Path | None) -> list[_Job]:
    files = expand_inputs(inputs)
    if evaluate_labels is not None and len(files) != 1:
        raise ConfigError(f"evaluate_labels covers one orthophoto but {len(files)} inputs were given; give one input")
    rasters = [inspect_input(f, settings.channels, settings.nodata) for f in files]
    jobs = []
    for raster, map_path in zip(rasters, _map_paths(files, output), strict=True):
        stem = map_path.with_suffix("")
        jobs.append(
            _Job(
                raster=raster,
                map=map_path,
                scores=stem.with_name(stem.name + "_scores.tif") if settings.bands.scores else None,
                style=map_path.with_suffix(".qml"),
                polygons=map_path.with_suffix(".gpkg") if settings.vectorize else None,
                evaluation=stem.with_name(stem.name + "_evaluation") if evaluate_labels is not None else None,
            )
        )
    if evaluate_labels is not None:
        _check_labels(Path(evaluate_labels), jobs[0].raster)
    return jobs


def _check_labels(labels: Path, raster: InputRaster) -> None:
    try:
        with rasterio.open(labels) as src:
            shape, transform = (src.width, src.height), src.transform
    except RasterioError as error:
        raise DataError(f"{labels}: cannot open label raster ({error}); give a GeoTIFF of FLAIR class codes") from None
    if shape != (raster.width, raster.height) or not transform.almost_equals(raster.transform):
        raise DataError(
            f"{labels} ({shape[0]}x{shape[1]} px) is not on the grid of {raster.path} "
            f"({raster.width}x{raster.height} px); resample it onto the orthophoto's grid "
            f"(gdalwarp -te <bounds> -tr <resolution> -r near)"
        )


@dataclass
class MapSummary:
    """What was done for one input."""

    input: Path
    output: Path
    extra_outputs: list[Path]
    width: int
    height: int
    area_km2: float
    computed_km2: float
    """Area of the blocks computed in this run (the rest was resumed or the map already existed)."""
    nodata_km2: float = 0.0
    class_areas_km2: dict[str, float] = field(default_factory=dict)
    blocks: int = 0
    blocks_resumed: int = 0
    blocks_per_rank: list[int] = field(default_factory=list)
    tiles_per_rank: list[int] = field(default_factory=list)
    seconds: float = 0.0
    metrics: Any = None
    """:class:`flairkit.evaluation.Metrics` of the map against ``evaluate_labels``."""
    skipped: bool = False
    """The map was already complete (resume)."""


@dataclass
class DetectionSummary:
    """What ``detect`` did: one :class:`MapSummary` per input, and totals."""

    maps: list[MapSummary]
    seconds: float
    device: str
    world_size: int
    stitching: str

    @property
    def area_km2(self) -> float:
        return sum(m.area_km2 for m in self.maps)

    @property
    def computed_km2(self) -> float:
        return sum(m.computed_km2 for m in self.maps)

    @property
    def km2_per_hour(self) -> float:
        return self.computed_km2 / self.seconds * 3600 if self.seconds > 0 else 0.0

    @property
    def class_areas_km2(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for summary in self.maps:
            for name, area in summary.class_areas_km2.items():
                total[name] = total.get(name, 0.0) + area
        return total

    def __str__(self) -> str:
        """A short markdown description (maps, throughput, class areas, scores)."""
        lines = []
        for m in self.maps:
            state = "already done" if m.skipped else f"{m.seconds:.1f} s"
            lines.append(f"- `{m.input.name}` -> `{m.output}`: {m.width}x{m.height} px, {m.area_km2:.4f} km², {state}")
            if m.metrics is not None:
                lines.append(f"  - against the labels: mIoU {m.metrics.miou:.2f}, OA {m.metrics.overall_accuracy:.2f}")
        lines.append(
            f"- {self.computed_km2:.4f} km² in {self.seconds:.1f} s = {self.km2_per_hour:.3f} km²/h "
            f"({self.stitching} stitching, {self.device}, {self.world_size} rank(s))"
        )
        areas = sorted(self.class_areas_km2.items(), key=lambda item: -item[1])
        if areas:
            lines.append("- class areas (km²): " + ", ".join(f"{name} {area:.4f}" for name, area in areas))
        return "\n".join(lines)


class _AreaColumn(ProgressColumn):
    def render(self, task: Any) -> Text:
        return Text(f"{task.completed:.3f}/{task.total:.3f} km²")


class _SpeedColumn(ProgressColumn):
    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- km²/h" if speed is None else f"{speed * 3600:.2f} km²/h")


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        _AreaColumn(),
        _SpeedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _fingerprint(model: torch.nn.Module) -> str:
    """A digest of the model's class and weights (resume refuses other weights)."""
    digest = hashlib.sha256(type(model).__qualname__.encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _check_model(model: torch.nn.Module, normalizer: Normalizer, settings: _Settings, device: torch.device) -> None:
    """Run one blank tile through the model: wrong bands, tile size or class count fail before any work."""
    size, bands = settings.tile_size, len(settings.channels)
    blank = torch.zeros((1, bands, size, size), dtype=torch.uint8, device=device)
    try:
        with torch.inference_mode():
            logits = model(normalizer(blank))
    except RuntimeError as error:
        raise ConfigError(
            f"the model fails on a {size}x{size} tile of {bands} band(s) ({error}); check data.channels and "
            f"detect.tile_size (U-Net encoders need a multiple of 32)"
        ) from None
    expected = (1, settings.nomenclature.n_targets, size, size)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ConfigError(
            f"the model returns {got} for a {size}x{size} tile but {expected} logits were expected "
            f"({settings.nomenclature.n_targets} targets of nomenclature {settings.nomenclature.name}); "
            f"set data.nomenclature to the model's"
        )


@dataclass
class _BlockInput:
    block: Block
    valid: np.ndarray | None
    tiles: list[Tile]
    region: np.ndarray
    row0: int
    col0: int


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


def _read_blocks(
    blocks: Sequence[Block], plan: TilePlan, raster: InputRaster, settings: _Settings
) -> Iterator[_BlockInput]:
    """Each block with its tiles and the input rectangle they cover (read once)."""
    with SceneReader(raster, settings.channels) as reader:
        for block in blocks:
            tiles = plan.tiles_for(block)
            rows = Span(min(t.row for t in tiles), max(t.row for t in tiles) + plan.tile_size)
            cols = Span(min(t.col for t in tiles), max(t.col for t in tiles) + plan.tile_size)
            region = reader.read_region(rows, cols, settings.fill)
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


def _compute_blocks(
    blocks: Sequence[Block],
    plan: TilePlan,
    raster: InputRaster,
    settings: _Settings,
    model: torch.nn.Module,
    normalizer: Normalizer,
    device: torch.device,
    store: Callable[[Block, np.ndarray], None],
) -> int:
    """Compute ``blocks`` and hand each finished one to ``store`` (in a writer thread); return tiles run."""
    stop = threading.Event()
    inbox: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)
    outbox: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)
    writer_error: list[BaseException] = []

    def read() -> None:
        try:
            with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
                for item in _read_blocks(blocks, plan, raster, settings):
                    _put(inbox, item, stop)
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
    assembler = make_assembler(plan, settings.bands, device)
    size, tiles_run = plan.tile_size, 0
    try:
        with torch.inference_mode():
            while True:
                item = inbox.get()
                if item is _END or writer_error:
                    break
                if isinstance(item, _Failure):
                    raise item.error
                assembler.start(item.block, item.valid)
                for start in range(0, len(item.tiles), settings.batch_size):
                    chunk = item.tiles[start : start + settings.batch_size]
                    batch = np.stack(
                        [
                            item.region[
                                :,
                                t.row - item.row0 : t.row - item.row0 + size,
                                t.col - item.col0 : t.col - item.col0 + size,
                            ]
                            for t in chunk
                        ]
                    )
                    # uint8 crosses to the device: a quarter of the float32 bytes.
                    logits = model(normalizer(torch.from_numpy(batch).to(device)))
                    assembler.add(logits, chunk)
                    tiles_run += len(chunk)
                finished = assembler.finish()
                while not stop.is_set():
                    try:
                        outbox.put((item.block, finished), timeout=0.1)
                        break
                    except queue.Full:
                        continue
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
    if writer_error:
        raise writer_error[0]
    return tiles_run


def _evaluate(raw: RawRaster, labels: Path, raster: InputRaster, settings: _Settings, protocol: str) -> Any:
    from flairkit.evaluation import ConfusionAccumulator, compute_metrics

    nomenclature = settings.nomenclature
    accumulator = ConfusionAccumulator(nomenclature.n_targets)
    with rasterio.open(labels) as src:
        for rows, cols in windows(raster.height, raster.width):
            predicted = raw.read(0, rows, cols)
            window = Window(cols.start, rows.start, cols.size, rows.size)
            truth = nomenclature.map_mask(src.read(1, window=window)).copy()
            truth[predicted == NODATA_TARGET] = NODATA_TARGET  # missing input pixels are not scored
            accumulator.update(predicted, truth)
    return compute_metrics(accumulator.matrix, nomenclature, protocol)


def _assemble(job: _Job, raw: RawRaster, work: WorkDir, settings: _Settings, overwrite: bool) -> np.ndarray:
    """Write the final files of ``job`` from the finished raw blocks; return pixel counts per target."""
    raster, nomenclature = job.raster, settings.nomenclature
    with atomic_path(job.map, overwrite=overwrite) as tmp:
        if settings.cog:
            plain = work.path / "map.tif"
            counts = write_class_map(raw, plain, raster, nomenclature, settings.codes)
            convert_to_cog(plain, tmp)
            plain.unlink()
        else:
            counts = write_class_map(raw, tmp, raster, nomenclature, settings.codes)
    write_text_atomic(job.style, qml_style(legend(nomenclature, settings.codes)), overwrite=overwrite)
    if job.scores is not None:
        with atomic_path(job.scores, overwrite=overwrite) as tmp:
            if settings.cog:
                plain = work.path / "scores.tif"
                write_scores(raw, plain, raster, settings.score_names)
                convert_to_cog(plain, tmp)
                plain.unlink()
            else:
                write_scores(raw, tmp, raster, settings.score_names)
    if job.polygons is not None:
        with atomic_path(job.polygons, overwrite=overwrite) as tmp:
            layer = work.path / "polygons.gpkg"
            write_polygons(raw, layer, raster, nomenclature, settings.codes, settings.min_area, settings.simplify)
            layer.replace(tmp)
    return counts


def _check_outputs(job: _Job, overwrite: bool, resume: bool) -> str:
    """What to do with ``job``: ``"skip"`` (done), ``"resume"`` or ``"fresh"``; errors before any work."""
    work = WorkDir(job.map)
    if resume and work.exists():
        return "resume"
    if resume and job.map.exists() and not overwrite:
        return "skip"
    if work.exists() and not overwrite:
        raise OutputExistsError(
            f"an interrupted run of {job.map} left {work.path}; pass --resume to continue it "
            f"or --overwrite to start afresh"
        )
    for path in job.outputs:
        check_writable(path, overwrite)
    if job.evaluation is not None and (job.evaluation / "metrics").exists() and not overwrite:
        raise OutputExistsError(f"{job.evaluation / 'metrics'} already exists; pass --overwrite to replace it")
    return "fresh"


def _run_job(
    job: _Job,
    state: str,
    settings: _Settings,
    model: torch.nn.Module,
    normalizer: Normalizer,
    device: torch.device,
    ranks: Ranks,
    fingerprint: str,
    overwrite: bool,
    evaluate_labels: Path | None,
    protocol: str,
    console: Console | None,
) -> MapSummary:
    start = time.perf_counter()
    raster = job.raster
    plan = settings.plan(raster)
    summary = MapSummary(
        input=raster.path,
        output=job.map,
        extra_outputs=[p for p in job.outputs if p != job.map] + ([job.evaluation] if job.evaluation else []),
        width=raster.width,
        height=raster.height,
        area_km2=raster.area_km2,
        computed_km2=0.0,
        blocks=len(plan.blocks),
    )
    if state == "skip":
        summary.skipped = True
        return summary
    work = WorkDir(job.map)
    manifest = {
        "input": str(raster.path.resolve()),
        "input_size": raster.path.stat().st_size,
        "input_mtime_ns": raster.path.stat().st_mtime_ns,
        "grid": [raster.width, raster.height, list(raster.transform)[:6]],
        "settings": settings.manifest(),
        "model": fingerprint,
    }
    bands = settings.bands.count
    error: BaseException | None = None
    done: set[int] = set()
    if ranks.is_main:
        try:
            if state == "resume":
                work.check_manifest(manifest)
                done = work.done_blocks()
                RawRaster(work.raw_path, bands, raster.height, raster.width).close()
            else:
                work.create(manifest)
                RawRaster(work.raw_path, bands, raster.height, raster.width, create=True).close()
        except BaseException as exc:
            error = exc
    ranks.agree(error)
    done = ranks.broadcast(done)
    pending = [b for b in plan.blocks if b.id not in done]
    mine = shard(pending, ranks.rank, ranks.world_size)
    summary.blocks_resumed = len(done)
    summary.computed_km2 = sum(b.rows.size * b.cols.size for b in pending) * raster.pixel_area_km2

    tiles_run, error = 0, None
    raw = RawRaster(work.raw_path, bands, raster.height, raster.width)
    journal = work.journal(ranks.rank)
    progress = _progress(console) if console is not None and ranks.is_main else None
    try:
        task = None
        if progress is not None:
            progress.start()
            label = raster.path.name + (f" (rank 0 of {ranks.world_size})" if ranks.world_size > 1 else "")
            total = sum(b.rows.size * b.cols.size for b in mine) * raster.pixel_area_km2
            task = progress.add_task(label, total=total)

        def store(block: Block, data: np.ndarray) -> None:
            raw.write(block.rows, block.cols, data)
            journal.append(block.id)
            if progress is not None and task is not None:
                progress.advance(task, block.rows.size * block.cols.size * raster.pixel_area_km2)

        tiles_run = _compute_blocks(mine, plan, raster, settings, model, normalizer, device, store)
    except KeyboardInterrupt:
        logger.warning("interrupted: finished blocks are kept in %s; rerun with --resume to continue", work.path)
        raise
    except Exception as exc:
        error = exc
    finally:
        if progress is not None:
            progress.stop()
        journal.close()
    ranks.agree(error)
    summary.blocks_per_rank = ranks.gather(len(mine))
    summary.tiles_per_rank = ranks.gather(tiles_run)

    if ranks.is_main:
        try:
            counts = _assemble(job, raw, work, settings, overwrite=overwrite or state == "resume")
            pixel = raster.pixel_area_km2
            names = settings.nomenclature.names
            summary.class_areas_km2 = {names[t]: float(counts[t]) * pixel for t in settings.bands.enabled if counts[t]}
            summary.nodata_km2 = float(counts[NODATA_TARGET]) * pixel
            if evaluate_labels is not None and job.evaluation is not None:
                from flairkit.evaluation import write_metrics

                summary.metrics = _evaluate(raw, evaluate_labels, raster, settings, protocol)
                write_metrics(summary.metrics, job.evaluation, overwrite=True)
            raw.close()
            work.remove()
        except BaseException as exc:
            error = exc
    else:
        raw.close()
    ranks.agree(error)
    summary.seconds = time.perf_counter() - start
    return ranks.broadcast(summary)


def detect(
    config: FlairConfig,
    model: torch.nn.Module,
    inputs: list[Path],
    output: Path,
    *,
    overwrite: bool = False,
    resume: bool = False,
    evaluate_labels: Path | None = None,
    device: str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    block_size: int | None = None,
) -> DetectionSummary:
    """Land-cover maps of ``inputs`` (GeoTIFF/VRT files or folders of them) with ``model``.

    ``model`` maps a normalised (B, C, H, W) float batch of ``config.data.channels`` to (B, K, H, W)
    logits, K = the nomenclature's targets. One input and an ``output`` ending in .tif: the map is that
    file; otherwise ``output`` is a folder receiving ``<input stem>_landcover.tif`` per input. Settings
    come from ``config.detect``; ``block_size`` (pixels, rounded to the tile step; default about 2048) is
    the unit of streaming, resume and distribution. ``resume`` continues interrupted maps and skips
    finished ones; ``rank``/``world_size`` share the work between processes (torch.distributed).
    ``evaluate_labels``: a raster of FLAIR codes on the input's grid, scored with the configured
    protocol. Every input is checked before any work starts.
    """
    started = time.perf_counter()
    settings = _resolve_settings(config, block_size)
    jobs = _plan_jobs(inputs, output, settings, evaluate_labels)
    states = [_check_outputs(job, overwrite, resume) for job in jobs]
    torch_device = torch.device(device)
    model = model.eval().to(torch_device)
    normalizer = Normalizer.from_config(config.data.normalization).to(torch_device)
    if any(state != "skip" for state in states):
        _check_model(model, normalizer, settings, torch_device)
    fingerprint = _fingerprint(model)
    console = Console(stderr=True) if progress and rank == 0 else None
    ranks = init_ranks(rank, world_size)
    maps = []
    try:
        ranks.agree(None)  # every rank has checked its outputs before rank 0 creates work folders
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
            for job, state in zip(jobs, states, strict=True):
                maps.append(
                    _run_job(
                        job,
                        state,
                        settings,
                        model,
                        normalizer,
                        torch_device,
                        ranks,
                        fingerprint,
                        overwrite,
                        evaluate_labels,
                        config.evaluate.protocol,
                        console,
                    )
                )
    finally:
        ranks.close()
    summary = DetectionSummary(
        maps=maps,
        seconds=time.perf_counter() - started,
        device=str(torch_device),
        world_size=world_size,
        stitching=settings.mode,
    )
    if console is not None:
        print_summary(summary, Console())
    return summary


def print_summary(summary: DetectionSummary, console: Console | None = None) -> None:
    """Print the maps written, the area covered, the throughput and the area of each class."""
    console = console or Console()
    maps = Table(
        title=f"Zone detection ({summary.stitching} stitching, {summary.device}, {summary.world_size} rank(s))"
    )
    for column in ("input", "map", "size (px)", "area (km²)", "computed (km²)", "time (s)", "km²/h"):
        maps.add_column(column, justify="left" if column in ("input", "map") else "right")
    for m in summary.maps:
        speed = m.computed_km2 / m.seconds * 3600 if m.seconds > 0 and m.computed_km2 else 0.0
        maps.add_row(
            m.input.name,
            str(m.output) + (" (already done)" if m.skipped else ""),
            f"{m.width}x{m.height}",
            f"{m.area_km2:.3f}",
            f"{m.computed_km2:.3f}",
            f"{m.seconds:.1f}",
            f"{speed:.2f}",
        )
    console.print(maps)
    console.print(
        f"{summary.computed_km2:.3f} km² computed in {summary.seconds:.1f} s: {summary.km2_per_hour:.2f} km²/h"
    )
    areas = summary.class_areas_km2
    if areas:
        classes = Table(title="Class areas")
        classes.add_column("class")
        classes.add_column("km²", justify="right")
        classes.add_column("%", justify="right")
        total = sum(areas.values())
        for name, area in sorted(areas.items(), key=lambda item: -item[1]):
            classes.add_row(name, f"{area:.4f}", f"{100 * area / total:.1f}")
        console.print(classes)
    for m in summary.maps:
        if m.metrics is not None:
            from flairkit.evaluation import print_metrics

            console.print(f"Evaluation of {m.output.name}:")
            print_metrics(m.metrics, console)
