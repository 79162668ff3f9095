"""Training-step and inference throughput of a FLAIR U-Net, and the share of the machine's matmul peak.

python benchmarks/bench_model.py [--size 512] [--batch 10] [--infer-batch 4] [--encoder resnet34] [--repeats 3]
                                 [--backends nchw channels_last frozen onnx] [--no-train] [--record]

Backends: ``nchw`` and ``channels_last`` are the eager model in each memory format (training step =
forward, weighted cross entropy, backward, SGD step, freed memory retained as ``flair train`` does);
``folded`` is the channels_last model with its BatchNorm folded into the convolutions (``flair detect``
with ``detect.backend=torch``; inference only); ``onnx`` is the model exported for any tile size and run
by ONNX Runtime's CPU provider, as many threads as torch (``flair detect`` on CPU by default; inference
only). Inference runs batches of ``--infer-batch``
tiles. The share of the peak is the convolution FLOPs of a forward pass (torch's FLOP counter) per second,
over the best fp32 FLOP/s of square matrix products of 1024, 2048 and 4096 (as matmuls and as 1x1
convolutions) measured in the same run.
"""

from __future__ import annotations

import argparse
import copy
import os
from collections.abc import Callable

import torch

from common import add_record_option, best_of, markdown_table, record
from flairkit.allocator import retained_freed_memory
from flairkit.config import load_config
from flairkit.models.factory import build_aerial_model
from flairkit.models.inference import fold_batchnorm
from flairkit.models.onnx import onnx_runtime_model
from flairkit.nomenclature import get_nomenclature
from flairkit.training.losses import aerial_class_weights, weighted_cross_entropy

BACKENDS = ("nchw", "channels_last", "folded", "onnx")
TRAINABLE = ("nchw", "channels_last")


def matmul_peak_flops(sizes: tuple[int, ...] = (1024, 2048, 4096), repeats: int = 5) -> float:
    """Best measured fp32 GEMM FLOP/s of this machine (the reference for inference efficiency).

    The best of square matmuls (torch's BLAS, MKL in the pip wheels) and of the same products run as 1x1
    convolutions (oneDNN, the library of torch's CPU convolutions): on AMD processors MKL takes a slower path,
    so the matmul alone would understate what the machine does.
    """
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        best = max(best, 2 * n**3 / best_of(lambda a=a, b=b: a @ b, repeats=repeats))
        conv = torch.nn.Conv2d(n, n, 1, bias=False).to(memory_format=torch.channels_last)
        image = torch.randn(1, n, n // 32, 32).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            best = max(best, 2 * n**3 / best_of(lambda conv=conv, image=image: conv(image), repeats=repeats))
    return best


def model_flops(model: torch.nn.Module, shape: tuple[int, ...]) -> float:
    """Forward FLOPs of one batch counted by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.rand(shape))
    return float(counter.get_total_flops())


def train_seconds(
    model: torch.nn.Module,
    shape: tuple[int, ...],
    criterion,
    channels_last: bool,
    repeats: int,
    retain_freed_memory: bool,
) -> float:
    """Seconds per training step (forward, loss, backward, SGD) of a batch of ``shape``."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = copy.deepcopy(model).to(memory_format=fmt).train()
    images = torch.rand(shape).contiguous(memory_format=fmt)
    targets = torch.randint(0, criterion.weight.numel(), (shape[0], shape[2], shape[3]))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        criterion(model(images), targets).backward()
        optimizer.step()

    with retained_freed_memory(retain_freed_memory):
        return best_of(step, repeats=repeats)


def inference_runner(backend: str, model: torch.nn.Module, shape: tuple[int, ...]) -> Callable[[], object]:
    """A call that predicts one batch of ``shape`` with ``backend``."""
    images = torch.rand(shape)
    model = copy.deepcopy(model).eval()
    if backend == "nchw":
        return lambda: model(images)
    if backend == "onnx":
        segmenter = onnx_runtime_model(model, shape[1], threads=torch.get_num_threads())
        if segmenter is None:
            raise SystemExit("the onnx backend needs onnx and onnxruntime: pip install 'flairkit[onnx]'")
        return lambda: segmenter(images)
    if backend == "folded":
        model = fold_batchnorm(model, torch.rand(1, *shape[1:]))
    model = model.to(memory_format=torch.channels_last)
    images = images.contiguous(memory_format=torch.channels_last)
    return lambda: model(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=10, help="training batch")
    parser.add_argument("--infer-batch", type=int, default=4, help="inference batch (tiles)")
    parser.add_argument("--encoder", default="resnet34")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--no-train", action="store_true", help="inference only")
    add_record_option(parser)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    config = load_config(None, [f"model.encoder={args.encoder}", "model.encoder_weights=null"])
    train_shape = (args.batch, len(config.data.channels), args.size, args.size)
    infer_shape = (args.infer_batch, *train_shape[1:])
    criterion = weighted_cross_entropy(aerial_class_weights(get_nomenclature(config.data.nomenclature)))
    torch.manual_seed(0)
    model = build_aerial_model(config, pretrained_encoder=False)
    flops = model_flops(model.eval(), infer_shape)
    peak = matmul_peak_flops()
    rows = []
    for backend in args.backends:
        train = "-"
        if backend in TRAINABLE and not args.no_train:
            seconds = train_seconds(
                model,
                train_shape,
                criterion,
                backend == "channels_last",
                args.repeats,
                config.train.retain_freed_memory,
            )
            train = f"{args.batch / seconds:.2f}"
        run = inference_runner(backend, model, infer_shape)
        with torch.inference_mode():
            infer_s = best_of(run, repeats=args.repeats)
        rows.append(
            [
                backend,
                train,
                f"{args.infer_batch / infer_s:.2f}",
                f"{flops / infer_s / 1e9:.1f}",
                f"{100 * flops / infer_s / peak:.0f}%",
            ]
        )
        print(" | ".join(rows[-1]), flush=True)
    table = markdown_table(
        ["backend", "train patches/s", "inference patches/s", "inference GFLOP/s", "share of matmul peak"], rows
    )
    notes = (
        f"U-Net {args.encoder}, 5 bands, 19 logits, {args.size} px, training batch {args.batch}, inference batch "
        f"{args.infer_batch}, fp32, CPU, best of {args.repeats}. Measured fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s "
        "(best of 1024, 2048, 4096 square products, matmul or 1x1 conv); forward pass: "
        f"{flops / args.infer_batch / 1e9:.1f} GFLOP per patch."
    )
    notes += f" 1-min load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after."
    record("Training step and inference", table, notes, write=args.record)


if __name__ == "__main__":
    main()
