"""Turning logits into classes: disabled targets are never predicted."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def masked_argmax(logits: torch.Tensor, disabled: Sequence[int], dim: int = 1) -> torch.Tensor:
    """Argmax over ``dim`` after setting the logits of ``disabled`` targets to -inf (uint8 result)."""
    if disabled:
        logits = logits.clone()
        index = torch.as_tensor(list(disabled), device=logits.device)
        logits.index_fill_(dim, index, float("-inf"))
    return logits.argmax(dim=dim).to(torch.uint8)
