"""IGN's released FLAIR-INC models by name: what they expect as input, and their weights in a local cache.

Every preset that carries a ``release`` section is a released model. Its weights file is looked up in the
cache (``$FLAIRKIT_HOME/models/<name>/<filename>``, default ``~/.cache/flairkit/models/...``) and, when
missing and online, downloaded from the model hub (``huggingface_hub`` when installed, else plain HTTPS;
``FLAIRKIT_HUB_URL`` replaces ``https://huggingface.co`` for mirrors).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from flairkit.atomic import atomic_path
from flairkit.config import load_config, preset_dict, preset_names
from flairkit.config.schema import BAND_NAMES, FlairConfig
from flairkit.errors import CheckpointError
from flairkit.nomenclature import get_nomenclature

logger = logging.getLogger(__name__)

DEFAULT_HUB_URL = "https://huggingface.co"
HUB_URL_ENV = "FLAIRKIT_HUB_URL"
HOME_ENV = "FLAIRKIT_HOME"
OFFLINE_ENVS = ("FLAIRKIT_OFFLINE", "HF_HUB_OFFLINE")
BAND_LETTERS = "rgbie"
"""One letter per aerial band 1..5 (R, G, B, NIR, elevation), as in the FLAIR-INC model names."""
DOWNLOAD_TIMEOUT_S = 60
_CHUNK = 1 << 20


def released_models() -> list[str]:
    """Names of the presets whose weights IGN published (sorted)."""
    return [name for name in preset_names() if preset_dict(name).get("release")]


def modalities(channels: list[int]) -> str:
    """Band letters of a channel selection, e.g. ``[1, 2, 3, 4, 5]`` -> ``"rgbie"``."""
    return "".join(BAND_LETTERS[channel - 1] for channel in channels)


def hub_url() -> str:
    """Base URL of the model hub (``FLAIRKIT_HUB_URL`` or huggingface.co)."""
    return os.environ.get(HUB_URL_ENV, DEFAULT_HUB_URL).rstrip("/")


def _release(config: FlairConfig, name: str) -> Any:
    if config.release is None:
        raise CheckpointError(
            f"preset {name} has no released weights; train it with `flair train -c {name}` or give a weights file "
            "(`flair models` lists the released models)"
        )
    return config.release


def weights_url(name: str) -> str:
    """Download URL of a released model's weights file."""
    release = _release(load_config(name), name)
    return f"{hub_url()}/{release.hub_repo}/resolve/main/{release.filename}"


def default_cache_dir() -> Path:
    """Folder of cached model weights: ``$FLAIRKIT_HOME/models`` or ``~/.cache/flairkit/models``."""
    home = os.environ.get(HOME_ENV)
    base = Path(home).expanduser() if home else Path.home() / ".cache" / "flairkit"
    return base / "models"


def cached_path(name: str, cache_dir: Path | None = None) -> Path:
    """Where the weights of a released model are (or will be) cached."""
    release = _release(load_config(name), name)
    return Path(cache_dir or default_cache_dir()) / name / release.filename


