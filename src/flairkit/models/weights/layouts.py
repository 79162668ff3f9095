"""Key layouts of IGN's weights files, renamed to flairkit's own keys.

Layouts understood (after IGNF/FLAIR-1 ``zone_detect/model.py``, IGNF/FLAIR-1 and IGNF/FLAIR-2 Lightning tasks,
which hold the network as ``self.model`` and the loss as ``self.criterion``):

- raw smp state dict (released FLAIR-INC ``*_weights.pth``, zone-detect stripped dicts): ``encoder.*``,
  ``decoder.*``, ``segmentation_head.*``;
- FLAIR-1 Lightning ``.ckpt``: ``model.seg_model.*``, ``model.enc.enc_mlp.*``, ``criterion.weight``;
- FLAIR #2 Lightning ``.ckpt``: ``model.arch_vhr.*``, ``model.arch_hr.*``, ``model.fm_utae_featmap_*``, ...;
- FLAIR-1 HuggingFace provider: Lightning ``.ckpt`` with ``model.seg_model.*`` transformers keys (``backbone.*``,
  ``decode_head.*``, ``auxiliary_head.*``), zone-detect stripped dicts and hub files without the prefix; keys of
  transformers < 5 (IGN pins <= 4.50.3) are renamed to the installed version's (:func:`current_transformers_keys`);
- flairkit's own keys (``seg_model.*`` / ``arch_vhr.*``), as written by ``flair export``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from flairkit.errors import CheckpointError

AERIAL = "aerial"
UTT = "utt"
FLAIR_HUB = "flair-hub"
HUGGINGFACE = "huggingface"
UNKNOWN = "unknown"

NETWORK_NAMES = {
    AERIAL: "aerial segmentation network (smp)",
    HUGGINGFACE: "aerial segmentation network (HuggingFace transformers)",
    UTT: "FLAIR #2 U-T&T multimodal network",
    FLAIR_HUB: "FLAIR-HUB multimodal network",
    UNKNOWN: "unrecognised network",
}
BRANCH = {AERIAL: "seg_model.", UTT: "arch_vhr.", HUGGINGFACE: "seg_model."}
"""Prefix of the smp U-Net (the transformers model) inside each flairkit network."""
ENCODER = {AERIAL: "seg_model.encoder.", UTT: "arch_vhr.encoder.", HUGGINGFACE: "seg_model.backbone."}
"""Prefix of each network's encoder, whose first convolution takes the bands."""
HEAD = {
    AERIAL: ("seg_model.segmentation_head.",),
    UTT: ("arch_vhr.segmentation_head.",),
    HUGGINGFACE: ("seg_model.decode_head.classifier.", "seg_model.auxiliary_head.classifier."),
}
"""Prefixes of each network's class head(s): the tensors with one row per class."""

_SMP_ROOTS = ("encoder", "decoder", "segmentation_head", "classification_head")
_TRANSFORMERS_ROOTS = ("decode_head", "segformer", "dpt", "beit", "data2vec_vision", "mobilenet_v2", "mobilevit")
"""First key parts that only transformers' semantic-segmentation models have (UperNet and SegFormer's
``decode_head``, DPT, BEiT, MobileViT, ...); a lone ``backbone`` tells nothing."""
_UTT_MARKERS = ("arch_hr", "fm_utae_featmap_cropped", "fm_utae_featmap_collapsed", "reshape_utae_output")
_HUB_MARKERS = ("main_decoders", "aux_decoders", "fusion_handler")
_SHOWN_KEYS = 5


@dataclass(frozen=True)
class Canonical:
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
    stripped = [p[1:] if p[0] == "model" else p for p in parts]
    stripped = [p[1:] if p and p[0] == "seg_model" else p for p in stripped]
    roots = {p[0] for p in stripped if p}
    if roots & set(_TRANSFORMERS_ROOTS) and not roots & {"encoder", "decoder"}:
        return HUGGINGFACE
    if any("seg_model" in p for p in parts) or roots & set(_SMP_ROOTS):
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


def canonicalize(tensors: Mapping[str, torch.Tensor]) -> Canonical:
    """Rename any known layout to flairkit's keys; entries that are not network weights are dropped."""
    tensors = {_strip_wrappers(key): value for key, value in tensors.items()}
    network = network_of_keys(list(tensors))
    if network in (FLAIR_HUB, UNKNOWN):
        return Canonical(dict(tensors), network, network, ())
    lightning = any(key.startswith("model.") for key in tensors)
    dropped = tuple(key for key in tensors if lightning and not key.startswith("model."))
    kept = {key.removeprefix("model."): value for key, value in tensors.items() if key not in dropped}
    if network == UTT:
        layout = "flair2-lightning" if lightning else "flairkit"
    elif any(key.startswith(("seg_model.", "enc.")) for key in kept):
        layout = "flair1-lightning" if lightning else "flairkit"
    else:
        layout = "smp" if network == AERIAL else "transformers"
        kept = {f"seg_model.{key}": value for key, value in kept.items()}
    return Canonical(_rename_legacy_smp(kept, BRANCH[network]), network, layout, dropped)


def target_network(target: nn.Module | Mapping[str, Any]) -> str:
    """Which flairkit network a model (or its state-dict keys) is: aerial, U-T&T or unknown."""
    keys = list(target.state_dict() if isinstance(target, nn.Module) else target)
    if any(key.startswith("arch_vhr.") for key in keys):
        return UTT
    if any(key.startswith("seg_model.") for key in keys):
        return HUGGINGFACE if network_of_keys(keys) == HUGGINGFACE else AERIAL
    return UNKNOWN


def few_keys(keys: list[str] | tuple[str, ...] | set[str], n: int = _SHOWN_KEYS) -> str:
    """The first ``n`` sorted keys and how many more, for messages."""
    keys = sorted(keys)
    shown = ", ".join(keys[:n])
    return shown + (f", ... (+{len(keys) - n} more)" if len(keys) > n else "")


