"""``flair predict``: write PRED_<basename>.tif for every patch of a split."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import Progress

from flairkit.cli.common import ConfigOption, OverwriteOption, SetOption, console, guarded, resolve_config
from flairkit.config import FlairConfig
from flairkit.errors import ConfigError
from flairkit.evaluation.predict import predict

if TYPE_CHECKING:
    from torch import nn

CheckpointOption = Annotated[
    list[str] | None,
    typer.Option(
        "--checkpoint",
        "-w",
        help="Weights: a .ckpt/.pth/.safetensors file, an exported bundle folder or a released model name; "
        "repeat it for an ensemble (probabilities averaged; every model must fit the config of the first).",
    ),
]
TtaOption = Annotated[
    str | None,
    typer.Option(
        "--tta",
        help="Test-time augmentation, probabilities averaged: none, flips (4 passes) or d4 (8 passes) "
        "(default: the config's evaluate.tta / detect.tta, none).",
    ),
]
SplitOption = Annotated[str, typer.Option("--split", help="Which split of the dataset: train, val or test.")]
ProgressOption = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]
DeviceOption = Annotated[
    str | None,
    typer.Option(
        "--device",
        help="auto, cpu, cuda (this rank's GPU: LOCAL_RANK modulo the GPU count), cuda:N or mps "
        "(default: the config's evaluate.device / detect.device, auto).",
    ),
]
PrecisionOption = Annotated[
    str | None,
    typer.Option(
        "--precision",
        help="auto (bf16 on GPUs that compute it natively, else 32), 32, bf16 or fp16: autocast of the forward pass "
        "(default: the config's evaluate.precision / detect.precision, auto).",
    ),
]


def device_overrides(section: str, device: str | None, precision: str | None, tta: str | None = None) -> list[str]:
    """``--device``, ``--precision`` and ``--tta`` as overrides of ``<section>.device``, ``.precision`` and ``.tta``."""
    given = (("device", device), ("precision", precision), ("tta", tta))
    return [f"{section}.{key}={value}" for key, value in given if value is not None]


def config_file(config: str | None) -> list[Path]:
    """The YAML file named by ``--config`` (none for a preset): an input that no output may replace."""
    return [Path(config)] if config is not None and Path(config).is_file() else []


def checkpoint_sources(checkpoints: list[str] | None, configured: Path | None) -> list[str]:
    """The weights named on the command line (several: an ensemble), else ``evaluate.checkpoint``; an error if
    neither."""
    if checkpoints:
        return checkpoints
    if configured is None:
        raise ConfigError("no weights given: pass --checkpoint FILE (or set evaluate.checkpoint in the config)")
    return [str(configured)]


def load_models(config: FlairConfig, weights: list[str]) -> list[nn.Module]:
    """The networks of ``weights``; each must fit ``config`` (nomenclature, bands, normalisation, network: see
    :func:`flairkit.models.weights.check_weights_config`), so the models of an ensemble agree."""
    from flairkit.models.loader import load_model

    return [load_model(config, source) for source in weights]


@contextmanager
def prediction_progress(enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A transient "predicting" bar fed by the (done, total) callback it yields; None when disabled."""
    if not enabled:
        yield None
        return
    with Progress(transient=True) as bar:
        task = bar.add_task("predicting", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def config_for_weights(config: str | None, overrides: list[str] | None, weights: str | None) -> FlairConfig:
    """The config of a command that loads weights.

    ``-c`` wins; otherwise a bundle's or released model's config, or the config saved in a flairkit checkpoint.
    """
    from flairkit.models.weights import config_from_checkpoint, weights_config_overrides, weights_config_source

    if config is None and weights is not None:
        source = weights_config_source(weights)
        if source is not None:
            return resolve_config(source, [*weights_config_overrides(weights), *(overrides or [])])
        if Path(weights).is_file():
            embedded = config_from_checkpoint(weights, overrides or [])
            if embedded is not None:
                return embedded
    return resolve_config(config, overrides)


def refuse_hub_network(config: FlairConfig, command: str, instead: str) -> None:
    """A ConfigError naming model.hub when ``command`` cannot run FLAIR-HUB's multimodal network; ``instead``
    says what to use."""
    if config.model.hub is not None:
        raise ConfigError(
            f"model.hub: {command} does not run FLAIR-HUB's multimodal network yet; {instead} "
            "(or give the config of an aerial model without model.hub)"
        )


def network_for_prediction(
    config: str | None,
    overrides: list[str] | None,
    checkpoints: list[str] | None,
    device: str | None,
    precision: str | None,
    tta: str | None = None,
) -> tuple[FlairConfig, list[str], list[nn.Module]]:
    """The config, the weights (as named) and the loaded networks of ``flair predict`` and ``flair evaluate``; the
    config comes with the first weights."""
    overrides = [*(overrides or []), *device_overrides("evaluate", device, precision, tta)]
    cfg = config_for_weights(config, overrides, checkpoints[0] if checkpoints else None)
    refuse_hub_network(cfg, "flair predict", "score it per task with `flair evaluate`")
    weights = checkpoint_sources(checkpoints, cfg.evaluate.checkpoint)
    return cfg, weights, load_models(cfg, weights)


@guarded
def predict_command(
    out: Annotated[Path, typer.Argument(help="Folder that receives the PRED_*.tif files.")],
    config: ConfigOption = None,
    overrides: SetOption = None,
    checkpoint: CheckpointOption = None,
    split: SplitOption = "test",
    overwrite: OverwriteOption = False,
    progress: ProgressOption = True,
    device: DeviceOption = None,
    precision: PrecisionOption = None,
    tta: TtaOption = None,
) -> None:
    """Predict every patch of a split; existing predictions are kept unless --overwrite."""
    cfg, weights, model = network_for_prediction(config, overrides, checkpoint, device, precision, tta)
    with prediction_progress(progress) as on_progress:
        result = predict(
            cfg,
            model,
            out,
            split=split,
            overwrite=overwrite,
            progress=on_progress,
            weights=weights,
            inputs=config_file(config),
        )
    console.print(f"wrote {len(result.written)} prediction(s) to {out} ({len(result.skipped)} already there, kept)")
    console.print(f"{result.passes} per patch")
