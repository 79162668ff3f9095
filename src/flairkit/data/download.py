"""Download the FLAIR datasets: resumable transfers, integrity checks and safe zip extraction.

The datasets and their files are listed in ``datasets_manifest.json`` (links from IGN's download pages,
https://ignf.github.io/FLAIR/). HTTP goes through :mod:`urllib` only. Work files live in ``<to>/.flairkit-download``:
``<file>.part`` (resumed with HTTP Range requests), its ``.part.json`` (the server's validator, so that a file
changed upstream is never spliced onto an old start), and ``<file>.done.json`` once an archive has been extracted.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import stat
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from flairkit.atomic import write_text_atomic
from flairkit.errors import DataError, OutputExistsError

if TYPE_CHECKING:
    from flairkit.data.check import CheckReport

MANIFEST_PATH = Path(__file__).with_name("datasets_manifest.json")
MIRROR_ENV = "FLAIRKIT_DATA_MIRROR"
STATE_DIR = ".flairkit-download"
SOURCES_HINT = "see https://ignf.github.io/FLAIR/ for the current links, or pass --mirror URL"

_USER_AGENT = "flairkit-data-download"
_CHUNK = 256 * 1024
_MAX_BACKOFF = 60.0
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*$")
_DRIVE = re.compile(r"^[A-Za-z]:")
_EXTRACT_PREFIX = "extract-"


class DownloadError(DataError):
    """A file could not be fetched, or it does not match its expected size or checksum."""


class UnsafeArchiveError(DataError):
    """An archive entry would land outside the target folder, or is neither a plain file nor a folder."""


class ExistingDataError(DataError, OutputExistsError):
    """Extraction would replace existing files and overwriting was not asked for."""


class _TransientError(Exception):
    """A failure worth retrying: dropped connection, timeout, 5xx answer."""


class _CorruptArchiveError(Exception):
    """The archive cannot be read back (bad zip structure or CRC)."""


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file of a dataset."""

    url: str
    archive: str
    size: int | None
    sha256: str | None
    approx_size: int | None
    extracts_to: tuple[str, ...]

    @property
    def filename(self) -> str:
        """The file's name, last part of its URL."""
        return PurePosixPath(self.url).name

    @property
    def expected_size(self) -> int | None:
        """Exact size when known, else the approximate published size."""
        return self.size if self.size is not None else self.approx_size


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: its files and the folder (relative to the download folder) that holds it."""

    name: str
    description: str
    root: str
    files: tuple[RemoteFile, ...]

    @property
    def approx_size(self) -> int:
        """Sum of the known (exact or approximate) archive sizes, in bytes."""
        return sum(f.expected_size or 0 for f in self.files)


@dataclass(frozen=True)
class Manifest:
    """The base URL and the datasets it serves."""

    base_url: str
    datasets: dict[str, DatasetSpec]


@dataclass
class DownloadResult:
    """What :func:`download_dataset` did."""

    name: str
    root: Path
    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    extracted: list[Path] = field(default_factory=list)
    check: CheckReport | None = None


def load_manifest(manifest: Mapping[str, Any] | Path | None = None) -> Manifest:
    """Read and validate a manifest (the packaged one when ``manifest`` is None)."""
    source = str(manifest) if isinstance(manifest, Path) else "the packaged datasets manifest"
    if manifest is None or isinstance(manifest, Path):
        path = MANIFEST_PATH if manifest is None else manifest
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise DataError(f"cannot read the datasets manifest {path}: {error}; reinstall flairkit") from None
    if not isinstance(manifest, Mapping):
        raise DataError(f"{source} is not a JSON object; fix its content")
    base_url = manifest.get("base_url")
    datasets = manifest.get("datasets")
    if not isinstance(base_url, str) or not base_url or not isinstance(datasets, Mapping) or not datasets:
        raise DataError(f"{source} needs a non-empty 'base_url' string and a non-empty 'datasets' object")
    specs = {name: _parse_dataset(source, name, entry) for name, entry in datasets.items()}
    return Manifest(base_url=base_url.rstrip("/"), datasets=specs)


def available_datasets(manifest: Mapping[str, Any] | Path | None = None) -> list[DatasetSpec]:
    """The datasets a manifest offers, in manifest order."""
    return list(load_manifest(manifest).datasets.values())


def resolve_base_url(default: str, mirror: str | None = None) -> str:
    """The base URL to download from: ``mirror``, else $FLAIRKIT_DATA_MIRROR, else ``default``.

    A mirror may also be a local folder laid out like the server.
    """
    base = mirror or os.environ.get(MIRROR_ENV) or default
    if "://" not in base:
        folder = Path(base).expanduser()
        if not folder.is_dir():
            raise DataError(
                f"mirror {base!r} is neither a URL nor an existing folder; pass an http(s):// URL or a folder"
            )
        base = folder.resolve().as_uri()
    return base.rstrip("/")


def download_dataset(
    name: str,
    to: Path,
    *,
    mirror: str | None = None,
    overwrite: bool = False,
    retries: int = 5,
    backoff: float = 1.0,
    progress: bool = True,
    verify: bool = True,
    check: bool = True,
    keep_archives: bool = False,
    timeout: float = 60.0,
    manifest: Mapping[str, Any] | Path | None = None,
) -> DownloadResult:
    """Download dataset ``name`` into folder ``to``, verify it, extract it and check the result.

    Interrupted downloads resume on the next call; archives already extracted by an earlier call are skipped
    (unless ``overwrite``). Transient network failures are retried ``retries`` times with exponential backoff
    starting at ``backoff`` seconds. ``verify`` compares sizes and sha256 digests when the manifest knows them;
    a mismatching file is fetched once more, then reported. ``check`` runs the dataset checker on the result.
    Existing files are never replaced unless ``overwrite``.
    """
    spec_manifest = load_manifest(manifest)
    spec = spec_manifest.datasets.get(name)
    if spec is None:
        known = ", ".join(spec_manifest.datasets)
        raise DataError(f"unknown dataset {name!r}; known datasets: {known} (see `flair data download --list`)")
    if retries < 0 or backoff < 0:
        raise DataError(f"retries ({retries}) and backoff ({backoff}) must not be negative")
    base = resolve_base_url(spec_manifest.base_url, mirror)
    to = Path(to).expanduser()
    if to.exists() and not to.is_dir():
        raise DataError(f"{to} is a file, not a folder; pass a folder with --to")
    state = to / STATE_DIR
    result = DownloadResult(name=name, root=to / spec.root)
    _remove_stale_extractions(state)

    pending: list[RemoteFile] = []
    for remote in spec.files:
        if not overwrite and _already_extracted(state, remote, to):
            result.skipped.append(remote.url)
            continue
        present = [to / entry for entry in remote.extracts_to if _lexists(to / entry)]
        if present and not overwrite:
            raise ExistingDataError(
                f"{present[0]} already exists and was not extracted by flairkit from {remote.filename}; "
                "pass --overwrite to replace the files it holds, or choose another folder with --to"
            )
        pending.append(remote)

    needed = sum(max((r.expected_size or 0) - _downloaded_bytes(state, r), 0) for r in pending)
    _ensure_space(to, needed, f"downloading {name}")
    try:
        to.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"cannot create {to}: {error.strerror}; choose a writable folder with --to") from None

    with _Display(progress) as display:
        for remote in pending:
            entries = _download_and_extract(
                remote,
                f"{base}/{remote.url}",
                to,
                state,
                overwrite=overwrite,
                retries=retries,
                backoff=backoff,
                verify=verify,
                keep_archives=keep_archives,
                timeout=timeout,
                display=display,
            )
            result.downloaded.append(remote.url)
            result.extracted.extend(to / entry for entry in entries)

    if check and result.root.is_dir():
        result.check = _run_check(result.root, progress)
    return result


def _run_check(root: Path, progress: bool) -> CheckReport:
    from flairkit.data.check import check_dataset

    if not progress:
        return check_dataset(root)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(f"checking {root}", total=None)
        return check_dataset(root, progress=lambda done, total: bar.update(task, completed=done, total=total))


def _parse_dataset(source: str, name: str, entry: Any) -> DatasetSpec:
    where = f"{source}, dataset {name!r}"
    if not isinstance(entry, Mapping) or not isinstance(entry.get("files"), list) or not entry["files"]:
        raise DataError(f"{where}: needs a non-empty 'files' list")
    root = entry.get("root", ".")
    if not isinstance(root, str) or not _is_relative_path(root, allow_dot=True):
        raise DataError(f"{where}: 'root' must be a relative folder without '..', got {root!r}")
    files = tuple(_parse_file(where, item) for item in entry["files"])
    return DatasetSpec(name=name, description=str(entry.get("description", "")), root=root, files=files)


def _parse_file(where: str, item: Any) -> RemoteFile:
    if not isinstance(item, Mapping):
        raise DataError(f"{where}: each file must be an object with at least a 'url'")
    url = item.get("url")
    if not isinstance(url, str) or not _is_relative_path(url):
        raise DataError(f"{where}: 'url' must be a path relative to base_url without '..', got {url!r}")
    where = f"{where}, file {url!r}"
    archive = item.get("archive", "zip")
    if archive != "zip":
        raise DataError(f"{where}: archive type {archive!r} is not supported; only 'zip' is")
    sizes = {}
    for key in ("size", "approx_size"):
        value = item.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise DataError(f"{where}: {key!r} must be a byte count or null, got {value!r}")
        sizes[key] = value
    sha256 = item.get("sha256")
    if sha256 is not None:
        if not isinstance(sha256, str) or not _SHA256.match(sha256.lower()):
            raise DataError(f"{where}: 'sha256' must be 64 hexadecimal digits or null, got {sha256!r}")
        sha256 = sha256.lower()
    extracts_to = item.get("extracts_to", [])
    if not isinstance(extracts_to, list) or not all(
        isinstance(e, str) and _is_relative_path(e) and "/" not in e for e in extracts_to
    ):
        raise DataError(f"{where}: 'extracts_to' must list top-level names, got {extracts_to!r}")
    return RemoteFile(url, archive, sizes["size"], sha256, sizes["approx_size"], tuple(extracts_to))


def _is_relative_path(text: str, allow_dot: bool = False) -> bool:
    if allow_dot and text == ".":
        return True
    if not text or "\\" in text or "://" in text or text.startswith("/") or _DRIVE.match(text):
        return False
    return all(part not in ("", ".", "..") for part in text.split("/"))


def _lexists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _remove_stale_extractions(state: Path) -> None:
    """Delete temporary folders left by an extraction that was killed (they may be large)."""
    if state.is_dir():
        for leftover in state.glob(f"{_EXTRACT_PREFIX}*"):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)


def _archive_path(state: Path, remote: RemoteFile) -> Path:
    return state.joinpath(*remote.url.split("/"))


def _part_path(archive: Path) -> Path:
    return archive.with_name(archive.name + ".part")


def _done_path(archive: Path) -> Path:
    return archive.with_name(archive.name + ".done.json")


def _downloaded_bytes(state: Path, remote: RemoteFile) -> int:
    archive = _archive_path(state, remote)
    return _size(archive) + _size(_part_path(archive))


def _already_extracted(state: Path, remote: RemoteFile, to: Path) -> bool:
    done = _done_path(_archive_path(state, remote))
    try:
        entries = json.loads(done.read_text(encoding="utf-8"))["entries"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return isinstance(entries, list) and all(isinstance(e, str) and _lexists(to / e) for e in entries)


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _ensure_space(folder: Path, needed: int, what: str) -> None:
    if needed <= 0:
        return
    probe = folder.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise DataError(
            f"not enough disk space in {folder}: {what} needs about {_human(needed)} but only {_human(free)} "
            "is free; free some space or choose another folder with --to"
        )


class _Display:
    """Rich progress bars on stderr, or nothing at all."""

    def __init__(self, enabled: bool) -> None:
        self._progress = (
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            if enabled
            else None
        )

    def __enter__(self) -> _Display:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def add(self, description: str, total: int | None = None, completed: int = 0) -> TaskID | None:
        if self._progress is None:
            return None
        return self._progress.add_task(description, total=total, completed=completed)

    def update(self, task: TaskID | None, **fields: Any) -> None:
        if self._progress is not None and task is not None:
            self._progress.update(task, **fields)

    def note(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.print(message, markup=False, highlight=False)


def _download_and_extract(
    remote: RemoteFile,
    url: str,
    to: Path,
    state: Path,
    *,
    overwrite: bool,
    retries: int,
    backoff: float,
    verify: bool,
    keep_archives: bool,
    timeout: float,
    display: _Display,
) -> list[str]:
    """Fetch one archive (a corrupted copy is fetched once more), extract it and record that it is done."""
    archive = _archive_path(state, remote)
    try:
        archive.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(
            f"cannot create {archive.parent}: {error.strerror}; choose a writable folder with --to"
        ) from None
    entries: list[str] = []
    for attempt in (1, 2):
        if not archive.exists():
            _fetch(url, _part_path(archive), retries=retries, backoff=backoff, timeout=timeout, display=display)
            os.replace(_part_path(archive), archive)
        problem = _verify(archive, remote) if verify else None
        if problem is None:
            try:
                entries = _extract_zip(archive, url, to, state, overwrite=overwrite, display=display)
                break
            except _CorruptArchiveError as error:
                problem = str(error)
            except UnsafeArchiveError:
                archive.unlink(missing_ok=True)  # never reuse it, e.g. after switching to another --mirror
                raise
        archive.unlink(missing_ok=True)
        if attempt == 2:
            raise DownloadError(
                f"{url} is corrupted ({problem}) again after a fresh download; try later or pass --mirror URL "
                "(if IGN replaced the file, its size/sha256 in the datasets manifest must be updated)"
            )
        display.note(f"{remote.filename} is corrupted ({problem}); downloading it again")
    write_text_atomic(_done_path(archive), json.dumps({"url": url, "entries": entries}, indent=1))
    if not keep_archives:
        archive.unlink(missing_ok=True)
    return entries


def _verify(path: Path, remote: RemoteFile) -> str | None:
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        return f"{size} bytes instead of {remote.size}"
    if remote.sha256 is not None:
        digest = hashlib.sha256()
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(4 * 1024 * 1024), b""):
                digest.update(block)
        if digest.hexdigest() != remote.sha256:
            return f"sha256 {digest.hexdigest()} instead of {remote.sha256}"
    return None


def _fetch(url: str, part: Path, *, retries: int, backoff: float, timeout: float, display: _Display) -> None:
    """Download ``url`` into ``part``, resuming what it holds, retrying transient failures with backoff."""
    meta = part.with_name(part.name + ".json")
    task = display.add(PurePosixPath(part.name).stem, None, _size(part))
    failures = 0
    reached = _size(part)
    while True:
        try:
            _fetch_once(url, part, meta, timeout=timeout, display=display, task=task)
        except _TransientError as error:
            # A retry that made progress resets the count: long downloads may drop many times.
            if _size(part) > reached:
                reached, failures = _size(part), 0
            failures += 1
            if failures > retries:
                raise DownloadError(
                    f"could not download {url}: {error} (gave up after {retries} retries); check the network "
                    f"and run the same command again to resume from {_human(_size(part))}, or pass --mirror URL"
                ) from None
            delay = min(backoff * 2 ** (failures - 1), _MAX_BACKOFF)
            display.note(f"{part.stem}: {error}; retrying in {delay:.1f} s")
            time.sleep(delay)
        else:
            meta.unlink(missing_ok=True)
            return


def _fetch_once(url: str, part: Path, meta: Path, *, timeout: float, display: _Display, task: TaskID | None) -> None:
    offset = _size(part)
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        validator = _read_validator(meta, url)
        if validator:
            # If the file changed upstream the server answers 200 with the whole new file.
            headers["If-Range"] = validator
    try:
        request = urllib.request.Request(url, headers=headers)
    except ValueError as error:
        raise DownloadError(f"invalid URL {url}: {error}; fix --mirror or the manifest") from None
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        with contextlib.closing(error):
            if error.code == 416 and offset:
                _, total = _parse_content_range(error.headers.get("Content-Range"))
                if total == offset:
                    return
                part.unlink(missing_ok=True)
                raise _TransientError("the server refused to resume; starting over") from None
            if error.code >= 500 or error.code in (408, 429):
                raise _TransientError(f"HTTP {error.code} {error.reason}") from None
            raise DownloadError(f"{url} answered HTTP {error.code} {error.reason}; {SOURCES_HINT}") from None
    except urllib.error.URLError as error:
        if isinstance(error.reason, (FileNotFoundError, IsADirectoryError, PermissionError, str)):
            raise DownloadError(f"cannot open {url}: {error.reason}; {SOURCES_HINT}") from None
        raise _TransientError(f"cannot connect ({error.reason})") from None
    except (OSError, http.client.HTTPException) as error:
        raise _TransientError(f"connection failed ({error!r})") from None

    with response:
        status = response.status or 200  # file:// answers carry no status
        if status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _TransientError(f"the server resumed at byte {start} instead of {offset}; starting over")
        elif status == 200:
            if offset:
                display.note(f"{part.stem}: the server cannot resume; starting over")
            offset = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        else:
            raise DownloadError(f"{url} answered HTTP {status}, expected 200 or 206; {SOURCES_HINT}")
        _write_validator(meta, url, response.headers)
        if total is not None:
            _ensure_space(part.parent, total - offset, f"the rest of {url}")
        display.update(task, total=total, completed=offset)
        received = _stream(response, part, offset, display, task)

    if total is not None and received != total:
        if received > total:
            part.unlink(missing_ok=True)
        raise _TransientError(f"connection closed after {_human(received)} of {_human(total)}")


def _stream(response: Any, part: Path, offset: int, display: _Display, task: TaskID | None) -> int:
    """Append the response body to ``part`` (which is truncated to ``offset`` first); return its new size."""
    received = offset
    with part.open("r+b" if offset else "wb") as sink:
        sink.seek(offset)
        sink.truncate()
        while True:
            try:
                chunk = response.read(_CHUNK)
            except (OSError, http.client.HTTPException) as error:
                raise _TransientError(f"connection lost after {_human(received)} ({error!r})") from None
            if not chunk:
                return received
            try:
                sink.write(chunk)
            except OSError as error:
                raise DataError(f"cannot write {part}: {error.strerror}; free disk space or use another --to") from None
            received += len(chunk)
            display.update(task, completed=received)


def _parse_content_range(header: str | None) -> tuple[int | None, int | None]:
    match = _CONTENT_RANGE.match(header or "")
    if not match:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total != "*" else None)


def _read_validator(meta: Path, url: str) -> str | None:
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("url") != url:
        return None
    validator = data.get("validator")
    return validator if isinstance(validator, str) else None


def _write_validator(meta: Path, url: str, headers: Any) -> None:
    etag = headers.get("ETag")
    validator = etag if etag and not etag.startswith("W/") else headers.get("Last-Modified")
    meta.write_text(json.dumps({"url": url, "validator": validator}), encoding="utf-8")


@dataclass(frozen=True)
class _Member:
    info: zipfile.ZipInfo
    parts: tuple[str, ...]
    is_dir: bool


def _safe_members(zf: zipfile.ZipFile, url: str) -> list[_Member]:
    """Every entry of ``zf`` as a relative path; refuse links, special files and paths leaving the target."""
    members = []
    for info in zf.infolist():
        raw = info.filename
        name = raw.replace("\\", "/")
        kind = stat.S_IFMT(info.external_attr >> 16)
        where = f"{url} holds the entry {raw!r}"
        refuse = "refusing to extract it; get the archive from the official source (" + SOURCES_HINT + ")"
        if kind == stat.S_IFLNK:
            raise UnsafeArchiveError(f"{where}, a symbolic link that could point outside the target; {refuse}")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise UnsafeArchiveError(f"{where}, which is not a plain file or folder; {refuse}")
        if name.startswith("/") or _DRIVE.match(name):
            raise UnsafeArchiveError(f"{where} with an absolute path; {refuse}")
        parts = tuple(p for p in name.split("/") if p not in ("", "."))
        if ".." in parts:
            raise UnsafeArchiveError(f"{where} that climbs out of the target folder with '..'; {refuse}")
        if parts and parts[0] == STATE_DIR:
            raise UnsafeArchiveError(f"{where} inside flairkit's work folder {STATE_DIR}; {refuse}")
        if parts:
            members.append(_Member(info, parts, name.endswith("/") or kind == stat.S_IFDIR))
    return members


def _extract_zip(archive: Path, url: str, to: Path, state: Path, *, overwrite: bool, display: _Display) -> list[str]:
    """Extract ``archive`` into a temporary folder of ``state`` (inside ``to``), then move its content in place.

    Returns the top-level names it created or updated.
    """
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, EOFError) as error:
        raise _CorruptArchiveError(f"not a readable zip archive: {error}") from None
    with zf:
        members = _safe_members(zf, url)
        conflicts = [to.joinpath(*m.parts) for m in members if not m.is_dir and _lexists(to.joinpath(*m.parts))]
        if conflicts and not overwrite:
            raise ExistingDataError(
                f"{len(conflicts)} file(s) from {archive.name} already exist, e.g. {conflicts[0]}; "
                "pass --overwrite to replace them, or choose another folder with --to"
            )
        total = sum(m.info.file_size for m in members)
        _ensure_space(to, total, f"extracting {archive.name}")
        task = display.add(f"extracting {archive.name}", total)
        tmp = Path(tempfile.mkdtemp(prefix=_EXTRACT_PREFIX, dir=state))
        try:
            for member in members:
                _extract_member(zf, member, tmp, url)
                display.update(task, advance=member.info.file_size)
            _move_into_place(tmp, to, overwrite)
        except OSError as error:
            raise DataError(
                f"cannot extract {archive.name} into {to}: {error}; check free space and permissions"
            ) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return sorted({m.parts[0] for m in members})


def _extract_member(zf: zipfile.ZipFile, member: _Member, tmp: Path, url: str) -> None:
    dest = tmp.joinpath(*member.parts)
    if member.is_dir:
        dest.mkdir(parents=True, exist_ok=True)
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zf.open(member.info) as source, dest.open("wb") as sink:
            shutil.copyfileobj(source, sink, _CHUNK)
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise _CorruptArchiveError(f"entry {member.info.filename!r}: {error}") from None
    except (RuntimeError, NotImplementedError) as error:  # encrypted entry, unsupported compression
        raise DataError(f"cannot extract {member.info.filename!r} from {url}: {error}; {SOURCES_HINT}") from None


def _move_into_place(source: Path, target: Path, overwrite: bool) -> None:
    """Move the content of ``source`` into ``target``, merging folders; files are replaced only with ``overwrite``."""
    for child in sorted(source.iterdir()):
        dest = target / child.name
        if not _lexists(dest):
            shutil.move(child, dest)
        elif child.is_dir() and dest.is_dir():
            _move_into_place(child, dest, overwrite)
        elif overwrite:
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            else:
                dest.unlink()
            shutil.move(child, dest)
        else:
            raise ExistingDataError(f"{dest} appeared during extraction; pass --overwrite to replace it")
