"""Download the FLAIR datasets: verified files from IGN's Hugging Face repository or IGN's storage, safely extracted.

The datasets and their files are listed in ``datasets_manifest.json``: each file names its source (a Hugging Face
repository pinned to a revision, or IGN's object storage), its path there, and how it is verified (its published
sha256, the hub's ETag, or the CRC of every entry of a zip archive for which IGN publishes no checksum). Files are
fetched by :mod:`flairkit.fetch` into ``<to>/.flairkit-download/<path>`` (a ``.part`` file there is resumed by the
next run), then extracted; ``<path>.done.json`` records an extracted file so that the next run skips it.
FLAIR-HUB is fetched by modality and domain (:func:`select_files`): one Hub archive per release folder, or the
toy archive extracted only for the folders chosen.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from flairkit.atomic import atomic_path, write_text_atomic
from flairkit.errors import DataError, OutputExistsError
from flairkit.fetch import (
    SHA256,
    DownloadError,
    HubFile,
    NotCachedError,
    ProgressCallback,
    fetch_hub_file,
    fetch_url,
    is_offline,
)
from flairkit.hashing import file_sha256

if TYPE_CHECKING:
    from flairkit.data.check import CheckReport

logger = logging.getLogger(__name__)

MANIFEST_PATH = Path(__file__).with_name("datasets_manifest.json")
MIRROR_ENV = "FLAIRKIT_DATA_MIRROR"
STATE_DIR = ".flairkit-download"
SOURCES_HINT = "see https://ignf.github.io/FLAIR/ for the current links, or pass --mirror URL|FOLDER"
VERIFY_MODES = ("sha256", "hub-etag", "zip-crc")

_CHUNK = 256 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")
_EXTRACT_PREFIX = "extract-"


class UnsafeArchiveError(DataError):
    """An archive entry would land outside the target folder, or is neither a plain file nor a folder."""


class ExistingDataError(DataError, OutputExistsError):
    """Extraction would replace existing files and overwriting was not asked for."""


class _CorruptArchiveError(Exception):
    """The archive cannot be read back (bad zip structure or CRC)."""


@dataclass(frozen=True)
class Source:
    """Where files come from: a Hugging Face Hub repository at a revision, or a plain HTTPS base URL."""

    name: str
    url: str | None = None
    repo_id: str | None = None
    repo_type: str = "dataset"
    revision: str | None = None


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file of a dataset."""

    source: Source
    path: str
    archive: str
    size: int | None
    sha256: str | None
    verify: str
    approx_size: int | None
    extracts_to: tuple[str, ...]

    @property
    def filename(self) -> str:
        """The file's name, last part of its path."""
        return PurePosixPath(self.path).name

    @property
    def expected_size(self) -> int | None:
        """Exact size when known, else the approximate published size."""
        return self.size if self.size is not None else self.approx_size


@dataclass(frozen=True)
class ModalityArchives:
    """FLAIR-HUB on the Hub: one zip per release folder ``{DOM}-{YEAR}_{MOD}``, named by a path rule."""

    source: Source
    path: str
    """The archive of a folder: ``{folder}`` replaced by the folder's name, e.g. ``data/{folder}.zip``."""
    verify: str
    domain_years: tuple[str, ...]

    def remote(self, folder: str) -> RemoteFile:
        """The archive holding release folder ``folder``."""
        path = self.path.format(folder=folder)
        return RemoteFile(self.source, path, "zip", None, None, self.verify, None, (folder,))


