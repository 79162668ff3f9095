"""The FLAIR-HUB network a config describes: inputs and tasks from ``data.hub``, the rest from ``model.hub``."""

from __future__ import annotations

from flairkit.config.schema import FlairConfig, hub_input_channels
from flairkit.errors import ConfigError
from flairkit.models.hub.network import HubNetwork, HubNetworkSpec
from flairkit.models.hub.temporal import SeriesSettings
from flairkit.nomenclature import get_nomenclature, lpis_classes

COSIA = "AERIAL_LABEL-COSIA"


def task_classes(config: FlairConfig) -> dict[str, int]:
    """Classes of each task: COSIA's 19 (the ``hub`` nomenclature), LPIS's at data.hub.lpis_level."""
    hub = config.data.hub
    return {
        label: get_nomenclature("hub").n_targets if label == COSIA else len(lpis_classes(hub.lpis_level))
        for label in hub.labels
    }


def hub_spec(config: FlairConfig) -> HubNetworkSpec:
    """The network spec of a config whose ``model.hub`` is set."""
    settings = config.model.hub
    if settings is None:
        raise ConfigError("model.hub is not set: this config describes no FLAIR-HUB network")
    return HubNetworkSpec(
        inputs=hub_input_channels(config.data.hub),
        tasks=task_classes(config),
        encoder=settings.encoder,
        encoders=dict(settings.encoders),
        decoder=settings.decoder,
        decoder_channels=tuple(settings.decoder_channels),
        pyramid_channels=settings.pyramid_channels,
        segmentation_channels=settings.segmentation_channels,
        aux_heads=tuple(settings.aux_heads),
        image_sizes=dict(settings.image_sizes),
        series=SeriesSettings(
            **{key: tuple(v) if isinstance(v, list) else v for key, v in settings.utae.model_dump().items()}
        ),
    )


def normalization(config: FlairConfig) -> dict[str, tuple[list[float], list[float]]]:
    """model.hub.normalization as :func:`flairkit.models.hub.normalize_batch` takes it."""
    settings = config.model.hub
    if settings is None:
        return {}
    return {modality: (stats.means, stats.stds) for modality, stats in settings.normalization.items()}


def build_hub_network(config: FlairConfig) -> HubNetwork:
    """The FLAIR-HUB network of ``config``, randomly initialised (released weights: ``load_hub_weights``)."""
    return HubNetwork(hub_spec(config))
