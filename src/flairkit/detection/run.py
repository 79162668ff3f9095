"""``detect``: land-cover maps of orthophotos of any size, streamed block by block.

For each input: check everything first (inputs, outputs, model: :mod:`~flairkit.detection.settings`,
:mod:`~flairkit.detection.jobs`, :mod:`~flairkit.detection.network`), cut the map into blocks
(:mod:`~flairkit.detection.tiling`), share the missing blocks between ranks
(:mod:`~flairkit.detection.distributed`), stream them through the model
(:mod:`~flairkit.detection.pipeline`, :mod:`~flairkit.detection.stitching`) into the journaled work
folder (:mod:`~flairkit.detection.resume`), then rank 0 writes the final files
(:mod:`~flairkit.detection.writing`, :mod:`~flairkit.detection.vectorize`) and scores the map against
labels when asked. Memory depends on the block size, never on the raster size.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from flairkit.atomic import atomic_path, check_writable, write_text_atomic
from flairkit.config.schema import FlairConfig
from flairkit.data.assembly import AssembledRaster
from flairkit.data.scenes import InputRaster, nodata_note
from flairkit.detection.distributed import Ranks, init_ranks
from flairkit.detection.jobs import (
    JobState,
    MapJob,
    job_state,
    open_work,
    plan_jobs,
    rank_share,
    tile_plan,
    work_manifest,
)
from flairkit.detection.network import DetectionNetwork, prepare_network
from flairkit.detection.pipeline import compute_blocks
from flairkit.detection.resume import WorkDir
from flairkit.detection.settings import (
    DEVICE_KEY,
    PRECISION_KEY,
    DetectionSettings,
    resolve_settings,
    task_settings,
)
from flairkit.detection.stitching import NODATA_TARGET
from flairkit.detection.summary import DetectionSummary, DetectProgress, MapSummary
from flairkit.detection.tiling import Block, windows
from flairkit.detection.vectorize import write_polygons
from flairkit.detection.writing import (
    COLUMN_CHUNK,
    GDAL_CACHE_BYTES,
    OUTPUT_TILE,
    RawRaster,
    convert_to_cog,
    legend,
    qml_style,
    warp_map,
    write_class_map,
    write_scores,
)
from flairkit.devices import env_local_rank, resolve_device, resolve_precision

logger = logging.getLogger(__name__)


def _evaluate(raw: RawRaster, labels: Path, raster: InputRaster, settings: DetectionSettings, protocol: str) -> Any:
    from flairkit.evaluation import ConfusionAccumulator, compute_metrics

    nomenclature = settings.nomenclature
    accumulator = ConfusionAccumulator(nomenclature.n_targets)
    with rasterio.open(labels) as src:
        for rows, cols in windows(raster.height, raster.width, OUTPUT_TILE, COLUMN_CHUNK):
            predicted = raw.read(0, rows, cols)
            window = Window(cols.start, rows.start, cols.size, rows.size)
            truth = nomenclature.map_mask(src.read(1, window=window)).copy()
            truth[predicted == NODATA_TARGET] = NODATA_TARGET  # missing input pixels are not scored
            accumulator.update(predicted, truth)
    return compute_metrics(accumulator.matrix, nomenclature, protocol)


def _assemble(job: MapJob, raw: RawRaster, work: WorkDir, settings: DetectionSettings, overwrite: bool) -> np.ndarray:
    """Write the final files of ``job`` from the finished raw blocks; return pixel counts per target."""
    raster, nomenclature = job.raster, settings.nomenclature
    on_input = settings.output_grid == "input" and isinstance(raster, AssembledRaster)
    with atomic_path(job.map, overwrite=overwrite) as tmp:
        final = work.path / "map.tif" if settings.cog else tmp
        written = work.path / "map_reference.tif" if on_input else final
        counts = write_class_map(raw, written, raster, nomenclature, settings.codes)
        if on_input:
            warp_map(written, final, raster.path)
            written.unlink()
        if settings.cog:
            convert_to_cog(final, tmp)
            final.unlink()
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


def _agree(ranks: Ranks, error: BaseException | None, work: WorkDir) -> None:
    """Meet the other ranks; after an error, rank 0 deletes the map's work folder if nothing in it can be resumed,
    else names it in the error."""
    try:
        ranks.agree(error)
    except Exception as failure:
        if not ranks.is_main:
            raise
        raise work.after_failure(failure) from None


def _run_job(
    job: MapJob,
    state: JobState,
    network: DetectionNetwork,
    device: torch.device,
    ranks: Ranks,
    overwrite: bool,
    evaluate_labels: Path | None,
    protocol: str,
    progress: DetectProgress | None,
) -> MapSummary:
    start = time.perf_counter()
    raster, settings = job.raster, network.settings
    plan = tile_plan(settings, raster)
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
    bands = settings.bands.count
    error: BaseException | None = None
    done: set[int] = set()
    if ranks.is_main:
        try:
            done = open_work(work, state, work_manifest(raster, settings, network.fingerprint), raster, bands)
        except BaseException as exc:
            error = exc
    _agree(ranks, error, work)
    done = ranks.broadcast(done)
    pending, mine = rank_share(plan, done, ranks)
    summary.blocks_resumed = len(done)
    summary.computed_km2 = sum(b.rows.size * b.cols.size for b in pending) * raster.pixel_area_km2

    tiles_run, error = 0, None
    raw = RawRaster(work.raw_path, bands, raster.height, raster.width)
    journal = work.journal(ranks.rank)
    notify = progress if ranks.is_main else None
    label = raster.path.name + (f" (rank 0 of {ranks.world_size})" if ranks.world_size > 1 else "")
    total = sum(b.rows.size * b.cols.size for b in mine) * raster.pixel_area_km2
    computed = 0.0
    try:
        if notify is not None:
            notify(label, computed, total)

        def store(block: Block, data: np.ndarray) -> None:
            nonlocal computed
            raw.write(block.rows, block.cols, data)
            journal.append(block.id)
            if notify is not None:
                computed += block.rows.size * block.cols.size * raster.pixel_area_km2
                notify(label, computed, total)

        tiles_run = compute_blocks(
            mine,
            plan,
            raster,
            settings.channels,
            settings.bands,
            settings.batch_size,
            network.model,
            network.normalizer,
            device,
            store,
            precision=settings.precision,
            series=settings.series if settings.hub is None else settings.hub,
            kept_folder=work.path,
        )
    except KeyboardInterrupt:
        logger.warning("interrupted: finished blocks are kept in %s; rerun with --resume to continue", work.path)
        raise
    except Exception as exc:
        error = exc
    finally:
        journal.close()
    _agree(ranks, error, work)
    summary.blocks_per_rank = ranks.gather(len(mine))
    summary.tiles_per_rank = ranks.gather(tiles_run)

    if ranks.is_main:
        try:
            counts = _assemble(job, raw, work, settings, overwrite=overwrite or state == "resume")
            pixel = raster.pixel_area_km2
            names = settings.nomenclature.names
            summary.class_areas_km2 = {names[t]: float(counts[t]) * pixel for t in settings.bands.enabled if counts[t]}
            summary.nodata_km2 = float(counts[NODATA_TARGET]) * pixel
            summary.nodata_note = nodata_note(raster) if counts[NODATA_TARGET] else None
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
    _agree(ranks, error, work)
    summary.seconds = time.perf_counter() - start
    return ranks.broadcast(summary)


def detect(
    config: FlairConfig,
    model: torch.nn.Module | Sequence[torch.nn.Module],
    inputs: list[Path],
    output: Path,
    *,
    overwrite: bool = False,
    resume: bool = False,
    evaluate_labels: Path | None = None,
    device: str | None = None,
    precision: str | None = None,
    rank: int = 0,
    world_size: int = 1,
    progress: DetectProgress | None = None,
    block_size: int | None = None,
) -> DetectionSummary:
    """Land-cover maps of ``inputs`` (GeoTIFF/VRT files or folders of them) with ``model``; what was done.

    With ``detect.inputs`` (sources assembled into the model's bands, :mod:`~flairkit.data.assembly`), ``inputs``
    is empty and one map is made on the assembly's grid.

    ``model`` maps a normalised (B, C, H, W) float batch of ``config.data.channels`` to (B, K, H, W)
    logits, K = the nomenclature's targets; several networks (an ensemble) and ``detect.tta`` average their
    probabilities. One input and an ``output`` ending in .tif: the map is that
    file; otherwise ``output`` is a folder receiving ``<input stem>_landcover.tif`` per input. Settings
    come from ``config.detect``; ``block_size`` (pixels, rounded to the tile step; default about 2048, at most
    2048 in blend mode) is the unit of streaming, resume and distribution. ``resume`` continues interrupted maps
    and skips finished ones; ``rank``/``world_size`` share the work between processes (torch.distributed).
    ``evaluate_labels``: a raster of FLAIR codes on the input's grid, scored with the configured
    protocol. ``device`` and ``precision`` override ``detect.device`` and ``detect.precision``; ``cuda``
    means this rank's GPU (LOCAL_RANK, else ``rank``, modulo the GPU count). ``progress`` follows rank 0's
    blocks (:data:`~flairkit.detection.summary.DetectProgress`). A FLAIR-HUB model (``model.hub``) reads its other
    modalities per tile (:mod:`~flairkit.data.hub.tiles`); with several tasks, each is a map of its own named
    ``<input stem>_<TASK>.tif`` in the ``output`` folder. Every input is checked before any work starts;
    nothing is printed (warnings go through :mod:`logging` and :mod:`warnings`). Rank 0 writes ``report.html``
    (:func:`~flairkit.detection.report.detection_report_path`).
    """
    from flairkit.detection.report import detection_report_path, write_detection_report

    started = time.perf_counter()
    torch_device = resolve_device(
        config.detect.device if device is None else device, DEVICE_KEY, local_rank=env_local_rank(default=rank)
    )
    dtype = resolve_precision(config.detect.precision if precision is None else precision, torch_device, PRECISION_KEY)
    runs = task_settings(config, resolve_settings(config, block_size, dtype))
    planned = [plan_jobs(inputs, output, settings, evaluate_labels) for settings in runs]
    states = [[job_state(job, overwrite, resume) for job in jobs] for jobs in planned]
    if rank == 0:
        check_writable(detection_report_path(output), overwrite or resume)
    networks = [
        prepare_network(config, model, settings, torch_device, compute=any(s != "skip" for s in task_states))
        for settings, task_states in zip(runs, states, strict=True)
    ]
    ranks = init_ranks(rank, world_size)
    maps = []
    try:
        ranks.agree(None)  # every rank has checked its outputs before rank 0 creates work folders
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
            for network, jobs, task_states in zip(networks, planned, states, strict=True):
                for job, state in zip(jobs, task_states, strict=True):
                    maps.append(
                        _run_job(
                            job,
                            state,
                            network,
                            torch_device,
                            ranks,
                            overwrite,
                            evaluate_labels,
                            config.evaluate.protocol,
                            progress,
                        )
                    )
    finally:
        ranks.close()
    summary = DetectionSummary(
        maps=maps,
        seconds=time.perf_counter() - started,
        device=str(torch_device),
        world_size=world_size,
        stitching=networks[0].settings.mode,
        backend=networks[0].backend,
        passes=networks[0].settings.passes,
    )
    if rank == 0:
        write_detection_report(config, summary, output, overwrite=overwrite or resume)
    return summary
