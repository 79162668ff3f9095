"""IGN's released FLAIR-INC models by name: what they expect as input, and their weights from the Hugging Face Hub.

Every preset that carries a ``release`` section is a released model: its weights file is pinned to a revision of
IGN's hub repository and checked against its published sha256 (or, when none is known, the hub's ETag). The file
is fetched by :func:`flairkit.fetch.fetch_hub_file` into the hub cache (``$HF_HOME``, ``$HF_HUB_CACHE``), from a
mirror when ``$HF_ENDPOINT`` is set, and only read from the cache when offline (``$HF_HUB_OFFLINE``,
``$FLAIRKIT_OFFLINE``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from flairkit.config import load_config, preset_dict, preset_names
from flairkit.config.schema import BAND_NAMES, FlairConfig, ReleaseConfig
from flairkit.errors import CheckpointError
from flairkit.fetch import (
    DownloadError,
    HubFile,
    NotCachedError,
    ProgressCallback,
    cached_hub_file,
    fetch_hub_file,
    hub_url,
)
from flairkit.nomenclature import get_nomenclature

logger = logging.getLogger(__name__)

BAND_LETTERS = "rgbie"
"""One letter per aerial band 1..5 (R, G, B, NIR, elevation), as in the FLAIR-INC model names."""


def _is_hub(name: str) -> bool:
    return bool(preset_dict(name).get("model", {}).get("hub"))


def released_models() -> list[str]:
    """Names of the aerial presets whose weights IGN published (FLAIR-INC; sorted)."""
    return [name for name in preset_names() if preset_dict(name).get("release") and not _is_hub(name)]


def released_hub_models() -> list[str]:
    """Names of IGN's released FLAIR-HUB models (their network: ``model.hub``; sorted)."""
    return [name for name in preset_names() if preset_dict(name).get("release") and _is_hub(name)]


def modalities(channels: list[int]) -> str:
    """Band letters of a channel selection, e.g. ``[1, 2, 3, 4, 5]`` -> ``"rgbie"``."""
    return "".join(BAND_LETTERS[channel - 1] for channel in channels)


def _release(config: FlairConfig, name: str) -> ReleaseConfig:
    if config.release is None:
        raise CheckpointError(
            f"preset {name} has no released weights; train it with `flair train -c {name}` or give a weights file "
            "(`flair models` lists the released models)"
        )
    return config.release


def weights_file(name: str) -> HubFile:
    """The hub file that holds a released model's weights, at its pinned revision."""
    release = _release(load_config(name), name)
    return HubFile(
        repo_id=release.hub_repo, filename=release.filename, revision=release.revision, sha256=release.sha256
    )


def weights_url(name: str) -> str:
    """Download URL of a released model's weights file (on ``$HF_ENDPOINT`` when it is set)."""
    return hub_url(weights_file(name))


def cached_path(name: str, cache_dir: Path | None = None) -> Path | None:
    """The weights of a released model in the hub cache, or None when they are not there yet."""
    return cached_hub_file(weights_file(name), cache_dir)


def model_info(name: str) -> dict[str, Any]:
    """Inputs, normalisation, nomenclature, architecture, release and published metrics of a preset."""
    config = load_config(name)
    if config.model.hub is not None:
        return _hub_model_info(name, config)
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
        "provider": config.model.provider,
        "architecture": config.model.arch if config.model.provider == "smp" else "huggingface",
        "encoder": config.model.encoder if config.model.provider == "smp" else config.model.hf_model,
        "multimodal": config.model.multimodal,
        "metadata": config.data.metadata,
        "release": None,
        "published": config.published.model_dump(mode="json") if config.published else None,
    }
    info["release"] = _release_info(name, config)
    return info


def _release_info(name: str, config: FlairConfig) -> dict[str, Any] | None:
    if config.release is None:
        return None
    cached = cached_path(name)
    return {
        **config.release.model_dump(mode="json"),
        "url": weights_url(name),
        "cache_path": str(cached) if cached else None,
        "cached": cached is not None,
    }


