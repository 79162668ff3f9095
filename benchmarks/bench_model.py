"""Training-step and inference throughput of a FLAIR U-Net, and the share of the machine's matmul peak.

python benchmarks/bench_model.py [--size 512] [--batch 10] [--channels-last] [--no-write]
"""

from __future__ import annotations

import argparse

import torch

from common import best_of, markdown_table, record
from flairkit.config import load_config
from flairkit.models.factory import build_aerial_model
from flairkit.nomenclature import get_nomenclature
from flairkit.training.losses import aerial_class_weights, weighted_cross_entropy


def matmul_peak_flops(n: int = 2048, repeats: int = 5) -> float:
    """Measured fp32 matmul FLOP/s of this machine (the reference for the inference efficiency)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    seconds = best_of(lambda: a @ b, repeats=repeats)
    return 2 * n**3 / seconds


def model_flops(model: torch.nn.Module, shape: tuple[int, ...]) -> float:
    """Forward FLOPs of one batch counted by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.rand(shape))
    return float(counter.get_total_flops())


def measure(config, shape, criterion, channels_last: bool, repeats: int) -> tuple[float, float, float]:
    """Seconds per training step, seconds per inference batch and forward FLOPs of one batch."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_aerial_model(config, pretrained_encoder=False).to(memory_format=fmt)
    images = torch.rand(shape).contiguous(memory_format=fmt)
    targets = torch.randint(0, 19, (shape[0], shape[2], shape[3]))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        criterion(model(images), targets).backward()
        optimizer.step()

    model.train()
    train_s = best_of(step, repeats=repeats)
    model.eval()
    with torch.inference_mode():
        infer_s = best_of(lambda: model(images), repeats=repeats)
    return train_s, infer_s, model_flops(model, shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--encoder", default="resnet34")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    config = load_config(None, [f"model.encoder={args.encoder}", "model.encoder_weights=null"])
    shape = (args.batch, 5, args.size, args.size)
    weights = aerial_class_weights(get_nomenclature(config.data.nomenclature))
    criterion = weighted_cross_entropy(weights)
    rows = []
    peak = matmul_peak_flops()
    for channels_last in (False, True):
        train_s, infer_s, flops = measure(config, shape, criterion, channels_last, args.repeats)
        rows.append(
            [
                "channels_last" if channels_last else "NCHW",
                f"{args.batch / train_s:.2f}",
                f"{args.batch / infer_s:.2f}",
                f"{flops / infer_s / 1e9:.1f}",
                f"{100 * flops / infer_s / peak:.0f}%",
            ]
        )
    table = markdown_table(
        ["layout", "train patches/s", "inference patches/s", "inference GFLOP/s", "share of matmul peak"], rows
    )
    notes = (
        f"U-Net {args.encoder}, 5 bands, {args.size} px, batch {args.batch}, fp32, CPU. "
        f"Measured fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s (2048x2048 matmul)."
    )
    record("Training step and inference", table, notes, write=not args.no_write)


if __name__ == "__main__":
    main()
