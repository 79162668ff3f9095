"""Read weights files safely and load them, whatever official layout they use, into flairkit networks.

Formats are recognised by content, never by extension: safetensors, PyTorch zip archives (``torch.save``)
and legacy PyTorch pickles. Pickles are only ever read with ``torch.load(weights_only=True)``: a file that
needs to run code to be read is refused.

Key layouts understood (after IGNF/FLAIR-1 ``zone_detect/model.py``, IGNF/FLAIR-1 and IGNF/FLAIR-2 Lightning
tasks, which hold the network as ``self.model`` and the loss as ``self.criterion``):

- raw smp state dict (released FLAIR-INC ``*_weights.pth``, zone-detect stripped dicts): ``encoder.*``,
  ``decoder.*``, ``segmentation_head.*``;
- FLAIR-1 Lightning ``.ckpt``: ``model.seg_model.*``, ``model.enc.enc_mlp.*``, ``criterion.weight``;
- FLAIR #2 Lightning ``.ckpt``: ``model.arch_vhr.*``, ``model.arch_hr.*``, ``model.fm_utae_featmap_*``, ...;
- flairkit's own keys (``seg_model.*`` / ``arch_vhr.*``), as written by :mod:`flairkit.models.export`.

Unlike the official loaders (``strict=False``), loading is strict by default and every mismatch is
reported with what the file holds and which config key to change.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flairkit.config.schema import FlairConfig
from flairkit.errors import CheckpointError
from flairkit.nomenclature import NOMENCLATURES, get_nomenclature

logger = logging.getLogger(__name__)

SAFETENSORS = "safetensors"
TORCH_ZIP = "torch-zip"
TORCH_LEGACY = "torch-legacy"

AERIAL = "aerial"
UTT = "utt"
FLAIR_HUB = "flair-hub"
UNKNOWN = "unknown"

_NETWORK_NAMES = {
    AERIAL: "aerial segmentation network (smp)",
    UTT: "FLAIR #2 U-T&T multimodal network",
    FLAIR_HUB: "FLAIR-HUB multimodal network",
    UNKNOWN: "unrecognised network",
}
_BRANCH = {AERIAL: "seg_model.", UTT: "arch_vhr."}
"""Prefix of the smp U-Net inside each flairkit network."""

_SMP_ROOTS = ("encoder", "decoder", "segmentation_head", "classification_head")
_UTT_MARKERS = ("arch_hr", "fm_utae_featmap_cropped", "fm_utae_featmap_collapsed", "reshape_utae_output")
_HUB_MARKERS = ("main_decoders", "aux_decoders", "fusion_handler")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
_PICKLE_PROTOCOLS = range(2, 6)
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
_SHOWN_KEYS = 5

_CONVERT_HINT = (
    "If you trust where the file comes from, convert it once, in a trusted environment, to safetensors:\n"
    "  python -c \"import torch, safetensors.torch as st; c = torch.load('{path}', weights_only=False); "
    "sd = c.get('state_dict', c); st.save_file({{k: v.contiguous() for k, v in sd.items() "
    "if isinstance(v, torch.Tensor)}}, '{path}.safetensors')\"\n"
    "then give flairkit the .safetensors file."
)


# --------------------------------------------------------------------------------------------- reading files


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


def _embedded_config(obj: Any) -> dict[str, Any] | None:
    """The config flairkit's training task stores as hyper-parameter ``config``."""
    hyper = obj.get("hyper_parameters") if isinstance(obj, Mapping) else None
    config = hyper.get("config") if isinstance(hyper, Mapping) else None
    return dict(config) if isinstance(config, Mapping) else None


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


# ----------------------------------------------------------------------------------------------- key layouts


@dataclass(frozen=True)
class _Canonical:
    """A file's tensors renamed to flairkit's own keys."""

    tensors: dict[str, torch.Tensor]
    network: str
    layout: str
    dropped: tuple[str, ...]


def _strip_wrappers(key: str) -> str:
    """Remove DataParallel and torch.compile prefixes."""
    key = key.replace("_orig_mod.", "")
    return key.removeprefix("module.")


