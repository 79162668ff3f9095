"""The one downloader: files of Hugging Face Hub repositories and plain HTTPS files, verified before use.

Hub files go through :func:`huggingface_hub.hf_hub_download`: its cache (or a ``local_dir``), its retries and
resumption of dropped connections, offline mode and mirrors (``HF_ENDPOINT``). huggingface_hub checks sizes,
not content, so every file downloaded here is then checked against its published sha256 or, when none is
published, against the hub's ETag (the sha256 of an LFS file, the git blob sha1 of a small one); a file that
does not match is deleted. Files published outside the Hub go through huggingface_hub's resumable GET into a
``.part`` file that a later run resumes. huggingface_hub is imported on use: it costs ~0.1 s at CLI start.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flairkit.errors import DataError
from flairkit.hashing import file_sha256

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[str, int, "int | None"], None]
"""Receives ``(label, bytes done, bytes total or None)`` while a file downloads."""

OFFLINE_ENVS = ("HF_HUB_OFFLINE", "FLAIRKIT_OFFLINE")
ENDPOINT_ENV = "HF_ENDPOINT"
SHA256 = re.compile(r"^[0-9a-f]{64}$")
GIT_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_RETRY_STATUSES = (408, 429, 500, 502, 503, 504)
_MAX_BACKOFF = 60.0


class DownloadError(DataError):
    """A file could not be fetched, or what was fetched does not match its checksum."""


class NotCachedError(DownloadError):
    """Downloads are off (offline) and no local copy of the file exists."""


@dataclass(frozen=True)
class HubFile:
    """One file of a Hugging Face Hub repository at a pinned revision, with its published sha256 when known."""

    repo_id: str
    filename: str
    revision: str = "main"
    repo_type: str = "model"
    sha256: str | None = None


def is_offline() -> bool:
    """Whether downloads are off: ``$HF_HUB_OFFLINE``/``$FLAIRKIT_OFFLINE`` set, or huggingface_hub's offline mode."""
    from huggingface_hub import constants

    flags = (os.environ.get(name, "").strip().lower() for name in OFFLINE_ENVS)
    return constants.is_offline_mode() or any(flag in {"1", "true", "yes", "on"} for flag in flags)


def hub_endpoint(mirror: str | None = None) -> str:
    """The Hub to download from: ``mirror``, else ``$HF_ENDPOINT`` (read now), else huggingface_hub's default."""
    from huggingface_hub import constants

    return (mirror or os.environ.get(ENDPOINT_ENV) or constants.ENDPOINT).rstrip("/")


def hub_url(file: HubFile, endpoint: str | None = None) -> str:
    """The address of ``file`` on the Hub, or on the mirror ``endpoint``."""
    from huggingface_hub import hf_hub_url

    return hf_hub_url(
        file.repo_id, file.filename, repo_type=file.repo_type, revision=file.revision, endpoint=hub_endpoint(endpoint)
    )


