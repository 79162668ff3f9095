"""Shared fixtures: tiny synthetic FLAIR worlds, made once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from flairkit.config import load_config
from flairkit.synth.hub import HubSynthOptions, synthesize_hub_world
from flairkit.synth.world import SynthOptions, synthesize_world

# The benchmarks folder is not a package: its tiny FLAIR-HUB network is the one the tests build too.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from bench_hub_loader import NETWORKS

# Tiny tensors: one thread avoids OpenMP spin-waiting on the 2 shared cores.
torch.set_num_threads(1)

TINY_PATCH = 32


TINY_WORLD = SynthOptions(
    n_domains=4,
    areas_per_domain=2,
    patches_per_area=4,
    patch_size=TINY_PATCH,
    seed=7,
    sentinel=True,
    sat_patch_size=16,
    n_orthos=1,
    ortho_size=160,
)
"""A FLAIR #2-layout world: 4 domains (2 train, 1 val, 1 test), 32 px patches, Sentinel-2, one orthophoto."""


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """The ``TINY_WORLD``, written once per session."""
    root = tmp_path_factory.mktemp("world") / "flair"
    synthesize_world(root, TINY_WORLD)
    return root


def tiny_config(world: Path, run_root: Path, *overrides: str):
    """A fast CPU training config on ``world`` writing under ``run_root``."""
    return load_config(
        "demo",
        [
            f"data.root={world}",
            f"output_dir={run_root}",
            "model.encoder=resnet18",
            "model.encoder_weights=null",
            "data.batch_size=2",
            "data.num_workers=0",
            "train.max_epochs=2",
            "train.accelerator=cpu",
            "train.devices=1",
            "train.lr=0.001",
            "evaluate.batch_size=4",
            *overrides,
        ],
    )


TINY_HUB_NETWORK = NETWORKS["tiny"]
"""Overrides that shrink any FLAIR-HUB preset's network (model.hub) to a tiny one built in milliseconds."""

TINY_UTAE = {
    "encoder_widths": [16, 16, 32, 32],
    "decoder_widths": [16, 16, 32, 32],
    "out_conv": [8, 13],
    "n_head": 4,
    "d_model": 32,
    "d_k": 4,
}
"""A U-TAE (model.utae) small enough for U-T&T tests on 13 classes."""


@pytest.fixture(scope="session")
def hub_world(tmp_path_factory) -> Path:
    """A tiny synthetic FLAIR-HUB world (3 domains, 256 px patches), written once per session."""
    root = tmp_path_factory.mktemp("hub") / "FLAIR-HUB"
    synthesize_hub_world(root, HubSynthOptions(n_domains=3, areas_per_domain=1, patches_per_area=2, patch_size=256))
    return root
