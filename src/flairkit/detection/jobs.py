"""Planning a detection run: the files each input produces, what is left to do (resume), each map's tiles and
blocks, and the share of the missing blocks each rank computes.

Everything here is checked before any work starts: inputs, labels, outputs that exist or overwrite an input,
work folders left by an interrupted run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import rasterio
from rasterio.errors import RasterioError

from flairkit.atomic import check_not_inputs, check_writable
from flairkit.data.assembly import AssembledRaster, inspect_assembly
from flairkit.data.scenes import InputRaster, expand_inputs, inspect_input
from flairkit.data.series import check_coverage
from flairkit.detection.distributed import Ranks, shard
from flairkit.detection.resume import WorkDir
from flairkit.detection.settings import DetectionSettings
from flairkit.detection.tiling import Block, TilePlan, fitted_tile_size, flair_detect_windows, resolve_block_size
from flairkit.detection.writing import RawRaster
from flairkit.errors import ConfigError, DataError, OutputExistsError

MAP_SUFFIXES = (".tif", ".tiff")
MAP_NAME = "{stem}_landcover.tif"
"""Name of each map when ``output`` is a folder."""
TASK_MAP_NAME = "{stem}_{task}.tif"
"""Name of each task's map of a multi-task FLAIR-HUB model, in the ``output`` folder."""
JobState = Literal["skip", "resume", "fresh"]
"""A map already done (resume), an interrupted map to continue, or a map to compute from scratch."""


@dataclass(frozen=True)
class MapJob:
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


def _map_paths(inputs: Sequence[Path], output: Path, task: str | None = None) -> list[Path]:
    output = Path(output)
    if output.suffix.lower() in MAP_SUFFIXES:
        if task is not None:
            raise ConfigError(
                f"this FLAIR-HUB model has several tasks, written as one map each ({TASK_MAP_NAME}); "
                f"give a folder as output, not {output}"
            )
        if len(inputs) > 1:
            raise ConfigError(
                f"{len(inputs)} inputs cannot all be written to the single file {output}; give a folder as output"
            )
        return [output]
    maps = [output / (MAP_NAME if task is None else TASK_MAP_NAME).format(stem=p.stem, task=task) for p in inputs]
    seen: dict[Path, Path] = {}
    for source, target in zip(inputs, maps, strict=True):
        if target in seen:
            raise DataError(
                f"{seen[target]} and {source} would both be written to {target}; rename one of them "
                f"or run them into different output folders"
            )
        seen[target] = source
    return maps


def plan_jobs(
    inputs: Sequence[Path], output: Path, settings: DetectionSettings, evaluate_labels: Path | None
) -> list[MapJob]:
    """One job per orthophoto of ``inputs`` (files or folders), or one for the sources assembled by
    ``settings.assembly``; every input and label raster checked."""
    if settings.assembly:
        if inputs:
            raise ConfigError(
                "give the orthophotos either as arguments or as detect.inputs (--input KIND=FILE), not both"
            )
        rasters: list[InputRaster] = [inspect_assembly(channels=settings.channels, **settings.assembly)]
        files = [rasters[0].path]
    else:
        files = expand_inputs(inputs)
        rasters = [inspect_input(f, settings.channels, settings.nodata, settings.all_zero_is_nodata) for f in files]
    for raster in rasters if settings.series is not None or settings.hub is not None else ():
        left, top = raster.transform @ (0, 0)
        right, bottom = raster.transform @ (raster.width, raster.height)
        if settings.series is not None:
            check_coverage(settings.series, raster.crs, (left, bottom, right, top), raster.path)
        for name, paths in settings.hub.coverage().items() if settings.hub is not None else ():
            check_coverage(paths, raster.crs, (left, bottom, right, top), raster.path, name)
    if evaluate_labels is not None and len(files) != 1:
        raise ConfigError(f"evaluate_labels covers one orthophoto but {len(files)} inputs were given; give one input")
    jobs = []
    task = settings.task if len(settings.tasks) > 1 else None
    for raster, map_path in zip(rasters, _map_paths(files, output, task), strict=True):
        stem = map_path.with_suffix("")
        jobs.append(
            MapJob(
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
    sources = [source for job in jobs for source in job.raster.sources]
    if settings.series is not None:
        sources += settings.series.files
    if settings.hub is not None:
        sources += settings.hub.files
    labels = [Path(evaluate_labels)] if evaluate_labels is not None else []
    check_not_inputs([path for job in jobs for path in job.outputs], [*sources, *labels])
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


def job_state(job: MapJob, overwrite: bool, resume: bool) -> JobState:
    """What to do with ``job``; an error, before any work, when its outputs may not be written."""
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


def tile_plan(settings: DetectionSettings, raster: InputRaster) -> TilePlan:
    """The tiles and blocks of the map of ``raster``."""
    tile = settings.tile_size
    if settings.fit_tiles:
        tile = fitted_tile_size(raster.width, raster.height, tile, settings.margin)
    block = resolve_block_size(tile, settings.margin, settings.block_size, settings.mode)
    kept_windows = None
    if settings.flair_detect_windows:
        try:
            cols, rows = flair_detect_windows(raster.width, raster.height, raster.transform, tile, settings.margin)
        except ValueError as error:
            raise DataError(f"{raster.path}: {error}; set detect.flair_detect_windows=false") from None
        kept_windows = (tuple(cols), tuple(rows))
    return TilePlan(raster.width, raster.height, tile, settings.margin, settings.mode, block, kept_windows)


def work_manifest(raster: InputRaster, settings: DetectionSettings, fingerprint: str) -> dict[str, Any]:
    """What a resumed map must share with the run that began it: input (and each other source of an assembly and
    each Sentinel-2 file, by size and modification time), grid, settings and weights."""
    manifest = {
        "input": str(raster.path.resolve()),
        "input_size": raster.path.stat().st_size,
        "input_mtime_ns": raster.path.stat().st_mtime_ns,
        "grid": [raster.width, raster.height, list(raster.transform)[:6]],
        "block_side": tile_plan(settings, raster).block_size,
        "settings": settings.manifest(),
        "model": fingerprint,
    }
    if isinstance(raster, AssembledRaster):
        for part in raster.parts:
            if part.path != raster.path:
                stat = part.path.stat()
                manifest[f"{part.kind} source {part.path.resolve()}"] = [stat.st_size, stat.st_mtime_ns]
    for path in settings.series.files if settings.series is not None else ():
        stat = path.stat()
        manifest[f"sentinel-2 {path.resolve()}"] = [stat.st_size, stat.st_mtime_ns]
    for path in settings.hub.files if settings.hub is not None else ():
        stat = path.stat()
        manifest[f"FLAIR-HUB source {path.resolve()}"] = [stat.st_size, stat.st_mtime_ns]
    return manifest


def open_work(work: WorkDir, state: JobState, manifest: dict[str, Any], raster: InputRaster, bands: int) -> set[int]:
    """Create the work folder and its raw file (``fresh``) or check that they can be resumed; the blocks done."""
    if state == "resume":
        work.check_manifest(manifest)
        done = work.done_blocks()
        RawRaster(work.raw_path, bands, raster.height, raster.width).close()
        return done
    work.create(manifest)
    RawRaster(work.raw_path, bands, raster.height, raster.width, create=True).close()
    return set()


def rank_share(plan: TilePlan, done: set[int], ranks: Ranks) -> tuple[list[Block], list[Block]]:
    """The blocks of ``plan`` still to compute, and those this rank computes."""
    pending = [b for b in plan.blocks if b.id not in done]
    return pending, shard(pending, ranks.rank, ranks.world_size)
