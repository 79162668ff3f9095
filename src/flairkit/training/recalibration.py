"""BatchNorm recalibration: re-estimate running statistics once the weights are final (``train.recalibrate_batchnorm``).

During training the running statistics are a momentum average over weights that kept changing; measured again
over the training patches with the final weights, they match what the network sees (a remedy for the gap between
batch-statistics and running-statistics accuracy on radiometrically mixed domains, issue 20).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class _PooledMoments:
    """Exact mean and variance per channel of every input a BatchNorm layer sees, pooled over batches in float64."""

    def __init__(self, channels: int):
        self.count = 0
        self.mean = torch.zeros(channels, dtype=torch.float64)
        self.m2 = torch.zeros(channels, dtype=torch.float64)
        self.batches = 0

    def __call__(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].detach().to(torch.float64).transpose(0, 1).reshape(inputs[0].shape[1], -1).cpu()
        n = x.shape[1]
        mean = x.mean(dim=1)
        m2 = ((x - mean[:, None]) ** 2).sum(dim=1)
        # Chan et al.'s pairwise combination: exact and stable whatever the number of batches.
        delta = mean - self.mean
        total = self.count + n
        self.mean += delta * (n / total)
        self.m2 += m2 + delta**2 * (self.count * n / total)
        self.count = total
        self.batches += 1


def recalibrate_batchnorm(
    model: nn.Module,
    loader: Iterable[Any],
    passes: int = 1,
    forward: Callable[[Any], object] | None = None,
) -> int:
    """Replace the running mean and variance of every BatchNorm layer of ``model`` by those of its inputs over
    ``passes`` passes of ``loader``; returns the number of layers recalibrated.

    The network runs in eval mode (no dropout) except its BatchNorm layers, which normalise with batch statistics
    as in training; each layer's statistics are pooled exactly over all pixels of all batches (the unbiased
    variance, as PyTorch stores it), not averaged per batch. ``forward(batch)`` runs the network on one batch
    (default ``model(batch)``); give batches without augmentation. Frozen BatchNorm is left as it is.
    """
    if passes < 1:
        raise ValueError(f"passes must be at least 1, got {passes}")
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not layers:
        return 0
    run = forward if forward is not None else model
    modes = {module: module.training for module in model.modules()}
    moments = {layer: _PooledMoments(layer.num_features) for layer in layers}
    hooks = [layer.register_forward_pre_hook(moments[layer]) for layer in layers]
    try:
        model.eval()
        for layer in layers:
            layer.train()
        with torch.no_grad():
            for _ in range(passes):
                for batch in loader:
                    run(batch)
    finally:
        for hook in hooks:
            hook.remove()
        for module, training in modes.items():
            module.train(training)
    for layer, pooled in moments.items():
        if pooled.count < 2:
            raise ValueError("recalibration saw fewer than 2 values per channel: give it some batches")
        layer.running_mean.copy_(pooled.mean.to(layer.running_mean))
        layer.running_var.copy_((pooled.m2 / (pooled.count - 1)).to(layer.running_var))
        layer.num_batches_tracked.fill_(pooled.batches)
    return len(layers)
