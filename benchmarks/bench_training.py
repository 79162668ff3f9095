"""`flair train` throughput end to end, and how busy the device is, per precision and compile setting.

python benchmarks/bench_training.py [--device cpu] [--precisions 32 bf16-mixed] [--compile] [--size 512]
                                    [--batch 10] [--workers N] [--warmup 2] [--steps 5] [--no-write]

Each setting runs ``flairkit.training.run.train`` (the function behind ``flair train``: Lightning loop,
loader worker processes, uint8 batches normalised and augmented on the device) on a synthetic world, in a
fresh process, with a U-Net ResNet34 (5 bands) from random weights. A callback times every step after
``--warmup`` untimed ones: *wait* runs from the end of one step to the start of the next (the loop fetching
the batch from the workers and moving it to the device), *step* from there to the end of the optimiser
step (on a GPU, synchronised). Busy = step / (step + wait): the share of the time the device computes
rather than waits for data (the target on a GPU host is 90% or more). Patches/s counts both.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from common import markdown_table, record, run_in_child


def child(args: dict) -> dict:
    """One training run with the timing callback; mean step and wait seconds over the timed steps."""
    import lightning as L
    import torch

    from flairkit.config import load_config
    from flairkit.data.datamodule import default_num_workers
    from flairkit.training.run import train

    class StepTimer(L.Callback):
        def __init__(self, warmup: int):
            self.warmup, self.steps, self.waits, self._start, self._end = warmup, [], [], None, None

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
        "train.devices=1",
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
    return {
        "step_s": sum(timer.steps) / len(timer.steps),
        "wait_s": sum(timer.waits) / len(timer.waits) if timer.waits else 0.0,
        "workers": default_num_workers() if config.data.num_workers is None else config.data.num_workers,
        "timed_steps": len(timer.steps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precisions", nargs="+", default=["32"], choices=["32", "bf16-mixed", "16-mixed"])
    parser.add_argument("--compile", action="store_true", help="also run each precision under torch.compile")
    parser.add_argument("--size", type=int, default=512, help="patch side in pixels")
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--workers", type=int, help="loader processes (default: flairkit's, min(cores - 1, 8))")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation, caches)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--no-write", action="store_true", help="print only, do not append to BENCHMARKS.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        print(json.dumps(child(json.loads(options.child))))
        return
    from bench_data import make_world

    load_before = os.getloadavg()[0]
    patches = options.batch * (options.warmup + options.steps)
    rows = []
    with tempfile.TemporaryDirectory(prefix="flairkit-bench-training-") as tmp:
        csv = make_world(Path(tmp), options.size, patches)
        for precision in options.precisions:
            for compiled in [False, True] if options.compile else [False]:
                args = {
                    "csv": str(csv),
                    "batch": options.batch,
                    "device": options.device,
                    "precision": precision,
                    "compile": compiled,
                    "workers": options.workers,
                    "warmup": options.warmup,
                    "steps": options.steps,
                    "out": str(Path(tmp) / f"runs-{precision}-{compiled}"),
                }
                figures = run_in_child(__file__, args, f"training run ({precision}, compile={compiled})")
                step, wait = figures["step_s"], figures["wait_s"]
                rows.append(
                    [
                        options.device,
                        precision,
                        "yes" if compiled else "no",
                        figures["workers"],
                        f"{options.batch / (step + wait):.3f}",
                        f"{1000 * step:.0f}",
                        f"{1000 * wait:.0f}",
                        f"{100 * step / (step + wait):.1f}",
                    ]
                )
                print(" | ".join(str(v) for v in rows[-1]), flush=True)
    header = ["device", "precision", "compiled", "loader workers", "patches/s", "step (ms)", "wait (ms)", "busy (%)"]
    notes = (
        f"`flair train` (flairkit.training.run.train) on {patches} synthetic patches of {options.size} px, U-Net "
        f"ResNet34, 5 bands, batch {options.batch}, random weights, SGD; mean of {options.steps} steps after "
        f"{options.warmup} untimed ones, each setting in its own process."
        f" 1-min load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after."
    )
    record("Training throughput and device busy share", markdown_table(header, rows), notes, not options.no_write)


if __name__ == "__main__":
    main()
