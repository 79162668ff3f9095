"""Adapt weights made for other classes or bands to the configured network when fine-tuning.

Head rule: a new class that groups FLAIR classes (``flair`` in a nomenclature YAML) takes the mean of the head
weights of the weights' enabled targets holding those classes, and the logsumexp of their biases (with equal
weights, its probability is then the sum of theirs); any other class keeps the head as freshly built.

First-convolution rule: a band the weights know keeps its filters (whatever its position), a new band gets the
mean of the weights' filters over their bands, and a band the config does not select is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from flairkit.errors import CheckpointError
from flairkit.nomenclature import Nomenclature


def grouped_rows(source: Nomenclature, target: Nomenclature) -> list[tuple[int, ...]]:
    """For each target of ``target``, the enabled targets of ``source`` holding the FLAIR classes it groups."""
    if source.flair_masks:
        holder = dict(source.value_to_target)
    else:
        holder = {code: t.index for t in source.targets for code in t.flair}
    rows = []
    for new in target.targets:
        found = {holder[code] for code in new.flair if code in holder}
        rows.append(tuple(sorted(r for r in found if source.targets[r].enabled)))
    return rows


def rebuild_head(
    tensors: Mapping[str, torch.Tensor],
    built: Mapping[str, torch.Tensor],
    prefix: str | tuple[str, ...],
    rows: list[tuple[int, ...]],
) -> dict[str, torch.Tensor]:
    """``tensors`` with the head under ``prefix`` (or prefixes) replaced by the ``built`` one, its rows ``rows`` grouped
    by the rule.

    ``rows[i]`` lists the rows of the file's head that new class ``i`` groups (empty: it keeps the built row).
    """
    adapted = {key: value for key, value in tensors.items() if not key.startswith(prefix)}
    for key, value in built.items():
        if not key.startswith(prefix):
            continue
        head = value.detach().clone()
        source = tensors.get(key)
        if source is not None and source.shape[1:] == head.shape[1:] and head.shape[0] == len(rows):
            for index, group in enumerate(rows):
                if group:
                    picked = source[list(group)].to(head.dtype)
                    head[index] = torch.logsumexp(picked, dim=0) if head.dim() == 1 else picked.mean(dim=0)
        adapted[key] = head
    return adapted


def first_convolution(tensors: Mapping[str, torch.Tensor], built: Mapping[str, torch.Tensor], encoder: str) -> str:
    """The key of the first convolution weight under ``encoder`` (a key prefix), which the file provides (whatever
    its input depth)."""
    for key, value in built.items():
        source = tensors.get(key)
        if (
            key.startswith(encoder)
            and value.dim() == 4
            and source is not None
            and source.dim() == 4
            and source.shape[0] == value.shape[0]
        ):
            return key
    raise CheckpointError("the weights provide no first convolution of the network; the input bands cannot be adapted")


def adapt_channels(
    tensors: Mapping[str, torch.Tensor],
    built: Mapping[str, torch.Tensor],
    encoder: str,
    weights_channels: list[int],
    channels: list[int],
) -> tuple[dict[str, torch.Tensor], str]:
    """``tensors`` with the input filters of the first convolution under ``encoder`` rearranged from
    ``weights_channels`` to ``channels`` (1-based bands) by the rule; returns them and the key of that convolution."""
    key = first_convolution(tensors, built, encoder)
    source = tensors[key]
    if source.shape[1] != len(weights_channels):
        raise CheckpointError(
            f"{key} takes {source.shape[1]} bands but the weights' config selects {weights_channels}; "
            "the input bands cannot be adapted"
        )
    mean = source.mean(dim=1)
    filters = [source[:, weights_channels.index(c)] if c in weights_channels else mean for c in channels]
    return {**tensors, key: torch.stack(filters, dim=1).contiguous()}, key
