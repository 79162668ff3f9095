"""Fine-tuning with the encoder frozen for the first epochs (``train.freeze_encoder_epochs``)."""

from __future__ import annotations

import lightning as L
from torch import nn

from flairkit.models.huggingface import HuggingFaceSegmenter
from flairkit.models.utt import UTT


def aerial_encoder(model: nn.Module) -> nn.Module:
    """The smp encoder of a flairkit network (the aerial branch's for U-T&T, the backbone of a transformers one)."""
    if isinstance(model, HuggingFaceSegmenter):
        return model.encoder
    return (model.arch_vhr if isinstance(model, UTT) else model.seg_model).encoder


class FreezeEncoder(L.Callback):
    """Freeze the encoder for the first ``epochs`` epochs: no gradients, batch norm in eval mode (its statistics
    stay those of the weights); then train it again."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning restores each module's mode after validation: the mode set here holds for the whole epoch.
        frozen = trainer.current_epoch < self.epochs
        encoder = aerial_encoder(pl_module.model)
        encoder.train(not frozen)
        for parameter in encoder.parameters():
            parameter.requires_grad_(not frozen)
