"""HuggingFace transformers semantic-segmentation networks: FLAIR-1's ``HuggingFace`` model provider.

IGN's FLAIR-1 code (``src/flair/model.py``) builds ``AutoModelForSemanticSegmentation.from_pretrained(org_model,
num_labels=n_classes, ignore_mismatched_sizes=True)`` as ``seg_model`` of its ``FLAIR_ModelFactory`` and uses the
output's ``.logits``; held as ``self.model`` by its Lightning task, the keys are ``model.seg_model.*``.
:class:`HuggingFaceSegmenter` keeps that layout, so IGN's checkpoints load strictly.

The network is built from a transformers config, never from the hub: the configs of the hub ids in
:data:`OFFLINE_CONFIGS` are held here, any other id's ``config.json`` is given as ``model.hf_config_file``, and
``model.hf_config`` overrides keys of either (e.g. a tiny Swin for tests). Pretrained hub weights are fetched
(:mod:`flairkit.fetch`) only with ``model.hf_pretrained``.

Rules where IGN's code has none:

- input bands: the config's ``num_channels`` (the backbone's, for UperNet) is set to the number of bands. IGN's
  code leaves it at the hub's 3, so its 5-band runs only work with a config that already says 5. With
  ``model.hf_pretrained``, the hub's 3 input filters are taken as bands 1-3 (R, G, B): a selected band among them
  keeps its filters, any other band (NIR, elevation) gets their mean (the rule of ``train.adapt_inputs``);
- output size: UperNet (IGN's default) already upsamples its logits to the input size (bilinear,
  ``align_corners=False``) and IGN adds nothing. Architectures whose logits are smaller (SegFormer: a quarter)
  are upsampled the same way, bilinear without corner alignment, as transformers does for UperNet.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from flairkit.config.schema import FlairConfig, ModelConfig
from flairkit.errors import CheckpointError, ConfigError
from flairkit.nomenclature import get_nomenclature

logger = logging.getLogger(__name__)

RGB_BANDS = [1, 2, 3]
"""The bands the hub's pretrained weights were made for (ImageNet / ADE20k RGB)."""
PRETRAINED_FILE = "pytorch_model.bin"
"""The weights file of the ``openmmlab/upernet-*`` hub repositories."""
_STAGES = ["stage1", "stage2", "stage3", "stage4"]


def _upernet(backbone: dict[str, Any], auxiliary_in_channels: int) -> dict[str, Any]:
    return {
        "model_type": "upernet",
        "backbone_config": {**backbone, "out_features": _STAGES},
        "auxiliary_in_channels": auxiliary_in_channels,
        "hidden_size": 512,
        "pool_scales": [1, 2, 3, 6],
        "use_auxiliary_head": True,
        "auxiliary_channels": 256,
        "auxiliary_num_convs": 1,
        "auxiliary_concat_input": False,
    }


def _swin(embed_dim: int, depths: list[int], heads: list[int], window: int, auxiliary: int) -> dict[str, Any]:
    backbone = {
        "model_type": "swin",
        "embed_dim": embed_dim,
        "depths": depths,
        "num_heads": heads,
        "window_size": window,
        "drop_path_rate": 0.1,
    }
    return _upernet(backbone, auxiliary)


def _convnext(hidden_sizes: list[int], depths: list[int], auxiliary: int) -> dict[str, Any]:
    return _upernet({"model_type": "convnext", "hidden_sizes": hidden_sizes, "depths": depths}, auxiliary)