def network_of_keys(keys: list[str]) -> str:
    """Which network family a set of (any layout) keys belongs to."""
    parts = [key.split(".") for key in keys]
    if any(marker in p for p in parts for marker in _UTT_MARKERS):
        return UTT
    if any(marker in p for p in parts for marker in _HUB_MARKERS):
        return FLAIR_HUB
    if any("seg_model" in p for p in parts):
        return AERIAL
    stripped = [p[1:] if p[0] == "model" else p for p in parts]
    if any(p and p[0] in _SMP_ROOTS for p in stripped):
        return AERIAL
    return UNKNOWN


def _rename_legacy_smp(tensors: dict[str, torch.Tensor], branch: str) -> dict[str, torch.Tensor]:
    """smp < 0.4 DeepLabV3 kept its decoder in a Sequential (``decoder.0`` = ASPP, ``.1`` conv, ``.2`` bn)."""
    legacy = f"{branch}decoder.0.convs."
    if not any(key.startswith(legacy) for key in tensors):
        return tensors
    renames = {
        f"{branch}decoder.0.": f"{branch}decoder.aspp.",
        f"{branch}decoder.1.": f"{branch}decoder.conv.",
        f"{branch}decoder.2.": f"{branch}decoder.bn.",
    }
    renamed = {}
    for key, value in tensors.items():
        for old, new in renames.items():
            if key.startswith(old):
                key = new + key.removeprefix(old)
                break
        renamed[key] = value
    return renamed


def canonicalize(tensors: Mapping[str, torch.Tensor]) -> _Canonical:
    """Rename any known layout to flairkit's keys; entries that are not network weights are dropped."""
    tensors = {_strip_wrappers(key): value for key, value in tensors.items()}
    network = network_of_keys(list(tensors))
    if network in (FLAIR_HUB, UNKNOWN):
        return _Canonical(dict(tensors), network, network, ())
    lightning = any(key.startswith("model.") for key in tensors)
    dropped = tuple(key for key in tensors if lightning and not key.startswith("model."))
    kept = {key.removeprefix("model."): value for key, value in tensors.items() if key not in dropped}
    if network == UTT:
        layout = "flair2-lightning" if lightning else "flairkit"
    elif any(key.startswith(("seg_model.", "enc.")) for key in kept):
        layout = "flair1-lightning" if lightning else "flairkit"
    else:
        layout = "smp"
        kept = {f"seg_model.{key}": value for key, value in kept.items()}
    return _Canonical(_rename_legacy_smp(kept, _BRANCH[network]), network, layout, dropped)


def _target_network(target: nn.Module | Mapping[str, Any]) -> str:
    keys = list(target.state_dict() if isinstance(target, nn.Module) else target)
    if any(key.startswith("arch_vhr.") for key in keys):
        return UTT
    if any(key.startswith("seg_model.") for key in keys):
        return AERIAL
    return UNKNOWN


def _few(keys: list[str] | tuple[str, ...] | set[str], n: int = _SHOWN_KEYS) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:n])
    return shown + (f", ... (+{len(keys) - n} more)" if len(keys) > n else "")


def _move_branch(tensors: dict[str, torch.Tensor], source: str, destination: str) -> dict[str, torch.Tensor]:
    return {destination + key.removeprefix(source): value for key, value in tensors.items() if key.startswith(source)}


