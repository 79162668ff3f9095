"""Options and error handling shared by every ``flair`` command."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from flairkit.config import FlairConfig, load_config
from flairkit.errors import FlairError

console = Console()
error_console = Console(stderr=True)

ConfigOption = Annotated[
    str | None,
    typer.Option("--config", "-c", help="A YAML config file or a preset name (see `flair models`)."),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Dotted override applied last, e.g. --set train.lr=0.01 (repeatable)."),
]
OverwriteOption = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")]

F = TypeVar("F", bound=Callable[..., Any])


def guarded(function: F) -> F:
    """Turn user-facing errors into a red message on stderr and a non-zero exit code."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except FlairError as error:
            error_console.print(f"[bold red]error:[/] {error}", markup=True, highlight=False)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            error_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def resolve_config(config: str | None, overrides: list[str] | None) -> FlairConfig:
    """Load the config named on the command line with its ``--set`` overrides."""
    return load_config(config, overrides or [])


def existing_path(path: Path, what: str) -> Path:
    """``path`` if it exists, else a clear error naming ``what``."""
    if not Path(path).exists():
        raise FlairError(f"{what} {path} does not exist; check the path")
    return Path(path)


def stdout_is_terminal() -> bool:
    """Whether progress bars make sense."""
    return sys.stdout.isatty()
