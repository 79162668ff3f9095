"""Zone detection throughput (km²/h) and peak memory on synthetic orthophotos, margin and blend stitching.

python benchmarks/bench_detection.py [--sizes 2048 4096] [--modes margin blend] [--device cpu]
                                     [--set detect.tile_size=512 ...] [--network resnet34|tiny]
                                     [--assembled [--repeats 3]] [--multimodal] [--record]

Each (size, mode, input) runs in its own process with a U-Net ResNet34, 5 bands, random weights (throughput does
not depend on the weights), the ``flair detect`` defaults unless ``--set`` overrides them (e.g.
``--set detect.tile_size=512 detect.fit_tiles=false detect.batch_size=4`` for flair-detect's tiling). Peak
RSS is the resident-memory high-water mark of that process while detecting (imports and model included), and
the table ends with each (mode, input)'s growth from the smallest raster to the largest. ``--network tiny`` maps
with a 1x1 convolution instead (5 bands to 19 logits): memory runs on large rasters then cost reading,
stitching and writing only, which is what could grow with the raster. Inputs are written by strips,
ZSTD-compressed, and deleted once their size is done.

``--assembled`` also maps the same area from separate RVB, IRC, DSM and DTM files (``detect.inputs``, warped on
the fly), and times assembled against stacked on the smallest size in one process: one untimed run of each,
then ``--repeats`` alternating runs of each; the ratio is of the best times.

``--multimodal`` also maps the area with a FLAIR-HUB network (preset ``flairhub-LC-D`` with the test suite's tiny
network, modalities AERIAL_RGBI, DEM_ELEV and SENTINEL2_TS): every tile reads its aerial window from the
orthophoto, its elevation from separate DSM and DTM files and its Sentinel-2 window from a series of
``SERIES_DATES`` 10 m acquisitions with cloud masks listed in an acquisitions JSON (``detect.sentinel2``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_hub_loader import NETWORKS as HUB_NETWORKS
from common import add_record_option, markdown_table, record, run_in_child

FRANCE_KM2 = 550_000
STRIP = 512
"""Rows written at a time."""
COMPRESSION = {"compress": "zstd", "zstd_level": 1}
"""Inputs are compressed: a 32768 px 5-band orthophoto is 5.4 GB of pixels."""
SERIES_DATES = 4
"""Sentinel-2 acquisitions of the multimodal runs; the second is cloudy over the west half."""
HUB_MODALITIES = "data.hub.modalities=[AERIAL_RGBI,DEM_ELEV,SENTINEL2_TS]"


def write_ortho(path: Path, size: int) -> None:
    """A smooth 5-band uint8 orthophoto of ``size`` x ``size`` px at 0.2 m in Lambert-93, written by strips."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 5,
        "dtype": "uint8",
        "crs": "EPSG:2154",
        "transform": from_origin(843_000.0, 6_519_000.0, 0.2, 0.2),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "BIGTIFF": "IF_SAFER",
        **COMPRESSION,
    }
    # Noise drawn once for a 512 px square and repeated: drawing it for every pixel would dominate large sizes.
    noise = np.random.default_rng(0).normal(0, 12, (5, STRIP, 512)).astype(np.float32)
    x = np.arange(size, dtype=np.float32)
    with rasterio.open(path, "w", **profile) as dst:
        for top in range(0, size, STRIP):
            rows = min(STRIP, size - top)
            y = np.arange(top, top + rows, dtype=np.float32)
            strip = np.empty((5, rows, size), dtype=np.uint8)
            for b in range(5):
                smooth = np.cos(y / (55 + 5 * b))[:, None] * np.sin(x / (40 + 7 * b))[None, :] * 90 + 128
                grain = np.tile(noise[b, :rows], (1, -(-size // 512)))[:, :size]
                strip[b] = np.clip(smooth + grain, 0, 255)
            dst.write(strip, window=Window(0, top, size, rows))


def write_products(ortho: Path, folder: Path) -> dict[str, str]:
    """RVB, IRC (NIR, R, G), DSM and DTM files whose assembly is the 5-band ``ortho``; the ``detect.inputs``."""
    import rasterio
    from rasterio.windows import Window

    from flairkit.data.assembly import ELEVATION_STEP

    with rasterio.open(ortho) as src:
        profile = src.profile | COMPRESSION | {"BIGTIFF": "IF_SAFER"}
        products = {"rvb": (3, "uint8"), "irc": (3, "uint8"), "dsm": (1, "float32"), "dtm": (1, "float32")}
        outputs = {
            name: rasterio.open(
                folder / f"{name}.tif",
                "w",
                **(profile | {"count": count, "dtype": dtype} | ({"predictor": 3} if dtype == "float32" else {})),
            )
            for name, (count, dtype) in products.items()
        }
        for top in range(0, src.height, STRIP):
            window = Window(0, top, src.width, min(STRIP, src.height - top))
            data = src.read(window=window)
            dtm = np.full(data.shape[1:], 100.0, dtype=np.float32)
            outputs["rvb"].write(data[:3], window=window)
            outputs["irc"].write(data[[3, 0, 1]], window=window)
            outputs["dtm"].write(dtm[None], window=window)
            outputs["dsm"].write((dtm + data[4].astype(np.float32) * ELEVATION_STEP)[None], window=window)
        for output in outputs.values():
            output.close()
    return {
        "rgb": str(folder / "rvb.tif"),
        "nir": f"{folder / 'irc.tif'}:1",
        "dsm": str(folder / "dsm.tif"),
        "dtm": str(folder / "dtm.tif"),
    }


def write_series(ortho: Path, folder: Path) -> Path:
    """A 10 m Sentinel-2 series (10 bands, uint16) with cloud masks covering ``ortho`` and 50 m around it, one
    file per date, listed in an acquisitions JSON (``detect.sentinel2``); the second date is cloudy in the west."""
    import rasterio
    from rasterio.transform import from_origin

    with rasterio.open(ortho) as src:
        left, bottom, right, top = src.bounds
        crs = src.crs
    side = int(-(-max(right - left, top - bottom) // 10)) + 10
    transform = from_origin(left - 50, top + 50, 10, 10)
    rng = np.random.default_rng(0)
    profile = {"driver": "GTiff", "width": side, "height": side, "crs": crs, "transform": transform, **COMPRESSION}
    entries = []
    for number in range(SERIES_DATES):
        masks = np.zeros((2, side, side), np.uint8)
        if number == 1:
            masks[1, :, : side // 2] = 90
        with rasterio.open(folder / f"s2_{number}.tif", "w", count=10, dtype="uint16", **profile) as dst:
            dst.write(rng.integers(0, 3000, (10, side, side)).astype(np.uint16))
        with rasterio.open(folder / f"s2_{number}_mask.tif", "w", count=2, dtype="uint8", **profile) as dst:
            dst.write(masks)
        date = f"2021-{3 + 2 * number:02d}-15"
        entries.append({"date": date, "path": f"s2_{number}.tif", "mask": f"s2_{number}_mask.tif"})
    acquisitions = folder / "acquisitions.json"
    acquisitions.write_text(json.dumps({"acquisitions": entries}))
    return acquisitions


def _vm_hwm_kb() -> int | None:
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def _network(config, args: dict):
    """The network of a run: random weights (seed 0) or the state dict ``args["weights"]``; ``tiny``: a 1x1 conv."""
    import torch

    from flairkit.models.factory import build_aerial_model
    from flairkit.models.loader import load_model
    from flairkit.nomenclature import get_nomenclature

    torch.manual_seed(0)
    if config.model.hub is not None:
        from flairkit.models.hub import build_hub_network

        return build_hub_network(config)
    if args.get("network") == "tiny":
        return torch.nn.Conv2d(len(config.data.channels), get_nomenclature(config.data.nomenclature).n_targets, 1)
    if args.get("weights"):
        return load_model(config, args["weights"])
    return build_aerial_model(config, pretrained_encoder=False)


def _config(mode: str, overrides: list[str]):
    """The run's config: FLAIR-INC RGBIE U-Net ResNet34, or ``flairhub-LC-D`` when an override sets data.hub."""
    from flairkit.config import load_config

    hub = any(override.startswith("data.hub.") for override in overrides)
    preset = "flairhub-LC-D" if hub else "FLAIR-INC_rgbie_15cl_resnet34-unet"
    return load_config(preset, ["model.encoder_weights=null", f"detect.stitching={mode}", *overrides])


def child(args: dict) -> dict:
    """One detection run (in a fresh process): seconds, throughput, tiles, peak RSS and peak GPU memory.

    The network has random weights (seed 0), or those of the state dict ``args["weights"]`` when given;
    ``args["network"] == "tiny"``: a 1x1 convolution.
    """
    import torch

    from flairkit.detection.run import detect

    config = _config(args["mode"], args["overrides"])
    model = _network(config, args)
    if Path("/proc/self/clear_refs").exists():
        Path("/proc/self/clear_refs").write_text("5")  # peak of the detection, not of the imports
    cuda = args["device"].startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats(args["device"])
    start = time.perf_counter()
    inputs = [Path(args["input"])] if args["input"] else []
    summary = detect(config, model, inputs, Path(args["output"]), device=args["device"])
    seconds = time.perf_counter() - start
    peak = _vm_hwm_kb() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = summary.maps[0]
    return {
        "backend": summary.backend,
        "tile": report.tile_size,
        "seconds": seconds,
        "km2": report.area_km2,
        "tiles": sum(report.tiles_per_rank),
        "blocks": report.blocks,
        "peak_rss_mb": peak / 1024,
        "peak_gpu_mib": torch.cuda.max_memory_allocated(args["device"]) / 2**20 if cuda else None,
    }


def ratio_child(args: dict) -> dict:
    """Best seconds of stacked and assembled runs alternating in one process, after one untimed run of each."""
    from flairkit.detection.run import detect

    config = {kind: _config(args["mode"], [*args["overrides"], *extra]) for kind, extra in args["kinds"].items()}
    model = _network(config["stacked"], args)
    inputs = {"stacked": [Path(args["input"])], "assembled": []}
    output = Path(args["output"])
    times: dict[str, list[float]] = {kind: [] for kind in config}
    for repeat in range(args["repeats"] + 1):
        for kind in config:
            start = time.perf_counter()
            detect(config[kind], model, inputs[kind], output, device=args["device"], overwrite=True)
            if repeat:
                times[kind].append(time.perf_counter() - start)
    return {kind: min(values) for kind, values in times.items()}


def run_detection(args: dict) -> dict:
    """:func:`child` in a fresh interpreter. ``args``: input, output, mode, device, overrides [, weights, network]."""
    return run_in_child(__file__, args, f"detection run ({args['mode']}, {' '.join(args['overrides'])})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096], help="raster sides in pixels")
    parser.add_argument("--modes", nargs="+", default=["margin", "blend"], choices=["margin", "blend"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides (detect.*)")
    parser.add_argument(
        "--network", default="resnet34", choices=["resnet34", "tiny"], help="tiny: a 1x1 conv, for memory runs"
    )
    parser.add_argument(
        "--assembled", action="store_true", help="also map from separate RVB, IRC, DSM, DTM files (detect.inputs)"
    )
    parser.add_argument(
        "--multimodal",
        action="store_true",
        help="also map with a tiny FLAIR-HUB network reading aerial, DSM + DTM and a Sentinel-2 series",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs of each input for the assembled / stacked time ratio"
    )
    add_record_option(parser)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        args = json.loads(options.child)
        print(json.dumps(ratio_child(args) if "kinds" in args else child(args)))
        return

    rows = []
    ratios = []
    peaks: dict[tuple[str, str], list[float]] = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        for size in sorted(options.sizes):
            ortho = Path(folder) / f"ortho_{size}.tif"
            write_ortho(ortho, size)
            kinds = {"stacked": []}
            if options.assembled or options.multimodal:
                products = Path(folder) / f"products_{size}"
                products.mkdir()
                sources = write_products(ortho, products)
            if options.assembled:
                kinds["assembled"] = [f"detect.inputs.{kind}={json.dumps(path)}" for kind, path in sources.items()]
            if options.multimodal:
                kinds["multimodal"] = [
                    *HUB_NETWORKS["tiny"],
                    HUB_MODALITIES,
                    f"detect.sentinel2={json.dumps(str(write_series(ortho, products)))}",
                    *(f"detect.inputs.{kind}={json.dumps(sources[kind])}" for kind in ("dsm", "dtm")),
                ]
            for mode, (kind, extra) in itertools.product(options.modes, kinds.items()):
                output = Path(folder) / f"map_{size}_{mode}_{kind}.tif"
                args = {
                    "input": None if kind == "assembled" else str(ortho),
                    "output": str(output),
                    "mode": mode,
                    "device": options.device,
                    "overrides": [*options.set, *extra],
                    "network": options.network,
                }
                result = run_detection(args)
                for written in Path(folder).glob(f"{output.stem}*"):
                    written.unlink()
                speed = result["km2"] / result["seconds"] * 3600
                peaks.setdefault((mode, kind), []).append(result["peak_rss_mb"])
                rows.append(
                    [
                        f"{size}x{size}",
                        f"{result['km2']:.3f}",
                        mode,
                        result["backend"],
                        result["blocks"],
                        result["tile"],
                        result["tiles"],
                        f"{result['seconds']:.1f}",
                        f"{result['tiles'] / result['seconds']:.2f}",
                        f"{speed:.3f}",
                        f"{result['peak_rss_mb']:.0f}",
                        f"{FRANCE_KM2 / speed / 24:,.0f}",
                        kind,
                    ]
                )
                print(" | ".join(str(v) for v in rows[-1]), flush=True)
            if options.assembled and size == min(options.sizes):
                timed = {kind: kinds[kind] for kind in ("stacked", "assembled")}
                for mode in options.modes:
                    args = {
                        "input": str(ortho),
                        "output": str(Path(folder) / "ratio.tif"),
                        "mode": mode,
                        "device": options.device,
                        "overrides": options.set,
                        "network": options.network,
                        "kinds": timed,
                        "repeats": options.repeats,
                    }
                    best = run_in_child(__file__, args, f"assembled / stacked timing ({mode})")
                    ratios.append(
                        f"{size} px {mode}: {best['assembled']:.1f} s / {best['stacked']:.1f} s = "
                        f"{best['assembled'] / best['stacked']:.2f}"
                    )
                    print(ratios[-1], flush=True)
            for written in Path(folder).iterdir():
                if written.is_dir():
                    shutil.rmtree(written)
                else:
                    written.unlink()
    header = ["raster", "km²", "stitching", "network", "blocks", "tile (px)", "tiles", "time (s)", "tiles/s", "km²/h"]
    header.append("peak RSS (MB)")
    header.append("France (days, 1 device)")
    header.append("input")
    settings = ", ".join(options.set) or "none (defaults)"
    network = (
        "a 1x1 convolution (tiny network), 5 bands, 19 logits"
        if options.network == "tiny"
        else "U-Net ResNet34, 5 bands, 19 logits"
    )
    if options.multimodal:
        network += (
            "; multimodal: flairhub-LC-D with the test suite's tiny FLAIR-HUB network on AERIAL_RGBI, DEM_ELEV "
            f"(DSM and DTM files) and SENTINEL2_TS ({SERIES_DATES} dates with cloud masks, detect.sentinel2)"
        )
    notes = (
        f"{network}, random weights; config overrides: {settings}; device "
        f"{options.device}. Time covers reading, inference, stitching and writing "
        "the LZW GeoTIFF. France = 550,000 km² at 0.2 m, extrapolated linearly from this run. "
        f"Load average (1 min) {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end: "
        "other work on the machine slows these figures down."
    )
    if len(options.sizes) > 1:
        growth = [f"{mode} {kind} {100 * (values[-1] / values[0] - 1):+.0f}%" for (mode, kind), values in peaks.items()]
        notes += f" Peak RSS growth from {min(options.sizes)} to {max(options.sizes)} px: {', '.join(growth)}."
    if ratios:
        notes += (
            " assembled: the same pixels from separate RVB, IRC, DSM and DTM files (detect.inputs, warped on the "
            f"fly); best of {options.repeats} alternating runs in one process after one untimed run of each, "
            f"time assembled / stacked: {'; '.join(ratios)}."
        )
    record("Zone detection (flair detect)", markdown_table(header, rows), notes, write=options.record)


if __name__ == "__main__":
    main()
