"""Writes the fixtures of IGN's HuggingFace-provider FLAIR-1 model that tests/test_huggingface.py loads in flairkit.

This file imports nothing from flairkit. Run it with the Python of an environment holding IGN's pinned
transformers (``transformers<=4.50.3`` in IGNF/FLAIR-1's setup.py) and torch, in a checkout of IGNF/FLAIR-1::

    python3.11 -m venv /tmp/ign && /tmp/ign/bin/pip install "transformers==4.50.3" torch numpy
    /tmp/ign/bin/python benchmarks/hf_official.py --checkout path/to/FLAIR-1 --out tests/fixtures/hf

It builds the network with IGN's own code, ``src/flair/model.py``'s ``FLAIR_ModelFactory`` (HuggingFace branch:
``AutoConfig.from_pretrained(org_model, num_labels=...)`` then ``AutoModelForSemanticSegmentation.from_pretrained(
org_model, config=..., ignore_mismatched_sizes=True)``), for a tiny UperNet-Swin, 5 input bands and 19 classes.
``org_model`` is a local folder standing in for the hub id: it holds the tiny config (its backbone set to 5
channels: IGN's code never changes ``num_channels``, so a 3-channel hub config cannot take 5 bands) and weights
drawn at random with a fixed seed. The factory's forward (``.logits``) runs on a random batch; written:

- ``ign_lightning.ckpt``: the state dict as IGN's Lightning task saves it (``model.seg_model.*`` and the loss's
  ``criterion.weight``, inside ``state_dict`` with Lightning's bookkeeping keys);
- ``ign_stripped.pt``: the state dict as IGN's zone detection strips it (``get_module``: no ``model.seg_model.``);
- ``batch.pt`` and ``logits.pt``: the input batch and IGN's logits; ``config.json``: the tiny transformers config;
- ``versions.json``: the transformers and torch versions that made them.

``segmentation_models_pytorch`` (imported by IGN's module for its other provider) is replaced by an empty module
when it is not installed: the HuggingFace branch never uses it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import types
from pathlib import Path

import torch
import transformers

SEED = 2022
BANDS = 5
CLASSES = 19
SIZE = 24
BATCH = 2
TINY_CONFIG = {
    "model_type": "upernet",
    "backbone_config": {
        "model_type": "swin",
        "embed_dim": 4,
        "depths": [1, 1, 1, 1],
        "num_heads": [1, 1, 1, 1],
        "window_size": 4,
        "mlp_ratio": 2.0,
        "num_channels": BANDS,
        "out_features": ["stage1", "stage2", "stage3", "stage4"],
    },
    "hidden_size": 8,
    "auxiliary_in_channels": 16,
    "auxiliary_channels": 4,
    "pool_scales": [1, 2],
}
"""UperNet (hidden size 8, pooling 1 and 2) over a Swin of one block per stage, 4 to 32 channels, window 4."""


def ign_factory(checkout: Path) -> type:
    """IGN's ``FLAIR_ModelFactory`` from the checkout's ``src/flair/model.py``."""
    try:
        import segmentation_models_pytorch  # noqa: F401
    except ImportError:
        sys.modules["segmentation_models_pytorch"] = types.ModuleType("segmentation_models_pytorch")
    sys.path.insert(0, str(checkout))
    from src.flair.model import FLAIR_ModelFactory

    return FLAIR_ModelFactory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, required=True, help="a checkout of IGNF/FLAIR-1")
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/hf"))
    args = parser.parse_args()
    factory = ign_factory(args.checkout.resolve())
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as org_model:
        data = dict(TINY_CONFIG)
        config = transformers.AutoConfig.for_model(data.pop("model_type"), num_labels=CLASSES, **data)
        torch.manual_seed(SEED)
        transformers.AutoModelForSemanticSegmentation.from_config(config).save_pretrained(org_model)
        ign_config = {
            "model_framework": {"model_provider": "HuggingFace", "HuggingFace": {"org_model": org_model}},
            "use_metadata": False,
            "channels": list(range(1, BANDS + 1)),
            "classes": {i: [1, f"class {i}"] for i in range(1, CLASSES + 1)},
        }
        model = factory(ign_config).eval()
    generator = torch.Generator().manual_seed(SEED)
    batch = torch.randn(BATCH, BANDS, SIZE, SIZE, generator=generator)
    with torch.no_grad():
        logits = model(batch)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    lightning = {f"model.{key}": value for key, value in state.items()}
    lightning["criterion.weight"] = torch.ones(CLASSES)
    checkpoint = {"epoch": 0, "global_step": 0, "pytorch-lightning_version": "2.1.1", "state_dict": lightning}
    torch.save(checkpoint, args.out / "ign_lightning.ckpt")
    torch.save(
        {key.partition("model.seg_model.")[2]: v for key, v in lightning.items() if "seg_model" in key},
        args.out / "ign_stripped.pt",
    )
    torch.save(batch, args.out / "batch.pt")
    torch.save(logits, args.out / "logits.pt")
    (args.out / "config.json").write_text(json.dumps(TINY_CONFIG, indent=2) + "\n", encoding="utf-8")
    versions = {"transformers": transformers.__version__, "torch": torch.__version__, "seed": SEED}
    (args.out / "versions.json").write_text(json.dumps(versions, indent=2) + "\n", encoding="utf-8")
    print(f"{len(state)} tensors, logits {tuple(logits.shape)} written to {args.out}")


if __name__ == "__main__":
    main()