@dataclass(frozen=True)
class Selection:
    """The FLAIR-HUB modalities and domains asked for; None domains: all of them."""

    modalities: tuple[str, ...]
    domains: tuple[str, ...] | None = None

    def keeps(self, folder: str) -> bool:
        """Whether release folder ``folder`` is selected; names that are no release folder are always kept."""
        from flairkit.data.hub.layout import parse_modality_folder

        parsed = parse_modality_folder(folder)
        if parsed is None:
            return True
        domain, year, modality = parsed
        if modality not in self.modalities:
            return False
        return (
            self.domains is None
            or any(d in (domain, f"{domain}-{year}") for d in self.domains)
            or (year == "195X" and any(d.split("-", 1)[0] == domain for d in self.domains))
        )

    @property
    def key(self) -> str:
        """A stable text of the selection, recorded with the files extracted under it."""
        return ",".join(self.modalities) + "|" + ",".join(self.domains or ("all",))


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: its files and the folder (relative to the download folder) that holds it.

    A FLAIR-HUB dataset (``layout`` "flairhub") is downloaded by modality and domain: either from one archive
    per release folder (``archives``), or from archives holding several folders, extracted selectively.
    """

    name: str
    description: str
    root: str
    files: tuple[RemoteFile, ...]
    check: bool = True
    layout: str = "flair"
    archives: ModalityArchives | None = None

    @property
    def approx_size(self) -> int:
        """Sum of the known (exact or approximate) file sizes, in bytes."""
        return sum(f.expected_size or 0 for f in self.files)


@dataclass(frozen=True)
class Manifest:
    """The sources and the datasets they serve."""

    sources: dict[str, Source]
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
    selection: Selection | None = None


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
    sources = manifest.get("sources")
    datasets = manifest.get("datasets")
    if not isinstance(sources, Mapping) or not sources or not isinstance(datasets, Mapping) or not datasets:
        raise DataError(f"{source} needs a non-empty 'sources' object and a non-empty 'datasets' object")
    parsed = {name: _parse_source(source, name, entry) for name, entry in sources.items()}
    specs = {name: _parse_dataset(source, parsed, name, entry) for name, entry in datasets.items()}
    return Manifest(sources=parsed, datasets=specs)


def available_datasets(manifest: Mapping[str, Any] | Path | None = None) -> list[DatasetSpec]:
    """The datasets a manifest offers, in manifest order."""
    return list(load_manifest(manifest).datasets.values())


def select_files(
    spec: DatasetSpec, modalities: Sequence[str] | None = None, domains: Sequence[str] | None = None
) -> tuple[tuple[RemoteFile, ...], Selection | None]:
    """The files to fetch for ``spec`` and, for FLAIR-HUB, the selection they are extracted under.

    FLAIR-HUB needs ``modalities`` (inputs and labels; AERIAL_LABEL-COSIA is added when no label is named, the
    Sentinel-2 cloud masks when SENTINEL2_TS is); ``domains`` are domain-years (D006-2020) or domains (D006, every
    year), all of them when None.
    """
    if spec.layout != "flairhub":
        if modalities or domains:
            raise DataError(f"--modalities and --domains choose FLAIR-HUB data; {spec.name} is downloaded whole")
        return spec.files, None
    from flairkit.data.hub.layout import COSIA, LABEL_MODALITIES, MODALITIES, S2, S2_MASKS, modality_folders

    if not modalities:
        raise DataError(
            f"{spec.name} is split by modality: choose them with --modalities, e.g. --modalities AERIAL_RGBI "
            f"(known: {', '.join(MODALITIES)})"
        )
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown:
        raise DataError(f"unknown FLAIR-HUB modality {unknown[0]!r} in --modalities; known: {', '.join(MODALITIES)}")
    chosen = list(dict.fromkeys(modalities))
    if not any(m in LABEL_MODALITIES for m in chosen):
        chosen.append(COSIA)
    if S2 in chosen and S2_MASKS not in chosen:
        chosen.append(S2_MASKS)
    wanted = tuple(dict.fromkeys(d.strip() for d in domains or () if d.strip())) or None
    bad = [d for d in wanted or () if not re.fullmatch(r"D\d+(-\d{4})?", d)]
    if bad:
        raise DataError(f"--domains: {bad[0]!r} is neither a domain (D006) nor a domain-year (D006-2020)")
    selection = Selection(tuple(m for m in MODALITIES if m in chosen), wanted)
    if spec.archives is None:
        return spec.files, selection
    known = spec.archives.domain_years
    years = [d for d in known if wanted is None or any(w in (d, d.split("-", 1)[0]) for w in wanted)]
    missing = [w for w in wanted or () if not any(w in (d, d.split("-", 1)[0]) for d in known)]
    if missing:
        raise DataError(f"--domains: {spec.name} has no domain {missing[0]}; it has {', '.join(known)}")
    archives = tuple(spec.archives.remote(f) for f in modality_folders(years, selection.modalities))
    return spec.files + archives, selection


def download_dataset(
    name: str,
    to: Path,
    *,
    modalities: Sequence[str] | None = None,
    domains: Sequence[str] | None = None,
    mirror: str | None = None,
    overwrite: bool = False,
    retries: int = 5,
    backoff: float = 1.0,
    check: bool = True,
    keep_archives: bool = False,
    offline: bool | None = None,
    progress: ProgressCallback | None = None,
    manifest: Mapping[str, Any] | Path | None = None,
) -> DownloadResult:
    """Download dataset ``name`` into folder ``to``, verify it, extract it and check the result.

    ``mirror`` (else ``$FLAIRKIT_DATA_MIRROR``) is a folder holding the files under their manifest paths, or a
    URL replacing the dataset's source: a copy of IGN's storage, or a Hub mirror for files on the Hub (which
    also follow ``$HF_ENDPOINT``). Offline (``offline``, else ``$HF_HUB_OFFLINE``/``$FLAIRKIT_OFFLINE``) only
    local files are used. Interrupted downloads of IGN's storage resume on the next call, Hub downloads resume
    within a call; files already extracted by an earlier call are skipped (unless ``overwrite``). Network failures
    are retried ``retries`` times with exponential backoff from ``backoff`` seconds; a corrupted file is fetched
    once more, then reported. ``progress`` receives ``(label, done, total)`` byte counts for downloads and
    extraction. ``check`` runs the dataset checker on the result. Existing files are never replaced unless
    ``overwrite``. FLAIR-HUB datasets take ``modalities`` and ``domains`` (see :func:`select_files`): only those
    archives are fetched, and an archive holding several release folders is extracted only for them.
    """
    spec_manifest = load_manifest(manifest)
    spec = spec_manifest.datasets.get(name)
    if spec is None:
        known = ", ".join(spec_manifest.datasets)
        raise DataError(f"unknown dataset {name!r}; known datasets: {known} (see `flair data download --list`)")
    if retries < 0 or backoff < 0:
        raise DataError(f"retries ({retries}) and backoff ({backoff}) must not be negative")
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    folder = _mirror_folder(mirror)
    to = Path(to).expanduser()
    if to.exists() and not to.is_dir():
        raise DataError(f"{to} is a file, not a folder; pass a folder with --to")
    files, selection = select_files(spec, modalities, domains)
    state = to / STATE_DIR
    result = DownloadResult(name=name, root=to / spec.root, selection=selection)
    _remove_stale_extractions(state)
    filtered = selection if selection is not None and spec.archives is None else None
    key = filtered.key if filtered is not None else None

    pending: list[RemoteFile] = []
    for remote in files:
        recorded = _done_record(state, remote, to)
        if not overwrite and recorded is not None and recorded.get("selection") == key:
            result.skipped.append(remote.path)
            continue
        present = [to / entry for entry in remote.extracts_to if _lexists(to / entry)]
        if present and not overwrite:
            origin = (
                "was extracted by flairkit for other modalities or domains"
                if recorded is not None
                else "was not extracted by flairkit"
            )
            raise ExistingDataError(
                f"{present[0]} already exists and {origin} from {remote.filename}; "
                "pass --overwrite to replace the files it holds, or choose another folder with --to"
            )
        pending.append(remote)

    if folder is None:
        needed = sum(max((r.expected_size or 0) - _downloaded_bytes(state, r), 0) for r in pending)
        _ensure_space(to, needed, f"downloading {name}")
    try:
        state.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"cannot create {to}: {error.strerror}; choose a writable folder with --to") from None

    fetch = _Fetcher(
        state=state,
        folder=folder,
        mirror_url=None if folder is not None else mirror,
        offline=is_offline() if offline is None else offline,
        retries=retries,
        backoff=backoff,
        progress=progress,
    )
    for remote in pending:
        entries = _fetch_and_install(
            remote, fetch, to, overwrite=overwrite, keep_archives=keep_archives, selection=filtered
        )
        result.downloaded.append(remote.path)
        result.extracted.extend(to / entry for entry in entries)

    if check and spec.check and result.root.is_dir():
        result.check = check_download(result)
    return result


def check_download(result: DownloadResult, progress: Callable[[int, int], None] | None = None) -> CheckReport:
    """Check a downloaded dataset: FLAIR-HUB with the modalities selected, the other datasets as a whole."""
    if result.selection is not None:
        from flairkit.data.hub.check import check_hub_dataset

        return check_hub_dataset(result.root, modalities=result.selection.modalities, progress=progress)
    from flairkit.data.check import check_dataset

    return check_dataset(result.root, progress=progress)


def _mirror_folder(mirror: str | None) -> Path | None:
    """The local folder ``mirror`` names, None for a URL or no mirror."""
    if mirror is None or "://" in mirror:
        return None
    folder = Path(mirror).expanduser()
    if not folder.is_dir():
        raise DataError(
            f"mirror {mirror!r} is neither a URL nor an existing folder; pass an http(s):// URL or a folder"
        )
    return folder


def _parse_source(where: str, name: str, entry: Any) -> Source:
    where = f"{where}, source {name!r}"
    if not isinstance(entry, Mapping):
        raise DataError(f"{where}: must be an object with a 'url' or a 'repo_id'")
    url, repo_id, revision = entry.get("url"), entry.get("repo_id"), entry.get("revision")
    if isinstance(url, str) and url.startswith(("https://", "http://")) and repo_id is None:
        return Source(name=name, url=url.rstrip("/"))
    if isinstance(repo_id, str) and repo_id.count("/") == 1 and url is None:
        if not isinstance(revision, str) or not revision:
            raise DataError(
                f"{where}: 'revision' must pin the repository (a commit sha, or \"main\" when none is known)"
            )
        repo_type = entry.get("repo_type", "dataset")
        if repo_type not in ("dataset", "model"):
            raise DataError(f'{where}: \'repo_type\' must be "dataset" or "model", got {repo_type!r}')
        return Source(name=name, repo_id=repo_id, repo_type=repo_type, revision=revision)
    raise DataError(f"{where}: needs either an http(s) 'url' or a 'repo_id' of the form owner/name, not both")


def _parse_dataset(where: str, sources: Mapping[str, Source], name: str, entry: Any) -> DatasetSpec:
    where = f"{where}, dataset {name!r}"
    if not isinstance(entry, Mapping) or not isinstance(entry.get("files"), list) or not entry["files"]:
        raise DataError(f"{where}: needs a non-empty 'files' list")
    root = entry.get("root", ".")
    if not isinstance(root, str) or not _is_relative_path(root, allow_dot=True):
        raise DataError(f"{where}: 'root' must be a relative folder without '..', got {root!r}")
    check = entry.get("check", True)
    if not isinstance(check, bool):
        raise DataError(f"{where}: 'check' must be true or false, got {check!r}")
    files = tuple(_parse_file(where, sources, item) for item in entry["files"])
    layout = entry.get("layout", "flair")
    if layout not in ("flair", "flairhub"):
        raise DataError(f'{where}: \'layout\' must be "flair" or "flairhub", got {layout!r}')
    archives = None
    if "modality_archives" in entry:
        if layout != "flairhub":
            raise DataError(f"{where}: 'modality_archives' needs 'layout': 'flairhub'")
        archives = _parse_archives(where, sources, entry["modality_archives"])
    return DatasetSpec(
        name=name,
        description=str(entry.get("description", "")),
        root=root,
        files=files,
        check=check,
        layout=layout,
        archives=archives,
    )


def _parse_archives(where: str, sources: Mapping[str, Source], item: Any) -> ModalityArchives:
    where = f"{where}, 'modality_archives'"
    if not isinstance(item, Mapping):
        raise DataError(f"{where}: must be an object with 'source', 'path', 'verify' and 'domain_years'")
    source = sources.get(item.get("source")) if isinstance(item.get("source"), str) else None
    if source is None:
        raise DataError(f"{where}: 'source' must be one of {', '.join(sources)}, got {item.get('source')!r}")
    path = item.get("path")
    if not isinstance(path, str) or "{folder}" not in path or not _is_relative_path(path.format(folder="x")):
        raise DataError(f"{where}: 'path' must be a relative path rule holding {{folder}}, got {path!r}")
    verify = item.get("verify")
    problem = _verify_problem(verify, None, source, "zip")
    if problem:
        raise DataError(f"{where}: {problem}")
    domain_years = item.get("domain_years")
    if (
        not isinstance(domain_years, list)
        or not domain_years
        or not all(isinstance(d, str) and re.fullmatch(r"D\d+-\d{4}", d) for d in domain_years)
    ):
        raise DataError(f"{where}: 'domain_years' must list {{DOM}}-{{YEAR}} names such as D006-2020")
    return ModalityArchives(source, path, str(verify), tuple(domain_years))


def _parse_file(where: str, sources: Mapping[str, Source], item: Any) -> RemoteFile:
    if not isinstance(item, Mapping):
        raise DataError(f"{where}: each file must be an object with at least a 'source' and a 'path'")
    path = item.get("path")
    if not isinstance(path, str) or not _is_relative_path(path):
        raise DataError(f"{where}: 'path' must be a path relative to its source without '..', got {path!r}")
    where = f"{where}, file {path!r}"
    source_name = item.get("source")
    source = sources.get(source_name) if isinstance(source_name, str) else None
    if source is None:
        raise DataError(f"{where}: 'source' must be one of {', '.join(sources)}, got {source_name!r}")
    archive = item.get("archive", "zip")
    if archive not in ("zip", "none"):
        raise DataError(f"{where}: archive type {archive!r} is not supported; only 'zip' and 'none' are")
    sizes = {}
    for key in ("size", "approx_size"):
        value = item.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise DataError(f"{where}: {key!r} must be a byte count or null, got {value!r}")
        sizes[key] = value
    sha256 = item.get("sha256")
    if sha256 is not None:
        if not isinstance(sha256, str) or not SHA256.match(sha256.lower()):
            raise DataError(f"{where}: 'sha256' must be 64 hexadecimal digits or null, got {sha256!r}")
        sha256 = sha256.lower()
    verify = item.get("verify")
    problem = _verify_problem(verify, sha256, source, archive)
    if problem:
        raise DataError(f"{where}: {problem}")
    extracts_to = item.get("extracts_to", [])
    if not isinstance(extracts_to, list) or not all(
        isinstance(e, str) and _is_relative_path(e) and "/" not in e for e in extracts_to
    ):
        raise DataError(f"{where}: 'extracts_to' must list top-level names, got {extracts_to!r}")
    name = PurePosixPath(path).name
    if archive == "none" and extracts_to != [name]:
        raise DataError(f"{where}: a file without archive lands as itself: 'extracts_to' must be [{name!r}]")
    return RemoteFile(source, path, archive, sizes["size"], sha256, verify, sizes["approx_size"], tuple(extracts_to))


def _verify_problem(verify: Any, sha256: str | None, source: Source, archive: str) -> str:
    """Why a file's 'verify' mode does not fit its other keys, or ""."""
    if verify not in VERIFY_MODES:
        return f"'verify' must be one of {', '.join(VERIFY_MODES)}, got {verify!r}"
    if (verify == "sha256") != (sha256 is not None):
        return "'verify': 'sha256' goes with a 'sha256' value, and a known 'sha256' must be verified"
    if verify == "hub-etag" and source.repo_id is None:
        return "'verify': 'hub-etag' needs a Hugging Face source (other servers' ETags are no checksums)"
    if verify == "zip-crc" and archive != "zip":
        return "'verify': 'zip-crc' needs a zip archive"
    return ""


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
    return state.joinpath(*remote.path.split("/"))


