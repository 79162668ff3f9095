"""Load weights, whatever official layout they use, into flairkit networks, and check them against the config.

Unlike the official loaders (``strict=False``), loading is strict by default and every mismatch is reported with
what the file holds and which config key to change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from flairkit.config.schema import RELEASE_WEIGHTS, FlairConfig
from flairkit.errors import CheckpointError, ConfigError
from flairkit.models.factory import replace_batchnorm
from flairkit.models.weights.adapt import adapt_channels, grouped_rows, rebuild_head
from flairkit.models.weights.describe import explain_mismatch, tensor_shapes
from flairkit.models.weights.files import RawCheckpoint, read_checkpoint
from flairkit.models.weights.layouts import ENCODER, HEAD, few_keys, match_layout, target_network
from flairkit.models.weights.sources import BUNDLE_WEIGHTS, ONNX_SUFFIX, WeightsSource, resolve_source
from flairkit.nomenclature import get_nomenclature

logger = logging.getLogger(__name__)

_CONSISTENCY_KEYS = (
    ("data", "channels"),
    ("data", "nomenclature"),
    ("data", "normalization"),
    ("data", "metadata"),
    ("model", "provider"),
    ("model", "arch"),
    ("model", "encoder"),
    ("model", "hf_model"),
    ("model", "hf_config"),
    ("model", "multimodal"),
    ("model", "norm"),
)
CHECK_KEY = "model.weights_config_check"
_ALLOW = f"{CHECK_KEY}=warn"
_FINE_TUNING_HINT = (
    f"to fine-tune onto another nomenclature on purpose, set {_ALLOW} (every difference is then only logged) or "
    "train.rebuild_head=true (only the nomenclature may differ; other bands need train.adapt_inputs=true): "
    "the segmentation head is rebuilt for the new classes"
)


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
    adaptations: tuple[str, ...] = ()
    """How tensors made for other classes or bands were adapted (fine-tuning), one sentence each."""

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
                text += f"; {label}: {few_keys(keys)}"
        for note in self.adaptations:
            text += f"; {note}"
        return text


Head = Literal["load", "if-fits"]
"""What loading does with the segmentation head: load it, or leave it as built when its shape differs."""


def _load_weights(
    model: nn.Module,
    path: Path,
    strict: bool = True,
    config: FlairConfig | None = None,
    raw: RawCheckpoint | None = None,
    head: Head = "load",
    adapt: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
) -> LoadReport:
    raw = raw if raw is not None else read_checkpoint(path)
    try:
        canonical, tensors = match_layout(raw.tensors, model, partial=not strict)
    except CheckpointError as error:
        raise CheckpointError(f"cannot load {path}: {error}") from None
    if adapt is not None:
        tensors = adapt(tensors)
    model_shapes = tensor_shapes(model.state_dict())
    file_shapes = tensor_shapes(tensors)
    prefix = HEAD.get(target_network(model), ("segmentation_head.",))
    head_shapes = {key: shape for key, shape in model_shapes.items() if key.startswith(prefix)}
    fresh_head = head == "if-fits" and any(file_shapes.get(k) != s for k, s in head_shapes.items())
    if fresh_head:
        tensors = {key: value for key, value in tensors.items() if not key.startswith(prefix)}
        file_shapes = tensor_shapes(tensors)
        model_shapes = {key: shape for key, shape in model_shapes.items() if key not in head_shapes}
        logger.info("the segmentation head is not loaded from %s: it starts afresh", path)
    if strict:
        headline = f"cannot load {path} ({canonical.layout} layout) into the configured model:"
        message = explain_mismatch(headline, file_shapes, model_shapes, config)
        if message:
            raise CheckpointError(
                f"{message}\nfix the config to match the file (inspect it with `flair models --inspect {path}`)"
            )
        model.load_state_dict(tensors, strict=not fresh_head)
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


def _same(key: str, theirs: Any, ours: Any) -> bool:
    """Whether a saved config value equals ours; nomenclatures compare by content, whatever their paths."""
    if theirs == ours:
        return True
    if key != "nomenclature":
        return False
    try:
        return get_nomenclature(theirs) == get_nomenclature(ours)
    except (KeyError, ConfigError):
        return False


def check_weights_config(
    config: FlairConfig,
    saved: Mapping[str, Any] | None,
    origin: str,
    fine_tuning: bool = False,
    allowed: Collection[str] = (),
) -> list[str]:
    """Compare the run's ``config`` with the config the weights were made with (``saved``, as JSON data).

    Nomenclature, bands, normalisation, metadata and network are compared. ``model.weights_config_check``
    decides: ``strict`` raises a :class:`CheckpointError` giving both values and the key of each difference,
    ``warn`` logs them, ``off`` says nothing. Returns the dotted keys that differ. ``saved`` is None for weights
    that carry no config (IGN's checkpoints): nothing to compare. ``fine_tuning``: the weights initialise a
    training run (``train.init_weights``), and the message says how to fine-tune onto another nomenclature;
    differences of the ``allowed`` keys are returned but never refused nor warned about.
    """
    if saved is None:
        logger.debug("%s carries no config: its nomenclature, bands and normalisation are not compared", origin)
        return []
    ours = config.model_dump(mode="json")
    differences = {}
    for section, key in _CONSISTENCY_KEYS:
        theirs = saved.get(section)
        if isinstance(theirs, Mapping) and key in theirs and not _same(key, theirs[key], ours[section][key]):
            differences[f"{section}.{key}"] = (
                f"{section}.{key}: the weights need {theirs[key]}, the config has {ours[section][key]}"
            )
    returned = list(differences)
    for key in allowed:
        differences.pop(key, None)
    mode = config.model.weights_config_check
    if differences and mode == "strict":
        if fine_tuning:
            fix = f"fine-tune with the inputs the weights were made for (change these keys); {_FINE_TUNING_HINT}"
        else:
            fix = (
                "use the config that comes with the weights (omit --config, or pass the preset or bundle "
                f"config.json), or change these keys; to apply the weights anyway, set {_ALLOW}"
            )
        raise CheckpointError(
            f"the config does not match the inputs {origin} was made for:\n  "
            + "\n  ".join(differences.values())
            + f"\n{fix}"
        )
    if differences and mode == "warn":
        logger.warning("%s was made for other inputs (%s): %s", origin, CHECK_KEY, "; ".join(differences.values()))
    return returned


def load_network(config: FlairConfig, source: WeightsSource | Path | str, device: str = "cpu") -> nn.Module:
    """Build the torch network of ``config`` (aerial or multimodal), load weights strictly, return it in eval mode.

    ``source`` is a weights file (any supported format/layout), a bundle folder from ``flair export`` or a
    released model name (fetched into the cache when needed); ONNX graphs are loaded by
    ``flairkit.models.loader.load_model``. When the weights come with their config (a flairkit checkpoint, a
    bundle, a released model), ``config`` must select the same bands, normalisation, nomenclature and network
    (:func:`check_weights_config`).
    """
    from flairkit.models.build import build_model

    source = source if isinstance(source, WeightsSource) else resolve_source(source)
    if source.path.suffix == ONNX_SUFFIX:
        raise CheckpointError(
            f"{source.path} is an ONNX graph, not torch weights; give the bundle folder or its {BUNDLE_WEIGHTS}"
        )
    raw = read_checkpoint(source.path)
    saved = source.config.model_dump(mode="json") if source.config is not None else raw.config
    check_weights_config(config, saved, source.origin)
    model = build_model(config, pretrained_encoder=False)
    report = _load_weights(model, source.path, strict=True, config=config, raw=raw)
    logger.info(report.summary())
    return model.to(device).eval()


def _init_source(config: FlairConfig) -> WeightsSource:
    """Where ``train.init_weights`` points: a file, a bundle, or the preset's released weights (``release``)."""
    if config.train.init_weights != Path(RELEASE_WEIGHTS):
        return resolve_source(config.train.init_weights)
    from flairkit.config import load_config
    from flairkit.models import zoo

    if config.release is not None:
        for name in zoo.released_models():
            if load_config(name).release == config.release:
                return resolve_source(name)
    raise ConfigError(
        f"train.init_weights={RELEASE_WEIGHTS}: the config has no release section of a released model; start from "
        "a released preset (`flair train -c NAME`, `flair models` lists them) or give a weights file"
    )


def _adaptations(
    model: nn.Module, config: FlairConfig, saved: Mapping[str, Any], differences: list[str]
) -> tuple[Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]], list[str]]:
    """The function that adapts the file's tensors to ``model``'s classes and bands, and what it does in words."""
    built = model.state_dict()
    network = target_network(model)
    prefix = HEAD.get(network, ("segmentation_head.",))
    notes: list[str] = []
    rows: list[tuple[int, ...]] | None = None
    if "data.nomenclature" in differences:
        source = get_nomenclature(saved["data"]["nomenclature"])
        target = get_nomenclature(config.data.nomenclature)
        rows = grouped_rows(source, target)
        started = [
            f"{t.name} <- {', '.join(source.targets[r].name for r in group)}"
            for t, group in zip(target.targets, rows, strict=True)
            if group
        ]
        notes.append(
            f"segmentation head rebuilt for {target.name} ({target.n_targets} classes): "
            + (f"from the weights' classes {'; '.join(started)} (mean weights, logsumexp biases), " if started else "")
            + "the other classes start afresh"
        )
    theirs = list(saved["data"]["channels"]) if "data.channels" in differences else None
    if theirs is not None and config.train.adapt_inputs:
        ours = list(config.data.channels)
        new = [c for c in ours if c not in theirs]
        dropped = [c for c in theirs if c not in ours]
        notes.append(
            f"bands {theirs} -> {ours}: the first convolution keeps the filters of known bands"
            + (f", new bands {new} get the mean of its filters" if new else "")
            + (f", bands {dropped} are dropped" if dropped else "")
        )

    def adapt(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if rows is not None:
            tensors = rebuild_head(tensors, built, prefix, rows)
        if theirs is not None and config.train.adapt_inputs:
            tensors, _ = adapt_channels(
                tensors, built, ENCODER.get(network, "encoder."), theirs, list(config.data.channels)
            )
        return tensors

    return adapt, notes


def load_init_weights(model: nn.Module, config: FlairConfig) -> LoadReport:
    """Load ``config.train.init_weights`` into ``model`` to fine-tune it.

    The config saved with the weights is compared first (:func:`check_weights_config`); ``train.rebuild_head``
    allows another nomenclature and ``train.adapt_inputs`` other bands and normalisation. A different
    nomenclature (allowed so, or with ``model.weights_config_check`` warn or off) rebuilds the segmentation head
    by the rule of :mod:`flairkit.models.weights.adapt`, other bands adapt the first convolution by its rule;
    everything else loads strictly. The report's ``adaptations`` say which rule was applied.
    """
    if config.train.init_weights is None:
        raise ConfigError("train.init_weights is not set; give the weights to fine-tune from")
    source = _init_source(config)
    raw = read_checkpoint(source.path)
    saved = source.config.model_dump(mode="json") if source.config is not None else raw.config
    allowed = ["data.nomenclature"] if config.train.rebuild_head else []
    if config.train.adapt_inputs:
        allowed += ["data.channels", "data.normalization"]
    # BatchNorm weights (IGN's carry no config: BatchNorm too) fine-tune into model.norm group or frozen_batch: loaded
    # into the BatchNorm network, then converted as model.norm says.
    saved_model = saved.get("model") if isinstance(saved, Mapping) else None
    saved_norm = saved_model.get("norm", "batch") if isinstance(saved_model, Mapping) else "batch"
    converting = config.model.norm != "batch" and saved_norm == "batch"
    if converting:
        allowed.append("model.norm")
    origin = f"train.init_weights {source.origin}"
    differences = check_weights_config(config, saved, origin, fine_tuning=True, allowed=allowed)
    target = model
    if converting:
        from flairkit.models.build import build_model

        batch_model = config.model.model_copy(update={"norm": "batch"})
        target = build_model(config.model_copy(update={"model": batch_model}), pretrained_encoder=False)
    adapt, notes = _adaptations(target, config, saved, differences) if differences else (None, [])
    for note in notes:
        logger.info("%s: %s", origin, note)
    rebuilt = "data.nomenclature" in differences
    head: Head = "load" if rebuilt or config.model.weights_config_check == "strict" else "if-fits"
    try:
        report = _load_weights(target, source.path, strict=True, config=config, raw=raw, head=head, adapt=adapt)
    except CheckpointError as error:
        if config.model.weights_config_check != "strict":
            raise
        raise CheckpointError(f"{error}\n{_FINE_TUNING_HINT}") from None
    if converting:
        model.load_state_dict(replace_batchnorm(target, config.model.norm).state_dict())
        notes.append(f"BatchNorm layers converted to model.norm={config.model.norm} after loading")
    return replace(report, adaptations=tuple(notes))
