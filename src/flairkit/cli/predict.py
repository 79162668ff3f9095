"""``flair predict``: write PRED_<basename>.tif for every patch of a split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flairkit.cli.common import ConfigOption, OverwriteOption, SetOption, console, guarded, resolve_config
from flairkit.config import FlairConfig
from flairkit.errors import ConfigError
from flairkit.evaluation.predict import predict

CheckpointOption = Annotated[
    str | None,
    typer.Option(
        "--checkpoint",
        "-w",
        help="Weights: a .ckpt/.pth/.safetensors file, an exported bundle folder or a released model name.",
    ),
]
SplitOption = Annotated[str, typer.Option("--split", help="Which split of the dataset: train, val or test.")]
ProgressOption = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]


def checkpoint_source(checkpoint: str | None, configured: Path | None) -> str:
    """The weights named on the command line, else ``evaluate.checkpoint``; an error if neither."""
    source = checkpoint or (str(configured) if configured is not None else None)
    if source is None:
        raise ConfigError("no weights given: pass --checkpoint FILE (or set evaluate.checkpoint in the config)")
    return source


def config_for_weights(config: str | None, overrides: list[str] | None, weights: str | None) -> FlairConfig:
    """The config of a command that loads weights.

    ``-c`` wins; otherwise a bundle's or released model's config, or the config saved in a flairkit checkpoint.
    """
    from flairkit.models.checkpoints import config_from_checkpoint, weights_config_source

    if config is None and weights is not None:
        source = weights_config_source(weights)
        if source is not None:
            return resolve_config(source, overrides)
        if Path(weights).is_file():
            embedded = config_from_checkpoint(weights, overrides or [])
            if embedded is not None:
                return embedded
    return resolve_config(config, overrides)


@guarded
def predict_command(
    out: Annotated[Path, typer.Argument(help="Folder that receives the PRED_*.tif files.")],
    config: ConfigOption = None,
    overrides: SetOption = None,
    checkpoint: CheckpointOption = None,
    split: SplitOption = "test",
    overwrite: OverwriteOption = False,
    progress: ProgressOption = True,
) -> None:
    """Predict every patch of a split; existing predictions are kept unless --overwrite."""
    from flairkit.models.checkpoints import load_model

    cfg = config_for_weights(config, overrides, checkpoint)
    model = load_model(cfg, checkpoint_source(checkpoint, cfg.evaluate.checkpoint))
    result = predict(cfg, model, out, split=split, overwrite=overwrite, progress=progress)
    console.print(f"wrote {len(result.written)} prediction(s) to {out} ({len(result.skipped)} already there, kept)")
