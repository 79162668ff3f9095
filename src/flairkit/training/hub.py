"""The Lightning task of FLAIR-HUB's multimodal network (``model.hub``): per-task losses, auxiliary heads, modality
dropout, flips and rotations of every modality alike, per-task validation; IGN's training bugs fixed by default and
reproducible with ``train.hub.ign_*``.

It is :class:`~flairkit.training.module.SegmentationTask` on collate_hub batches and dicts of logits: the network
as ``model.*`` and the per-task losses as ``criterion.<TASK>.*``, the two key groups that
:func:`flairkit.models.hub.load_hub_weights` reads back (``model.`` stripped, ``criterion.`` dropped).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from flairkit.data.hub.multimodal import task_nomenclature
from flairkit.data.transforms import augment_arrays
from flairkit.evaluation.confusion import ConfusionAccumulator
from flairkit.evaluation.protocols import compute_metrics
from flairkit.models.hub import normalization, normalize_batch
from flairkit.models.inference import masked_argmax
from flairkit.training.losses import SegmentationLoss, aerial_class_weights
from flairkit.training.module import SegmentationTask, _counted_targets, _weighted_loss_sums

MAIN_METRIC = "val_miou"
"""Macro mIoU of the first task (data.hub.labels[0]), the default checkpoint choice."""
IGN_METRIC = "val_weighted_iou"
"""IGN's choice (train.hub.ign_weighted_iou_checkpoint): the first task's IoU weighted by class frequency."""


def weighted_iou(matrix: np.ndarray) -> float:
    """Per-class IoU weighted by each class's truth pixels, over every class (torchmetrics' MulticlassJaccardIndex
    ``average='weighted'``, IGN's training metric); a class of empty union counts 0."""
    matrix = np.asarray(matrix, dtype=np.float64)
    diag, rows, cols = np.diag(matrix), matrix.sum(axis=1), matrix.sum(axis=0)
    union = rows + cols - diag
    iou = np.divide(diag, union, out=np.zeros_like(diag), where=union > 0)
    return float((iou * rows).sum() / rows.sum()) if rows.sum() else 0.0