OFFLINE_CONFIGS: dict[str, dict[str, Any]] = {
    "openmmlab/upernet-swin-tiny": _swin(96, [2, 2, 6, 2], [3, 6, 12, 24], 7, 384),
    "openmmlab/upernet-swin-small": _swin(96, [2, 2, 18, 2], [3, 6, 12, 24], 7, 384),
    "openmmlab/upernet-swin-base": _swin(128, [2, 2, 18, 2], [4, 8, 16, 32], 12, 512),
    "openmmlab/upernet-swin-large": _swin(192, [2, 2, 18, 2], [6, 12, 24, 48], 12, 768),
    "openmmlab/upernet-convnext-tiny": _convnext([96, 192, 384, 768], [3, 3, 9, 3], 384),
    "openmmlab/upernet-convnext-small": _convnext([96, 192, 384, 768], [3, 3, 27, 3], 384),
    "openmmlab/upernet-convnext-base": _convnext([128, 256, 512, 1024], [3, 3, 27, 3], 512),
    "openmmlab/upernet-convnext-large": _convnext([192, 384, 768, 1536], [3, 3, 27, 3], 768),
    "openmmlab/upernet-convnext-xlarge": _convnext([256, 512, 1024, 2048], [3, 3, 27, 3], 1024),
}
"""transformers configs of the hub ids flairkit builds offline (after transformers' conversion scripts
``convert_{swin,convnext}_upernet_to_pytorch.py``, which made these hub repositories; the ADE20k labels dropped)."""


class HuggingFaceSegmenter(nn.Module):
    """A transformers semantic-segmentation model (``seg_model``) called like flairkit's other networks.

    ``forward(image)`` returns the logits at the input's size; ``metadata`` is refused (IGN uses it only with smp).
    """

    def __init__(self, seg_model: nn.Module):
        super().__init__()
        self.seg_model = seg_model

    @property
    def use_metadata(self) -> bool:
        return False

    @property
    def encoder(self) -> nn.Module:
        """The backbone (what ``train.freeze_encoder_epochs`` freezes)."""
        model = self.seg_model
        return model.backbone if hasattr(model, "backbone") else getattr(model, model.base_model_prefix)

    def forward(self, image: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
        if metadata is not None:
            raise ValueError("HuggingFace networks take no metadata (data.metadata=false)")
        logits = self.seg_model(pixel_values=image).logits
        if logits.shape[-2:] != image.shape[-2:]:
            logits = F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return logits


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"model.hf_config_file={path}: cannot read it as a transformers config.json ({error}); give the "
            "config.json of the hub model"
        ) from None
    if not isinstance(data, dict) or "model_type" not in data:
        raise ConfigError(f"model.hf_config_file={path} has no model_type: it is not a transformers config.json")
    return data


def config_dict(model: ModelConfig, in_channels: int, n_classes: int) -> dict[str, Any]:
    """The transformers config (as JSON data) of ``model``: its hub id's or file's, ``model.hf_config`` applied, the
    bands and classes set."""
    if model.hf_config_file is not None:
        data = _read_config_file(model.hf_config_file)
    elif model.hf_model in OFFLINE_CONFIGS:
        data = copy.deepcopy(OFFLINE_CONFIGS[model.hf_model])
    else:
        raise ConfigError(
            f"model.hf_model={model.hf_model!r}: flairkit holds no config for it (it holds "
            f"{', '.join(OFFLINE_CONFIGS)}); download its config.json from the hub and give it as model.hf_config_file"
        )
    data = _merge(data, model.hf_config)
    for key in ("id2label", "label2id", "num_labels"):
        data.pop(key, None)
    target = data["backbone_config"] if isinstance(data.get("backbone_config"), dict) else data
    target["num_channels"] = in_channels
    return {**data, "num_labels": n_classes}


def transformers_config(model: ModelConfig, in_channels: int, n_classes: int) -> Any:
    """The transformers ``PretrainedConfig`` of ``model`` (see :func:`config_dict`)."""
    from transformers import AutoConfig

    data = config_dict(model, in_channels, n_classes)
    model_type = data.pop("model_type")
    try:
        return AutoConfig.for_model(model_type, **data)
    except (TypeError, ValueError, KeyError) as error:
        raise ConfigError(
            f"model.hf_config / model.hf_model={model.hf_model!r}: transformers refuses the config ({error}); "
            "check the keys against the transformers config class of the model"
        ) from None


