"""Normalisation and geometric augmentation of batches, applied on the device after a uint8 transfer.

Loaders hand over raw uint8 patches; these functions turn them into float inputs where the model runs,
so a batch crosses the host-device link at a quarter of its float32 size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from flairkit.config.schema import NormalizationConfig


class Normalizer(torch.nn.Module):
    """Turn a uint8 (B, C, H, W) batch into model inputs according to a normalisation mode."""

    def __init__(self, mode: str, means: Sequence[float] | None = None, stds: Sequence[float] | None = None):
        super().__init__()
        self.mode = mode
        if mode == "custom":
            if means is None or stds is None or len(means) != len(stds):
                raise ValueError("custom normalisation needs one mean and one std per channel")
            scale = 1.0 / torch.tensor(stds, dtype=torch.float32)
            shift = -torch.tensor(means, dtype=torch.float32) * scale
        elif mode == "scaling":
            scale = torch.full((1,), 1.0 / 255.0)
            shift = torch.zeros(1)
        elif mode == "without":
            scale, shift = torch.ones(1), torch.zeros(1)
        else:
            raise ValueError(f"unknown normalisation mode {mode!r}; use custom, scaling or without")
        self.register_buffer("scale", scale.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, -1, 1, 1), persistent=False)

    @classmethod
    def from_config(cls, config: NormalizationConfig) -> Normalizer:
        """Build from the ``data.normalization`` section."""
        return cls(config.mode, config.means, config.stds)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, batch.float(), self.scale)


def augment_batch(
    images: torch.Tensor, labels: torch.Tensor, probability: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random hflip, vflip and rot90 per sample, each with ``probability``, applied alike to images and labels.

    ``images`` is (B, C, H, W); ``labels`` is (B, H, W) or (B, K, H, W). Square patches are required for rot90.
    """
    if probability <= 0:
        return images, labels
    batch = images.shape[0]
    draws = torch.rand((3, batch), generator=generator, device="cpu") < probability
    label_has_channels = labels.dim() == 4
    out_images, out_labels = [], []
    for i in range(batch):
        image = images[i]
        label = labels[i] if label_has_channels else labels[i].unsqueeze(0)
        if draws[0, i]:
            image, label = image.flip(-1), label.flip(-1)
        if draws[1, i]:
            image, label = image.flip(-2), label.flip(-2)
        if draws[2, i]:
            image, label = image.rot90(1, (-2, -1)), label.rot90(1, (-2, -1))
        out_images.append(image)
        out_labels.append(label if label_has_channels else label.squeeze(0))
    return torch.stack(out_images), torch.stack(out_labels)
