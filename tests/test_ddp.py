"""DDP: every rank runs as many steps (no hang), evaluation counts each patch once, resume carries CUDA states."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from conftest import tiny_config
from flairkit.config import load_config
from flairkit.data.datamodule import FlairDataModule
from flairkit.data.datasets import EpochShuffleSampler, collate_patches
from flairkit.models.build import build_model
from flairkit.nomenclature import INVALID_TARGET
from flairkit.synth.world import SynthOptions, synthesize_world
from flairkit.training.module import SegmentationTask
from flairkit.training.run import build_trainer

DDP_WORLD = SynthOptions(
    n_domains=2,
    areas_per_domain=1,
    patches_per_area=6,
    patch_size=64,
    seed=7,
    sentinel=False,
    n_orthos=0,
    test_domains=0,
    val_domains=1,
)
"""6 train and 6 val patches of 64 px."""
DDP_TIMEOUT = 300
"""Seconds: the 2-process run takes well under a minute; a hang fails the test instead of freezing it."""


class Keys(Dataset):
    """Items are the keys the sampler gave."""

    def __getitem__(self, key):
        return key


def rank_batches(length: int, world: int, batch: int, **options) -> list[list[list]]:
    """Per rank, the batches of keys a DataLoader draws with the rank's sampler."""
    return [
        list(DataLoader(Keys(), batch_size=batch, sampler=sampler, collate_fn=list))
        for sampler in (EpochShuffleSampler(length, 5, rank, world, **options) for rank in range(world))
    ]


@pytest.mark.parametrize("shuffle", [True, False])
def test_every_rank_runs_as_many_batches_and_evaluation_counts_every_patch_once(shuffle):
    for length, world, batch in itertools.product(range(1, 13), range(1, 5), range(1, 4)):
        case = f"{length} patches, {world} ranks, batch {batch}"
        marked = rank_batches(length, world, batch, shuffle=shuffle, mark_padding=True)
        assert len({len(batches) for batches in marked}) == 1, case
        keys = [key for batches in marked for each in batches for key in each]
        counted = sorted(index for index, padding in keys if not padding)
        assert counted == list(range(length)), case
        assert len(keys) - len(counted) == -length % world, case  # the padding, and only it, is flagged
        plain = rank_batches(length, world, batch, shuffle=shuffle)
        assert [[[i for i, _ in b] for b in batches] for batches in marked] == plain, case


def test_ranks_share_distributed_samplers_permutation_and_one_process_sees_their_union():
    for length, world, epoch in itertools.product(range(1, 13), range(1, 5), range(3)):
        ranks = []
        for rank in range(world):
            ours = EpochShuffleSampler(length, 11, rank, world)
            torchs = DistributedSampler(range(length), num_replicas=world, rank=rank, shuffle=True, seed=11)
            ours.set_epoch(epoch)
            torchs.set_epoch(epoch)
            assert list(ours) == list(torchs)
            ranks.append(list(ours))
        single = EpochShuffleSampler(length, 11)
        single.set_epoch(epoch)
        order = list(single)
        # The order completed with repeats of its first indices, up to a multiple of the world size.
        padded = [order[p % length] for p in range(len(ranks[0]) * world)]
        batch = 2
        for start in range(0, length, batch):
            together = [i for shard in ranks for i in shard[start : start + batch]]
            assert sorted(together) == sorted(padded[start * world : (start + batch) * world])


def test_a_padded_repeat_counts_neither_in_the_confusion_matrix_nor_in_the_loss(tiny_world, tmp_path):
    config = tiny_config(tiny_world, tmp_path)
    task = SegmentationTask(config, model=build_model(config, pretrained_encoder=False)).eval()
    datamodule = FlairDataModule(config)
    datamodule.setup("validate")
    dataset = datamodule.datasets["val"]

    def counts(keys):
        task.on_validation_epoch_start()
        with torch.no_grad():
            task.validation_step(task.prepare_batch(collate_patches([dataset[k] for k in keys])), 0)
        return task.val_confusion.matrix, task.val_loss_sums.clone()

    matrix, sums = counts([(0, False), (1, False)])
    padded_matrix, padded_sums = counts([(0, False), (1, False), (0, True)])
    assert matrix.sum() > 0 and np.array_equal(padded_matrix, matrix)
    assert torch.allclose(padded_sums, sums, rtol=1e-5)
    repeated_matrix, _ = counts([(0, False), (1, False), (0, False)])
    assert repeated_matrix.sum() > matrix.sum()  # the same repeat, unflagged, would count twice


DRIVER = """
import sys
from pathlib import Path

import lightning as L
import numpy as np

from flairkit.config import load_config
from flairkit.training.run import train


class SaveValidationMatrix(L.Callback):
    def on_validation_end(self, trainer, pl_module):
        if trainer.is_global_zero and not trainer.sanity_checking:
            np.save(OUT, pl_module.val_matrix)


OUT = Path(sys.argv[1])
train(load_config("demo", sys.argv[2:]), progress=False, callbacks=[SaveValidationMatrix()])
"""
"""`flair train` as a script, saving the confusion matrix of each validation (the DDP launcher reruns it)."""


