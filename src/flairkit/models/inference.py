"""Inference helpers: logits to classes (disabled targets never predicted), BatchNorm folded into convolutions."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def masked_argmax(logits: torch.Tensor, disabled: Sequence[int], dim: int = 1) -> torch.Tensor:
    """Argmax over ``dim`` after setting the logits of ``disabled`` targets to -inf (uint8 result)."""
    if disabled:
        logits = logits.clone()
        index = torch.as_tensor(list(disabled), device=logits.device)
        logits.index_fill_(dim, index, float("-inf"))
    return logits.argmax(dim=dim).to(torch.uint8)


def fold_batchnorm(model: nn.Module, example: torch.Tensor, tolerance: float = 1e-4) -> nn.Module:
    """A copy of ``model`` (eval mode) with every BatchNorm that directly follows a convolution folded into it.

    The convolution -> BatchNorm pairs are found by running ``example`` through the model. The copy is
    returned only if its output matches the model's on ``example`` (largest error relative to the largest
    logit below ``tolerance``), else the model itself: a convolution whose output also feeds another layer
    cannot be folded, and the check catches it.
    """
    model = model.eval()
    names = {module: name for name, module in model.named_modules()}
    calls: Counter[nn.Module] = Counter()
    producers: dict[int, nn.Module] = {}
    outputs: list[torch.Tensor] = []  # kept alive so that tensor ids stay unique during the pass
    pairs: dict[nn.Module, nn.Module] = {}

    def after_conv(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        calls[module] += 1
        producers[id(output)] = module
        outputs.append(output)

    def after_norm(module: nn.Module, inputs: tuple, _output: torch.Tensor) -> None:
        calls[module] += 1
        if id(inputs[0]) in producers:
            pairs[module] = producers[id(inputs[0])]

    hooks = [
        module.register_forward_hook(after_conv if isinstance(module, nn.Conv2d) else after_norm)
        for module in model.modules()
        if isinstance(module, nn.Conv2d | nn.BatchNorm2d)
    ]
    try:
        with torch.no_grad():
            reference = model(example)
    finally:
        for hook in hooks:
            hook.remove()
        outputs.clear()
    convs = Counter(pairs.values())
    foldable = {
        norm: conv
        for norm, conv in pairs.items()
        if calls[norm] == calls[conv] == convs[conv] == 1 and norm.running_mean is not None
    }
    if not foldable:
        return model
    folded = copy.deepcopy(model)
    for norm, conv in foldable.items():
        fused = fuse_conv_bn_eval(folded.get_submodule(names[conv]), folded.get_submodule(names[norm]))
        _replace(folded, names[conv], fused)
        _replace(folded, names[norm], nn.Identity())
    with torch.no_grad():
        error = (folded(example) - reference).abs().max() / reference.abs().max().clamp_min(1e-12)
    return folded if error <= tolerance else model


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)
