"""What a weights file holds: architecture, encoder, channels and classes, matching presets, mismatches."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from flairkit.config.schema import FlairConfig
from flairkit.hashing import file_sha256
from flairkit.models.weights.files import read_checkpoint
from flairkit.models.weights.layouts import (
    AERIAL,
    BRANCH,
    HUGGINGFACE,
    NETWORK_NAMES,
    UTT,
    canonicalize,
    current_transformers_keys,
    few_keys,
    target_network,
)
from flairkit.models.weights.sources import resolve_source
from flairkit.nomenclature import NOMENCLATURES, get_nomenclature

_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


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
        text = f"{design} {NETWORK_NAMES[self.network]}"
        if self.in_channels is not None:
            text += f", {self.in_channels} input channels"
        if self.sat_channels is not None:
            text += f", {self.sat_channels} Sentinel-2 bands"
        if self.n_classes is not None:
            text += f", {self.n_classes} classes"
        return text + (", with metadata" if self.metadata else ", without metadata")


_TRANSFORMERS_HEADS = ("decode_head.classifier.weight", "segmentation_head.classifier.convolution.weight")
_TRANSFORMERS_ARCHS = {"decode_head.psp_modules.": "upernet", "segformer.": "segformer", "dpt.": "dpt", "beit.": "beit"}


def _transformers_summary(shapes: Mapping[str, tuple[int, ...]]) -> NetworkSummary:
    """What the tensors of a HuggingFace network (``seg_model.*``) describe; the backbone as family, width and
    blocks per stage (e.g. ``swin 96 2-2-18-2``: Swin-small)."""
    branch = BRANCH[HUGGINGFACE]
    keys = [key.removeprefix(branch) for key in shapes]
    arch = next((name for root, name in _TRANSFORMERS_ARCHS.items() if any(k.startswith(root) for k in keys)), None)
    encoder = None
    swin = _block_counts(shapes, re.escape(branch) + r"backbone\.(?:swin\.)?encoder\.layers\.(\d+)\.blocks\.(\d+)\.")
    convnext = _block_counts(shapes, re.escape(branch) + r"backbone\.encoder\.stages\.(\d+)\.layers\.(\d+)\.")
    first = next((k for k, shape in shapes.items() if k.startswith(branch) and len(shape) == 4), None)
    for family, blocks in (("swin", swin), ("convnext", convnext)):
        if blocks and first is not None:
            encoder = f"{family} {shapes[first][0]} {'-'.join(map(str, blocks))}"
    head = next((branch + h for h in _TRANSFORMERS_HEADS if branch + h in shapes), None)
    return NetworkSummary(
        network=HUGGINGFACE,
        arch=arch,
        encoder=encoder,
        in_channels=shapes[first][1] if first else None,
        n_classes=shapes[head][0] if head else None,
        metadata=False,
        head_key=head,
        first_conv_key=first,
    )


def summarize(shapes: Mapping[str, tuple[int, ...]], network: str) -> NetworkSummary:
    """Architecture, encoder, channels and classes of flairkit-layout tensor shapes."""
    if network == HUGGINGFACE:
        return _transformers_summary(shapes)
    branch = BRANCH.get(network, "")
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
    """The shape of each tensor."""
    return {key: tuple(value.shape) for key, value in tensors.items()}


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
    network = target_network(model_shapes)
    found = summarize(file_shapes, network)
    expected = summarize(model_shapes, network)
    reasons: list[str] = []
    arch_key, encoder_key = (
        ("model.hf_model", "model.hf_model") if network == HUGGINGFACE else ("model.arch", "model.encoder")
    )
    if found.arch and expected.arch and found.arch != expected.arch:
        reasons.append(f"architecture: {found.arch} in {source}, the config builds {expected.arch} ({arch_key})")
    if found.encoder and expected.encoder and found.encoder != expected.encoder:
        reasons.append(f"encoder: {found.encoder} in {source}, the config builds {expected.encoder} ({encoder_key})")
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
        details.append(f"{len(missing)} tensors of the config's model missing from {source}: {few_keys(missing)}")
    if unexpected:
        details.append(f"{len(unexpected)} tensors of {source} unknown to the config's model: {few_keys(unexpected)}")
    if wrong_shape:
        shown = [f"{k} {list(file_shapes[k])} in {source} vs {list(model_shapes[k])}" for k in sorted(wrong_shape)]
        details.append(f"{len(wrong_shape)} shape mismatches: {few_keys(shown, 3)}")
    lines = [headline]
    lines += [f"  - {reason}" for reason in reasons]
    lines.append(f"  {source} holds: {found.describe()}")
    lines.append(f"  the config builds: {expected.describe()}")
    lines += [f"  {detail}" for detail in details]
    return "\n".join(lines)


def _matching_presets(summary: NetworkSummary, tensors: Mapping[str, torch.Tensor]) -> list[str]:
    from flairkit.config import load_config, preset_names

    names = []
    for name in preset_names():
        config = load_config(name)
        if (config.model.provider == "huggingface") != (summary.network == HUGGINGFACE):
            continue
        if summary.network == HUGGINGFACE:
            if _fits_preset(config, tensors):
                names.append(name)
            continue
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


def _fits_preset(config: FlairConfig, tensors: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``tensors`` (flairkit keys) fill a preset's network exactly; the network is built on the meta device
    (no memory, nothing downloaded)."""
    from flairkit.models.build import build_model

    with torch.device("meta"):
        built = build_model(config, pretrained_encoder=False).state_dict()
    renamed = current_transformers_keys(tensors, built, BRANCH[HUGGINGFACE])
    return tensor_shapes(renamed) == tensor_shapes(built)


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
        "network": NETWORK_NAMES[canonical.network],
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
    if canonical.network in (AERIAL, UTT, HUGGINGFACE):
        result["matching_presets"] = _matching_presets(summary, canonical.tensors)
    result["sha256"] = file_sha256(path)
    return result
