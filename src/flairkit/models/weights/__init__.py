"""Weights files: reading them safely (files), IGN's key layouts (layouts), what they hold (describe), where they
come from (sources) and loading them into flairkit's torch networks (loading).

ONNX graphs are not weights: :mod:`flairkit.models.onnx` runs them and :mod:`flairkit.models.loader` loads
either kind.
"""

from flairkit.models.weights.describe import (
    NetworkSummary,
    explain_mismatch,
    inspect_checkpoint,
    summarize,
    tensor_shapes,
)
from flairkit.models.weights.files import (
    RawCheckpoint,
    check_resume_checkpoint,
    read_checkpoint,
    read_state_dict,
    safe_unpickling,
)
from flairkit.models.weights.layouts import normalize_keys
from flairkit.models.weights.loading import (
    LoadReport,
    check_weights_config,
    load_init_weights,
    load_network,
    load_weights,
)
from flairkit.models.weights.sources import (
    BUNDLE_CONFIG,
    BUNDLE_NOMENCLATURE,
    BUNDLE_WEIGHTS,
    ONNX_SUFFIX,
    WeightsSource,
    config_from_checkpoint,
    read_bundle_config,
    resolve_source,
    weights_config_overrides,
    weights_config_source,
    without_machine_paths,
)

__all__ = [
    "BUNDLE_CONFIG",
    "BUNDLE_NOMENCLATURE",
    "BUNDLE_WEIGHTS",
    "ONNX_SUFFIX",
    "LoadReport",
    "NetworkSummary",
    "RawCheckpoint",
    "WeightsSource",
    "check_resume_checkpoint",
    "check_weights_config",
    "config_from_checkpoint",
    "explain_mismatch",
    "inspect_checkpoint",
    "load_init_weights",
    "load_network",
    "load_weights",
    "normalize_keys",
    "read_bundle_config",
    "read_checkpoint",
    "read_state_dict",
    "resolve_source",
    "safe_unpickling",
    "summarize",
    "tensor_shapes",
    "weights_config_overrides",
    "weights_config_source",
    "without_machine_paths",
]
