"""flairkit side by side with IGN's official FLAIR-1 code: training step and zone detection, same machine and weights.

python benchmarks/bench_official.py [--official FLAIR-1 --official-python PY] [--official-exact-windows]
                                    [--ortho-size 2048] [--size 512] [--batch 10] [--repeats 2] [--train-steps 100]
                                    [--variants compat compat-torch default default-torch ...] [--record]

One synthetic world (``flairkit.synth``: patches of ``--size`` px and one orthophoto of ``--ortho-size`` px)
and one U-Net ResNet34 (5 bands, 19 logits) serve both codes. The weights are trained for ``--train-steps``
steps on the world's patches (confident predictions, as a released model makes), or, with 0, random (seed 0)
with their BatchNorm statistics calibrated on the patches; the logits of the four disabled classes are pushed
down, as the released FLAIR-INC models never predict them. They are saved as the raw smp state dict that
``flair-detect`` loads. Every measurement runs in a fresh process. The flairkit variants are config overrides
(``VARIANTS``): ``compat`` is flair-detect's tiling, ``compat-windows`` the same with each tile's centre
written over the window flair-detect computes on the installed rasterio (``detect.flair_detect_windows``),
``default`` the ``flair detect`` defaults, ``-torch`` the torch network instead of ONNX Runtime.

Without ``--official`` only flairkit's figures are taken. ``--official`` is a checkout of IGNF/FLAIR-1 and
``--official-python`` the interpreter of the virtual environment where its requirements are installed
(default: $FLAIRKIT_OFFICIAL_PYTHON); it runs ``benchmarks/official.py``. Its ResNet34 is built with
ImageNet weights before the checkpoint replaces them, so a stand-in ImageNet file is put in a private
TORCH_HOME, and proxies point at loopback: nothing is downloaded.

Training: data = reading + collating a batch (flairkit: uint8 patches and targets; official: one-hot masks,
albumentations flips, float64 normalisation); step = what the trainer does with a loaded batch (flairkit:
normalisation + augmentation on the device, forward, loss, backward, SGD; official: forward, loss, per-step
metrics, backward, SGD); end to end = batch / (data + step) with the loader in the training process. Each
flairkit setting (``TRAIN_SETTINGS``: memory layout, torch.compile with ``--compile``, and the heap setting
of ``flair train``, on by default, against glibc's default of returning freed memory) runs in its own
process; peak RSS is that process's high-water mark. The official step is timed twice: as it ships, and
with glibc told through its environment variables to keep freed memory, as ``flair train`` does.
Detection: time from loading the weights to the closed map (imports excluded), and the share of pixels on
which each flairkit map agrees with the official one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common import add_record_option, best_of, markdown_table, record, run_in_child

PRESET = "FLAIR-INC_rgbie_15cl_resnet34-unet"
SEED = 0
CALIBRATION_BATCH = 4
"""Patches per forward pass when calibrating BatchNorm statistics (all patches are used)."""
TRAIN_BATCH, TRAIN_CROP, TRAIN_LR = 4, 256, 1e-3
"""Crops per step, crop side (px) and AdamW learning rate when the network is trained (--train-steps)."""
DISABLED_LOGIT = -1000.0
IMAGENET_RESNET34 = "resnet34-333f7ec4.pth"
"""File name under which smp 0.3.3 looks for the ImageNet ResNet34 in the torch hub cache."""
LOOPBACK_PROXY = "http://127.0.0.1:9"
OFFICIAL_REPOSITORY = "https://github.com/IGNF/FLAIR-1"
GLIBC_RETAIN_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}
"""glibc's environment variables for what ``train.retain_freed_memory`` does in flairkit's process."""


@dataclass(frozen=True)
class Variant:
    """A flairkit detection setting: config overrides on top of the defaults."""

    overrides: tuple[str, ...]
    description: str


COMPAT = ("detect.tile_size=512", "detect.margin=128", "detect.batch_size=4", "detect.fit_tiles=false")
TORCH = ("detect.backend=torch",)
VARIANTS = {
    "compat": Variant(COMPAT, "flair-detect's tiling (tiles 512, margin 128, batch 4), default network backend"),
    "compat-torch": Variant((*COMPAT, *TORCH), "compat, torch network (BatchNorm folded, channels_last)"),
    "compat-windows": Variant(
        (*COMPAT, "detect.flair_detect_windows=true"), "compat, centres over flair-detect's as-run windows"
    ),
    "compat-torch-nchw": Variant((*COMPAT, *TORCH, "detect.channels_last=false"), "compat, torch network, NCHW"),
    "default": Variant((), "`flair detect` defaults (tiles fitted up to 1536, margin 128)"),
    "default-torch": Variant(TORCH, "defaults, torch network"),
    "blend": Variant(("detect.stitching=blend",), "defaults, blend stitching"),
}


def world_options(size: int, ortho_size: int, patches: int):
    """A one-area synthetic world: ``patches`` patches of ``size`` px and one orthophoto."""
    from flairkit.synth.world import SynthOptions

    return SynthOptions(
        n_domains=1,
        test_domains=0,
        val_domains=0,
        areas_per_domain=1,
        patches_per_area=patches,
        patch_size=size,
        sentinel=False,
        n_orthos=1 if ortho_size else 0,
        ortho_size=ortho_size,
        seed=SEED,
    )


def bench_config(overrides: tuple[str, ...] = ()):
    """The released-model preset of the benchmark network (no download of encoder weights)."""
    from flairkit.config import load_config

    return load_config(PRESET, ["model.encoder_weights=null", *overrides])


def make_weights(csv: Path, path: Path, train_steps: int = 0, device: str = "cpu") -> None:
    """Save the benchmark network's smp state dict (the layout flair-detect loads), disabled classes switched off.

    With ``train_steps`` the network (seeded random start) is trained for that many steps on random crops of
    the world's patches; otherwise it keeps its random weights and only its BatchNorm statistics are
    calibrated on the patches (initial statistics, mean 0 and variance 1, leave activations unnormalised).
    Either way the disabled classes get a constant, very low logit, as the released models never predict them.
    The steps run on ``device`` (crops are cut and augmented on the CPU, so the result does not depend on it
    beyond floating-point rounding).
    """
    import torch

    from flairkit.data.datamodule import build_dataset
    from flairkit.data.datasets import collate_patches
    from flairkit.data.discovery import read_csv_list
    from flairkit.data.transforms import Normalizer, augment_batch
    from flairkit.models.factory import build_aerial_model
    from flairkit.nomenclature import get_nomenclature
    from flairkit.training.losses import aerial_class_weights, weighted_cross_entropy

    config = bench_config()
    nomenclature = get_nomenclature(config.data.nomenclature)
    torch.manual_seed(SEED)
    model = build_aerial_model(config, pretrained_encoder=False).train()
    dataset = build_dataset(config, read_csv_list(csv))
    patches = collate_patches([dataset[i] for i in range(len(dataset))])
    images, targets = patches["image"], patches["target"].long()
    normalizer = Normalizer.from_config(config.data.normalization)
    if train_steps:
        model.to(device)
        criterion = weighted_cross_entropy(aerial_class_weights(nomenclature)).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=TRAIN_LR)
        generator = torch.Generator().manual_seed(SEED)
        crop = min(TRAIN_CROP, images.shape[-1])
        for _ in range(train_steps):
            index = torch.randint(len(images), (TRAIN_BATCH,), generator=generator)
            row, col = torch.randint(images.shape[-1] - crop + 1, (2,), generator=generator).tolist()
            window = (index, slice(None), slice(row, row + crop), slice(col, col + crop))
            x, y = augment_batch(normalizer(images[window]), targets[window[:1] + window[2:]], 0.5, generator)
            optimizer.zero_grad(set_to_none=True)
            criterion(model(x.to(device)), y.to(device)).backward()
            optimizer.step()
        model.cpu()
    else:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
                module.momentum = None  # cumulative average over the calibration batches
        with torch.no_grad():
            for indices in torch.arange(len(images)).tensor_split(-(-len(images) // CALIBRATION_BATCH)):
                model(normalizer(images[indices]))
    with torch.no_grad():
        head = model.seg_model.segmentation_head[0]
        head.weight[nomenclature.disabled] = 0.0
        head.bias[nomenclature.disabled] = DISABLED_LOGIT
    torch.save(model.seg_model.state_dict(), path)


# ---------------------------------------------------------------------------------------------- children


def child_detect(args: dict) -> dict:
    """flairkit zone detection of one variant: seconds from loading the weights to the closed map."""
    from flairkit.detection.run import detect
    from flairkit.models.loader import load_model

    config = bench_config(VARIANTS[args["variant"]].overrides)
    start = time.perf_counter()
    model = load_model(config, args["weights"])
    summary = detect(config, model, [Path(args["input"])], Path(args["output"]))
    seconds = time.perf_counter() - start
    report = summary.maps[0]
    return {
        "seconds": seconds,
        "km2": report.area_km2,
        "tiles": sum(report.tiles_per_rank),
        "tile": report.tile_size,
        "backend": summary.backend,
        "codes": config.detect.output_codes == "flair",
    }


TRAIN_SETTINGS = {
    "NCHW": ("false", "false", "true"),
    "channels_last": ("true", "false", "true"),
    "channels_last, compiled": ("true", "true", "true"),
    "NCHW, freed memory returned to the system": ("false", "false", "false"),
}
"""flairkit training rows: train.channels_last, train.compile and train.retain_freed_memory overrides."""


def child_train(args: dict) -> dict:
    """flairkit training with one of TRAIN_SETTINGS: seconds per loaded batch and per step, peak RSS."""
    from flairkit.allocator import retained_freed_memory
    from flairkit.data.datamodule import FlairDataModule
    from flairkit.models.loader import load_model
    from flairkit.training.module import SegmentationTask

    channels_last, compiled, retain = TRAIN_SETTINGS[args["setting"]]
    overrides = (
        f"data.train_csv={args['csv']}",
        f"data.val_csv={args['csv']}",
        f"data.batch_size={args['batch']}",
        "data.num_workers=0",
        f"train.channels_last={channels_last}",
        f"train.compile={compiled}",
        f"train.retain_freed_memory={retain}",
    )
    config = bench_config(overrides)
    data = FlairDataModule(config)
    data.setup("fit")
    loader = data.train_dataloader()

    def one_pass() -> None:
        for _ in loader:
            pass

    load_s = best_of(one_pass, repeats=args["repeats"]) / len(loader)
    batch = next(iter(loader))
    task = SegmentationTask(config, model=load_model(config, args["weights"]).train())
    optimizer = task.configure_optimizers()["optimizer"]

    def step() -> None:
        prepared = task.prepare_batch(dict(batch), training=True)
        optimizer.zero_grad(set_to_none=True)
        loss = task.training_step(prepared, 0)
        loss.backward()
        optimizer.step()

    # As flair train does: the heap setting spans the whole fit.
    with retained_freed_memory(config.train.retain_freed_memory):
        step_s = best_of(step, repeats=args["repeats"])
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"load_s_per_batch": load_s, "step_s": step_s, "peak_rss_mb": peak_mb}


def run_child(task: str, args: dict) -> dict:
    """Run ``child_<task>(args)`` in a fresh interpreter and return its JSON figures."""
    return run_in_child(__file__, {"task": task, **args}, f"flairkit {task} run")


# ---------------------------------------------------------------------------------------------- official


@dataclass(frozen=True)
class Official:
    """Where the official code and its environment are."""

    checkout: Path
    python: Path
    torch_home: Path
    versions: dict[str, str] = field(default_factory=dict)
    """Library versions of the official environment, as its runs report them."""

    def run(self, task: str, arguments: list[str], result: Path, extra_env: dict[str, str] | None = None) -> dict:
        """Run ``official.py <task>`` with the official interpreter; network access points at loopback."""
        env = {
            **os.environ,
            **(extra_env or {}),
            "TORCH_HOME": str(self.torch_home),
            "HTTP_PROXY": LOOPBACK_PROXY,
            "HTTPS_PROXY": LOOPBACK_PROXY,
            "http_proxy": LOOPBACK_PROXY,
            "https_proxy": LOOPBACK_PROXY,
            "HF_HUB_OFFLINE": "1",
            "PYTHONWARNINGS": "ignore",
        }
        runner = Path(__file__).with_name("official.py")
        command = [str(self.python), str(runner), task, "--checkout", str(self.checkout), "--result", str(result)]
        done = subprocess.run([*command, *arguments], capture_output=True, text=True, env=env, check=False)
        if done.returncode or not result.exists():
            sys.exit(f"official {task} run failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
        return json.loads(result.read_text())


def prepare_official(checkout: Path, python: Path, folder: Path) -> Official:
    """Check the checkout and put a stand-in ImageNet ResNet34 (replaced by the checkpoint) in a private hub."""
    import torch
    import torchvision

    if not (checkout / "src" / "zone_detect" / "main.py").is_file():
        sys.exit(f"{checkout} is not an IGNF/FLAIR-1 checkout (no src/zone_detect/main.py); pass --official FLAIR-1")
    if not python.is_file():
        sys.exit(f"{python}: no such interpreter; pass --official-python <venv>/bin/python")
    hub = folder / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision.models.resnet34().state_dict(), hub / IMAGENET_RESNET34)
    return Official(checkout.resolve(), python, folder / "torch_home")


def official_detect_conf(path: Path, ortho: Path, weights: Path, out: Path, config) -> Path:
    """A flair-detect YAML config with the settings of ``configs/flair-1-config-detect.yaml`` on the CPU."""
    import yaml

    norm = config.data.normalization
    conf = {
        "output_path": str(out.parent),
        "output_name": out.stem,
        "input_img_path": str(ortho),
        "channels": list(config.data.channels),
        "img_pixels_detection": 512,
        "margin": 128,
        "output_type": "argmax",
        "n_classes": 19,
        "model_weights": str(weights),
        "model_framework": {
            "model_provider": "SegmentationModelsPytorch",
            "SegmentationModelsPytorch": {"encoder_decoder": "resnet34_unet"},
        },
        "batch_size": 4,
        "use_gpu": False,
        "num_worker": 2,
        "write_dataframe": False,
        "norma_task": [{"norm_type": norm.mode, "norm_means": list(norm.means), "norm_stds": list(norm.stds)}],
    }
    path.write_text(yaml.safe_dump(conf, sort_keys=False))
    return path


def absolute_csv(csv: Path, path: Path) -> Path:
    """A copy of a FLAIR-1 CSV list with absolute paths (the official code opens them from its own folder)."""
    from flairkit.data.discovery import read_csv_list

    path.write_text("".join(f"{r.image},{r.mask}\n" for r in read_csv_list(csv)))
    return path


def official_train_settings(path: Path, config) -> Path:
    """Classes (code: [weight, name]), channels and normalisation of the benchmark network, for official.py."""
    from flairkit.nomenclature import get_nomenclature

    nomenclature = get_nomenclature(config.data.nomenclature)
    classes = {int(t.code): [t.weight, t.name] for t in nomenclature.targets}
    norm = config.data.normalization
    settings = {
        "classes": classes,
        "channels": list(config.data.channels),
        "norm": {"type": norm.mode, "means": list(norm.means), "stds": list(norm.stds)},
    }
    path.write_text(json.dumps(settings))
    return path


def agreement(ours: Path, official: Path, codes: bool) -> float:
    """Share of pixels (%) where flairkit's map and the official map give the same class."""
    import rasterio

    from flairkit.nomenclature import get_nomenclature

    with rasterio.open(ours) as src:
        mine = src.read(1)
    with rasterio.open(official) as src:
        theirs = src.read(1)
    if codes:
        mine = get_nomenclature(bench_config().data.nomenclature).map_mask(mine)
    return 100.0 * float(np.mean(mine == theirs))


