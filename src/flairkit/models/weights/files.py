"""Read weights files safely, recognising their format by content, never by extension.

Formats: safetensors, PyTorch zip archives (``torch.save``) and legacy PyTorch pickles. Pickles are only ever
read with ``torch.load(weights_only=True)``: a file that needs to run code to be read is refused.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from flairkit.atomic import write_text_atomic
from flairkit.errors import CheckpointError
from flairkit.nomenclature import is_nomenclature_file

SAFETENSORS = "safetensors"
TORCH_ZIP = "torch-zip"
TORCH_LEGACY = "torch-legacy"
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
_PICKLE_PROTOCOLS = range(2, 6)
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
NOMENCLATURE_KEY = "nomenclature_yaml"
"""Hyper-parameter of flairkit checkpoints holding the text of the nomenclature YAML they were trained with."""

_CONVERT_HINT = (
    "If you trust where the file comes from, convert it once, in a trusted environment, to safetensors:\n"
    "  python -c \"import torch, safetensors.torch as st; c = torch.load('{path}', weights_only=False); "
    "sd = c.get('state_dict', c); st.save_file({{k: v.contiguous() for k, v in sd.items() "
    "if isinstance(v, torch.Tensor)}}, '{path}.safetensors')\"\n"
    "then give flairkit the .safetensors file."
)


@dataclass(frozen=True)
class RawCheckpoint:
    """The tensors of a weights file and how they were stored."""

    tensors: dict[str, torch.Tensor]
    format: str
    """safetensors, torch-zip or torch-legacy."""
    container: str
    """state dict, Lightning checkpoint, or the wrapper key that held the state dict."""
    info: dict[str, Any] = field(default_factory=dict)
    """Lightning bookkeeping when present (epoch, global_step, version)."""
    config: dict[str, Any] | None = None
    """The flairkit config saved in a Lightning checkpoint's hyper-parameters, when present."""


def _sniff_format(path: Path) -> str:
    """Recognise the file format from its first bytes."""
    try:
        with path.open("rb") as handle:
            head = handle.read(64)
        size = path.stat().st_size
    except OSError as error:
        raise CheckpointError(
            f"cannot read weights file {path}: {error.strerror}; check the path and permissions"
        ) from None
    if head.startswith(b"PK\x03\x04"):
        return TORCH_ZIP
    if len(head) >= 2 and head[0] == 0x80 and head[1] in _PICKLE_PROTOCOLS:
        return TORCH_LEGACY
    if len(head) >= 9:
        (header_size,) = struct.unpack("<Q", head[:8])
        if header_size <= min(size - 8, _MAX_SAFETENSORS_HEADER) and head[8:9] == b"{":
            return SAFETENSORS
    if head.startswith(b"version https://git-lfs"):
        problem = "is a Git LFS pointer, not the weights; run `git lfs pull` in its repository or download the file"
    elif head.lstrip().startswith(b"<"):
        problem = "looks like an HTML/XML page (a failed download?); download the weights again"
    elif size == 0:
        problem = "is empty; download or copy it again"
    else:
        problem = (
            "is neither a safetensors file nor a PyTorch checkpoint (.pth/.pt/.ckpt); it may be truncated or "
            "corrupt: download or copy it again"
        )
    raise CheckpointError(f"weights file {path} {problem}")


def _harmless_globals() -> list[Any]:
    """Plain-data classes that Lightning checkpoints may hold besides tensors; building them runs no code."""
    import pathlib

    import numpy as np

    numpy_core = getattr(np, "_core", None) or np.core
    return [
        pathlib.PosixPath,
        pathlib.PurePosixPath,
        pathlib.PureWindowsPath,
        numpy_core.multiarray.scalar,
        np.dtype,
        *{type(np.dtype(kind)) for kind in ("f4", "f8", "i4", "i8", "b1")},
    ]


def _torch_load(path: Path) -> Any:
    try:
        # An open file, not a path: recent torch versions pick a loader from the file name's extension.
        with path.open("rb") as handle, torch.serialization.safe_globals(_harmless_globals()):
            return torch.load(handle, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        text = str(error)
        if "Weights only load failed" not in text:
            raise CheckpointError(f"{path} is corrupt or truncated ({text}); download or copy it again") from None
        blocked = re.search(r"GLOBAL ([\w.]+)", text)
        what = f" (it needs {blocked.group(1)})" if blocked else ""
        raise CheckpointError(
            f"{path} contains pickled code{what} that flairkit refuses to execute: loading it could run "
            f"arbitrary commands. {_CONVERT_HINT.format(path=path)}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as error:
        raise CheckpointError(
            f"{path} could not be read as a PyTorch checkpoint ({error}); it may be truncated, corrupt or a "
            "TorchScript archive: download or export it again as a state dict or safetensors file"
        ) from None


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            return {key: handle.get_tensor(key) for key in handle.keys()}, metadata  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is a damaged safetensors file ({error}); download or copy it again") from None


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in obj.items())
    )


