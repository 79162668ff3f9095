"""`flair train` throughput end to end, and how busy the device is, per precision and compile setting.

python benchmarks/bench_training.py [--device cpu] [--precisions 32 bf16-mixed] [--compile] [--channels-last]
                                    [--devices 1] [--size 512] [--batch 10] [--workers N] [--warmup 2] [--steps 5]
                                    [--record]

Each setting runs ``flairkit.training.run.train`` (the function behind ``flair train``: Lightning loop,
loader worker processes, uint8 batches normalised and augmented on the device) on a synthetic world, in a
fresh process, with a U-Net ResNet34 (5 bands) from random weights. A callback times every step after
``--warmup`` untimed ones: *wait* runs from the end of one step to the start of the next (the loop fetching
the batch from the workers and moving it to the device), *step* from there to the end of the optimiser
step (on a GPU, synchronised). Busy = step / (step + wait): the share of the time the device computes
rather than waits for data (the target on a GPU host is 90% or more). Patches/s counts both, over all
devices: with ``--devices 2`` or more, DDP, ``--batch`` per device, figures of rank 0. Peak GPU memory is
``torch.cuda.max_memory_allocated`` in that process.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from common import add_record_option, markdown_table, record, run_in_child


def child(args: dict) -> dict:
    """One training run with the timing callback: mean step and wait seconds over the timed steps, patches/s,
    busy share (%), peak GPU memory (MiB, None on the CPU) and the rank of this process."""
    import lightning as L
    import torch

    from flairkit.config import load_config
    from flairkit.data.datamodule import default_num_workers
    from flairkit.training.run import train

    class StepTimer(L.Callback):
        def __init__(self, warmup: int):
            self.warmup, self.steps, self.waits, self._start, self._end = warmup, [], [], None, None
            self.rank = 0

        def on_train_start(self, trainer, module) -> None:
            self.rank = trainer.global_rank

        def _sync(self, module: L.LightningModule) -> None:
            if module.device.type == "cuda":
                torch.cuda.synchronize(module.device)

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            self._sync(module)
            self._start = time.perf_counter()
            if self._end is not None and batch_idx >= self.warmup:
                self.waits.append(self._start - self._end)

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            self._sync(module)
            self._end = time.perf_counter()
            if batch_idx >= self.warmup:
                self.steps.append(self._end - self._start)

    steps = args["warmup"] + args["steps"]
    overrides = [
        f"data.train_csv={args['csv']}",
        f"data.val_csv={args['csv']}",
        f"data.batch_size={args['batch']}",
        "model.encoder_weights=null",
        f"train.accelerator={'gpu' if args['device'] == 'cuda' else 'cpu'}",
        f"train.devices={args['devices']}",
        f"train.strategy={'ddp' if args['devices'] > 1 else 'auto'}",
        f"train.channels_last={str(args['channels_last']).lower()}",
        f"train.precision={args['precision']}",
        f"train.compile={str(args['compile']).lower()}",
        "train.max_epochs=1",
        f"train.limit_train_batches={steps}",
        "train.limit_val_batches=1",
        f"output_dir={args['out']}",
    ]
    if args["workers"] is not None:
        overrides.append(f"data.num_workers={args['workers']}")
    config = load_config(None, overrides)
    timer = StepTimer(args["warmup"])
    train(config, progress=False, callbacks=[timer])
    step = sum(timer.steps) / len(timer.steps)
    wait = sum(timer.waits) / len(timer.waits) if timer.waits else 0.0
    return {
        "step_s": step,
        "wait_s": wait,
        "patches_per_s": args["devices"] * args["batch"] / (step + wait),
        "busy_percent": 100 * step / (step + wait),
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if args["device"] == "cuda" else None,
        "workers": default_num_workers() if config.data.num_workers is None else config.data.num_workers,
        "timed_steps": len(timer.steps),
        "rank": timer.rank,
    }


def run_training(args: dict) -> dict:
    """:func:`child` in a fresh interpreter (DDP ranks are started by Lightning); the figures of rank 0."""
    what = f"training run ({args['precision']}, compile={args['compile']}, {args['devices']} device(s))"
    return run_in_child(__file__, args, what)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precisions", nargs="+", default=["32"], choices=["32", "bf16-mixed", "16-mixed"])
    parser.add_argument("--compile", action="store_true", help="also run each precision under torch.compile")
    parser.add_argument("--channels-last", action="store_true", help="train.channels_last=true in every run")
    parser.add_argument("--devices", type=int, default=1, help="devices per run (2 or more: DDP)")
    parser.add_argument("--size", type=int, default=512, help="patch side in pixels")
    parser.add_argument("--batch", type=int, default=10, help="patches per step and device")
    parser.add_argument("--workers", type=int, help="loader processes (default: flairkit's, min(cores - 1, 8))")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation, caches)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    add_record_option(parser)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        figures = child(json.loads(options.child))
        if figures["rank"] == 0:
            print(json.dumps(figures))
        return
    from bench_data import make_world

    load_before = os.getloadavg()[0]
    patches = options.devices * options.batch * (options.warmup + options.steps)
    layout = "channels_last" if options.channels_last else "NCHW"
    rows = []
    with tempfile.TemporaryDirectory(prefix="flairkit-bench-training-") as tmp:
        csv = make_world(Path(tmp), options.size, patches)
        for precision in options.precisions:
            for compiled in [False, True] if options.compile else [False]:
                args = {
                    "csv": str(csv),
                    "batch": options.batch,
                    "device": options.device,
                    "devices": options.devices,
                    "precision": precision,
                    "compile": compiled,
                    "channels_last": options.channels_last,
                    "workers": options.workers,
                    "warmup": options.warmup,
                    "steps": options.steps,
                    "out": str(Path(tmp) / f"runs-{precision}-{compiled}"),
                }
                figures = run_training(args)
                peak = figures["peak_gpu_mib"]
                rows.append(
                    [
                        options.device,
                        options.devices,
                        precision,
                        layout,
                        "yes" if compiled else "no",
                        figures["workers"],
                        f"{figures['patches_per_s']:.3f}",
                        f"{1000 * figures['step_s']:.0f}",
                        f"{1000 * figures['wait_s']:.0f}",
                        f"{figures['busy_percent']:.1f}",
                        "-" if peak is None else f"{peak:.0f}",
                    ]
                )
                print(" | ".join(str(v) for v in rows[-1]), flush=True)
    header = ["device", "devices", "precision", "layout", "compiled", "loader workers", "patches/s", "step (ms)"]
    header += ["wait (ms)", "busy (%)", "peak GPU memory (MiB)"]
    notes = (
        f"`flair train` (flairkit.training.run.train) on {patches} synthetic patches of {options.size} px, U-Net "
        f"ResNet34, 5 bands, batch {options.batch} per device, random weights, SGD; mean of {options.steps} steps "
        f"after {options.warmup} untimed ones, each setting in its own process."
        f" 1-min load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after."
    )
    record("Training throughput and device busy share", markdown_table(header, rows), notes, options.record)


if __name__ == "__main__":
    main()
