"""``flair reproduce``: one command from a published configuration to a side-by-side comparison."""

from __future__ import annotations

from typing import Annotated

import typer

from flairkit.cli.common import OverwriteOption, SetOption, console, guarded, resolve_config


@guarded
def reproduce_command(
    preset: Annotated[str, typer.Argument(help="A preset with published figures, e.g. flair2-utt-filt-avgm-aug.")],
    overrides: SetOption = None,
    overwrite: OverwriteOption = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Train and evaluate PRESET on your copy of the dataset (--set data.root=...), then compare with the paper."""
    from flairkit.reproduce import reproduce

    result = reproduce(resolve_config(preset, overrides), overwrite=overwrite, progress=progress, console=console)
    console.print(f"comparison written to {result.files}")
