"""``detect``: land-cover maps of orthophotos of any size, streamed block by block.

For each input: check everything first (inputs, outputs, model), cut the map into blocks
(:mod:`~flairkit.detection.tiling`), share the missing blocks between ranks
(:mod:`~flairkit.detection.distributed`), stream them through the model
(:mod:`~flairkit.detection.pipeline`, :mod:`~flairkit.detection.stitching`) into the journaled work
folder (:mod:`~flairkit.detection.resume`), then rank 0 writes the final files
(:mod:`~flairkit.detection.writing`, :mod:`~flairkit.detection.vectorize`) and scores the map against
labels when asked. Memory depends on the block size, never on the raster size.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.errors import RasterioError
from rasterio.windows import Window
from rich.console import Console

from flairkit.atomic import atomic_path, check_writable, write_text_atomic
from flairkit.config.schema import FlairConfig
from flairkit.data.transforms import Normalizer
from flairkit.detection.distributed import Ranks, init_ranks, shard
from flairkit.detection.pipeline import compute_blocks
from flairkit.detection.reading import InputRaster, expand_inputs, inspect_input
from flairkit.detection.resume import WorkDir
from flairkit.detection.stitching import NODATA_TARGET, OutputBands
from flairkit.detection.summary import DetectionSummary, MapSummary, make_progress, print_summary
from flairkit.detection.tiling import (
    Block,
    StitchingMode,
    TilePlan,
    fitted_tile_size,
    flair_detect_windows,
    resolve_block_size,
)
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
from flairkit.models.export import OnnxSegmenter, onnx_runtime_model
from flairkit.models.inference import fold_batchnorm
from flairkit.nomenclature import Nomenclature, get_nomenclature

logger = logging.getLogger(__name__)

MAP_SUFFIXES = (".tif", ".tiff")
MAP_NAME = "{stem}_landcover.tif"
"""Name of each map when ``output`` is a folder."""


@dataclass(frozen=True)
class _Settings:
    """The detection settings of a run, resolved once."""

    channels: tuple[int, ...]
    nomenclature: Nomenclature
    normalization: dict[str, Any]
    tile_size: int
    fit_tiles: bool
    margin: int
    mode: StitchingMode
    flair_detect_windows: bool
    block_size: int | None
    batch_size: int
    backend: str
    channels_last: bool
    codes: bool
    bands: OutputBands
    nodata: float | None
    cog: bool
    vectorize: bool
    min_area: float
    simplify: float

    @property
    def score_names(self) -> list[str]:
        names = [f"p({self.nomenclature.names[t]})" for t in self.bands.probabilities]
        return names + (["confidence"] if self.bands.confidence else [])

    def plan(self, raster: InputRaster) -> TilePlan:
        tile = self.tile_size
        if self.fit_tiles:
            tile = fitted_tile_size(raster.width, raster.height, tile, self.margin)
        block = resolve_block_size(tile, self.margin, self.block_size)
        kept_windows = None
        if self.flair_detect_windows:
            try:
                cols, rows = flair_detect_windows(raster.width, raster.height, raster.transform, tile, self.margin)
            except ValueError as error:
                raise DataError(f"{raster.path}: {error}; set detect.flair_detect_windows=false") from None
            kept_windows = (tuple(cols), tuple(rows))
        return TilePlan(raster.width, raster.height, tile, self.margin, self.mode, block, kept_windows)

    def manifest(self) -> dict[str, Any]:
        return {
            "channels": list(self.channels),
            "normalization": self.normalization,
            "nomenclature": self.nomenclature.name,
            "tile_size": self.tile_size,
            "fit_tiles": self.fit_tiles,
            "margin": self.margin,
            "stitching": self.mode,
            "flair_detect_windows": self.flair_detect_windows,
            "block_size": self.block_size,
            "batch_size": self.batch_size,
            "backend": self.backend,
            "channels_last": self.channels_last,
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
    if block_size is None:
        block_size = detect.block_size
    if block_size is not None and block_size <= 0:
        raise ConfigError(f"the block size must be a positive number of pixels, got {block_size}")
    if detect.flair_detect_windows and detect.stitching != "margin":
        raise ConfigError(
            "detect.flair_detect_windows reproduces flair-detect's margin stitching; "
            "set detect.stitching=margin or detect.flair_detect_windows=false"
        )
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
        fit_tiles=detect.fit_tiles,
        margin=detect.margin,
        mode=detect.stitching,
        flair_detect_windows=detect.flair_detect_windows,
        block_size=block_size,
        batch_size=detect.batch_size,
        backend=detect.backend,
        channels_last=detect.channels_last,
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
    if settings.fit_tiles and size > 512:
        # Same remainder modulo 256 (so the same divisibility by the encoder stride), far less to compute.
        size = 256 + size % 256
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


def _inference_network(model: torch.nn.Module, settings: _Settings, device: torch.device) -> torch.nn.Module:
    """The network as detection runs it: in ONNX Runtime on CPU (``detect.backend``), else torch with its
    BatchNorm folded into the convolutions and, with ``detect.channels_last``, in channels_last format."""
    if isinstance(model, OnnxSegmenter):
        return model
    if settings.backend != "torch" and device.type == "cpu":
        graph = onnx_runtime_model(model, len(settings.channels), threads=torch.get_num_threads())
        if graph is not None:
            logger.info("running the network in ONNX Runtime")
            return graph
    if settings.backend == "onnx":
        raise ConfigError(
            f"detect.backend=onnx: ONNX Runtime cannot run this network on {device} (it needs the CPU, "
            "onnxruntime and onnx installed: pip install 'flairkit[onnx]', and an aerial smp network); "
            "set detect.backend=auto or torch"
        )
    model = fold_batchnorm(model, torch.rand(1, len(settings.channels), 64, 64, device=device))
    return model.to(memory_format=torch.channels_last) if settings.channels_last else model


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
        tile_size=plan.tile_size,
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
    progress = make_progress(console) if console is not None and ranks.is_main else None
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

        tiles_run = compute_blocks(
            mine, plan, raster, settings.channels, settings.bands, settings.batch_size, model, normalizer, device, store
        )
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
    if getattr(model, "tile_shape", None) is not None:  # a graph exported for one tile size (ONNX)
        settings = replace(settings, fit_tiles=False)
    normalizer = Normalizer.from_config(config.data.normalization).to(torch_device)
    if any(state != "skip" for state in states):
        _check_model(model, normalizer, settings, torch_device)
    fingerprint = _fingerprint(model)
    if any(state != "skip" for state in states):
        model = _inference_network(model, settings, torch_device)
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
        backend="ONNX Runtime" if isinstance(model, OnnxSegmenter) else "torch",
    )
    if console is not None:
        print_summary(summary, Console())
    return summary
