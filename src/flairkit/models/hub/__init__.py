"""FLAIR-HUB's multimodal network (IGNF/FLAIR-HUB), key for key, and strict loading of its released weights."""

from flairkit.models.hub.build import build_hub_network, hub_spec, normalization
from flairkit.models.hub.loading import hub_keys, load_hub_weights
from flairkit.models.hub.network import SERIES, SINGLE_DATE, HubNetwork, HubNetworkSpec, normalize_batch

__all__ = [
    "SERIES",
    "SINGLE_DATE",
    "HubNetwork",
    "HubNetworkSpec",
    "build_hub_network",
    "hub_keys",
    "hub_spec",
    "load_hub_weights",
    "normalization",
    "normalize_batch",
]
