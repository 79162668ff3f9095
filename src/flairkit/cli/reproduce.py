"""``flair reproduce``: one command from a published configuration to a side-by-side comparison."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Annotated

import typer

from flairkit.cli.common import OverwriteOption, SetOption, console, guarded, resolve_config
from flairkit.cli.predict import prediction_progress


@guarded
def reproduce_command(
    preset: Annotated[
        str, typer.Argument(help="A preset with published figures, e.g. flair2-utt-filt-avgm-aug or flairhub-LC-D.")
    ],
    overrides: SetOption = None,
    overwrite: OverwriteOption = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Train and evaluate PRESET on your copy of the dataset (--set data.root=...), then compare with the paper."""
    from flairkit.cli.compare import comparison_view
    from flairkit.cli.metrics import metrics_view
    from flairkit.workflows.reproduce import reproduce

    config = resolve_config(preset, overrides)
    with contextlib.ExitStack() as stack:
        bar: Callable[[int, int], None] | None = None

        def predicting(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:  # started with the first prediction, after Lightning's training bar
                bar = stack.enter_context(prediction_progress(True))
            if bar is not None:
                bar(done, total)

        result = reproduce(
            config,
            overwrite=overwrite,
            training_progress=progress,
            evaluation_progress=predicting if progress else None,
        )
    if result.task_metrics:
        for folder, metrics in result.task_metrics.items():
            console.print(f"[bold]{folder}[/]", markup=True, highlight=False)
            console.print(metrics_view(metrics))
    else:
        console.print(metrics_view(result.metrics))
    console.print(comparison_view(result.comparison))
    console.print(f"comparison written to {result.files}")
