"""The Lightning task that trains, validates and predicts FLAIR segmentation models.

The network is held as ``self.model`` and the aerial loss as ``self.criterion`` so that checkpoint keys
(``model.seg_model.*``, ``criterion.weight``, ``model.arch_vhr.*``) match IGN's Lightning checkpoints.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from flairkit.config.schema import FlairConfig
from flairkit.data.transforms import Normalizer, augment_batch
from flairkit.evaluation.confusion import ConfusionAccumulator
from flairkit.evaluation.protocols import compute_metrics
from flairkit.models.build import build_model
from flairkit.models.inference import masked_argmax
from flairkit.nomenclature import get_nomenclature
from flairkit.training.losses import aerial_class_weights, satellite_class_weights, weighted_cross_entropy


class SegmentationTask(L.LightningModule):
    """Aerial U-Net / smp model or U-T&T, trained with FLAIR's weighted cross entropy."""

    def __init__(
        self,
        config: FlairConfig | dict[str, Any],
        model: nn.Module | None = None,
        class_weights: torch.Tensor | None = None,
    ):
        super().__init__()
        if isinstance(config, dict):
            config = FlairConfig.model_validate(config)
        self.save_hyperparameters({"config": config.model_dump(mode="json")})
        self.config = config
        self.nomenclature = get_nomenclature(config.data.nomenclature)
        self.multimodal = config.model.multimodal
        self.model = model if model is not None else build_model(config, pretrained_encoder=True)
        self.normalizer = Normalizer.from_config(config.data.normalization)
        aerial_weights = aerial_class_weights(self.nomenclature) if class_weights is None else class_weights
        self.criterion = weighted_cross_entropy(aerial_weights)
        if self.multimodal:
            sat_weights = satellite_class_weights(self.nomenclature) * (aerial_weights > 0)
            if class_weights is not None:
                sat_weights = sat_weights * aerial_weights
            self.criterion_sat = weighted_cross_entropy(sat_weights)
        self.val_confusion = ConfusionAccumulator(self.nomenclature.n_targets)
        self.augment_generator = torch.Generator().manual_seed(config.train.seed)
        if config.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # Kept outside the module registry so that state-dict keys stay those of the plain network.
        object.__setattr__(self, "network", torch.compile(self.model) if config.train.compile else self.model)

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        trainer = self._trainer
        return self.prepare_batch(batch, training=trainer is not None and trainer.training)

    def prepare_batch(self, batch: dict[str, Any], training: bool = False) -> dict[str, Any]:
        """Normalise a batch already on the device and, in training, augment its aerial branch."""
        image = self.normalizer(batch["image"])
        target = batch.get("target")
        if target is not None:
            batch["target_sat"] = target
        if training and target is not None:
            image, target = augment_batch(
                image, target, self.config.data.augmentation_probability, self.augment_generator
            )
            batch["target"] = target
        if self.config.train.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        batch["input"] = image
        return batch

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["flairkit_rng"] = {
            "augment": self.augment_generator.get_state(),
            "torch": torch.get_rng_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("flairkit_rng")
        if states is not None:
            self.augment_generator.set_state(states["augment"])
            torch.set_rng_state(states["torch"])

    def forward(self, batch: dict[str, Any], drop_sentinel: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits of the aerial branch and, for U-T&T, of the satellite branch."""
        metadata = batch.get("metadata")
        if self.multimodal:
            return self.network(
                batch["input"], batch["sentinel"], batch["dates"], metadata=metadata, drop_sentinel=drop_sentinel
            )
        return self.network(batch["input"], metadata), None

    def _loss(self, batch: dict[str, Any], logits: torch.Tensor, sat_logits: torch.Tensor | None) -> torch.Tensor:
        loss = self.criterion(logits.float(), batch["target"].long())
        if sat_logits is not None:
            loss = loss + self.criterion_sat(sat_logits.float(), batch["target_sat"].long())
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        dropout = self.config.model.fusion.modality_dropout
        drop = self.multimodal and dropout > 0 and torch.rand((), generator=self.augment_generator).item() < dropout
        logits, sat_logits = self(batch, drop_sentinel=drop)
        loss = self._loss(batch, logits, sat_logits)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(logits), sync_dist=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_confusion.reset()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits, sat_logits = self(batch)
        loss = self._loss(batch, logits, sat_logits)
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, batch_size=len(logits), sync_dist=True)
        self.val_confusion.update(masked_argmax(logits, self.nomenclature.disabled), batch["target"])

    def on_validation_epoch_end(self) -> None:
        matrix = torch.as_tensor(self.val_confusion.matrix, device=self.device)
        if self.trainer.world_size > 1:
            matrix = self.trainer.strategy.reduce(matrix.double(), reduce_op="sum").round().long()
        if int(matrix.sum()) == 0:
            return
        metrics = compute_metrics(matrix.cpu().numpy(), self.nomenclature, self.config.evaluate.protocol)
        self.log("val_miou", metrics.miou / 100.0, prog_bar=True, sync_dist=False, rank_zero_only=False)
        self.log("val_oa", metrics.overall_accuracy / 100.0, sync_dist=False)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        logits, _ = self(batch)
        return {"classes": masked_argmax(logits, self.nomenclature.disabled), "index": batch["index"]}

    def configure_optimizers(self) -> dict[str, Any]:
        train = self.config.train
        if train.optimizer == "sgd":
            optimizer = torch.optim.SGD(
                self.model.parameters(), lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay
            )
        else:
            optimizer = torch.optim.AdamW(self.model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
        if train.scheduler == "cosine":
            cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=train.max_epochs, eta_min=train.min_lr)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": cosine, "interval": "epoch"}}
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="min",
            factor=train.plateau_factor,
            patience=train.plateau_patience,
            cooldown=train.plateau_cooldown,
            min_lr=train.min_lr,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}