HUB_SHORT = {
    "AERIAL_RGBI": "aerial",
    "AERIAL-RLT_PAN": "hist",
    "DEM_ELEV": "elev",
    "SPOT_RGBI": "spot",
    "SENTINEL2_TS": "s2",
    "SENTINEL1-ASC_TS": "s1a",
    "SENTINEL1-DESC_TS": "s1d",
}
"""Short names of the FLAIR-HUB modalities in ``flair models``."""


def _hub_model_info(name: str, config: FlairConfig) -> dict[str, Any]:
    """:func:`model_info` of a FLAIR-HUB preset: its modalities, channels and normalisation per modality, tasks."""
    from flairkit.models.hub.build import task_classes
    from flairkit.models.hub.network import SINGLE_DATE

    hub, settings = config.data.hub, config.model.hub
    assert settings is not None
    tasks = task_classes(config)
    aerial = hub.channels.get("AERIAL_RGBI", [])
    single_date = [m for m in hub.modalities if m in SINGLE_DATE]
    return {
        "name": name,
        "description": config.description,
        "modalities": "+".join(HUB_SHORT[m] for m in hub.modalities),
        "channels": list(aerial),
        "band_names": list(hub.modalities),
        "normalization": {"mode": "per-modality", "means": None, "stds": None},
        "nomenclature": "+".join("cosia" if t == "AERIAL_LABEL-COSIA" else f"lpis{hub.lpis_level}" for t in tasks),
        "n_classes": sum(tasks.values()),
        "classes": [],
        "architecture": settings.decoder if single_date else "utae",
        "encoder": settings.encoder if single_date else "-",
        "multimodal": False,
        "metadata": False,
        "hub": {
            "modalities": list(hub.modalities),
            "channels": {m: list(c) for m, c in hub.channels.items()},
            "elevation": hub.elevation if "DEM_ELEV" in hub.modalities else None,
            "normalization": {m: {"means": s.means, "stds": s.stds} for m, s in settings.normalization.items()},
            "tasks": tasks,
        },
        "release": _release_info(name, config),
        "published": config.published.model_dump(mode="json") if config.published else None,
    }


def resolve_weights(
    name: str,
    cache_dir: Path | None = None,
    offline: bool | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """Path of a released model's weights in the hub cache, downloaded and verified first unless offline.

    ``progress`` receives ``(label, done, total)`` byte counts during a download. When the file cannot be had,
    the :class:`CheckpointError` gives the exact URL and how to use a file downloaded by other means.
    """
    if name not in released_models() + released_hub_models():
        raise CheckpointError(f"{name!r} is not a released model; run `flair models` to list them")
    file = weights_file(name)
    instead = f"or download {hub_url(file)} yourself and pass the file's path instead of the name {name}"
    try:
        path = fetch_hub_file(file, cache_dir=cache_dir, offline=offline, progress=progress)
    except NotCachedError:
        raise CheckpointError(
            f"the weights of {name} are not in the hub cache and downloads are off (offline); run "
            f"`flair models {name} --download` once online, {instead}"
        ) from None
    except DownloadError as error:
        raise CheckpointError(f"cannot get the weights of {name}: {error}; {instead}") from None
    logger.info("weights of %s: %s", name, path)
    return path


def load_released_hub_model(
    name: str, cache_dir: Path | None = None, offline: bool | None = None
) -> tuple[nn.Module, FlairConfig]:
    """IGN's released FLAIR-HUB model ``name`` (eval mode) with its config; its weights are fetched into the hub
    cache as :func:`resolve_weights` does, then loaded strictly (:func:`flairkit.models.hub.load_hub_weights`)."""
    from flairkit.models.hub import build_hub_network, load_hub_weights

    if name not in released_hub_models():
        raise CheckpointError(f"{name!r} is not a released FLAIR-HUB model; run `flair models` to list them")
    config = load_config(name)
    path = resolve_weights(name, cache_dir=cache_dir, offline=offline)
    network = build_hub_network(config)
    load_hub_weights(network, path)
    return network.eval(), config