# ---------------------------------------------------------------------------------------------- main


def training_rows(entries: list[tuple[str, str, dict]], reference: dict | None, batch: int) -> list[list[str]]:
    """Training table rows of (code, settings, figures): patches/s, peak RSS, and ratios to ``reference``."""

    def speeds(figures: dict) -> tuple[float, float, float]:
        load, step = figures["load_s_per_batch"], figures["step_s"]
        return batch / load, batch / step, batch / (load + step)

    rows = []
    for code, setting, figures in entries:
        data, step, total = speeds(figures)
        row = [code, setting, f"{data:.2f}", f"{step:.3f}", f"{total:.3f}", f"{figures['peak_rss_mb']:.0f}"]
        if reference:
            _, reference_step, reference_total = speeds(reference)
            row += [f"{step / reference_step:.2f}x", f"{total / reference_total:.2f}x"]
        rows.append(row)
    return rows


def compare_training(options: argparse.Namespace, folder: Path, csv: Path, weights: Path, official: Official | None):
    """The training table (markdown): each flairkit setting in its own process, then the official step."""
    args = {"csv": str(csv), "batch": options.batch, "repeats": options.repeats, "weights": str(weights)}
    settings = [name for name in TRAIN_SETTINGS if options.compile or "compiled" not in name]
    ours = {setting: run_child("train", {**args, "setting": setting}) for setting in settings}
    entries = [("flairkit", setting, figures) for setting, figures in ours.items()]
    theirs = None
    if official is not None:
        settings_file = official_train_settings(folder / "official_train.json", bench_config())
        arguments = ["--csv", str(absolute_csv(csv, folder / "official_train.csv")), "--settings", str(settings_file)]
        arguments += ["--batch", str(options.batch), "--repeats", str(options.repeats)]
        theirs = official.run("train", arguments, folder / "official_train_result.json")
        official.versions.update(theirs.get("versions", {}))
        # The same heap setting as flair train's default, given to the official code through glibc's variables.
        retained = official.run("train", arguments, folder / "official_train_retained.json", GLIBC_RETAIN_ENV)
        variables = " ".join(f"{k}={v}" for k, v in GLIBC_RETAIN_ENV.items())
        entries[:0] = [("official FLAIR-1", "NCHW", theirs), ("official FLAIR-1", f"NCHW, {variables}", retained)]
    header = ["code", "settings", "data patches/s", "step patches/s", "end-to-end patches/s", "peak RSS (MB)"]
    if theirs:
        header += ["step vs official", "end-to-end vs official"]
    return markdown_table(header, training_rows(entries, theirs, options.batch))