def _done_path(archive: Path) -> Path:
    return archive.with_name(archive.name + ".done.json")


def _downloaded_bytes(state: Path, remote: RemoteFile) -> int:
    archive = _archive_path(state, remote)
    return _size(archive) + _size(archive.with_name(archive.name + ".part"))


def _done_record(state: Path, remote: RemoteFile, to: Path) -> dict[str, Any] | None:
    """What an earlier run recorded when it extracted ``remote``, if every entry it created is still there."""
    done = _done_path(_archive_path(state, remote))
    try:
        record = json.loads(done.read_text(encoding="utf-8"))
        entries = record["entries"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if isinstance(entries, list) and all(isinstance(e, str) and _lexists(to / e) for e in entries):
        return record
    return None


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


@dataclass(frozen=True)
class _Fetcher:
    """Where and how the files of one :func:`download_dataset` call are fetched."""

    state: Path
    folder: Path | None
    mirror_url: str | None
    offline: bool
    retries: int
    backoff: float
    progress: ProgressCallback | None

    def __call__(self, remote: RemoteFile) -> tuple[Path, bool]:
        """The file on disk, and whether flairkit owns that copy (False: it is the user's, in a mirror folder)."""
        if self.folder is not None:
            local = self.folder.joinpath(*remote.path.split("/"))
            if not local.is_file():
                raise DownloadError(
                    f"{local} is missing: the mirror folder {self.folder} must hold {remote.filename} as "
                    f"{remote.path} (the path in the datasets manifest)"
                )
            return local, False
        if remote.source.repo_id is not None:
            return self._hub(remote), True
        target = _archive_path(self.state, remote)
        if target.is_file():  # kept by an earlier run: --keep-archives, or an extraction that was refused
            return target, True
        base = self.mirror_url or remote.source.url
        url = f"{str(base).rstrip('/')}/{remote.path}"
        if self.offline:
            raise NotCachedError(
                f"{remote.filename} is not in {target.parent} and downloads are off (offline); download {url} "
                f"into a folder as {remote.path} and pass that folder with --mirror"
            )
        try:
            return fetch_url(url, target, retries=self.retries, backoff=self.backoff, progress=self.progress), True
        except DownloadError as error:
            raise DownloadError(f"{error}; {SOURCES_HINT}") from None

    def _hub(self, remote: RemoteFile) -> Path:
        file = HubFile(
            repo_id=str(remote.source.repo_id),
            filename=remote.path,
            revision=str(remote.source.revision),
            repo_type=remote.source.repo_type,
            sha256=remote.sha256,
        )
        try:
            return fetch_hub_file(
                file,
                local_dir=self.state,
                endpoint=self.mirror_url,
                offline=self.offline,
                progress=self.progress,
            )
        except NotCachedError as error:
            raise NotCachedError(
                f"{error}; run the command once online, or put {remote.filename} in a folder as {remote.path} "
                "and pass that folder with --mirror"
            ) from None


def _fetch_and_install(
    remote: RemoteFile,
    fetch: _Fetcher,
    to: Path,
    *,
    overwrite: bool,
    keep_archives: bool,
    selection: Selection | None = None,
) -> list[str]:
    """Fetch one file (a corrupted copy is fetched once more), install it and record that it is done."""
    entries: list[str] = []
    problem = ""
    for attempt in (1, 2):
        archive, ours = fetch(remote)
        problem = _verify(archive, remote, fetched_from_hub=ours and remote.source.repo_id is not None)
        if not problem:
            try:
                entries = _install(
                    archive, remote, to, fetch.state, overwrite=overwrite, progress=fetch.progress, selection=selection
                )
                break
            except _CorruptArchiveError as error:
                problem = str(error)
            except UnsafeArchiveError:
                if ours:
                    archive.unlink(missing_ok=True)  # never reuse it, e.g. after switching to another --mirror
                raise
        if not ours:
            raise DownloadError(f"{archive} is corrupted ({problem}); replace it with a good copy ({SOURCES_HINT})")
        archive.unlink(missing_ok=True)
        if attempt == 2:
            raise DownloadError(
                f"{remote.filename} is corrupted ({problem}) again after a fresh download and was deleted; try "
                f"later or pass --mirror URL|FOLDER (if IGN replaced the file, the datasets manifest must be updated)"
            )
        logger.warning("%s is corrupted (%s); downloading it again", remote.filename, problem)
    write_text_atomic(
        _done_path(_archive_path(fetch.state, remote)),
        json.dumps(
            {
                "source": remote.source.name,
                "path": remote.path,
                "entries": entries,
                "selection": None if selection is None else selection.key,
            },
            indent=1,
        ),
    )
    if ours and not keep_archives:
        archive.unlink(missing_ok=True)
    return entries


def _verify(path: Path, remote: RemoteFile, *, fetched_from_hub: bool) -> str:
    """Why ``path`` does not match the manifest's size and sha256, or "" (hub downloads are verified already)."""
    if fetched_from_hub:
        return ""
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        return f"{size} bytes instead of {remote.size}"
    if remote.sha256 is not None:
        digest = file_sha256(path)
        if digest != remote.sha256:
            return f"sha256 {digest} instead of {remote.sha256}"
    return ""


def _install(
    archive: Path,
    remote: RemoteFile,
    to: Path,
    state: Path,
    *,
    overwrite: bool,
    progress: ProgressCallback | None,
    selection: Selection | None = None,
) -> list[str]:
    """Extract a zip archive into ``to`` (only the selected release folders), or copy a plain file there; the
    top-level names it created."""
    if remote.archive == "zip":
        keep = None if selection is None else selection.keeps
        return _extract_zip(archive, remote.path, to, state, overwrite=overwrite, progress=progress, keep=keep)
    dest = to / remote.filename
    if _lexists(dest) and not overwrite:
        raise ExistingDataError(
            f"{dest} already exists; pass --overwrite to replace it, or choose another folder with --to"
        )
    with atomic_path(dest, overwrite=True) as tmp:
        shutil.copyfile(archive, tmp)
    return [remote.filename]


@dataclass(frozen=True)
class _Member:
    info: zipfile.ZipInfo
    parts: tuple[str, ...]
    is_dir: bool


def _safe_members(zf: zipfile.ZipFile, origin: str) -> list[_Member]:
    """Every entry of ``zf`` as a relative path; refuse links, special files and paths leaving the target."""
    members = []
    for info in zf.infolist():
        raw = info.filename
        name = raw.replace("\\", "/")
        kind = stat.S_IFMT(info.external_attr >> 16)
        where = f"{origin} holds the entry {raw!r}"
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


def _extract_zip(
    archive: Path,
    origin: str,
    to: Path,
    state: Path,
    *,
    overwrite: bool,
    progress: ProgressCallback | None,
    keep: Callable[[str], bool] | None = None,
) -> list[str]:
    """Extract ``archive`` into a temporary folder of ``state`` (inside ``to``), then move its content in place.

    ``keep`` says which folder names to extract: an entry under a folder it refuses is skipped. Every entry's
    CRC is checked as it is read. Returns the top-level names it created or updated.
    """
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, EOFError) as error:
        raise _CorruptArchiveError(f"not a readable zip archive: {error}") from None
    with zf:
        members = _safe_members(zf, origin)
        if keep is not None:
            members = [m for m in members if all(keep(part) for part in (m.parts if m.is_dir else m.parts[:-1]))]
        conflicts = [to.joinpath(*m.parts) for m in members if not m.is_dir and _lexists(to.joinpath(*m.parts))]
        if conflicts and not overwrite:
            raise ExistingDataError(
                f"{len(conflicts)} file(s) from {archive.name} already exist, e.g. {conflicts[0]}; "
                "pass --overwrite to replace them, or choose another folder with --to"
            )
        total = sum(m.info.file_size for m in members)
        _ensure_space(to, total, f"extracting {archive.name}")
        label, done = f"extracting {archive.name}", 0
        tmp = Path(tempfile.mkdtemp(prefix=_EXTRACT_PREFIX, dir=state))
        try:
            for member in members:
                _extract_member(zf, member, tmp, origin)
                done += member.info.file_size
                if progress is not None:
                    progress(label, done, total)
            _move_into_place(tmp, to, overwrite)
        except OSError as error:
            raise DataError(
                f"cannot extract {archive.name} into {to}: {error}; check free space and permissions"
            ) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return sorted({m.parts[0] for m in members})


def _extract_member(zf: zipfile.ZipFile, member: _Member, tmp: Path, origin: str) -> None:
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
        raise DataError(f"cannot extract {member.info.filename!r} from {origin}: {error}; {SOURCES_HINT}") from None


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
