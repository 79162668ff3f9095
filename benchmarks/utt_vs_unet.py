"""U-T&T versus the aerial-only U-Net on a synthetic world whose Sentinel-2 series separate aerial look-alikes.

python benchmarks/utt_vs_unet.py [--out runs/utt_vs_unet] [--overwrite] [--epochs 8] [--patch-size 64] [--record]

Both models share the aerial U-Net (ResNet34 encoder, random init), the 13-class FLAIR #2 nomenclature,
the data, the seed and the schedule; U-T&T adds the U-TAE branch and fusion. Prints both test mIoUs
(FLAIR #2 protocol) and the per-class IoU gains; ``--record`` also appends them to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from common import add_record_option, markdown_table, record
from flairkit.config import load_config
from flairkit.evaluation.predict import evaluate
from flairkit.models.loader import load_model
from flairkit.synth.world import SynthOptions, synthesize_world
from flairkit.training.run import train


def run(config, out: Path):
    """Train ``config`` and evaluate its best checkpoint on the test split."""
    trained = train(config, overwrite=True)
    model = load_model(config, trained.best_checkpoint)
    return evaluate(config, model, out / f"{config.name}-eval", overwrite=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/utt_vs_unet"), help="a new folder for both runs")
    parser.add_argument("--overwrite", action="store_true", help="delete --out first if it exists")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--patches", type=int, default=12, help="patches per area")
    parser.add_argument("--seed", type=int, default=2022)
    parser.add_argument("--encoder", default="resnet34")
    add_record_option(parser)
    args = parser.parse_args()
    if args.out.exists():
        if not args.overwrite:
            parser.error(f"{args.out} already exists; pass --overwrite to replace it or choose another --out")
        shutil.rmtree(args.out)
    world = synthesize_world(
        args.out / "world",
        SynthOptions(
            n_domains=6,
            areas_per_domain=3,
            patches_per_area=args.patches,
            patch_size=args.patch_size,
            seed=args.seed,
            sentinel=True,
            sat_patch_size=16,
            n_orthos=0,
            ortho_size=0,
        ),
    )
    common = [
        f"data.root={world.root}",
        f"output_dir={args.out}",
        "data.nomenclature=13cl",
        "data.batch_size=8",
        f"model.encoder={args.encoder}",
        "data.num_workers=0",
        "model.encoder_weights=null",
        f"train.max_epochs={args.epochs}",
        "train.optimizer=adamw",
        "train.lr=0.001",
        "train.accelerator=cpu",
        "train.devices=1",
        f"train.seed={args.seed}",
    ]
    unet = load_config("demo", [*common, "name=unet"])
    utt = load_config(
        "demo",
        [
            *common,
            "name=utt",
            "model.multimodal=true",
            "data.sentinel.enabled=true",
            "data.sentinel.sat_patch_size=16",
            "data.sentinel.filter_clouds=true",
            "data.sentinel.monthly_average=true",
        ],
    )
    aerial = run(unet, args.out)
    fused = run(utt, args.out)
    rows = [["mIoU", f"{aerial.miou:.2f}", f"{fused.miou:.2f}", f"{fused.miou - aerial.miou:+.2f}"]]
    for name, a, f in zip(aerial.class_names, aerial.per_class_iou, fused.per_class_iou, strict=True):
        rows.append([name, f"{a:.2f}", f"{f:.2f}", f"{f - a:+.2f}"])
    table = markdown_table(["test IoU (%)", "U-Net (aerial)", "U-T&T (aerial + S2)", "gain"], rows)
    notes = (
        f"U-Net {args.encoder} from scratch in both. Synthetic world: 6 domains (4 train, 1 val, 1 test) x 3 areas "
        f"x {args.patches} patches of {args.patch_size} px, seed {args.seed}; {args.epochs} epochs, AdamW lr 1e-3, "
        "batch 8, CPU; FLAIR #2 protocol (13 classes, mIoU over the first 12 present)."
    )
    record("U-T&T versus aerial U-Net on the synthetic world", table, notes, write=args.record)


if __name__ == "__main__":
    main()
