"""Atomic output files: written under a temporary name, moved in place only when complete."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from flairkit.errors import DataError, OutputExistsError


def check_writable(path: Path, overwrite: bool = False) -> None:
    """Fail early if ``path`` exists (and overwrite is off) or its folder cannot be written."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass --overwrite to replace it or choose another output")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"cannot create output folder {folder}: {error.strerror}; choose a writable location") from None
    if not os.access(folder, os.W_OK):
        raise DataError(f"output folder {folder} is not writable; fix its permissions or choose another output")


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except (OSError, ValueError):
        return None
    return status.st_dev, status.st_ino


def check_not_inputs(outputs: Iterable[Path], inputs: Iterable[Path]) -> None:
    """Refuse outputs that are one of ``inputs`` under another name (same path, link or hard link).

    Checked whatever ``overwrite`` says: writing such an output would destroy the input.
    """
    existing = {}
    for output in outputs:
        identity = _identity(Path(output))
        if identity is not None:
            existing[identity] = Path(output)
    if not existing:
        return
    for source in inputs:
        identity = _identity(Path(source))
        if identity in existing:
            output = existing[identity]
            same = "" if output == Path(source) else " (the same file: a link or another name for it)"
            raise DataError(
                f"the output {output} is the input {source}{same}; writing it would destroy the input: "
                f"choose another output path"
            )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def set_default_mode(path: Path, private: bool = False) -> None:
    """Give ``path`` the permissions of a new file or folder (the umask applies); owner-only if ``private``."""
    full = 0o777 if Path(path).is_dir() else 0o666
    os.chmod(path, full & 0o700 if private else full & ~_umask())


@contextlib.contextmanager
def atomic_path(path: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    On any error the temporary file is removed, so no partial output ever carries the final name.
    """
    path = Path(path)
    check_writable(path, overwrite)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if path.exists() and not overwrite:
            raise OutputExistsError(f"{path} appeared while writing; pass --overwrite to replace it")
        set_default_mode(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str, overwrite: bool = True) -> Path:
    """Write a text file atomically."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes_atomic(path: Path, data: bytes, overwrite: bool = True) -> Path:
    """Write a binary file atomically."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def check_folder_free(path: Path, overwrite: bool = False) -> None:
    """Fail early if ``path`` exists and is not an empty folder, unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite and not (path.is_dir() and not any(path.iterdir())):
        raise OutputExistsError(
            f"{path} already exists and is not empty; pass --overwrite to replace it or choose another output folder"
        )


@contextlib.contextmanager
def atomic_folder(path: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it replaces ``path`` only if the block succeeds.

    ``path`` may be missing or an empty folder; another existing ``path`` needs ``overwrite``. On any error the
    temporary folder is removed and ``path`` is left as it was.
    """
    path = Path(path)
    check_folder_free(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    set_default_mode(tmp)
    if path.exists() or path.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
        os.replace(path, old / "previous")
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
