"""Options and error handling shared by every ``flair`` command."""

from __future__ import annotations

import errno
import functools
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

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

_WORKER_TRACEBACK = "Original Traceback (most recent call last):"
_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
_DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)
_BAD_PLACE = (errno.ENOTDIR, errno.EEXIST, errno.EISDIR)


def user_message(error: FlairError) -> str:
    """The error's own message, without the traceback a DataLoader worker process puts in front of it."""
    text = str(error)
    if _WORKER_TRACEBACK not in text:
        return text
    marker = f"{type(error).__module__}.{type(error).__qualname__}: "
    position = text.rfind(marker)
    return text[position + len(marker) :].strip() if position >= 0 else text


def os_error_message(error: OSError) -> str | None:
    """A message with the fix for a full disk, a denied write or a path through a file; None for other errors."""
    where = f" ({error.filename})" if error.filename else ""
    if error.errno in _DISK_FULL:
        return f"no space left on the device{where}; free some space or write the outputs elsewhere"
    if error.errno in _DENIED:
        return f"{error.strerror or 'permission denied'}{where}; fix the permissions or choose another location"
    if error.errno in _BAD_PLACE:
        return f"{error.strerror}{where}; a file stands where a folder is needed (or the reverse): choose another path"
    return None


def _fail(message: str, exit_code: int) -> typer.Exit:
    error_console.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)
    return typer.Exit(exit_code)


def guarded(function: F) -> F:
    """Turn user-facing errors into a red message on stderr and a non-zero exit code."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except FlairError as error:
            raise _fail(user_message(error), error.exit_code) from None
        except OSError as error:
            message = os_error_message(error)
            if message is None:
                raise
            raise _fail(message, FlairError.exit_code) from None
        except KeyboardInterrupt:
            error_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def resolve_config(config: str | None, overrides: list[str] | None) -> FlairConfig:
    """Load the config named on the command line with its ``--set`` overrides."""
    return load_config(config, overrides or [])


def stdout_is_terminal() -> bool:
    """Whether progress bars make sense."""
    return sys.stdout.isatty()
