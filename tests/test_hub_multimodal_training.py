"""`flair train` / `flair evaluate` / `flair reproduce` of FLAIR-HUB's multimodal network (model.hub) on the synthetic
FLAIR-HUB world: per-task and auxiliary losses, modality dropout, flips and rotations of every modality alike,
checkpoint choice, strict reloading, per-task metrics, the comparison with the published figures, and the commands
that refuse the network up front."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from conftest import TINY_HUB_NETWORK
from flairkit.cli.main import app
from flairkit.config import load_config
from flairkit.data.hub.dataset import build_hub_dataset, collate_hub
from flairkit.errors import CheckpointError, ConfigError
from flairkit.evaluation.predict import evaluate_hub
from flairkit.models.build import build_model
from flairkit.models.hub import load_hub_weights, normalization, normalize_batch
from flairkit.training.hub import HubSegmentationTask, weighted_iou
from flairkit.training.run import train

runner = CliRunner()
COSIA, LPIS = "AERIAL_LABEL-COSIA", "ALL_LABEL-LPIS"
RUN = (
    "data.batch_size=2",
    "data.num_workers=0",
    "evaluate.batch_size=2",
    "train.max_epochs=1",
    "train.accelerator=cpu",
    "train.devices=1",
)


def _sets(*overrides: str) -> list[str]:
    return [arg for override in overrides for arg in ("--set", override)]


def _config(hub_world: Path, tmp_path: Path, *overrides: str):
    return load_config(
        "flairhub-LC-D", [*TINY_HUB_NETWORK, *RUN, f"data.root={hub_world}", f"output_dir={tmp_path}", *overrides]
    )


def _batch(config) -> dict:
    dataset = build_hub_dataset(config.data.hub.model_copy(update={"root": config.data.root}), "train")
    return normalize_batch(collate_hub([dataset[0], dataset[1]]), normalization(config))


@pytest.mark.parametrize(
    ("command", "what"),
    [
        (["predict", "{out}", "-c", "flairhub-LC-D", "--checkpoint", "{ckpt}"], "flair predict"),
        (["export", "{ckpt}", "{out}", "-c", "flairhub-LC-D", "--onnx"], "flair export"),
    ],
)
def test_commands_that_cannot_run_the_multimodal_network_refuse_it_up_front(tmp_path, command, what):
    ckpt = tmp_path / "weights.ckpt"
    ckpt.write_bytes(b"not read")
    out = tmp_path / "out"
    args = [arg.format(out=out, ckpt=ckpt) for arg in command]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"model.hub: {what} does not run FLAIR-HUB's multimodal network yet" in " ".join(result.output.split())
    assert not out.exists()


def test_train_then_evaluate_aerial_and_sentinel2_from_the_command_line(hub_world, tmp_path):
    common = _sets(*TINY_HUB_NETWORK, *RUN, f"data.root={hub_world}", f"output_dir={tmp_path}")
    trained = runner.invoke(app, ["train", "-c", "flairhub-LC-D", *common, "--no-progress"])
    assert trained.exit_code == 0, trained.output
    checkpoints = tmp_path / "flairhub-LC-D" / "checkpoints"
    best = next(checkpoints.glob("ckpt-*val_miou=*.ckpt"))  # chosen on the main task's macro mIoU
    saved = torch.load(best, map_location="cpu", weights_only=True)
    assert saved["hyper_parameters"]["config"]["data"]["hub"]["modalities"] == ["AERIAL_RGBI", "SENTINEL2_TS"]
    out = tmp_path / "eval"
    # The config comes from the checkpoint; only where the data lies is given.
    evaluated = runner.invoke(app, ["evaluate", str(out), "--checkpoint", str(best), *_sets(*RUN[:3]),
                                    *_sets(f"data.root={hub_world}"), "--no-progress"])  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads((out / COSIA / "metrics" / "metrics.json").read_text())
    assert metrics["protocol"] == "flairhub"  # evaluate.protocol auto: IGN's FLAIR-HUB protocol
    confmat = np.load(out / COSIA / "metrics" / "confmat.npy")
    config = _config(hub_world, tmp_path)
    labels = np.zeros(19, dtype=np.int64)
    for item in build_hub_dataset(config.data.hub.model_copy(update={"root": hub_world}), "test"):
        labels += np.bincount(item[COSIA].numpy().ravel(), minlength=19)
    assert np.array_equal(confmat.sum(axis=1), labels)  # every test pixel counted, once
    assert (out / "config.yaml").is_file() and not (out / LPIS).exists()


class _Keep(L.Callback):
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.task = pl_module


def test_multi_task_training_sums_task_losses_and_its_checkpoint_reloads_strictly(hub_world, tmp_path):
    config = _config(
        hub_world,
        tmp_path,
        f"data.hub.labels=[{COSIA},{LPIS}]",
        "data.hub.lpis_level=2",
        f"train.hub.task_weights={{{LPIS}: 0.5}}",
        "train.hub.ign_weighted_iou_checkpoint=true",
        "train.limit_train_batches=2",
    )
    keep = _Keep()
    result = train(config, progress=False, callbacks=[keep])
    assert "val_weighted_iou=" in result.best_checkpoint.name  # IGN's checkpoint choice, behind its flag
    logged = (result.run_dir / "csv" / "attempt_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {f"val_miou_{COSIA}", f"val_miou_{LPIS}", "val_weighted_iou"} <= set(logged)
    task = keep.task
    batch = _batch(config)
    with torch.no_grad():
        logits = task.eval().model(batch)
    assert logits[LPIS].shape[1] == 31  # LPIS level 2
    terms = task.losses(batch, logits)
    assert torch.allclose(terms["loss"], terms[COSIA] + 0.5 * terms[LPIS])
    network = build_model(config, pretrained_encoder=False).eval()
    load_hub_weights(network, result.last_checkpoint)
    with torch.no_grad():
        reloaded = network(batch)
    for label in (COSIA, LPIS):
        assert torch.equal(reloaded[label], logits[label].detach())
    other = build_model(_config(hub_world, tmp_path), pretrained_encoder=False)  # land cover only
    with pytest.raises(CheckpointError, match="tasks"):
        load_hub_weights(other, result.last_checkpoint)
    metrics = evaluate_hub(config, network, tmp_path / "eval")
    assert set(metrics) == {COSIA, LPIS, f"{LPIS}/level1"}  # LPIS at its level and every coarser one
    assert (metrics[LPIS].nomenclature, metrics[f"{LPIS}/level1"].nomenclature) == ("lpis2", "lpis1")
    for folder in metrics:
        assert (tmp_path / "eval" / folder / "metrics" / "confmat.npy").is_file()
    coarse = np.load(tmp_path / "eval" / LPIS / "level1" / "metrics" / "confmat.npy")
    assert coarse.sum() == np.load(tmp_path / "eval" / LPIS / "metrics" / "confmat.npy").sum()


@pytest.mark.parametrize("bug", [False, True])
def test_auxiliary_losses_are_added_by_default_and_left_out_with_ign_bug_flag(hub_world, tmp_path, bug):
    config = _config(hub_world, tmp_path, "model.hub.aux_heads=[AERIAL_RGBI,SENTINEL2_TS]",
                     f"train.hub.ign_aux_loss_bug={str(bug).lower()}")  # fmt: skip
    torch.manual_seed(0)
    task = HubSegmentationTask(config, model=build_model(config, pretrained_encoder=False)).train()
    batch = _batch(config)
    logits = task(batch)
    heads = [k for k in logits if k.startswith("aux_")]
    assert sorted(heads) == [f"aux_AERIAL_RGBI_{COSIA}", f"aux_SENTINEL2_TS_{COSIA}"]
    target = batch[COSIA].long()
    weight = task.criterion[COSIA].weight
    main = F.cross_entropy(logits[COSIA], target, weight=weight)
    aux = torch.stack([F.cross_entropy(logits[k], target, weight=weight) for k in heads]).mean()
    loss = task.losses(batch, logits)["loss"]
    expected = main if bug else main + 1.5 * aux
    assert torch.allclose(loss, expected)
    assert aux > 0 and not torch.allclose(main, main + 1.5 * aux)


def test_modality_dropout_honours_its_probability_and_ign_bug_flag_drops_one_time_in_two(hub_world, tmp_path):
    config = _config(hub_world, tmp_path, "train.hub.modality_dropout={SENTINEL2_TS: 0.2}")
    task = HubSegmentationTask(config, model=build_model(config, pretrained_encoder=False))
    draws = [task.dropped_modalities() for _ in range(4000)]
    s2 = sum("SENTINEL2_TS" in d for d in draws) / len(draws)
    assert abs(s2 - 0.2) < 0.03 and not any("AERIAL_RGBI" in d for d in draws)
    buggy = _config(hub_world, tmp_path, "train.hub.modality_dropout={SENTINEL2_TS: 0.2}",
                    "train.hub.ign_modality_dropout_bug=true")  # fmt: skip
    task = HubSegmentationTask(buggy, model=build_model(buggy, pretrained_encoder=False))
    draws = [task.dropped_modalities() for _ in range(4000)]
    for modality in ("AERIAL_RGBI", "SENTINEL2_TS"):
        assert abs(sum(modality in d for d in draws) / len(draws) - 0.5) < 0.03
    network = task.model.eval()
    batch = _batch(buggy)
    with torch.no_grad():
        kept, dropped = network(batch)[COSIA], network(batch, drop=("SENTINEL2_TS",))[COSIA]
    assert not torch.allclose(kept, dropped)


def test_bad_hub_training_settings_are_refused_naming_the_key(hub_world, tmp_path):
    with pytest.raises(ConfigError, match=r"train.hub.modality_dropout: \['SPOT_RGBI'\] not in data.hub.modalities"):
        _config(hub_world, tmp_path, "train.hub.modality_dropout={SPOT_RGBI: 0.5}")
    with pytest.raises(ConfigError, match=r"within 0\.\.1"):
        _config(hub_world, tmp_path, "train.hub.modality_dropout={SENTINEL2_TS: 1.5}")
    with pytest.raises(ConfigError, match=r"train\.class_balancing is not supported with model\.hub"):
        train(_config(hub_world, tmp_path, "train.class_balancing=sqrt_inverse"), progress=False)
    assert not any(tmp_path.iterdir())


def test_weighted_iou_is_ign_training_metric_torchmetrics_weighted_jaccard():
    from torchmetrics.classification import MulticlassJaccardIndex

    generator = torch.Generator().manual_seed(3)
    target = torch.randint(0, 4, (5000,), generator=generator)  # class 4 never true
    preds = torch.where(torch.rand(5000, generator=generator) < 0.6, target, torch.randint(0, 5, (5000,)))
    matrix = np.zeros((5, 5), dtype=np.int64)
    np.add.at(matrix, (target.numpy(), preds.numpy()), 1)
    expected = MulticlassJaccardIndex(num_classes=5, average="weighted")(preds, target)
    assert weighted_iou(matrix) == pytest.approx(float(expected), abs=1e-6)


def _aligned_batch(size: int, dates: int = 3) -> dict:
    """A collate_hub batch whose aerial patch (16 px), Sentinel-2 series (4 px; date t adds 100 t) and label draw the
    same asymmetric 4 x 4 block pattern, the last date of the second patch padding."""
    blocks = torch.arange(16, dtype=torch.uint8).view(4, 4)
    label = blocks.repeat_interleave(4, 0).repeat_interleave(4, 1)
    series = blocks.float() + 100 * torch.arange(dates).view(-1, 1, 1, 1).float()
    pad_mask = torch.zeros(size, dates, dtype=torch.bool)
    pad_mask[1, -1] = True
    return {
        "patch_id": [f"P{i}" for i in range(size)],
        "index": torch.arange(size),
        "AERIAL_RGBI": label.expand(size, 3, 16, 16).clone(),  # LC-D reads bands 4, 1, 2
        "SENTINEL2_TS": series.expand(size, dates, 10, 4, 4).clone(),
        "SENTINEL2_DATES": torch.arange(dates).expand(size, dates).clone(),
        "SENTINEL2_PAD_MASK": pad_mask,
        COSIA: label.expand(size, 16, 16).clone(),
    }


def _raw(batch: dict, statistics: dict, modality: str) -> torch.Tensor:
    """A prepared batch's modality back on its files' scale."""
    if modality not in statistics:
        return batch[modality]
    means, stds = (torch.tensor(v, dtype=torch.float32).view(-1, 1, 1) for v in statistics[modality])
    return (batch[modality] * stds + means).round()


def test_training_flips_and_rotates_every_modality_and_label_of_a_patch_alike(hub_world, tmp_path):
    config = _config(hub_world, tmp_path, "data.augmentation_probability=0.3")
    task = HubSegmentationTask(config, model=build_model(config, pretrained_encoder=False))
    original = _aligned_batch(3000)
    batch = task.prepare_batch(dict(original), training=True)
    label = batch[COSIA]
    aerial, series = _raw(batch, task.statistics, "AERIAL_RGBI"), _raw(batch, task.statistics, "SENTINEL2_TS")
    assert torch.equal(aerial, label.unsqueeze(1).expand_as(aerial).float())
    offsets = 100 * torch.arange(3).view(1, -1, 1, 1, 1).float()
    assert torch.equal(series - offsets, label[:, None, None, ::4, ::4].expand_as(series).float())
    for key in ("SENTINEL2_DATES", "SENTINEL2_PAD_MASK"):
        assert torch.equal(batch[key], original[key])
    # The pattern has no symmetry: a patch is unchanged only when none of hflip, vflip and rot90 was drawn.
    unchanged = (label == original[COSIA]).flatten(1).all(1).float().mean()
    assert abs(unchanged - 0.7**3) < 0.03
    assert len({tuple(x.flatten().tolist()) for x in label}) == 8  # the whole dihedral group is reached
    validation = task.prepare_batch(dict(original), training=False)
    assert torch.equal(validation[COSIA], original[COSIA])
    still = _config(hub_world, tmp_path, "data.augmentation_probability=0")
    task = HubSegmentationTask(still, model=build_model(still, pretrained_encoder=False))
    assert torch.equal(task.prepare_batch(dict(original), training=True)[COSIA], original[COSIA])


def test_radiometric_jitter_is_refused_with_the_multimodal_network(hub_world, tmp_path):
    with pytest.raises(ConfigError, match=r"data\.radiometric is not supported with model\.hub"):
        train(_config(hub_world, tmp_path, "data.radiometric.gain=0.1"), progress=False)
    assert not any(tmp_path.iterdir())


def test_reproduce_trains_scores_the_main_task_and_sets_it_beside_the_published_figures(hub_world, tmp_path):
    args = [
        "reproduce",
        "flairhub-LC-D",
        *_sets(*TINY_HUB_NETWORK, *RUN, f"data.root={hub_world}", f"output_dir={tmp_path}"),
    ]
    result = runner.invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "flairhub-LC-D"
    ours = json.loads((run / "evaluation" / COSIA / "metrics" / "metrics.json").read_text())
    assert ours["protocol"] == "flairhub"
    rows = {row[0]: row[1:] for row in csv.reader((run / "comparison" / "comparison.csv").read_text().splitlines())}
    assert rows["metric"] == ["flairhub-LC-D", "published: IGNF/FLAIR-HUB README, Baseline results, LC-D"]
    assert rows["protocol"] == ["flairhub", "flairhub"]
    miou = dict(zip(ours["Avg_metrics_name"], ours["Avg_metrics"], strict=True))["mIoU"]
    assert [float(v) for v in rows["mIoU"]] == [pytest.approx(miou, abs=1e-6), 64.7]
    assert float(rows["Overall Accuracy"][1]) == 77.6
    assert (run / "comparison" / "report.html").is_file()