def _normalize(
    state: Mapping[str, torch.Tensor], target: nn.Module, partial: bool = False
) -> tuple[_Canonical, dict[str, torch.Tensor]]:
    canonical = canonicalize(state)
    wanted = _target_network(target)
    target_keys = set(target.state_dict())
    found = _few(list(state)[:50])
    if wanted == UNKNOWN:
        raise CheckpointError(
            f"cannot map weights onto a {type(target).__name__}: flairkit loads weights into its own networks "
            "(AerialSegmenter with seg_model.*, UTT with arch_vhr.*), e.g. the `model` of a training task"
        )
    if canonical.network == FLAIR_HUB:
        raise CheckpointError(
            f"the file holds a FLAIR-HUB multimodal model (keys such as {found}), which flairkit does not "
            "implement; use a FLAIR-INC released model, a FLAIR #1/#2 checkpoint or a flairkit export"
        )
    if canonical.network == UNKNOWN:
        raise CheckpointError(
            f"no known key layout matches the file: found keys such as {found}; expected an smp state dict "
            f"(encoder.*, decoder.*, segmentation_head.*), a FLAIR-1 checkpoint (model.seg_model.*), a FLAIR #2 "
            f"checkpoint (model.arch_vhr.*, model.arch_hr.*) or a flairkit export; this model expects keys "
            f"such as {_few(target_keys)}"
        )
    tensors = canonical.tensors
    if canonical.network != wanted:
        if not partial:
            raise CheckpointError(_network_mismatch_message(canonical.network, wanted))
        # Partial initialisation: the smp U-Net is shared by both networks.
        tensors = _move_branch(tensors, _BRANCH[canonical.network], _BRANCH[wanted])
    if not set(tensors) & target_keys:
        raise CheckpointError(
            f"no tensor of the file fits the model: found keys such as {found}; "
            f"the model expects keys such as {_few(target_keys)}"
        )
    return canonical, tensors


def _network_mismatch_message(found: str, wanted: str) -> str:
    if found == UTT:
        fix = (
            "configure the multimodal model (model.multimodal=true, data.sentinel.enabled=true, e.g. preset flair2-utt)"
        )
    else:
        fix = "configure an aerial-only model (model.multimodal=false), e.g. a FLAIR-INC or flair1 preset"
    return (
        f"the file holds {_article(_NETWORK_NAMES[found])} but the config builds "
        f"{_article(_NETWORK_NAMES[wanted])}; {fix}, or give a checkpoint of the configured network"
    )


