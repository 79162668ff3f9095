"""Cost of test-time augmentation and ensembles: time per patch of ``flair predict``'s forward step.

python benchmarks/bench_tta.py [--size 128] [--batch 4] [--encoder resnet18] [--models 1 2]
                               [--tta none flips d4] [--repeats 3] [--threads N] [--record]

Each row times :class:`flairkit.models.inference.Predictor` (normalise, forward passes, probabilities averaged,
masked argmax) on one batch of random ``--size`` px patches of the demo preset's bands and nomenclature, in
float32 on the CPU, with ``--models`` copies of an untrained U-Net (the same cost as distinct checkpoints).
"""

from __future__ import annotations

import argparse
import time

import torch

from common import add_record_option, markdown_table, record
from flairkit.config import load_config
from flairkit.models.build import build_model
from flairkit.models.inference import TTA_TRANSFORMS, Predictor


def time_per_patch(predictor: Predictor, batch: dict, repeats: int) -> tuple[float, float]:
    """Wall and CPU seconds per patch of ``predictor`` on ``batch``, each the best of ``repeats`` calls after one
    warm-up (CPU time is what other processes on a shared machine change least)."""
    with torch.inference_mode():
        prepared = predictor.prepare(batch)
        predictor.classes(prepared)
        wall, cpu = [], []
        for _ in range(repeats):
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            predictor.classes(prepared)
            wall.append(time.perf_counter() - start_wall)
            cpu.append(time.process_time() - start_cpu)
    return min(wall) / len(batch["image"]), min(cpu) / len(batch["image"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="patch side in pixels")
    parser.add_argument("--batch", type=int, default=4, help="patches per batch")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--models", type=int, nargs="+", default=[1, 2], help="ensemble sizes")
    parser.add_argument("--tta", nargs="+", default=list(TTA_TRANSFORMS), choices=list(TTA_TRANSFORMS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    add_record_option(parser)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    config = load_config("demo", [f"model.encoder={args.encoder}", "model.encoder_weights=null"])
    torch.manual_seed(0)
    model = build_model(config, pretrained_encoder=False).eval()
    batch = {"image": torch.randint(0, 256, (args.batch, len(config.data.channels), args.size, args.size))}
    batch["image"] = batch["image"].to(torch.uint8)
    device = torch.device("cpu")
    rows, single = [], None
    for models in args.models:
        for tta in args.tta:
            predictor = Predictor(config, [model] * models, device, tta=tta)
            wall, cpu = time_per_patch(predictor, batch, args.repeats)
            single = single or cpu
            passes = len(TTA_TRANSFORMS[tta]) * models
            rows.append([tta, models, passes, f"{1000 * wall:.1f}", f"{1000 * cpu:.1f}", f"{cpu / single:.2f}x"])
    header = ["tta", "models", "forward passes per patch", "wall ms per patch", "CPU ms per patch", "CPU vs one pass"]
    table = markdown_table(header, rows)
    notes = (
        f"U-Net {args.encoder}, {args.size}x{args.size} px patches of {len(config.data.channels)} bands in batches "
        f"of {args.batch}, float32 on the CPU, {torch.get_num_threads()} torch thread(s). The CPU time grows in "
        "proportion to the forward passes (a little less: normalisation and argmax run once per batch); wall times "
        "depend on what else the machine runs."
    )
    record("Test-time augmentation and ensembles", table, notes, write=args.record)


if __name__ == "__main__":
    main()