def compare_detection(
    options: argparse.Namespace, folder: Path, ortho: Path, weights: Path, official: Official | None
) -> str:
    """The detection table (markdown): official runs first, then each flairkit variant."""
    import rasterio

    with rasterio.open(ortho) as src:
        km2 = src.width * src.height * abs(src.res[0] * src.res[1]) / 1e6
    references: list[tuple[str, Path]] = []  # (column title, official map)
    rows: list[list[str]] = []
    reference_speed = None
    if official is not None:
        runs = [("official flair-detect", "official", [])]
        if options.official_exact_windows:
            runs.append(("official flair-detect, windows rounded", "rounded official", ["--exact-windows"]))
        for label, column, extra in runs:
            out = folder / f"{column.replace(' ', '_')}_map.tif"
            conf = official_detect_conf(out.with_suffix(".yaml"), ortho, weights, out, bench_config())
            figures = official.run("detect", ["--conf", str(conf), *extra], out.with_suffix(".json"))
            speed = km2 / figures["seconds"] * 3600
            reference_speed = reference_speed or speed
            references.append((column, out))
            official.versions.update(figures["versions"])
            settings = "tiles 512, margin 128, batch 4, 2 loader workers"
            rows.append(
                [label, settings, f"{figures['seconds']:.1f}", f"{speed:.3f}", f"{speed / reference_speed:.2f}x"]
            )
        for row, (_, out) in zip(rows, references, strict=True):
            row += [f"{agreement(out, other, codes=False):.4f}" for _, other in references]
    for name in options.variants:
        out = folder / f"flairkit_{name}.tif"
        args = {"variant": name, "weights": str(weights), "input": str(ortho), "output": str(out)}
        figures = run_child("detect", args)
        speed = km2 / figures["seconds"] * 3600
        settings = f"{VARIANTS[name].description}: {figures['backend']}, {figures['tile']} px tiles"
        row = [f"flairkit {name}", settings, f"{figures['seconds']:.1f}", f"{speed:.3f}"]
        if reference_speed:
            row.append(f"{speed / reference_speed:.2f}x")
            row += [f"{agreement(out, other, figures['codes']):.4f}" for _, other in references]
        rows.append(row)
        print(" | ".join(row), flush=True)
    header = ["code", "settings", "time (s)", "km²/h"]
    if reference_speed:
        header += ["vs official"] + [f"pixels agreeing with {column} map (%)" for column, _ in references]
    return markdown_table(header, rows)


