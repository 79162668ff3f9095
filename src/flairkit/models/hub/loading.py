"""Load FLAIR-HUB weights (IGN's released safetensors, Lightning checkpoints) strictly into :class:`HubNetwork`.

IGN's loader strips a ``model.`` prefix, drops the ``criterion.*`` tensors (class weights of the loss) and then
loads non-strictly, re-initialising whatever does not fit. Here the same two key steps are taken and everything
else must match exactly: a checkpoint made for other modalities, tasks or auxiliary heads is refused naming them,
and any other missing, extra or mis-shaped tensor is refused naming the keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from flairkit.errors import CheckpointError
from flairkit.models.hub.network import HubNetwork
from flairkit.models.weights.files import read_state_dict

PREFIX = "model."
DROPPED = "criterion."
_PARTS = {
    "modalities": re.compile(r"^encoders\.([^.]+)\."),
    "tasks": re.compile(r"^main_decoders\.([^.]+)\."),
    "auxiliary heads": re.compile(r"^aux_decoders\.([^.]+)\."),
}
_FIX = {
    "modalities": "set data.hub.modalities (and data.hub.channels) to the checkpoint's",
    "tasks": "set data.hub.labels to the checkpoint's",
    "auxiliary heads": "set model.hub.aux_heads to the checkpoint's",
}


def hub_keys(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """IGN's key steps: the ``model.`` prefix of Lightning's module stripped, the loss's ``criterion.*`` dropped."""
    out = {}
    for key, value in tensors.items():
        key = key.removeprefix(PREFIX)
        if not key.startswith(DROPPED):
            out[key] = value
    return out


def _names(keys: set[str] | list[str], pattern: re.Pattern[str]) -> set[str]:
    return {match.group(1) for key in keys if (match := pattern.match(key))}


def load_hub_weights(network: HubNetwork, source: Path | str | Mapping[str, torch.Tensor]) -> None:
    """Load a weights file (or state dict) into ``network`` strictly; :class:`CheckpointError` when it does not fit."""
    label = str(source) if isinstance(source, (str, Path)) else "the state dict"
    tensors = read_state_dict(source)[0] if isinstance(source, (str, Path)) else dict(source)
    state = hub_keys(tensors)
    expected = network.state_dict()
    for part, pattern in _PARTS.items():
        theirs, ours = _names(list(state), pattern), _names(list(expected), pattern)
        if theirs != ours:
            missing, extra = sorted(ours - theirs), sorted(theirs - ours)
            detail = "; ".join(
                text
                for text in (
                    f"the config has {', '.join(missing)} that the checkpoint lacks" if missing else "",
                    f"the checkpoint has {', '.join(extra)} that the config lacks" if extra else "",
                )
                if text
            )
            raise CheckpointError(
                f"{label}: its {part} are {sorted(theirs) or 'none'}, the config's {sorted(ours) or 'none'} "
                f"({detail}); {_FIX[part]}, or use weights made for this config"
            )
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or extra or shapes:
        problems = [
            *(f"missing {k}" for k in missing[:3]),
            *(f"unexpected {k}" for k in extra[:3]),
            *(f"{k}: checkpoint {tuple(state[k].shape)} vs network {tuple(expected[k].shape)}" for k in shapes[:3]),
        ]
        raise CheckpointError(
            f"{label}: does not fit the network of this config ({len(missing)} missing, {len(extra)} unexpected, "
            f"{len(shapes)} mis-shaped tensors: {'; '.join(problems)}); check model.hub.encoder, model.hub.decoder, "
            "the decoder widths, data.hub.channels and model.hub.utae against the checkpoint"
        )
    network.load_state_dict(state, strict=True)