def uneven_lists(world_root: Path, folder: Path, sizes: dict[str, int]) -> list[str]:
    """Settings that train and validate on the first patches of the world's lists (absolute paths)."""
    settings = []
    for split, count in sizes.items():
        rows = (world_root / f"{split}.csv").read_text().splitlines()[:count]
        path = folder / f"{split}.csv"
        path.write_text("".join(",".join(str(world_root / cell) for cell in row.split(",")) + "\n" for row in rows))
        settings.append(f"data.{split}_csv={path}")
    return settings


def run_driver(folder: Path, settings: list[str]) -> np.ndarray:
    """Run the driver to the end; a run that has not ended after DDP_TIMEOUT seconds is killed and fails."""
    driver, matrix = folder / "driver.py", folder / "val_matrix.npy"
    driver.write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen(
        [sys.executable, str(driver), str(matrix), *settings],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # the rank processes it launches are killed with it
    )
    try:
        _, stderr = process.communicate(timeout=DDP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"the DDP run did not end within {DDP_TIMEOUT} s (a rank waits for the other)")
    assert process.returncode == 0, stderr[-3000:]
    return np.load(matrix)


@pytest.mark.slow
def test_ddp_on_an_uneven_split_ends_and_validates_exactly_as_one_process(tmp_path):
    # 5 train patches on 2 ranks with batch 2: 3 and 2 patches, 2 and 1 steps without padding (a hang);
    # 3 val patches: one rank validates a repeat, which must not count. 64 px patches: a padded rank's
    # last batch holds one patch, whose 32 px version would reach batch norm as 1 value per channel.
    world = synthesize_world(tmp_path / "world", DDP_WORLD).root
    settings = [
        *uneven_lists(world, tmp_path, {"train": 5, "val": 3}),
        f"output_dir={tmp_path / 'runs'}",
        "data.batch_size=2",
        "data.num_workers=0",
        "train.max_epochs=2",
        "train.accelerator=cpu",
    ]
    ddp_matrix = run_driver(tmp_path, [*settings, "train.devices=2", "train.strategy=ddp"])
    summary = json.loads((tmp_path / "runs" / "demo" / "train_summary.json").read_text())
    assert summary["epochs"] == 2

    # One process validates the weights the DDP run validated last (its last checkpoint).
    config = load_config("demo", [*settings, "train.devices=1"])
    task = SegmentationTask(config, model=build_model(config, pretrained_encoder=False))
    checkpoint = torch.load(config.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    task.load_state_dict(checkpoint["state_dict"])
    trainer = build_trainer(config, tmp_path / "single", progress=False, logger=False, callbacks=[])
    datamodule = FlairDataModule(config)
    single = trainer.validate(task, datamodule=datamodule, verbose=False)[0]
    val = datamodule.datasets["val"]
    assert task.val_matrix.sum() == sum(int((val.read_target(r) != INVALID_TARGET).sum()) for r in val.records)
    assert np.array_equal(ddp_matrix, task.val_matrix)
    assert summary["val_loss"] == pytest.approx(single["val_loss"], rel=1e-5)
    assert summary["val_miou"] == pytest.approx(single["val_miou"], abs=1e-6)


def checkpoint_of(task: SegmentationTask) -> dict:
    checkpoint: dict = {}
    task.on_save_checkpoint(checkpoint)
    return checkpoint


def test_cpu_checkpoints_carry_no_cuda_state_and_old_ones_still_load(tiny_world, tmp_path):
    config = tiny_config(tiny_world, tmp_path)
    task = SegmentationTask(config, model=build_model(config, pretrained_encoder=False))
    assert "cuda" not in checkpoint_of(task)["flairkit_rng"]
    task.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")))
    states = checkpoint_of(task)["flairkit_rng"]
    assert set(states) == {"augment", "torch"}
    task.on_load_checkpoint({"flairkit_rng": states})
    task.on_load_checkpoint({})  # a checkpoint from before the random states were saved


def test_gpu_checkpoints_carry_and_restore_the_cuda_state_of_the_process_device(tiny_world, tmp_path, monkeypatch):
    config = tiny_config(tiny_world, tmp_path)
    task = SegmentationTask(config, model=build_model(config, pretrained_encoder=False))
    gpu = torch.device("cuda", 1)  # e.g. DDP rank 1's device
    restored = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: torch.tensor([7, int(device.index)]))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((state.tolist(), device)))
    task.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=gpu))
    states = checkpoint_of(task)["flairkit_rng"]
    assert states["cuda"].tolist() == [7, 1]
    task.on_load_checkpoint({"flairkit_rng": states})
    assert restored == [([7, 1], gpu)]
    without_cuda = {key: value for key, value in states.items() if key != "cuda"}
    task.on_load_checkpoint({"flairkit_rng": without_cuda})  # a CPU run's checkpoint resumed on a GPU
    assert len(restored) == 1
    task.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")))
    task.on_load_checkpoint({"flairkit_rng": states})  # a GPU run's checkpoint resumed on CPUs
    assert len(restored) == 1
