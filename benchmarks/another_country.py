"""Fine-tuning the demo model on another country versus training from scratch, with the same budget.

python benchmarks/another_country.py [--weights demo_output/runs/demo/checkpoints/last.ckpt] [--orthos 2]
                                     [--ortho-size 1024] [--patch-size 128] [--epochs 3] [--seeds 0 1]
                                     [--work DIR] [--record]

Writes another country (``flair data synth --country``: RGB imagery of another sensor, 6 classes as polygons),
cuts it with ``flair data patches`` (areas from its areas.gpkg: the test area is never trained on), then trains
the demo preset on it for ``--epochs`` epochs per seed, twice: from scratch, and from ``--weights`` (the demo
model trained on the FLAIR-like world by ``flair demo``) with ``train.rebuild_head``, ``train.adapt_inputs`` and
the encoder frozen for the first epoch. Both runs see the same patches, epochs, batch size and learning-rate
schedule; the table gives the test mIoU and overall accuracy of each run's best checkpoint (on val loss).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import add_record_option, markdown_table, record
from flairkit.config import load_config
from flairkit.data.patches import PatchOptions, make_patches
from flairkit.evaluation.predict import evaluate
from flairkit.models.loader import load_model
from flairkit.synth.country import CLASS_FIELD, CountryOptions, synthesize_country
from flairkit.training.run import train

DEFAULT_WEIGHTS = Path("demo_output/runs/demo/checkpoints/last.ckpt")


def run(dataset: Path, nomenclature: Path, work: Path, seed: int, epochs: int, weights: Path | None) -> dict:
    """Train one run (from ``weights``, or from scratch) and evaluate it on the test split."""
    name = f"{'finetune' if weights else 'scratch'}-{seed}"
    overrides = [
        *(f"data.{split}_csv={dataset / f'{split}.csv'}" for split in ("train", "val", "test")),
        f"data.nomenclature={nomenclature}",
        "data.channels=[1,2,3]",
        "data.metadata=false",
        f"output_dir={work / 'runs'}",
        f"name={name}",
        f"train.max_epochs={epochs}",
        f"train.seed={seed}",
        "train.early_stopping_patience=null",
    ]
    if weights is not None:
        overrides += [
            f"train.init_weights={weights}",
            "train.rebuild_head=true",
            "train.adapt_inputs=true",
            "train.freeze_encoder_epochs=1",
        ]
    config = load_config("demo", overrides)
    start = time.perf_counter()
    result = train(config, overwrite=True, progress=False)
    seconds = time.perf_counter() - start
    model = load_model(config, result.best_checkpoint)
    metrics = evaluate(config, model, work / "evaluation" / name, overwrite=True)
    return {
        "miou": metrics.miou,
        "oa": metrics.overall_accuracy,
        "seconds": seconds,
        "iou": metrics.per_class_iou,
        "classes": metrics.class_names,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="the demo model to fine-tune")
    parser.add_argument("--orthos", type=int, default=2)
    parser.add_argument("--ortho-size", type=int, default=1024)
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--work", type=Path, default=None, help="folder for the data and runs (default: temporary)")
    add_record_option(parser)
    args = parser.parse_args()
    if not args.weights.is_file():
        parser.error(f"--weights {args.weights} does not exist: run `flair demo` first, or give a demo checkpoint")

    with tempfile.TemporaryDirectory(prefix="another-country-") as tmp:
        work = args.work or Path(tmp)
        country = synthesize_country(
            work / "country", CountryOptions(n_orthos=args.orthos, ortho_size=args.ortho_size), overwrite=True
        )
        options = PatchOptions(
            nomenclature=str(country.nomenclature),
            patch_size=args.patch_size,
            class_field=CLASS_FIELD,
            mapping=country.mapping,
            areas=country.areas,
            area_field="name",
            split_field="split",
        )
        patches = make_patches(country.orthos, country.labels, work / "dataset", options, overwrite=True)
        results: dict[str, list[dict]] = {"scratch": [], "finetune": []}
        for seed in args.seeds:
            results["scratch"].append(run(patches.root, country.nomenclature, work, seed, args.epochs, None))
            results["finetune"].append(run(patches.root, country.nomenclature, work, seed, args.epochs, args.weights))

    rows = []
    for label, runs in (("from scratch", results["scratch"]), ("fine-tuned demo model", results["finetune"])):
        mious = [r["miou"] for r in runs]
        spread = f" ± {statistics.stdev(mious):.2f}" if len(mious) > 1 else ""
        per_seed = ", ".join(f"{m:.2f}" for m in mious)
        oa = statistics.mean(r["oa"] for r in runs)
        seconds = statistics.mean(r["seconds"] for r in runs)
        rows.append([label, f"{statistics.mean(mious):.2f}{spread}", per_seed, f"{oa:.2f}", f"{seconds:.0f}"])
    header = ["start", "test mIoU (mean ± sd)", "test mIoU per seed", "test OA", "training s per run"]
    classes = results["scratch"][0]["classes"]
    per_class = markdown_table(
        ["start", *classes],
        [
            [label, *(f"{statistics.mean(r['iou'][k] for r in results[key]):.1f}" for k in range(len(classes)))]
            for key, label in (("scratch", "from scratch"), ("finetune", "fine-tuned demo model"))
        ],
    )
    n = patches.counts
    notes = (
        f"Another country: {args.orthos} RGB orthophoto(s) of {args.ortho_size} px (another sensor's colour balance, "
        f"EPSG:5186), 6 classes from polygons; {args.patch_size} px patches, {n.get('train', 0)} train / "
        f"{n.get('val', 0)} val / {n.get('test', 0)} test, split by area. Demo preset (U-Net ResNet18), "
        f"{args.epochs} epochs per run, seeds {args.seeds}; fine-tuning starts from `{args.weights.name}` of "
        "`flair demo` (15 classes, RGBIE) with the head rebuilt from the grouped FLAIR classes, the NIR and elevation "
        "filters dropped and the encoder frozen for the first epoch. Mean test IoU per class:\n\n" + per_class
    )
    record(
        "Another country: fine-tuning the demo model vs from scratch",
        markdown_table(header, rows),
        notes,
        write=args.record,
    )


if __name__ == "__main__":
    main()