def is_offline() -> bool:
    """Whether downloads are disabled by ``FLAIRKIT_OFFLINE`` or ``HF_HUB_OFFLINE``."""
    return any(os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"} for var in OFFLINE_ENVS)


def model_info(name: str) -> dict[str, Any]:
    """Inputs, normalisation, nomenclature, architecture, release and published metrics of a preset."""
    config = load_config(name)
    nomenclature = get_nomenclature(config.data.nomenclature)
    norm = config.data.normalization
    info: dict[str, Any] = {
        "name": name,
        "description": config.description,
        "modalities": modalities(config.data.channels),
        "channels": list(config.data.channels),
        "band_names": [BAND_NAMES[c - 1] for c in config.data.channels],
        "normalization": {"mode": norm.mode, "means": norm.means, "stds": norm.stds},
        "nomenclature": config.data.nomenclature,
        "n_classes": nomenclature.n_targets,
        "classes": list(nomenclature.names),
        "architecture": config.model.arch,
        "encoder": config.model.encoder,
        "multimodal": config.model.multimodal,
        "metadata": config.data.metadata,
        "release": None,
        "published": config.published.model_dump(mode="json") if config.published else None,
    }
    if config.release is not None:
        info["release"] = {
            **config.release.model_dump(mode="json"),
            "url": weights_url(name),
            "cache_path": str(cached_path(name)),
            "cached": cached_path(name).is_file(),
        }
    return info


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified(path: Path, sha256: str | None) -> bool:
    """Whether a cached file has the published hash; checked once, remembered in a ``.sha256`` side file."""
    if sha256 is None:
        return True
    marker = path.with_name(path.name + ".sha256")
    stamp = f"{sha256} {path.stat().st_size} {path.stat().st_mtime_ns}"
    if marker.is_file() and marker.read_text(encoding="utf-8").strip() == stamp:
        return True
    if _file_sha256(path) != sha256.lower():
        return False
    marker.write_text(stamp + "\n", encoding="utf-8")
    return True


def _fetch_instructions(name: str, url: str, destination: Path) -> str:
    return (
        f"download {url} and save it as {destination} (or pass the downloaded file's path instead of the name "
        f"{name}); set {HUB_URL_ENV} to use a mirror"
    )


def _download_urllib(url: str, destination: Path, sha256: str | None) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "flairkit"})
    with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
        expected = response.headers.get("Content-Length")
        total = int(expected) if expected and expected.isdigit() else None
        digest = hashlib.sha256()
        received = 0
        with atomic_path(destination, overwrite=True) as tmp, tmp.open("wb") as out, _progress(total, url) as advance:
            for block in iter(lambda: response.read(_CHUNK), b""):
                out.write(block)
                digest.update(block)
                received += len(block)
                advance(len(block))
            out.flush()
            if total is not None and received != total:
                raise CheckpointError(f"download of {url} stopped after {received} of {total} bytes; try again")
            if sha256 is not None and digest.hexdigest() != sha256.lower():
                raise CheckpointError(
                    f"{url} does not have the published sha256 {sha256} (got {digest.hexdigest()}); the file or "
                    "the mirror is wrong"
                )


@contextlib.contextmanager
def _progress(total: int | None, url: str) -> Iterator[Callable[[int], object]]:
    """Advance a rich progress bar on an interactive stderr; log one line otherwise."""
    if not sys.stderr.isatty():
        logger.info("downloading %s", url)
        yield lambda n: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(f"downloading {url.rsplit('/', 1)[-1]}", total=total)
        yield lambda n: bar.advance(task, n)


def _download_hf(repo: str, filename: str, destination: Path) -> None:
    """Download with huggingface_hub straight into our cache folder (it writes atomically)."""
    from huggingface_hub import hf_hub_download

    downloaded = Path(hf_hub_download(repo_id=repo, filename=filename, local_dir=destination.parent))
    if downloaded.resolve() != destination.resolve():
        with atomic_path(destination, overwrite=True) as tmp:
            shutil.copyfile(downloaded, tmp)


def resolve_weights(name: str, cache_dir: Path | None = None, offline: bool | None = None) -> Path:
    """Path of a released model's weights: from the cache, else downloaded into it (unless offline).

    The download is atomic and checked against the published size and sha256 when known. When the file
    cannot be had, the :class:`CheckpointError` gives the exact URL and the place to save it.
    """
    if name not in released_models():
        raise CheckpointError(f"{name!r} is not a released model; run `flair models` to list them")
    config = load_config(name)
    release = _release(config, name)
    destination = cached_path(name, cache_dir)
    url = f"{hub_url()}/{release.hub_repo}/resolve/main/{release.filename}"
    if destination.is_file():
        if _verified(destination, release.sha256):
            return destination
        raise CheckpointError(
            f"cached weights {destination} do not have the published sha256 {release.sha256}; delete the file "
            f"and {_fetch_instructions(name, url, destination)}"
        )
    if offline if offline is not None else is_offline():
        raise CheckpointError(
            f"the weights of {name} are not in the cache and downloads are off (offline); "
            + _fetch_instructions(name, url, destination)
        )
    try:
        if HUB_URL_ENV not in os.environ and _has_huggingface_hub():
            _download_hf(release.hub_repo, release.filename, destination)
        else:
            _download_urllib(url, destination, release.sha256)
    except CheckpointError as error:
        raise CheckpointError(f"{error}; or {_fetch_instructions(name, url, destination)}") from None
    except Exception as error:  # urllib, socket and huggingface_hub (HTTP, offline, gated repo) failures alike
        raise CheckpointError(
            f"could not download the weights of {name} ({type(error).__name__}: {error}); "
            + _fetch_instructions(name, url, destination)
        ) from None
    if not _verified(destination, release.sha256):
        destination.unlink(missing_ok=True)
        raise CheckpointError(
            f"downloaded {destination} does not have the published sha256 {release.sha256}; "
            + _fetch_instructions(name, url, destination)
        )
    logger.info("weights of %s saved in %s", name, destination)
    return destination


def _has_huggingface_hub() -> bool:
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        return False
    return True