def weights_description(options: argparse.Namespace) -> str:
    """How the shared network was made."""
    if options.train_steps:
        return (
            f"seed {SEED}, trained {options.train_steps} steps of {TRAIN_BATCH} crops of {TRAIN_CROP} px on the "
            f"world's patches, AdamW lr {TRAIN_LR:g}"
        )
    return f"random, seed {SEED}, BatchNorm statistics calibrated on the world's patches"


def official_description(official: Official | None) -> str:
    """Which official code ran, and with which library versions."""
    if official is None:
        return "Official code not run."
    versions = "".join(f", {name} {version}" for name, version in official.versions.items())
    return f"Official: {OFFICIAL_REPOSITORY} at {official_commit(official.checkout)}{versions}."


def official_commit(checkout: Path) -> str:
    """The checkout's commit (12 digits), from its ``COMMIT`` file or git; never its local path."""
    commit_file = checkout / "COMMIT"
    if commit_file.is_file():
        return commit_file.read_text().strip()[:12]
    done = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip()[:12] if done.returncode == 0 else "an unknown commit"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, help="a checkout of IGNF/FLAIR-1 (enables the official runs)")
    parser.add_argument("--official-python", type=Path, default=os.environ.get("FLAIRKIT_OFFICIAL_PYTHON"))
    parser.add_argument(
        "--official-exact-windows",
        action="store_true",
        help="also run flair-detect with its kept windows rounded (what pixel_precision=6 asks for)",
    )
    parser.add_argument("--size", type=int, default=512, help="patch side in pixels (training)")
    parser.add_argument("--batch", type=int, default=10, help="training batch size")
    parser.add_argument("--ortho-size", type=int, default=2048, help="orthophoto side in pixels (detection)")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats (best is kept)")
    parser.add_argument("--variants", nargs="+", default=["compat", "default"], choices=VARIANTS)
    parser.add_argument("--no-train", action="store_true", help="skip the training comparison")
    parser.add_argument("--no-detect", action="store_true", help="skip the detection comparison")
    parser.add_argument(
        "--compile", action="store_true", help="also time flairkit's training step under torch.compile (slow start)"
    )
    parser.add_argument(
        "--train-steps", type=int, default=0, help="train the shared network this many steps first (else random)"
    )
    parser.add_argument("--workdir", type=Path, help="keep the world, weights and maps in this new folder")
    add_record_option(parser)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        args = json.loads(options.child)
        print(json.dumps({"detect": child_detect, "train": child_train}[args["task"]](args)))
        return
    if options.official is not None and options.official_python is None:
        parser.error("--official needs --official-python (or $FLAIRKIT_OFFICIAL_PYTHON): the official venv's python")

    from flairkit.synth.world import synthesize_world

    load_before = os.getloadavg()[0]
    tables = []
    with contextlib.ExitStack() as stack:
        if options.workdir is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flairkit-bench-")))
        else:
            folder = options.workdir
            folder.mkdir(parents=True, exist_ok=False)
        ortho_size = 0 if options.no_detect else options.ortho_size
        world = synthesize_world(folder / "world", world_options(options.size, ortho_size, 2 * options.batch))
        csv = world.csv["train"]
        weights = folder / "unet_resnet34_smp_state_dict.pth"
        make_weights(csv, weights, options.train_steps)
        official = None
        if options.official is not None:
            official = prepare_official(options.official, options.official_python, folder)
        if not options.no_train:
            tables.append("Training\n\n" + compare_training(options, folder, csv, weights, official))
        if not options.no_detect:
            ortho = world.orthos[0][0]
            tables.append("Zone detection\n\n" + compare_detection(options, folder, ortho, weights, official))
        description = official_description(official)
    notes = (
        f"U-Net ResNet34, 5 bands, 19 logits, the same weights for both codes ({weights_description(options)}, "
        f"disabled-class logits set to {DISABLED_LOGIT:g})."
    )
    if not options.no_train:
        notes += (
            f" Training: {options.size} px patches, batch {options.batch}, SGD lr 0.02, best of {options.repeats} "
            "after an untimed step (where torch.compile compiles)."
        )
    if not options.no_detect:
        notes += f" Detection: synthetic orthophoto of {options.ortho_size}x{options.ortho_size} px at 0.2 m, CPU."
    notes += f" {description}"
    notes += f" 1-min load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after."
    record("flairkit vs official FLAIR-1", "\n\n".join(tables), notes, write=options.record)


if __name__ == "__main__":
    main()