def nomenclature_cache() -> Path:
    """Where the nomenclature YAMLs saved in checkpoints are written back: ``$FLAIRKIT_CACHE`` or
    ``$XDG_CACHE_HOME/flairkit`` (default ``~/.cache/flairkit``), folder ``nomenclatures``."""
    root = (
        os.environ.get("FLAIRKIT_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "flairkit"
    )
    return Path(root) / "nomenclatures"


def saved_nomenclature(text: str, name: str) -> Path:
    """The nomenclature YAML ``text`` as a file named ``name``, in a cache folder named by its content."""
    path = nomenclature_cache() / hashlib.sha256(text.encode("utf-8")).hexdigest()[:16] / name
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)
    return path


def _embedded_config(obj: Any) -> dict[str, Any] | None:
    """The config flairkit's training task stores as hyper-parameter ``config``.

    When the checkpoint also holds the text of its nomenclature YAML and the recorded path no longer holds that
    text, ``data.nomenclature`` points to the text written back into the cache (:func:`nomenclature_cache`): the
    checkpoint works wherever the YAML went.
    """
    hyper = obj.get("hyper_parameters") if isinstance(obj, Mapping) else None
    config = hyper.get("config") if isinstance(hyper, Mapping) else None
    if not isinstance(config, Mapping):
        return None
    config = dict(config)
    text = hyper.get(NOMENCLATURE_KEY)
    data = config.get("data")
    if isinstance(text, str) and isinstance(data, Mapping) and is_nomenclature_file(data.get("nomenclature", "")):
        recorded = Path(data["nomenclature"])
        if not (recorded.is_file() and recorded.read_text(encoding="utf-8") == text):
            config["data"] = {**data, "nomenclature": str(saved_nomenclature(text, recorded.name))}
    return config


def _unwrap(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], str, dict[str, Any]]:
    """Find the state dict inside what ``torch.load`` returned."""
    if _is_state_dict(obj):
        return dict(obj), "state dict", {}
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if _is_state_dict(inner):
                if key == "state_dict" and ("pytorch-lightning_version" in obj or "epoch" in obj):
                    info = {
                        name: obj[source]
                        for name, source in (
                            ("epoch", "epoch"),
                            ("global_step", "global_step"),
                            ("lightning_version", "pytorch-lightning_version"),
                        )
                        if isinstance(obj.get(source), (int, str))
                    }
                    return dict(inner), "Lightning checkpoint", info
                return dict(inner), f"{{{key!r}: state dict}}", {}
        keys = ", ".join(repr(k) for k in list(obj)[:8])
        raise CheckpointError(
            f"{path} holds a mapping with keys {keys} but no state dict of tensors (looked for a flat "
            f"name -> tensor mapping, or one under {', '.join(map(repr, _WRAPPER_KEYS))}); "
            "save the model's state_dict() instead"
        )
    raise CheckpointError(
        f"{path} holds a {type(obj).__name__}, not a state dict of tensors; save model.state_dict() "
        "(or a safetensors file) instead"
    )


def read_checkpoint(path: Path | str) -> RawCheckpoint:
    """Read the tensors of a weights file, recognising its format by content."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"weights file {path} does not exist; check the path (or run `flair models`)")
    if path.is_dir():
        raise CheckpointError(
            f"{path} is a folder; give a weights file, or an exported bundle folder holding model.safetensors"
        )
    fmt = _sniff_format(path)
    if fmt == SAFETENSORS:
        tensors, metadata = _read_safetensors(path)
        if not tensors:
            raise CheckpointError(f"{path} holds no tensors; export the weights again")
        info = {key: value for key, value in metadata.items() if key.startswith("flairkit")}
        return RawCheckpoint(tensors, fmt, "state dict", info)
    loaded = _torch_load(path)
    tensors, container, info = _unwrap(loaded, path)
    return RawCheckpoint(tensors, fmt, container, info, _embedded_config(loaded))


def read_state_dict(path: Path | str) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of a weights file and its detected format (``safetensors``, ``torch-zip``, ``torch-legacy``).

    Lightning checkpoints give their ``state_dict``; ``{"model": ...}`` / ``{"state_dict": ...}`` wrappers
    are opened. Pickles are read with ``weights_only=True`` only; a pickle that needs code is refused.
    """
    raw = read_checkpoint(path)
    return raw.tensors, raw.format


def check_resume_checkpoint(path: Path | str) -> RawCheckpoint:
    """Check, without running any code it may hold, that ``path`` is a Lightning checkpoint to resume from."""
    raw = read_checkpoint(path)
    if raw.container != "Lightning checkpoint":
        raise CheckpointError(
            f"{path} is a {raw.container} ({raw.format}), not a Lightning training checkpoint: train.resume_from "
            "takes the checkpoints/last.ckpt of a flairkit run; to start from these weights use train.init_weights"
        )
    return raw


def safe_unpickling() -> Any:
    """A context in which ``torch.load(weights_only=True)`` accepts the plain-data classes of Lightning checkpoints.

    For loaders that flairkit does not call itself (Lightning's resume); building these classes runs no code.
    """
    return torch.serialization.safe_globals(_harmless_globals())