def cached_hub_file(file: HubFile, cache_dir: Path | None = None) -> Path | None:
    """The copy of ``file`` in the hub cache (``cache_dir`` or huggingface_hub's), or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        file.repo_id, file.filename, cache_dir=cache_dir, revision=file.revision, repo_type=file.repo_type
    )
    return Path(found) if isinstance(found, str) else None


def fetch_hub_file(
    file: HubFile,
    *,
    cache_dir: Path | None = None,
    local_dir: Path | None = None,
    endpoint: str | None = None,
    offline: bool | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """Path of ``file`` in the hub cache (or in ``local_dir``), downloaded and verified first when online.

    Offline (``offline``, else :func:`is_offline`) only local copies are used, and :class:`NotCachedError` says
    when there is none. A download that does not match the published sha256 (or the hub's ETag) is deleted and
    fetched once more; a second mismatch raises :class:`DownloadError`.
    """
    import httpx2
    from huggingface_hub import hf_hub_download

    url = hub_url(file, endpoint)
    options: dict[str, Any] = {
        "repo_id": file.repo_id,
        "filename": file.filename,
        "revision": file.revision,
        "repo_type": file.repo_type,
        "cache_dir": cache_dir,
        "local_dir": local_dir,
        "endpoint": hub_endpoint(endpoint),
    }
    if offline if offline is not None else is_offline():
        found = _local_copy(file, cache_dir, local_dir)
        if found is None:
            raise NotCachedError(f"{url} is not in the local cache and downloads are off (offline)")
        return found
    try:
        expected = file.sha256 or _hub_etag(url)
    except _UnreachableError as error:
        found = _local_copy(file, cache_dir, local_dir)
        if found is None:
            raise DownloadError(f"cannot reach {url} ({error}) and no local copy exists") from None
        logger.warning("cannot reach %s (%s); using the local copy %s", url, error, found)
        return found
    problem = ""
    for attempt in (1, 2):
        try:
            path = Path(hf_hub_download(**options, tqdm_class=_reporting_bar(progress, file.filename)))
        except (OSError, ValueError, httpx2.HTTPError) as error:  # HTTP, repository and size errors alike
            raise DownloadError(f"could not download {url}: {_reason(error)}") from None
        problem = _mismatch(path, expected)
        if not problem:
            return path
        _discard(path)
        if attempt == 1:
            logger.warning("%s is corrupted (%s); downloading it again", file.filename, problem)
    raise DownloadError(
        f"{file.filename} downloaded from {url} is corrupted ({problem}) again after a fresh download and was "
        f"deleted; try again later or use another mirror (${ENDPOINT_ENV})"
    )


def _local_copy(file: HubFile, cache_dir: Path | None, local_dir: Path | None) -> Path | None:
    """The copy of ``file`` in ``local_dir`` (laid out like the repository) or in the hub cache, without any request."""
    if local_dir is None:
        return cached_hub_file(file, cache_dir)
    found = local_dir.joinpath(*file.filename.split("/"))
    return found if found.is_file() else None


def fetch_url(
    url: str,
    destination: Path,
    *,
    retries: int = 5,
    backoff: float = 1.0,
    progress: ProgressCallback | None = None,
) -> Path:
    """Download ``url`` to ``destination``, resuming the ``.part`` file an interrupted run left beside it.

    huggingface_hub's GET resumes connections dropped mid-file; server errors (408, 429, 5xx) and connection
    failures are retried ``retries`` times with exponential backoff from ``backoff`` seconds, and the count
    starts again whenever a retry made progress. The caller verifies the content.
    """
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    part = destination.with_name(destination.name + ".part")
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"cannot create {destination.parent}: {error.strerror}; choose a writable folder") from None
    failures, reached = 0, _size(part)
    while True:
        try:
            _get(url, part, progress)
            break
        except HfHubHTTPError as error:
            status = error.response.status_code
            if status == 416 and _complete(part, error.response.headers.get("Content-Range")):
                break
            if status == 416:
                part.unlink(missing_ok=True)
            elif status not in _RETRY_STATUSES:
                raise DownloadError(f"{url} answered HTTP {status}") from None
            reason = f"HTTP {status}"
        except httpx2.HTTPError as error:
            reason = f"connection failed ({type(error).__name__}: {error})"
        except OSError as error:
            if error.errno is not None:
                raise DataError(
                    f"cannot write {part}: {error.strerror}; free disk space or use another folder"
                ) from None
            reason = _reason(error)  # huggingface_hub's size check: the body ended early
        if _size(part) > reached:  # a retry that made progress resets the count: long downloads may drop often
            reached, failures = _size(part), 0
        failures += 1
        if failures > retries:
            raise DownloadError(
                f"could not download {url}: {reason} (gave up after {retries} retries); run the same command "
                f"again to resume from byte {_size(part)}"
            )
        delay = min(backoff * 2 ** (failures - 1), _MAX_BACKOFF)
        logger.warning("%s: %s; retrying in %.1f s", destination.name, reason, delay)
        time.sleep(delay)
    os.replace(part, destination)
    return destination


def _get(url: str, part: Path, progress: ProgressCallback | None) -> None:
    from huggingface_hub.file_download import http_get

    name = part.name.removesuffix(".part")
    resume = _size(part)
    with part.open("ab") as sink:
        http_get(
            url,
            sink,
            resume_size=resume,
            headers={"Accept-Encoding": "identity"},  # a compressed body cannot be resumed by byte offset
            displayed_filename=name,
            tqdm_class=_reporting_bar(progress, name),
        )


def _complete(part: Path, content_range: str | None) -> bool:
    """Whether a 416 answer (``bytes */TOTAL``) says that ``part`` already holds the whole file."""
    total = (content_range or "").rpartition("/")[2].strip()
    return total.isdigit() and int(total) == _size(part)


class _UnreachableError(Exception):
    """The hub could not be reached to read a file's ETag."""


def _hub_etag(url: str) -> str:
    """The ETag the hub gives for ``url``: a sha256 for LFS files, a git blob sha1 for the others."""
    import httpx2
    from huggingface_hub import get_hf_file_metadata
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        etag = get_hf_file_metadata(url).etag
    except (OfflineModeIsEnabled, httpx2.TransportError) as error:
        raise _UnreachableError(_reason(error)) from None
    except HfHubHTTPError as error:
        if error.response.status_code in _RETRY_STATUSES:
            raise _UnreachableError(f"HTTP {error.response.status_code}") from None
        raise DownloadError(f"could not download {url}: {_reason(error)}") from None
    if etag is None or not (SHA256.match(etag) or GIT_SHA1.match(etag)):
        raise DownloadError(
            f"{url} has the ETag {etag!r}, neither a sha256 nor a git sha1, so the file cannot be verified; "
            f"download from the official hub or from a mirror that serves the hub's headers (${ENDPOINT_ENV})"
        )
    return etag


def _mismatch(path: Path, expected: str) -> str:
    """Why ``path`` does not match ``expected`` (a sha256 or a git blob sha1), or "" when it does."""
    if SHA256.match(expected):
        actual = file_sha256(path)
        return "" if actual == expected else f"sha256 {actual} instead of {expected}"
    from huggingface_hub.utils.sha import git_hash

    actual = git_hash(path.read_bytes())  # only files outside LFS have a git sha1 ETag: a few MB at most
    return "" if actual == expected else f"git sha1 {actual} instead of {expected}"


def _discard(path: Path) -> None:
    """Delete a downloaded file, and the cache blob it links to."""
    target = path.resolve()
    path.unlink(missing_ok=True)
    target.unlink(missing_ok=True)


def _reason(error: BaseException) -> str:
    """The first line of an error message (huggingface_hub's span several lines)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _reporting_bar(progress: ProgressCallback | None, label: str) -> type:
    """A tqdm class for huggingface_hub that draws nothing and passes byte counts to ``progress``.

    The first bar of a download reports under ``label``; further ones (Xet downloads count the bytes received
    apart from the file being rebuilt) under their own description.
    """
    from tqdm.std import tqdm

    labels: list[str] = []

    class ReportingBar(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            description = kwargs.get("desc") or ""
            self.label = label if not labels else description or label
            labels.append(self.label)
            super().__init__(*args, **{**kwargs, "disable": True})

        def update(self, n: float | None = 1) -> bool | None:
            self.n += n or 0
            if progress is not None:
                progress(self.label, int(self.n), self.total)
            return None

    return ReportingBar
