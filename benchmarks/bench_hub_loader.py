"""FLAIR-HUB data loading against the training step: does a six-modality loader keep up with the network?

python benchmarks/bench_hub_loader.py [--size 512] [--patches 16] [--batch 4] [--workers 0 1 2] [--epochs 3]
    [--networks reduced tiny] [--steps 2] [--quick] [--record]

A synthetic FLAIR-HUB world (``flairkit.synth.hub``, 3 domains of one ROI of ``--patches`` patches each) is read
with the preset ``flairhub-LC-L`` (AERIAL_RGBI, DEM_ELEV as [DSM, DSM - DTM], SPOT_RGBI, SENTINEL2_TS with cloud
filtering, SENTINEL1-ASC_TS, SENTINEL1-DESC_TS, COSIA labels) through the training loader,
``HubDataModule.loader("train")`` (``HubDataset``, ``EpochShuffleSampler``, ``collate_hub``), for each
``--workers`` setting, over whole epochs of the train split (best epoch kept; the first, which starts the worker
processes, shown too). The step is the LC-L network (``flairhub-LC-L``: one encoder per single-date modality,
one U-TAE per series, stage fusion, UPerNet) at a reduced size, trained on one batch of the same loader:
``normalize_batch``, forward, cross-entropy, backward, AdamW step (best of ``--steps`` after one warm-up step).
Network sizes: ``reduced`` swaps IGN's Swin-B encoders for smp's resnet18 and keeps IGN's decoder and U-TAE
widths; ``tiny`` is the test suite's (timm's test_convnext, 16/8-wide UPerNet, 4..8-wide U-TAE). The loader
starves training when its patches/s is below the step's.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from common import add_record_option, best_of, markdown_table, record

PRESET = "flairhub-LC-L"
NETWORKS = {
    "reduced": ("model.hub.encoder=resnet18",),
    "tiny": (
        "model.hub.encoder=test_convnext",
        "model.hub.pyramid_channels=16",
        "model.hub.segmentation_channels=8",
        "model.hub.decoder_channels=[8,8,4,4,4]",
        "model.hub.utae.encoder_widths=[4,4,4,8]",
        "model.hub.utae.decoder_widths=[4,4,4,8]",
        "model.hub.utae.out_conv=[8,19]",
        "model.hub.utae.n_head=4",
        "model.hub.utae.d_model=8",
    ),
}
"""Overrides of the preset per network size (``tiny``: also the test suite's, tests/conftest.py, and the multimodal
network of bench_detection.py)."""


def make_world(folder: Path, size: int, patches: int) -> Path:
    """A synthetic FLAIR-HUB world whose train, valid and test splits hold ``patches`` patches of ``size`` px."""
    from flairkit.synth.hub import HubSynthOptions, synthesize_hub_world

    options = HubSynthOptions(n_domains=3, areas_per_domain=1, patches_per_area=patches, patch_size=size)
    return synthesize_hub_world(folder / "FLAIR-HUB", options).root


def hub_config(root: Path, batch: int, workers: int, network: tuple[str, ...] = ()):
    """The LC-L preset on the world, ``workers`` loader processes, ``network`` overrides."""
    from flairkit.config import load_config

    overrides = [f"data.hub.root={root}", f"data.batch_size={batch}", f"data.num_workers={workers}", *network]
    return load_config(PRESET, overrides)


def train_loader(config):
    """The training loader of ``config``, as ``flair train`` builds it."""
    from flairkit.data.hub.multimodal import HubDataModule

    return HubDataModule(config).loader("train", shuffle=True, batch_size=config.data.batch_size)


def epoch_rates(config, epochs: int) -> tuple[float, float, int]:
    """Patches/s of the first and of the best epoch, and the patches of an epoch."""
    loader = train_loader(config)
    rates, count = [], 0
    for _ in range(epochs):
        start, count = time.perf_counter(), 0
        for batch in loader:
            count += len(batch["patch_id"])
        rates.append(count / (time.perf_counter() - start))
    return rates[0], max(rates), count


def step_seconds(config, steps: int) -> tuple[float, float]:
    """Seconds of the best training step on one loader batch, and the network's parameters (millions)."""
    from flairkit.models.build import build_model
    from flairkit.models.hub import normalization, normalize_batch

    torch.manual_seed(0)
    batch = next(iter(train_loader(config)))
    network = build_model(config, pretrained_encoder=False).train()
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-4)
    statistics, tasks = normalization(config), config.data.hub.labels

    def step() -> None:
        scores = network(normalize_batch(batch, statistics))
        loss = sum(torch.nn.functional.cross_entropy(scores[t], batch[t].long(), ignore_index=255) for t in tasks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    parameters = sum(p.numel() for p in network.parameters()) / 1e6
    return best_of(step, repeats=steps, warmup=1), parameters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="aerial patch side in pixels (a multiple of 256)")
    parser.add_argument("--patches", type=int, default=16, help="patches of the train split (one epoch)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="loader processes to compare")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--networks", nargs="+", choices=sorted(NETWORKS), default=["reduced", "tiny"])
    parser.add_argument("--steps", type=int, default=2, help="timed training steps per network (after 1 warm-up)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 256 px, 2 patches, batch 2, workers 0 1, 1 epoch, tiny"
    )
    add_record_option(parser)
    options = parser.parse_args()
    if options.quick:
        options.size, options.patches, options.batch, options.workers = 256, 2, 2, [0, 1]
        options.epochs, options.networks, options.steps = 1, ["tiny"], 1
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="flairkit-bench-hub-loader-") as tmp:
        root = make_world(Path(tmp), options.size, options.patches)
        loader_rows, best_loader = [], 0.0
        for workers in options.workers:
            first, best, count = epoch_rates(hub_config(root, options.batch, workers), options.epochs)
            best_loader = max(best_loader, best)
            loader_rows.append([workers, f"{first:.2f}", f"{best:.2f}"])
            print(" | ".join(str(v) for v in loader_rows[-1]), flush=True)
        step_rows = []
        for name in options.networks:
            seconds, parameters = step_seconds(hub_config(root, options.batch, 0, NETWORKS[name]), options.steps)
            rate = options.batch / seconds
            step_rows.append([name, f"{parameters:.1f}", f"{seconds:.2f}", f"{rate:.3f}", f"{best_loader / rate:.1f}x"])
            print(" | ".join(str(v) for v in step_rows[-1]), flush=True)
    loader_table = markdown_table(["num_workers", "first epoch patches/s", "best epoch patches/s"], loader_rows)
    step_table = markdown_table(
        ["LC-L network", "parameters (M)", "s per step", "patches/s", "best loader / step"], step_rows
    )
    notes = (
        f"Synthetic FLAIR-HUB world, preset {PRESET}: {count} train patches of {options.size} px, batch "
        f"{options.batch}, six modalities + COSIA labels, {options.epochs} epoch(s) per loader setting; training "
        f"step on the CPU, best of {options.steps} after 1 warm-up. The CPU is shared with other work: 1-min load "
        f"average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after ({os.cpu_count()} cores)."
    )
    record("FLAIR-HUB data loading", loader_table + "\n\n" + step_table, notes, write=options.record)


if __name__ == "__main__":
    main()
