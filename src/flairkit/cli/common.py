"""Options and error handling shared by every ``flair`` command."""

from __future__ import annotations

import errno
import functools
import logging
import sys
import warnings
from collections.abc import Callable
from typing import Annotated, Any, TextIO, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from flairkit.config import FlairConfig, load_config
from flairkit.errors import FlairError

console = Console()
# soft_wrap: errors and warnings are never broken inside a word or a path, whatever the terminal width.
error_console = Console(stderr=True, soft_wrap=True)

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


def os_error_message(error: OSError) -> str:
    """One line naming the path and the fix: full disk, denied write, a path through a file, or any other."""
    where = f" ({error.filename})" if error.filename else ""
    if error.errno in _DISK_FULL:
        return f"no space left on the device{where}; free some space or write the outputs elsewhere"
    if error.errno in _DENIED:
        return f"{error.strerror or 'permission denied'}{where}; fix the permissions or choose another location"
    if error.errno in _BAD_PLACE:
        return f"{error.strerror}{where}; a file stands where a folder is needed (or the reverse): choose another path"
    if error.errno == errno.ENAMETOOLONG:
        return f"{error.strerror}{where}; choose a shorter path"
    what = f"{error.strerror}{where}" if error.strerror else " ".join(str(error).split()) or type(error).__name__
    return f"{what}; check that the path exists and that its folder can hold files, or choose another location"


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
            raise _fail(os_error_message(error), FlairError.exit_code) from None
        except KeyboardInterrupt:
            error_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


class _WarningPrinter(logging.Handler):
    """Prints each distinct warning once on stderr as ``warning: message``, without Python's source line.

    It receives Python warnings (as ``warnings.showwarning``) and flairkit's log records alike, so that a
    message sent through both is printed once.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._seen: set[str] = set()

    def _print(self, label: str, message: str) -> None:
        if message in self._seen:
            return
        self._seen.add(message)
        error_console.print(f"[yellow]{label}:[/] {escape(message)}", markup=True, highlight=False)

    def emit(self, record: logging.LogRecord) -> None:
        self._print(record.levelname.lower(), record.getMessage())

    def showwarning(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        self._print("warning", str(message))


def print_warnings_once() -> None:
    """Make the command line the only printer of Python warnings and of flairkit's log warnings."""
    printer = _WarningPrinter()
    logging.getLogger("flairkit").addHandler(printer)
    warnings.showwarning = printer.showwarning


def resolve_config(config: str | None, overrides: list[str] | None) -> FlairConfig:
    """Load the config named on the command line with its ``--set`` overrides."""
    return load_config(config, overrides or [])


def stdout_is_terminal() -> bool:
    """Whether progress bars make sense."""
    return sys.stdout.isatty()