def _article(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def normalize_keys(state: Mapping[str, torch.Tensor], target: nn.Module, partial: bool = False) -> dict:
    """Rename the keys of ``state`` (any official layout) to the keys of ``target``.

    Understands raw smp dicts, FLAIR-1 and FLAIR #2 Lightning checkpoints, zone-detect stripped dicts and
    flairkit exports; loss weights (``criterion.*``) and other non-network entries are dropped. A file of
    another network family is refused unless ``partial`` (then only the shared smp U-Net is mapped).
    """
    return _normalize(state, target, partial)[1]


# ---------------------------------------------------------------------------------- describing a network


_RESNET_DEPTHS = {
    ((2, 2, 2, 2), False): "resnet18",
    ((3, 4, 6, 3), False): "resnet34",
    ((3, 4, 6, 3), True): "resnet50",
    ((3, 4, 23, 3), True): "resnet101",
    ((3, 8, 36, 3), True): "resnet152",
}
_MIT_DEPTHS = {
    ((2, 2, 2, 2), 32): "mit_b0",
    ((2, 2, 2, 2), 64): "mit_b1",
    ((3, 4, 6, 3), 64): "mit_b2",
    ((3, 4, 18, 3), 64): "mit_b3",
    ((3, 8, 27, 3), 64): "mit_b4",
    ((3, 6, 40, 3), 64): "mit_b5",
}
_FIRST_CONVS = (
    "encoder.conv1.weight",
    "encoder.patch_embed1.proj.weight",
    "encoder._conv_stem.weight",
    "encoder.features.conv0.weight",
    "encoder.model.conv1.weight",
    "encoder.model.conv_stem.weight",
    "encoder.model.stem.0.weight",
)


def _block_counts(shapes: Mapping[str, tuple[int, ...]], pattern: str) -> tuple[int, ...]:
    counts: dict[int, set[int]] = {}
    for key in shapes:
        match = re.match(pattern, key)
        if match:
            counts.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    return tuple(len(counts[stage]) for stage in sorted(counts))


def _guess_encoder(shapes: Mapping[str, tuple[int, ...]], branch: str) -> str | None:
    """Name of a ResNet/ResNeXt or MiT encoder from its key structure; None for other families."""
    prefix = re.escape(branch + "encoder.")
    resnet = _block_counts(shapes, prefix + r"layer(\d)\.(\d+)\.")
    if len(resnet) == 4:
        bottleneck = f"{branch}encoder.layer1.0.conv3.weight" in shapes
        name = _RESNET_DEPTHS.get((resnet, bottleneck))
        conv2 = shapes.get(f"{branch}encoder.layer1.0.conv2.weight")
        if name and bottleneck and conv2 is not None and conv2[1] * 8 <= conv2[0]:
            name = name.replace("resnet", "resnext") + " (grouped convolutions)"
        return name
    mit = _block_counts(shapes, prefix + r"block(\d)\.(\d+)\.")
    embed = shapes.get(f"{branch}encoder.patch_embed1.proj.weight")
    if len(mit) == 4 and embed is not None:
        return _MIT_DEPTHS.get((mit, embed[0]))
    return None


def _arch_signatures() -> dict[str, frozenset[str]]:
    """Decoder key names of every smp architecture, from models built on the meta device (no memory)."""
    if _ARCH_SIGNATURES:
        return _ARCH_SIGNATURES
    import segmentation_models_pytorch as smp

    with torch.device("meta"):
        for arch in smp.MODEL_ARCHITECTURES_MAPPING:
            try:
                model = smp.create_model(arch, encoder_name="resnet34", encoder_weights=None, classes=2)
            except (ValueError, RuntimeError, TypeError, KeyError):
                continue  # architectures restricted to other encoder families (e.g. dpt)
            _ARCH_SIGNATURES[arch] = frozenset(key for key in model.state_dict() if key.startswith("decoder."))
    return _ARCH_SIGNATURES


_ARCH_SIGNATURES: dict[str, frozenset[str]] = {}


def _guess_arch(shapes: Mapping[str, tuple[int, ...]], branch: str) -> str | None:
    decoder = {key.removeprefix(branch) for key in shapes if key.startswith(branch + "decoder.")}
    if not decoder:
        return None
    best, score = None, 0.0
    for arch, signature in _arch_signatures().items():
        similarity = len(decoder & signature) / len(decoder | signature)
        if similarity > score:
            best, score = arch, similarity
    return best if score >= 0.5 else None


def _first_conv(shapes: Mapping[str, tuple[int, ...]], branch: str) -> str | None:
    for name in _FIRST_CONVS:
        if branch + name in shapes:
            return branch + name
    return next((k for k, s in shapes.items() if k.startswith(branch + "encoder.") and len(s) == 4), None)


def _utae_input_key(shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    candidates = sorted(k for k, s in shapes.items() if k.startswith("arch_hr.") and "in_conv" in k and len(s) == 4)
    return candidates[0] if candidates else None


@dataclass(frozen=True)
class NetworkSummary:
    """What a set of flairkit-layout tensors describes."""

    network: str
    arch: str | None
    encoder: str | None
    in_channels: int | None
    n_classes: int | None
    metadata: bool
    sat_channels: int | None = None
    head_key: str | None = None
    first_conv_key: str | None = None
    sat_conv_key: str | None = None

    def describe(self) -> str:
        """One line, e.g. ``unet / resnet34 aerial segmentation network (smp), 5 input channels, 19 classes``."""
        design = " / ".join(part or "unknown" for part in (self.arch, self.encoder))
        text = f"{design} {_NETWORK_NAMES[self.network]}"
        if self.in_channels is not None:
            text += f", {self.in_channels} input channels"
        if self.sat_channels is not None:
            text += f", {self.sat_channels} Sentinel-2 bands"
        if self.n_classes is not None:
            text += f", {self.n_classes} classes"
        return text + (", with metadata" if self.metadata else ", without metadata")


def summarize(shapes: Mapping[str, tuple[int, ...]], network: str) -> NetworkSummary:
    """Architecture, encoder, channels and classes of flairkit-layout tensor shapes."""
    branch = _BRANCH.get(network, "")
    head = f"{branch}segmentation_head.0.weight"
    first = _first_conv(shapes, branch)
    sat = _utae_input_key(shapes) if network == UTT else None
    return NetworkSummary(
        network=network,
        arch=_guess_arch(shapes, branch),
        encoder=_guess_encoder(shapes, branch),
        in_channels=shapes[first][1] if first else None,
        n_classes=shapes[head][0] if head in shapes else None,
        metadata=any(key.startswith(("enc.enc_mlp.", "mtd_mlp.")) for key in shapes),
        sat_channels=shapes[sat][1] if sat else None,
        head_key=head if head in shapes else None,
        first_conv_key=first,
        sat_conv_key=sat,
    )


def tensor_shapes(tensors: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in tensors.items()}


# ------------------------------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_weights` did."""

    path: Path
    format: str
    layout: str
    """smp, flair1-lightning, flair2-lightning or flairkit."""
    loaded: int
    dropped: tuple[str, ...] = ()
    """File entries that are not network weights (e.g. ``criterion.weight``), ignored on purpose."""
    missing: tuple[str, ...] = ()
    """Model tensors the file did not provide (left as initialised; only when not strict)."""
    unexpected: tuple[str, ...] = ()
    """File tensors with no place in the model (only when not strict)."""
    mismatched: tuple[str, ...] = ()
    """File tensors whose shape differs from the model's (skipped; only when not strict)."""

    @property
    def complete(self) -> bool:
        """Whether every model tensor came from the file."""
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        """One paragraph for logs."""
        text = f"loaded {self.loaded} tensors from {self.path} ({self.format}, {self.layout} layout)"
        for label, keys in (
            ("ignored non-network entries", self.dropped),
            ("left as initialised", self.missing),
            ("unused from the file", self.unexpected),
            ("skipped for their shape", self.mismatched),
        ):
            if keys:
                text += f"; {label}: {_few(keys)}"
        return text


def _classes_hint(n_file: int, n_model: int, config: FlairConfig | None, source: str) -> str:
    current = f"='{config.data.nomenclature}'" if config is not None else ""
    matching = [name for name, nomenclature in NOMENCLATURES.items() if nomenclature.n_targets == n_file]
    fix = f"; nomenclatures with {n_file} logits: {', '.join(matching)}" if matching else ""
    return f"has {n_file} classes in {source}, the config expects {n_model} (data.nomenclature{current}){fix}"


def _channels_hint(n_file: int, n_model: int, config: FlairConfig | None, source: str) -> str:
    current = f"={config.data.channels}" if config is not None else ""
    fix = f"; select {n_file} bands, e.g. data.channels={list(range(1, n_file + 1))}" if n_file <= 5 else ""
    return f"{n_file} input channels in {source}, the config selects {n_model} (data.channels{current}){fix}"


def explain_mismatch(
    headline: str,
    file_shapes: dict[str, tuple[int, ...]],
    model_shapes: dict[str, tuple[int, ...]],
    config: FlairConfig | None = None,
    source: str = "the file",
) -> str | None:
    """Explain why ``file_shapes`` do not fill the model exactly, naming the config keys to change.

    None when every tensor fits. ``source`` names where the shapes come from ("the file", "the model").
    """
    missing = set(model_shapes) - set(file_shapes)
    unexpected = set(file_shapes) - set(model_shapes)
    wrong_shape = {k for k in set(file_shapes) & set(model_shapes) if file_shapes[k] != model_shapes[k]}
    if not (missing or unexpected or wrong_shape):
        return None
    network = _target_network(model_shapes)
    found = summarize(file_shapes, network)
    expected = summarize(model_shapes, network)
    reasons: list[str] = []
    if found.arch and expected.arch and found.arch != expected.arch:
        reasons.append(f"architecture: {found.arch} in {source}, the config builds {expected.arch} (model.arch)")
    if found.encoder and expected.encoder and found.encoder != expected.encoder:
        reasons.append(f"encoder: {found.encoder} in {source}, the config builds {expected.encoder} (model.encoder)")
    if found.in_channels is not None and expected.in_channels is not None and found.in_channels != expected.in_channels:
        reasons.append(_channels_hint(found.in_channels, expected.in_channels, config, source))
    if found.sat_channels is not None and expected.sat_channels not in (None, found.sat_channels):
        reasons.append(
            f"{found.sat_channels} Sentinel-2 bands in {source}, the config expects {expected.sat_channels} "
            "(model.utae.input_dim)"
        )
    if found.n_classes is not None and expected.n_classes is not None and found.n_classes != expected.n_classes:
        reasons.append(f"{expected.head_key} {_classes_hint(found.n_classes, expected.n_classes, config, source)}")
    if found.metadata != expected.metadata:
        if found.metadata:
            reasons.append(f"{source} has metadata encoder weights, the config has none: set data.metadata=true")
        else:
            reasons.append(f"{source} has no metadata encoder, the config has one: set data.metadata=false")
    for module, name in (("fm_utae_featmap_cropped.", "cropped"), ("fm_utae_featmap_collapsed.", "collapsed")):
        in_file = any(key.startswith(module) for key in file_shapes)
        in_model = any(key.startswith(module) for key in model_shapes)
        if in_file != in_model:
            presence = "has" if in_file else "lacks"
            reasons.append(f"{source} {presence} the {name} fusion module: check model.fusion.mode")
    details = []
    if missing:
        details.append(f"{len(missing)} tensors of the config's model missing from {source}: {_few(missing)}")
    if unexpected:
        details.append(f"{len(unexpected)} tensors of {source} unknown to the config's model: {_few(unexpected)}")
    if wrong_shape:
        shown = [f"{k} {list(file_shapes[k])} in {source} vs {list(model_shapes[k])}" for k in sorted(wrong_shape)]
        details.append(f"{len(wrong_shape)} shape mismatches: {_few(shown, 3)}")
    lines = [headline]
    lines += [f"  - {reason}" for reason in reasons]
    lines.append(f"  {source} holds: {found.describe()}")
    lines.append(f"  the config builds: {expected.describe()}")
    lines += [f"  {detail}" for detail in details]
    return "\n".join(lines)


def _load_weights(model: nn.Module, path: Path, strict: bool = True, config: FlairConfig | None = None) -> LoadReport:
    raw = read_checkpoint(path)
    try:
        canonical, tensors = _normalize(raw.tensors, model, partial=not strict)
    except CheckpointError as error:
        raise CheckpointError(f"cannot load {path}: {error}") from None
    model_shapes = tensor_shapes(model.state_dict())
    file_shapes = tensor_shapes(tensors)
    if strict:
        headline = f"cannot load {path} ({canonical.layout} layout) into the configured model:"
        message = explain_mismatch(headline, file_shapes, model_shapes, config)
        if message:
            raise CheckpointError(
                f"{message}\nfix the config to match the file (inspect it with `flair models --inspect {path}`)"
            )
        model.load_state_dict(tensors, strict=True)
        return LoadReport(path, raw.format, canonical.layout, len(tensors), canonical.dropped)
    usable = {k: v for k, v in tensors.items() if model_shapes.get(k) == file_shapes[k]}
    if not usable:
        raise CheckpointError(
            f"no tensor of {path} fits the model (names or shapes all differ); "
            f"inspect it with `flair models --inspect {path}`"
        )
    model.load_state_dict(usable, strict=False)
    report = LoadReport(
        path,
        raw.format,
        canonical.layout,
        len(usable),
        canonical.dropped,
        missing=tuple(sorted(set(model_shapes) - set(usable))),
        unexpected=tuple(sorted(set(file_shapes) - set(model_shapes))),
        mismatched=tuple(sorted(k for k in file_shapes if k in model_shapes and k not in usable)),
    )
    if not report.complete:
        logger.warning(report.summary())
    return report


def load_weights(model: nn.Module, path: Path | str, strict: bool = True) -> LoadReport:
    """Load a weights file into a flairkit network (``AerialSegmenter`` or ``UTT``).

    Strict by default: any missing, unexpected or differently shaped tensor is a :class:`CheckpointError`
    saying what the file holds and which config key disagrees. ``strict=False`` (fine-tuning) loads the
    tensors whose names and shapes fit, reports the rest, and still refuses a file of which nothing fits.
    """
    return _load_weights(model, Path(path), strict=strict)


# ------------------------------------------------------------------------------------- sources of weights

BUNDLE_WEIGHTS = "model.safetensors"
BUNDLE_CONFIG = "config.json"
_CONSISTENCY_KEYS = (
    ("data", "channels"),
    ("data", "nomenclature"),
    ("data", "normalization"),
    ("data", "metadata"),
    ("model", "arch"),
    ("model", "encoder"),
    ("model", "multimodal"),
)


@dataclass(frozen=True)
class WeightsSource:
    """Where weights come from: a file, plus the config that goes with them when known."""

    path: Path
    config: FlairConfig | None
    origin: str
    """How the source was named: file, bundle or released model."""


def read_bundle_config(folder: Path) -> FlairConfig:
    """The config.json of an exported bundle folder, validated."""
    import json

    from flairkit.config import config_from_dict

    config_file = folder / BUNDLE_CONFIG
    if not config_file.is_file():
        raise CheckpointError(
            f"{folder} is not a flairkit bundle: {BUNDLE_CONFIG} is missing; export it again with `flair export`"
        )
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"cannot read {config_file} ({error}); export the bundle again") from None
    return config_from_dict(data, str(config_file))


ONNX_SUFFIX = ".onnx"
"""ONNX graphs (from ``flair export --onnx``) run with onnxruntime instead of torch."""


def resolve_source(source: Path | str) -> WeightsSource:
    """Resolve a weights file, an exported bundle folder or a released model name."""
    path = Path(source)
    if path.is_dir():
        weights = path / BUNDLE_WEIGHTS
        if not weights.is_file():
            raise CheckpointError(
                f"{path} is a folder without {BUNDLE_WEIGHTS}; give a weights file or a bundle made by `flair export`"
            )
        return WeightsSource(weights, read_bundle_config(path), f"bundle {path}")
    if path.is_file() and path.suffix == ONNX_SUFFIX:
        bundle_config = path.parent / BUNDLE_CONFIG
        config = read_bundle_config(path.parent) if bundle_config.is_file() else None
        return WeightsSource(path, config, f"ONNX graph {path}")
    if path.exists():
        return WeightsSource(path, None, f"file {path}")
    from flairkit.models import zoo

    name = str(source)
    if name in zoo.released_models():
        from flairkit.config import load_config

        return WeightsSource(zoo.resolve_weights(name), load_config(name), f"released model {name}")
    raise CheckpointError(
        f"{source} is neither an existing weights file, a bundle folder nor a released model name; "
        "check the path, or run `flair models` for the released models"
    )


MACHINE_PATHS = (
    ("data", "root"),
    ("data", "train_csv"),
    ("data", "val_csv"),
    ("data", "test_csv"),
    ("train", "resume_from"),
    ("train", "init_weights"),
    ("evaluate", "checkpoint"),
)
"""Config paths that only make sense on the machine where a checkpoint or bundle was made."""


def without_machine_paths(data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of config data with :data:`MACHINE_PATHS` cleared."""
    cleared = {section: dict(values) if isinstance(values, Mapping) else values for section, values in data.items()}
    for section, key in MACHINE_PATHS:
        if isinstance(cleared.get(section), dict) and key in cleared[section]:
            cleared[section][key] = None
    return cleared


def config_from_checkpoint(path: Path | str, overrides: Sequence[str] = ()) -> FlairConfig | None:
    """The config a flairkit Lightning checkpoint was trained with (machine paths cleared), or None.

    ``overrides`` are dotted ``key=value`` strings applied on top, as on the command line.
    """
    from flairkit.config import config_from_dict, parse_override
    from flairkit.config.loading import deep_merge

    embedded = read_checkpoint(path).config
    if embedded is None:
        return None
    data = without_machine_paths(embedded)
    for override in overrides:
        data = deep_merge(data, parse_override(override))
    return config_from_dict(data, f"config saved in {path}")


def weights_config_source(source: Path | str) -> str | None:
    """The config that comes with weights, as a ``load_config`` source: a bundle's config.json or a preset name.

    None for a plain weights file. Commands use it as the default ``--config`` when the user names a bundle
    or a released model. Nothing is downloaded.
    """
    path = Path(source)
    if path.is_dir():
        return str(path / BUNDLE_CONFIG) if (path / BUNDLE_CONFIG).is_file() else None
    if path.suffix == ONNX_SUFFIX and (path.parent / BUNDLE_CONFIG).is_file():
        return str(path.parent / BUNDLE_CONFIG)
    if path.exists():
        return None
    from flairkit.models import zoo

    return str(source) if str(source) in zoo.released_models() else None


def _plain(value: Any) -> Any:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def _check_consistent(config: FlairConfig, expected: FlairConfig, origin: str) -> None:
    """Refuse a config whose inputs differ from those the weights were made for (e.g. channel order)."""
    differences = []
    for section, key in _CONSISTENCY_KEYS:
        ours = getattr(getattr(config, section), key)
        theirs = getattr(getattr(expected, section), key)
        if ours != theirs:
            differences.append(f"{section}.{key}: the weights need {_plain(theirs)}, the config has {_plain(ours)}")
    if differences:
        raise CheckpointError(
            f"the config does not match the inputs {origin} was made for:\n  "
            + "\n  ".join(differences)
            + "\nuse the config that comes with the weights (omit --config, or pass the preset or bundle "
            "config.json), or change these keys"
        )


def load_model(config: FlairConfig, path: Path | str, device: str = "cpu") -> nn.Module:
    """Build the network of ``config`` (aerial or multimodal), load weights strictly, return it in eval mode.

    ``path`` is a weights file (any supported format/layout), a bundle folder from ``flair export``, a bundle's
    ``model.onnx`` (an onnxruntime :class:`~flairkit.models.export.OnnxSegmenter`) or a released model name
    (fetched into the cache when needed). With a bundle or a released model, the
    config must select the same bands, normalisation, nomenclature and network as the weights.
    """
    from flairkit.models.build import build_model

    source = resolve_source(path)
    if source.config is not None:
        _check_consistent(config, source.config, source.origin)
    if source.path.suffix == ONNX_SUFFIX:
        from flairkit.models.export import OnnxSegmenter

        return OnnxSegmenter(source.path)
    model = build_model(config, pretrained_encoder=False)
    report = _load_weights(model, source.path, strict=True, config=config)
    logger.info(report.summary())
    return model.to(device).eval()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _matching_presets(summary: NetworkSummary) -> list[str]:
    from flairkit.config import load_config, preset_names

    names = []
    for name in preset_names():
        config = load_config(name)
        if (
            config.model.multimodal == (summary.network == UTT)
            and len(config.data.channels) == summary.in_channels
            and get_nomenclature(config.data.nomenclature).n_targets == summary.n_classes
            and config.model.arch == summary.arch
            and config.model.encoder == summary.encoder
            and config.data.metadata == summary.metadata
        ):
            names.append(name)
    return names


def inspect_checkpoint(path: Path | str) -> dict[str, Any]:
    """Describe a weights file (or bundle folder): format, layout, tensors, channels, classes, architecture."""
    path = Path(path)
    if path.is_dir():
        path = resolve_source(path).path
    raw = read_checkpoint(path)
    canonical = canonicalize(raw.tensors)
    shapes = tensor_shapes(canonical.tensors)
    summary = summarize(shapes, canonical.network)
    n_parameters = sum(
        int(value.numel()) for key, value in canonical.tensors.items() if not key.endswith(_BUFFER_SUFFIXES)
    )
    result: dict[str, Any] = {
        "path": str(path),
        "format": raw.format,
        "container": raw.container,
        "layout": canonical.layout,
        "network": _NETWORK_NAMES[canonical.network],
        "n_tensors": len(raw.tensors),
        "n_parameters": n_parameters,
        "architecture": summary.arch,
        "encoder": summary.encoder,
        "in_channels": summary.in_channels,
        "n_classes": summary.n_classes,
        "metadata": summary.metadata,
    }
    if summary.sat_channels is not None:
        result["sentinel_bands"] = summary.sat_channels
    if canonical.dropped:
        result["ignored_entries"] = list(canonical.dropped)
    result.update(raw.info)
    if raw.config is not None:
        result["config_saved"] = f"yes (name {raw.config.get('name', '?')!r}); `flair export` can use it"
    if canonical.network in (AERIAL, UTT):
        result["matching_presets"] = _matching_presets(summary)
    result["sha256"] = _sha256(path)
    return result
