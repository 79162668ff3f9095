"""Training data throughput: FLAIR patches read from GeoTIFF, normalised and augmented, per loader setting.

python benchmarks/bench_data.py [--size 512] [--patches 40] [--batch 10] [--workers 0 1] [--epochs 3] [--record]

A synthetic world (``flairkit.synth``, FLAIR layout, 5-band uint8 LZW patches and masks) is read through
``FlairDataModule``'s train loader (``PatchDataset``, ``EpochShuffleSampler``, ``collate_patches``) and every batch
is turned into model inputs as the training task does: ``Normalizer`` then ``augment_batch`` (hflip, vflip,
rot90 at the config's probability). Each loader setting is timed over whole epochs (best epoch kept, the first
one included in the count, so that starting the worker processes is not hidden). The stage columns time the
steps on their own, in the main process: reading + collating a batch, normalising it, augmenting it, and
augmenting the uint8 batch before normalising (the same result, as flips commute with a per-channel affine map).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from common import add_record_option, best_of, markdown_table, record


def make_world(folder: Path, size: int, patches: int) -> Path:
    """A one-area synthetic world of ``patches`` patches of ``size`` px; returns its train CSV list."""
    from flairkit.synth.world import SynthOptions, synthesize_world

    options = SynthOptions(
        n_domains=1,
        test_domains=0,
        val_domains=0,
        areas_per_domain=1,
        patches_per_area=patches,
        patch_size=size,
        sentinel=False,
        n_orthos=0,
    )
    return synthesize_world(folder / "world", options).csv["train"]


def loader_config(csv: Path, batch: int, workers: int):
    """The default training config on the world's list with ``workers`` loader processes."""
    from flairkit.config import load_config

    overrides = [
        f"data.train_csv={csv}",
        f"data.val_csv={csv}",
        f"data.batch_size={batch}",
        f"data.num_workers={workers}",
        "data.metadata=false",
        "model.encoder_weights=null",
    ]
    return load_config(None, overrides)


def epoch_rates(config, epochs: int) -> tuple[float, float]:
    """Patches/s of the first and of the best epoch: read, normalise and augment every batch."""
    from flairkit.data.datamodule import FlairDataModule
    from flairkit.data.transforms import Normalizer, augment_batch

    data = FlairDataModule(config)
    data.setup("fit")
    loader = data.train_dataloader()
    normalizer = Normalizer.from_config(config.data.normalization)
    generator = torch.Generator().manual_seed(0)
    probability = config.data.augmentation_probability
    rates = []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        start, count = time.perf_counter(), 0
        for batch in loader:
            images, _ = augment_batch(normalizer(batch["image"]), batch["target"], probability, generator)
            count += len(images)
        rates.append(count / (time.perf_counter() - start))
    del loader
    return rates[0], max(rates)


def stage_seconds(config, repeats: int) -> dict[str, float]:
    """Seconds per batch of each stage alone, in the main process."""
    from flairkit.data.datamodule import FlairDataModule
    from flairkit.data.datasets import collate_patches
    from flairkit.data.transforms import Normalizer, augment_batch

    data = FlairDataModule(config)
    data.setup("fit")
    dataset = data.datasets["train"]
    indices = range(config.data.batch_size)
    normalizer = Normalizer.from_config(config.data.normalization)
    probability = config.data.augmentation_probability
    batch = collate_patches([dataset[i] for i in indices])
    images, targets = batch["image"], batch["target"]
    normalised = normalizer(images)

    def augment_float() -> None:
        augment_batch(normalised, targets, probability, torch.Generator().manual_seed(0))

    def augment_then_normalise() -> None:
        normalizer(augment_batch(images, targets, probability, torch.Generator().manual_seed(0))[0])

    return {
        "read": best_of(lambda: collate_patches([dataset[i] for i in indices]), repeats=repeats),
        "normalise": best_of(lambda: normalizer(images), repeats=repeats),
        "augment": best_of(augment_float, repeats=repeats),
        "uint8 augment + normalise": best_of(augment_then_normalise, repeats=repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="patch side in pixels")
    parser.add_argument("--patches", type=int, default=40, help="patches in the world (one epoch)")
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1], help="loader processes to compare")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each stage")
    add_record_option(parser)
    options = parser.parse_args()
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="flairkit-bench-data-") as tmp:
        csv = make_world(Path(tmp), options.size, options.patches)
        stages = stage_seconds(loader_config(csv, options.batch, 0), options.repeats)
        for workers in options.workers:
            first, best = epoch_rates(loader_config(csv, options.batch, workers), options.epochs)
            rows.append([workers, f"{first:.1f}", f"{best:.1f}"])
            print(" | ".join(str(v) for v in rows[-1]), flush=True)
    loader_table = markdown_table(["num_workers", "first epoch patches/s", "best epoch patches/s"], rows)
    stage_rows = [[name, f"{1000 * s:.0f}", f"{options.batch / s:.1f}"] for name, s in stages.items()]
    stage_table = markdown_table(["stage (main process)", "ms per batch", "patches/s"], stage_rows)
    notes = (
        f"{options.patches} synthetic patches of {options.size} px (5 bands uint8 + mask, LZW GeoTIFF), batch "
        f"{options.batch}, {options.epochs} epochs per setting, read + Normalizer + augment_batch (p=0.5) per batch; "
        f"stages: best of {options.repeats}."
    )
    notes += f" 1-min load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after."
    record("Training data loading", loader_table + "\n\n" + stage_table, notes, write=options.record)


if __name__ == "__main__":
    main()