def _pretrained_tensors(model: ModelConfig) -> dict[str, torch.Tensor]:
    """The hub weights of ``model.hf_model`` (keys of the transformers model), fetched into the hub cache."""
    from flairkit.fetch import DownloadError, HubFile, NotCachedError, fetch_hub_file, hub_url
    from flairkit.models.weights.files import read_checkpoint

    if model.hf_model not in OFFLINE_CONFIGS:
        raise ConfigError(
            f"model.hf_pretrained: flairkit fetches pretrained weights for {', '.join(OFFLINE_CONFIGS)} only, not "
            f"{model.hf_model!r}; download them yourself and give them as train.init_weights"
        )
    file = HubFile(repo_id=model.hf_model, filename=PRETRAINED_FILE)
    try:
        path = fetch_hub_file(file)
    except NotCachedError:
        raise CheckpointError(
            f"the pretrained weights of {model.hf_model} are not in the hub cache and downloads are off (offline); "
            f"run once online, download {hub_url(file)} into the hub cache, or set model.hf_pretrained=false"
        ) from None
    except DownloadError as error:
        raise CheckpointError(
            f"cannot get the pretrained weights of {model.hf_model}: {error}; set model.hf_pretrained=false to start "
            "from random weights"
        ) from None
    return read_checkpoint(path).tensors


def _load_pretrained(seg_model: nn.Module, model: ModelConfig, channels: list[int]) -> None:
    """Load the hub weights as IGN does (``ignore_mismatched_sizes``: tensors of another shape, the class heads,
    stay as built), the input filters first rearranged for ``channels``."""
    from flairkit.models.weights.adapt import adapt_channels
    from flairkit.models.weights.layouts import current_transformers_keys

    built = seg_model.state_dict()
    tensors = current_transformers_keys(_pretrained_tensors(model), built)
    if channels != RGB_BANDS:
        tensors, _ = adapt_channels(tensors, built, "backbone.", RGB_BANDS, channels)
    fitting = {key: value for key, value in tensors.items() if key in built and value.shape == built[key].shape}
    seg_model.load_state_dict(fitting, strict=False)
    skipped = sorted(set(built) - set(fitting))
    if skipped:
        logger.info(
            "%s: %d tensors start as built (other classes or shapes): %s", model.hf_model, len(skipped), skipped
        )


def build_huggingface_model(config: FlairConfig, pretrained: bool = True) -> HuggingFaceSegmenter:
    """The transformers network of ``config`` (``model.provider=huggingface``); random weights unless ``pretrained``
    and ``model.hf_pretrained`` (then the hub's, see :func:`_load_pretrained`)."""
    try:
        from transformers import AutoModelForSemanticSegmentation
    except ImportError:
        raise ConfigError(
            "model.provider=huggingface needs transformers: pip install 'flairkit[hf]' (or pip install transformers)"
        ) from None
    if config.data.metadata:
        raise ConfigError(
            "data.metadata: HuggingFace networks take no metadata (IGN fuses it into smp models only); set "
            "data.metadata=false or model.provider=smp"
        )
    channels = list(config.data.channels)
    n_classes = get_nomenclature(config.data.nomenclature).n_targets
    hf_config = transformers_config(config.model, len(channels), n_classes)
    try:
        seg_model = AutoModelForSemanticSegmentation.from_config(hf_config)
    except ValueError as error:
        raise ConfigError(
            f"model.hf_model={config.model.hf_model!r}: transformers has no semantic-segmentation model for "
            f"{hf_config.model_type!r} ({error}); use UperNet, SegFormer, DPT, BEiT, MobileViT, ..."
        ) from None
    if pretrained and config.model.hf_pretrained:
        _load_pretrained(seg_model, config.model, channels)
    return HuggingFaceSegmenter(seg_model)