def _move_branch(tensors: dict[str, torch.Tensor], source: str, destination: str) -> dict[str, torch.Tensor]:
    return {destination + key.removeprefix(source): value for key, value in tensors.items() if key.startswith(source)}


def match_layout(
    state: Mapping[str, torch.Tensor], target: nn.Module, partial: bool = False
) -> tuple[Canonical, dict[str, torch.Tensor]]:
    """``state`` canonicalised, and its tensors renamed to ``target``'s keys (see :func:`normalize_keys`)."""
    canonical = canonicalize(state)
    wanted = target_network(target)
    target_keys = set(target.state_dict())
    found = few_keys(list(state)[:50])
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
            f"(encoder.*, decoder.*, segmentation_head.*), a FLAIR-1 checkpoint (model.seg_model.*, smp or "
            "transformers keys such as backbone.*, decode_head.*), a FLAIR #2 "
            f"checkpoint (model.arch_vhr.*, model.arch_hr.*) or a flairkit export; this model expects keys "
            f"such as {few_keys(target_keys)}"
        )
    tensors = canonical.tensors
    if canonical.network == HUGGINGFACE == wanted:
        tensors = current_transformers_keys(tensors, target.state_dict(), BRANCH[HUGGINGFACE])
    if canonical.network != wanted:
        if not partial or HUGGINGFACE in (canonical.network, wanted):
            raise CheckpointError(_network_mismatch_message(canonical.network, wanted))
        # Partial initialisation: the smp U-Net is shared by both networks.
        tensors = _move_branch(tensors, BRANCH[canonical.network], BRANCH[wanted])
    if not set(tensors) & target_keys:
        raise CheckpointError(
            f"no tensor of the file fits the model: found keys such as {found}; "
            f"the model expects keys such as {few_keys(target_keys)}"
        )
    return canonical, tensors


def _network_mismatch_message(found: str, wanted: str) -> str:
    if found == UTT:
        fix = (
            "configure the multimodal model (model.multimodal=true, data.sentinel.enabled=true, e.g. preset flair2-utt)"
        )
    elif found == HUGGINGFACE:
        fix = (
            "configure model.provider=huggingface with the model.hf_model it was made with (e.g. preset "
            "flair1-upernet-swin-small)"
        )
    elif wanted == HUGGINGFACE:
        fix = "configure an smp model (model.provider=smp), e.g. a FLAIR-INC or flair1 preset"
    else:
        fix = "configure an aerial-only model (model.multimodal=false), e.g. a FLAIR-INC or flair1 preset"
    return (
        f"the file holds {_article(NETWORK_NAMES[found])} but the config builds "
        f"{_article(NETWORK_NAMES[wanted])}; {fix}, or give a checkpoint of the configured network"
    )


def _article(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


_SWIN_RENAMES = (
    (".attention.self.query.", ".attention.q_proj."),
    (".attention.self.key.", ".attention.k_proj."),
    (".attention.self.value.", ".attention.v_proj."),
    (".attention.self.relative_position_bias_table", ".attention.relative_position_bias.relative_position_bias_table"),
    (".attention.output.dense.", ".attention.o_proj."),
    (".intermediate.dense.", ".mlp.fc1."),
    (".output.dense.", ".mlp.fc2."),
)
"""Swin block renames of transformers 5 (its own conversion mapping for ``swin``), in order."""


def current_transformers_keys(
    tensors: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], prefix: str = ""
) -> dict[str, torch.Tensor]:
    """``tensors`` of a transformers model saved by transformers < 5, renamed for the ``target`` state dict of the
    installed transformers 5 (keys under ``prefix``); unchanged when both use the same names.

    Swin backbone (UperNet-Swin, IGN's default): ``backbone.{embeddings,encoder}.*`` moved under
    ``backbone.swin.``, attention and MLP layers renamed (:data:`_SWIN_RENAMES`), the ``relative_position_index``
    buffers dropped (transformers 5 computes them, no longer saves them), and the final LayerNorm of transformers
    5's inner SwinModel (``backbone.swin.layernorm``, which the backbone never runs and transformers itself leaves
    out of what it loads) given LayerNorm's initial values (weight 1, bias 0).
    """
    backbone = f"{prefix}backbone."
    current = f"{backbone}swin.embeddings.patch_embeddings.projection.weight" in target
    legacy = f"{backbone}embeddings.patch_embeddings.projection.weight" in tensors
    if not (current and legacy):
        return dict(tensors)
    renamed = {}
    for key, value in tensors.items():
        if key.startswith((f"{backbone}embeddings.", f"{backbone}encoder.")):
            if key.endswith(".relative_position_index"):
                continue
            key = f"{backbone}swin.{key.removeprefix(backbone)}"
            for old, new in _SWIN_RENAMES:
                key = key.replace(old, new)
        renamed[key] = value
    for suffix, fill in (("weight", torch.ones), ("bias", torch.zeros)):
        key = f"{backbone}swin.layernorm.{suffix}"
        if key in target and key not in renamed:
            renamed[key] = fill(target[key].shape)
    return renamed


def normalize_keys(state: Mapping[str, torch.Tensor], target: nn.Module, partial: bool = False) -> dict:
    """Rename the keys of ``state`` (any official layout) to the keys of ``target``.

    Understands raw smp dicts, FLAIR-1 and FLAIR #2 Lightning checkpoints, zone-detect stripped dicts and
    flairkit exports; loss weights (``criterion.*``) and other non-network entries are dropped. A file of
    another network family is refused unless ``partial`` (then only the shared smp U-Net is mapped).
    """
    return match_layout(state, target, partial)[1]
