"""The Lightning task's optimiser and schedule choices."""

import torch

from flairkit.config import load_config
from flairkit.models.build import build_model
from flairkit.training.module import SegmentationTask


def _task(*overrides):
    config = load_config("demo", ["model.encoder=resnet18", *overrides])
    return SegmentationTask(config, model=build_model(config, pretrained_encoder=False))


def test_flair_schedule_is_sgd_with_reduce_on_plateau_on_val_loss():
    setup = _task("train.optimizer=sgd", "train.scheduler=plateau", "train.lr=0.02").configure_optimizers()
    assert isinstance(setup["optimizer"], torch.optim.SGD)
    assert setup["optimizer"].defaults["lr"] == 0.02 and setup["optimizer"].defaults["momentum"] == 0.0
    scheduler = setup["lr_scheduler"]["scheduler"]
    assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert (scheduler.factor, scheduler.patience, scheduler.cooldown) == (0.5, 10, 4)
    assert setup["lr_scheduler"]["monitor"] == "val_loss"


def test_cosine_schedule_decays_to_min_lr_over_the_epochs():
    setup = _task("train.scheduler=cosine", "train.max_epochs=4", "train.min_lr=0.0").configure_optimizers()
    assert isinstance(setup["optimizer"], torch.optim.AdamW)
    scheduler = setup["lr_scheduler"]["scheduler"]
    for _ in range(4):
        setup["optimizer"].step()
        scheduler.step()
    assert scheduler.get_last_lr()[0] == 0.0
