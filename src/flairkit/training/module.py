"""The Lightning task that trains, validates and predicts FLAIR segmentation models.

The network is held as ``self.model`` and the aerial loss as ``self.criterion`` so that checkpoint keys
(``model.seg_model.*``, ``criterion.weight``, ``model.arch_vhr.*``) match IGN's Lightning checkpoints.
"""

from __future__ import annotations

import functools
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flairkit.config.schema import FlairConfig
from flairkit.data.transforms import Normalizer, RadiometricJitter, augment_batch
from flairkit.evaluation.confusion import ConfusionAccumulator
from flairkit.evaluation.protocols import compute_metrics
from flairkit.models.build import build_model
from flairkit.models.inference import masked_argmax, network_logits, prepare_inputs, runnable_network
from flairkit.models.weights.files import NOMENCLATURE_KEY
from flairkit.nomenclature import INVALID_TARGET, get_nomenclature
from flairkit.training.losses import SegmentationLoss, aerial_class_weights, satellite_class_weights


class SegmentationTask(L.LightningModule):
    """Aerial U-Net / smp model or U-T&T, trained with FLAIR's weighted cross entropy (or ``train.loss``'s mix)."""

    def __init__(
        self,
        config: FlairConfig | dict[str, Any],
        model: nn.Module | None = None,
        class_weights: torch.Tensor | None = None,
    ):
        super().__init__()
        if isinstance(config, dict):
            config = FlairConfig.model_validate(config)
        self.config = config
        self.nomenclature = get_nomenclature(config.data.nomenclature)
        saved: dict[str, Any] = {"config": config.model_dump(mode="json")}
        if self.nomenclature.source is not None:
            # The YAML's text, not only its path: the checkpoint stays usable when the file moves or changes.
            saved[NOMENCLATURE_KEY] = self.nomenclature.source.read_text(encoding="utf-8")
        self.save_hyperparameters(saved)
        self.multimodal = config.model.multimodal
        self.model = model if model is not None else build_model(config, pretrained_encoder=True)
        self._setup_objective(class_weights)
        self.augment_generator = torch.Generator().manual_seed(config.train.seed)
        # Kept outside the module registry so that state-dict keys stay those of the plain network.
        network = runnable_network(self.model, config.train.channels_last, config.train.compile)
        object.__setattr__(self, "network", network)

    def _setup_objective(self, class_weights: torch.Tensor | None) -> None:
        """Inputs' normalisation, losses and validation accumulators."""
        config = self.config
        self.normalizer = Normalizer.from_config(config.data.normalization)
        self.radiometric = RadiometricJitter(config.data.radiometric, config.data.channels)
        aerial_weights = aerial_class_weights(self.nomenclature) if class_weights is None else class_weights
        self.criterion = SegmentationLoss(aerial_weights, config.train.loss)
        if self.multimodal:
            sat_weights = satellite_class_weights(self.nomenclature) * (aerial_weights > 0)
            if class_weights is not None:
                sat_weights = sat_weights * aerial_weights
            self.criterion_sat = SegmentationLoss(sat_weights, config.train.loss)
        self.val_confusion = ConfusionAccumulator(self.nomenclature.n_targets)
        # Per loss term (aerial, then satellite): summed weighted pixel losses and summed weights.
        self.val_loss_sums = torch.zeros(2 if self.multimodal else 1, 2, dtype=torch.float64)
        # Confusion matrix of the last validation pass over the whole split (every process's patches).
        self.val_matrix: np.ndarray | None = None

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        trainer = self._trainer
        return self.prepare_batch(batch, training=trainer is not None and trainer.training)

    def prepare_batch(self, batch: dict[str, Any], training: bool = False) -> dict[str, Any]:
        """Normalise a batch already on the device and, in training, augment its aerial branch (radiometric jitter
        on the 0..255 scale, then normalisation, then flips and rotations)."""
        if batch.get("target") is not None:
            batch["target_sat"] = batch["target"]
        if training and self.radiometric.enabled:
            batch["image"] = self.radiometric(batch["image"], self.augment_generator)
        augment = (
            functools.partial(
                augment_batch,
                probability=self.config.data.augmentation_probability,
                generator=self.augment_generator,
            )
            if training
            else None
        )
        return prepare_inputs(batch, self.normalizer, self.config.train.channels_last, augment)

    def _training_gpu(self) -> torch.device | None:
        """The GPU this process trains on, None outside a trainer or on other devices."""
        device = self._trainer.strategy.root_device if self._trainer is not None else None
        return device if device is not None and device.type == "cuda" else None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save the random states (augmentation, torch, and on GPUs this process's CUDA generator) for resuming.

        Only rank 0's checkpoint is written: its CUDA state is every rank's, as every rank is seeded alike
        and draws as many random numbers (same batch shapes on every rank).
        """
        states = {"augment": self.augment_generator.get_state(), "torch": torch.get_rng_state()}
        gpu = self._training_gpu()
        if gpu is not None:
            states["cuda"] = torch.cuda.get_rng_state(gpu)
        checkpoint["flairkit_rng"] = states

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the random states saved with the checkpoint; older or CPU checkpoints may lack some."""
        states = checkpoint.get("flairkit_rng")
        if states is None:
            return
        self.augment_generator.set_state(states["augment"])
        torch.set_rng_state(states["torch"])
        gpu = self._training_gpu()
        if gpu is not None and "cuda" in states:
            torch.cuda.set_rng_state(states["cuda"], gpu)

    def forward(self, batch: dict[str, Any], drop_sentinel: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits of the aerial branch and, for U-T&T, of the satellite branch."""
        return network_logits(self.network, batch, self.multimodal, drop_sentinel)

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
        self.val_loss_sums.zero_()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Count the batch in the confusion matrix and the loss sums, except padded repeats (``valid`` false)."""
        logits, sat_logits = self(batch)
        target = _counted_targets(batch, "target")
        sums = [_weighted_loss_sums(self.criterion, logits, target)]
        if sat_logits is not None:
            sums.append(_weighted_loss_sums(self.criterion_sat, sat_logits, _counted_targets(batch, "target_sat")))
        self.val_loss_sums += torch.stack(sums).cpu().double()
        self.val_confusion.update(masked_argmax(logits, self.nomenclature.disabled), target)

    def _sum_over_ranks(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` (float64, CPU) summed over the DDP processes."""
        if self.trainer.world_size == 1:
            return values
        return self.trainer.strategy.reduce(values.to(self.device), reduce_op="sum").cpu()

    def on_validation_epoch_end(self) -> None:
        """Log val_loss (the weighted cross entropy over all the split's pixels, plus U-T&T's satellite term),
        val_miou and val_oa.

        All three come from sums over every process: they depend neither on the batch size nor on the
        number of processes.
        """
        n = self.nomenclature.n_targets
        local = torch.cat(
            [torch.from_numpy(self.val_confusion.matrix).double().flatten(), self.val_loss_sums.flatten()]
        )
        summed = self._sum_over_ranks(local)
        self.val_matrix = summed[: n * n].round().long().reshape(n, n).numpy()
        losses, weights = summed[n * n :].reshape(-1, 2).unbind(dim=1)
        self.log("val_loss", float((losses / weights).sum()), prog_bar=True)
        if int(self.val_matrix.sum()) == 0:
            return
        metrics = compute_metrics(self.val_matrix, self.nomenclature, self.config.evaluate.protocol)
        self.log("val_miou", metrics.miou / 100.0, prog_bar=True, sync_dist=False, rank_zero_only=False)
        self.log("val_oa", metrics.overall_accuracy / 100.0, sync_dist=False)

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


def _counted_targets(batch: dict[str, Any], key: str) -> torch.Tensor:
    """The batch's ``key`` targets, with those of padded repeats (``valid`` false) set to the ignored value."""
    target = batch[key]
    valid = batch.get("valid")
    if valid is None:
        return target
    return torch.where(valid.view(-1, 1, 1), target, torch.full_like(target, INVALID_TARGET))


def _weighted_loss_sums(criterion: SegmentationLoss, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The sum of ``criterion``'s weighted cross entropy pixel losses and the sum of their weights (its mean is the
    ratio); validation measures the weighted cross entropy whatever the training loss mix.

    Unlike means, sums add up over batches and processes: the loss of a whole split, whatever its batching.
    """
    target = target.long()
    total = F.cross_entropy(
        logits.float(), target, weight=criterion.weight, ignore_index=criterion.ignore_index, reduction="sum"
    )
    weights = criterion.weight[target[target != criterion.ignore_index]].sum()
    return torch.stack([total, weights])
