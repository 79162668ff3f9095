"""Zone detection throughput (km²/h) and peak memory on synthetic orthophotos, margin and blend stitching.

python benchmarks/bench_detection.py [--sizes 2048 4096] [--modes margin blend] [--device cpu]
                                     [--set detect.tile_size=512 ...] [--assembled] [--record]

Each (size, mode) runs in its own process with a U-Net ResNet34, 5 bands, random weights (throughput does
not depend on the weights), the ``flair detect`` defaults unless ``--set`` overrides them (e.g.
``--set detect.tile_size=512 detect.fit_tiles=false detect.batch_size=4`` for flair-detect's tiling). Peak
RSS is the resident-memory high-water mark of that process while detecting (imports and model included).
``--assembled`` also maps the same area from separate RVB, IRC, DSM and DTM files (``detect.inputs``, warped on
the fly) and gives the time ratio assembled / stacked.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from common import add_record_option, markdown_table, record, run_in_child

FRANCE_KM2 = 550_000


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
    }
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as dst:
        for top in range(0, size, 512):
            rows = min(512, size - top)
            y, x = np.mgrid[top : top + rows, 0:size]
            bands = [np.sin(x / (40 + 7 * b)) * np.cos(y / (55 + 5 * b)) * 90 + 128 for b in range(5)]
            data = np.stack(bands) + rng.normal(0, 12, (5, rows, size))
            dst.write(np.clip(data, 0, 255).astype(np.uint8), window=Window(0, top, size, rows))


def write_products(ortho: Path, folder: Path) -> dict[str, str]:
    """RVB, IRC (NIR, R, G), DSM and DTM files whose assembly is the 5-band ``ortho``; the ``detect.inputs``."""
    import rasterio
    from rasterio.windows import Window

    from flairkit.data.assembly import ELEVATION_STEP

    with rasterio.open(ortho) as src:
        profile = src.profile
        products = {"rvb": (3, "uint8"), "irc": (3, "uint8"), "dsm": (1, "float32"), "dtm": (1, "float32")}
        outputs = {
            name: rasterio.open(folder / f"{name}.tif", "w", **(profile | {"count": count, "dtype": dtype}))
            for name, (count, dtype) in products.items()
        }
        for top in range(0, src.height, 512):
            window = Window(0, top, src.width, min(512, src.height - top))
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


def _vm_hwm_kb() -> int | None:
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def child(args: dict) -> dict:
    """One detection run (in a fresh process): seconds, throughput, tiles, peak RSS and peak GPU memory.

    The network has random weights (seed 0), or those of the state dict ``args["weights"]`` when given.
    """
    import torch

    from flairkit.config import load_config
    from flairkit.detection.run import detect
    from flairkit.models.factory import build_aerial_model
    from flairkit.models.loader import load_model

    config = load_config(
        "FLAIR-INC_rgbie_15cl_resnet34-unet",
        ["model.encoder_weights=null", f"detect.stitching={args['mode']}", *args["overrides"]],
    )
    torch.manual_seed(0)
    if args.get("weights"):
        model = load_model(config, args["weights"])
    else:
        model = build_aerial_model(config, pretrained_encoder=False)
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


def run_detection(args: dict) -> dict:
    """:func:`child` in a fresh interpreter. ``args``: input, output, mode, device, overrides [, weights]."""
    return run_in_child(__file__, args, f"detection run ({args['mode']}, {' '.join(args['overrides'])})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096], help="raster sides in pixels")
    parser.add_argument("--modes", nargs="+", default=["margin", "blend"], choices=["margin", "blend"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides (detect.*)")
    parser.add_argument(
        "--assembled", action="store_true", help="also map from separate RVB, IRC, DSM, DTM files (detect.inputs)"
    )
    add_record_option(parser)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        print(json.dumps(child(json.loads(options.child))))
        return

    rows = []
    ratios = []
    times: dict[str, float] = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        for size in options.sizes:
            ortho = Path(folder) / f"ortho_{size}.tif"
            write_ortho(ortho, size)
            kinds = {"stacked": []}
            if options.assembled:
                products = Path(folder) / f"products_{size}"
                products.mkdir()
                sources = write_products(ortho, products)
                kinds["assembled"] = [f"detect.inputs.{kind}={json.dumps(path)}" for kind, path in sources.items()]
            for mode, (kind, extra) in itertools.product(options.modes, kinds.items()):
                args = {
                    "input": str(ortho) if kind == "stacked" else None,
                    "output": str(Path(folder) / f"map_{size}_{mode}_{kind}.tif"),
                    "mode": mode,
                    "device": options.device,
                    "overrides": [*options.set, *extra],
                }
                result = run_detection(args)
                speed = result["km2"] / result["seconds"] * 3600
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
                times[kind] = result["seconds"]
                if kind == "assembled":
                    ratios.append(f"{size} px {mode}: {times['assembled'] / times['stacked']:.2f}")
                print(" | ".join(str(v) for v in rows[-1]), flush=True)
    header = ["raster", "km²", "stitching", "network", "blocks", "tile (px)", "tiles", "time (s)", "tiles/s", "km²/h"]
    header.append("peak RSS (MB)")
    header.append("France (days, 1 device)")
    header.append("input")
    settings = ", ".join(options.set) or "none (defaults)"
    notes = (
        f"U-Net ResNet34, 5 bands, 19 logits, random weights; config overrides: {settings}; device "
        f"{options.device}. Time covers reading, inference, stitching and writing "
        "the LZW GeoTIFF. France = 550,000 km² at 0.2 m, extrapolated linearly from this run. "
        f"Load average (1 min) {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end: "
        "other work on the machine slows these figures down."
    )
    if ratios:
        notes += (
            " assembled: the same pixels from separate RVB, IRC, DSM and DTM files (detect.inputs, warped on the "
            f"fly); time assembled / stacked: {', '.join(ratios)}."
        )
    record("Zone detection (flair detect)", markdown_table(header, rows), notes, write=options.record)


if __name__ == "__main__":
    main()