class HubSegmentationTask(SegmentationTask):
    """FLAIR-HUB's multimodal, multi-task network trained on collate_hub batches (see the module docstring)."""

    def _setup_objective(self, class_weights: torch.Tensor | None) -> None:
        config = self.config
        hub = config.data.hub
        self.tasks = list(hub.labels)
        self.statistics = normalization(config)
        self.nomenclatures = {task: task_nomenclature(task, hub.lpis_level) for task in self.tasks}
        # Auxiliary heads share their task's class weights (IGN's, without per-modality exceptions).
        self.criterion = nn.ModuleDict(
            {
                task: SegmentationLoss(aerial_class_weights(self.nomenclatures[task]), config.train.loss)
                for task in self.tasks
            }
        )
        self.val_confusion = {t: ConfusionAccumulator(self.nomenclatures[t].n_targets) for t in self.tasks}
        self.val_loss_sums = torch.zeros(len(self.tasks), 2, dtype=torch.float64)
        self.val_matrix: dict[str, np.ndarray] = {}

    def prepare_batch(self, batch: dict[str, Any], training: bool = False) -> dict[str, Any]:
        """Inputs z-scored per modality as model.hub.normalization says; in training, each patch's modalities and
        labels flipped and rotated alike (data.augmentation_probability; a series on every date, its dates and pad
        mask untouched), as IGN's ``apply_numpy_augmentations``."""
        batch = normalize_batch(batch, self.statistics)
        if training:
            keys = [key for key in (*self.config.data.hub.modalities, *self.tasks) if key in batch]
            arrays = [batch[key] for key in keys]
            augmented = augment_arrays(arrays, self.config.data.augmentation_probability, self.augment_generator)
            batch.update(zip(keys, augmented, strict=True))
        return batch

    def forward(self, batch: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:  # type: ignore[override]
        """Class scores per task (and ``aux_<MOD>_<TASK>`` in training); ``drop``: modalities dropped before fusion."""
        return self.network(batch, drop=drop)

    def dropped_modalities(self) -> tuple[str, ...]:
        """The modalities this training batch drops: each with its train.hub.modality_dropout probability (with
        ``ign_modality_dropout_bug``, a probability drawn from U(0, 1) for every modality as soon as one is set)."""
        settings = self.config.train.hub
        modalities = self.config.data.hub.modalities
        if len(modalities) < 2 or not any(p > 0 for p in settings.modality_dropout.values()):
            return ()
        dropped = []
        for modality in modalities:
            if settings.ign_modality_dropout_bug:
                probability = torch.rand((), generator=self.augment_generator).item()
            else:
                probability = settings.modality_dropout.get(modality, 0.0)
            if torch.rand((), generator=self.augment_generator).item() < probability:
                dropped.append(modality)
        return tuple(dropped)

    def losses(self, batch: dict[str, Any], logits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``loss``: the sum over tasks of task_weights x (task loss + aux_loss_weight x mean of its auxiliary heads'
        losses); and per task, ``<TASK>`` its loss and ``aux_<TASK>`` its weighted auxiliary term (0 with
        ``ign_aux_loss_bug``, as IGN never adds it)."""
        settings = self.config.train.hub
        terms: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=next(iter(logits.values())).device)
        for task in self.tasks:
            target = batch[task].long()
            criterion = self.criterion[task]
            main = criterion(logits[task].float(), target)
            heads = [criterion(value.float(), target) for key, value in logits.items() if _is_aux(key, task)]
            aux = torch.zeros_like(main)
            if heads and not settings.ign_aux_loss_bug:
                aux = settings.aux_loss_weight * torch.stack(heads).mean()
            terms[task], terms[f"aux_{task}"] = main, aux
            total = total + settings.task_weights.get(task, 1.0) * (main + aux)
        return {"loss": total, **terms}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.losses(batch, self(batch, drop=self.dropped_modalities()))["loss"]
        size = len(batch["patch_id"])
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size, sync_dist=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        for confusion in self.val_confusion.values():
            confusion.reset()
        self.val_loss_sums.zero_()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Per task: count the batch in its confusion matrix and its loss sums, except padded repeats."""
        logits = self(batch)
        sums = []
        for task in self.tasks:
            target = _counted_targets(batch, task)
            sums.append(_weighted_loss_sums(self.criterion[task], logits[task], target))
            self.val_confusion[task].update(masked_argmax(logits[task], self.nomenclatures[task].disabled), target)
        self.val_loss_sums += torch.stack(sums).cpu().double()

    def on_validation_epoch_end(self) -> None:
        """Log val_loss (the task-weighted sum of each task's weighted cross entropy over the split), per task
        val_miou_<TASK>, and for the first task val_miou, val_oa and val_weighted_iou (IGN's metric)."""
        sizes = [self.nomenclatures[task].n_targets for task in self.tasks]
        local = torch.cat(
            [*(torch.from_numpy(self.val_confusion[t].matrix).double().flatten() for t in self.tasks)]
            + [self.val_loss_sums.flatten()]
        )
        summed = self._sum_over_ranks(local)
        offset = 0
        for task, n in zip(self.tasks, sizes, strict=True):
            self.val_matrix[task] = summed[offset : offset + n * n].round().long().reshape(n, n).numpy()
            offset += n * n
        losses, weights = summed[offset:].reshape(-1, 2).unbind(dim=1)
        task_weights = torch.tensor([self.config.train.hub.task_weights.get(t, 1.0) for t in self.tasks])
        self.log("val_loss", float((task_weights.double() * losses / weights).sum()), prog_bar=True)
        for index, task in enumerate(self.tasks):
            matrix = self.val_matrix[task]
            if int(matrix.sum()) == 0:
                continue
            metrics = compute_metrics(matrix, self.nomenclatures[task], self.config.evaluate.protocol)
            self.log(f"val_miou_{task}", metrics.miou / 100.0, sync_dist=False, rank_zero_only=False)
            if index == 0:
                self.log(MAIN_METRIC, metrics.miou / 100.0, prog_bar=True, sync_dist=False, rank_zero_only=False)
                self.log("val_oa", metrics.overall_accuracy / 100.0, sync_dist=False)
                self.log(IGN_METRIC, weighted_iou(matrix), sync_dist=False, rank_zero_only=False)


def _is_aux(key: str, task: str) -> bool:
    """Whether ``key`` is an auxiliary head's scores for ``task`` (``aux_<MOD>_<TASK>``)."""
    return key.startswith("aux_") and key.endswith(f"_{task}")
