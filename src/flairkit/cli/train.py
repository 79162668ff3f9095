"""``flair train``: fit a model from a preset or YAML config."""

from __future__ import annotations

from typing import Annotated

import typer

from flairkit.cli.common import ConfigOption, OverwriteOption, SetOption, console, guarded, resolve_config
from flairkit.errors import ConfigError
from flairkit.training.run import last_checkpoint, train


@guarded
def train_command(
    config: ConfigOption = None,
    overrides: SetOption = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run from its last checkpoint.")] = False,
    overwrite: OverwriteOption = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
) -> None:
    """Train a segmentation model; checkpoints, logs and the resolved config go to OUTPUT_DIR/NAME."""
    cfg = resolve_config(config, overrides)
    if resume and cfg.train.resume_from is None:
        checkpoint = last_checkpoint(cfg.run_dir)
        if checkpoint is None:
            raise ConfigError(f"--resume: no last checkpoint in {cfg.run_dir / 'checkpoints'}; start without --resume")
        cfg.train.resume_from = checkpoint
    result = train(cfg, overwrite=overwrite, progress=progress)
    for note in result.adaptations:
        console.print(f"init weights adapted: {note}", highlight=False, soft_wrap=True, markup=False)
    console.print(f"[green]training finished[/] after {result.epochs} epoch(s) in {result.run_dir}")
    console.print(f"best checkpoint: {result.best_checkpoint}")
    if result.val_miou is not None:
        console.print(f"validation mIoU: {100 * result.val_miou:.2f}")
