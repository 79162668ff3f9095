"""Self-contained model bundles: weights (safetensors), the resolved config, optionally an ONNX graph.

A bundle folder holds ``model.safetensors`` (flairkit key layout), ``config.json`` (the resolved config,
machine-specific paths removed) and, on request, ``model.onnx`` (input ``image``: normalised float NCHW with
a dynamic batch; optional input ``metadata``; output ``logits``). Any flairkit command accepts the folder
as its weights; :class:`OnnxSegmenter` runs the ONNX graph with onnxruntime in place of the torch model.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flairkit.atomic import check_writable
from flairkit.config.schema import FlairConfig
from flairkit.errors import CheckpointError, ConfigError
from flairkit.models.checkpoints import (
    BUNDLE_CONFIG,
    BUNDLE_WEIGHTS,
    explain_mismatch,
    load_model,
    read_bundle_config,
    tensor_shapes,
    without_machine_paths,
)

logger = logging.getLogger(__name__)

BUNDLE_ONNX = "model.onnx"
ONNX_OPSET = 17
ONNX_IMAGE = "image"
ONNX_METADATA = "metadata"
ONNX_LOGITS = "logits"


def bundle_config_dict(config: FlairConfig) -> dict[str, Any]:
    """The resolved config as JSON data, without paths that only exist where it was made."""
    return without_machine_paths(config.model_dump(mode="json"))


def _reference_model(config: FlairConfig) -> nn.Module:
    """The network ``config`` describes, on the meta device when its modules allow it (no memory used)."""
    from flairkit.models.build import build_model

    try:
        with torch.device("meta"):
            return build_model(config, pretrained_encoder=False)
    except (RuntimeError, NotImplementedError):
        return build_model(config, pretrained_encoder=False)


def _check_matches_config(config: FlairConfig, model: nn.Module) -> None:
    message = explain_mismatch(
        "the model to export does not match the config (its bundle could not be loaded again):",
        tensor_shapes(model.state_dict()),
        tensor_shapes(_reference_model(config).state_dict()),
        config,
        source="the model",
    )
    if message:
        raise CheckpointError(f"{message}\nexport with the config the model was built from")


def _save_safetensors(model: nn.Module, path: Path, config: FlairConfig) -> None:
    from safetensors.torch import save_file

    tensors = {key: value.detach().to("cpu").contiguous() for key, value in model.state_dict().items()}
    network = "utt" if config.model.multimodal else "aerial"
    save_file(tensors, str(path), metadata={"format": "pt", "flairkit_network": network, "flairkit_name": config.name})


def _onnx_export_kwargs() -> dict[str, Any]:
    # torch >= 2.9 defaults to the dynamo exporter, which needs onnxscript; the TorchScript one does not.
    return {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


def export_onnx(model: nn.Module, path: Path, in_channels: int, tile_size: int, any_tile_size: bool = False) -> None:
    """Write an aerial network as ONNX: ``image`` (B, C, tile, tile) [+ ``metadata`` (B, 45)] -> ``logits``.

    With ``any_tile_size`` the graph takes any height and width the network accepts (traced at ``tile_size``).
    """
    from flairkit.models.factory import METADATA_SIZE

    if not hasattr(model, "seg_model"):
        raise CheckpointError(
            "ONNX export covers aerial networks only; the multimodal U-T&T model is exported as safetensors "
            "(drop --onnx)"
        )
    network = copy.deepcopy(model).to("cpu").eval()
    image = torch.zeros(1, in_channels, tile_size, tile_size)
    inputs: tuple[torch.Tensor, ...] = (image,)
    names = [ONNX_IMAGE]
    if getattr(network, "use_metadata", False):
        inputs = (image, torch.zeros(1, METADATA_SIZE))
        names.append(ONNX_METADATA)
    dynamic = {name: {0: "batch"} for name in [*names, ONNX_LOGITS]}
    if any_tile_size:
        for name in (ONNX_IMAGE, ONNX_LOGITS):
            dynamic[name].update({2: "height", 3: "width"})
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network,
            inputs,
            str(path),
            input_names=names,
            output_names=[ONNX_LOGITS],
            dynamic_axes=dynamic,
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
            **_onnx_export_kwargs(),
        )


def _onnx_error(model: nn.Module, graph: OnnxSegmenter, in_channels: int, tile_size: int) -> tuple[float, float]:
    """Largest difference between the ONNX graph and the torch model on a random batch of two, and its tolerance."""
    from flairkit.models.factory import METADATA_SIZE

    generator = torch.Generator().manual_seed(0)
    image = torch.randn(2, in_channels, tile_size, tile_size, generator=generator)
    metadata = torch.rand(2, METADATA_SIZE, generator=generator) if getattr(model, "use_metadata", False) else None
    network = copy.deepcopy(model).to("cpu").eval()
    with torch.no_grad():
        expected = network(image) if metadata is None else network(image, metadata)
    error = (graph(image, metadata) - expected).abs().max().item()
    return error, 1e-3 * max(1.0, expected.abs().max().item())


def _verify_onnx(model: nn.Module, path: Path, in_channels: int, tile_size: int) -> None:
    """Run the ONNX graph on a random batch of two and compare with the torch model."""
    error, tolerance = _onnx_error(model, OnnxSegmenter(path), in_channels, tile_size)
    if not error <= tolerance:
        raise CheckpointError(
            f"the ONNX graph differs from the torch model by {error:.3g} (tolerance {tolerance:.3g}); "
            "export without --onnx and report the architecture/encoder that failed"
        )


def onnx_runtime_model(model: nn.Module, in_channels: int, threads: int | None = None) -> OnnxSegmenter | None:
    """``model`` exported for any tile size and loaded in ONNX Runtime (CPU), or None when that is not possible.

    None when onnxruntime or the exporter is missing, the network is not an aerial one, or the graph does not
    reproduce the torch model on a small random batch; callers then keep the torch model.
    """
    try:
        import onnx  # noqa: F401  (the exporter needs it)
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    if not hasattr(model, "seg_model") or getattr(model, "use_metadata", False):
        return None
    probe = 64
    with tempfile.TemporaryDirectory(prefix="flairkit-onnx-") as folder:
        path = Path(folder) / "model.onnx"
        try:
            export_onnx(model, path, in_channels, probe, any_tile_size=True)
            graph = OnnxSegmenter(path, threads=threads)  # the session keeps the graph in memory
            error, tolerance = _onnx_error(model, graph, in_channels, probe)
        except Exception as failure:  # any exporter or runtime failure means: stay with torch
            logger.warning("ONNX Runtime unavailable for this network (%s); running it in torch", failure)
            return None
    if not error <= tolerance:
        logger.warning("the ONNX graph differs from the torch network by %.3g; running it in torch", error)
        return None
    return graph


def export_bundle(
    config: FlairConfig,
    model: nn.Module,
    out_dir: Path,
    overwrite: bool = False,
    onnx: bool = False,
    tile_size: int = 512,
) -> Path:
    """Write a self-contained bundle folder (weights, config, optional ONNX graph) atomically; return it.

    The model must be the network ``config`` builds. With ``onnx``, the graph takes ``tile_size`` square
    tiles and is checked against the torch model before the bundle is kept.
    """
    out_dir = Path(out_dir)
    check_writable(out_dir, overwrite)
    if onnx and config.model.multimodal:
        raise ConfigError(
            "ONNX export covers aerial networks only (model.multimodal=false); export the U-T&T without --onnx"
        )
    _check_matches_config(config, model)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".part", dir=out_dir.parent))
    try:
        _save_safetensors(model, staging / BUNDLE_WEIGHTS, config)
        (staging / BUNDLE_CONFIG).write_text(json.dumps(bundle_config_dict(config), indent=2) + "\n", encoding="utf-8")
        if onnx:
            in_channels = len(config.data.channels)
            export_onnx(model, staging / BUNDLE_ONNX, in_channels, tile_size)
            _verify_onnx(model, staging / BUNDLE_ONNX, in_channels, tile_size)
        _replace_folder(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("bundle written to %s", out_dir)
    return out_dir


def _replace_folder(staging: Path, destination: Path) -> None:
    """Move ``staging`` to ``destination``, replacing what is there only once the new folder is complete."""
    if not destination.exists():
        os.replace(staging, destination)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".old", dir=destination.parent))
    os.replace(destination, retired / destination.name)
    os.replace(staging, destination)
    shutil.rmtree(retired, ignore_errors=True)


def load_bundle(folder: Path | str, onnx: bool = False) -> tuple[FlairConfig, nn.Module]:
    """The config and network of a bundle (in eval mode); with ``onnx``, an :class:`OnnxSegmenter` instead."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"bundle folder {folder} does not exist; export one with `flair export`")
    config = read_bundle_config(folder)
    if onnx:
        graph = folder / BUNDLE_ONNX
        if not graph.is_file():
            raise CheckpointError(f"{folder} has no {BUNDLE_ONNX}; export it again with `flair export --onnx`")
        return config, OnnxSegmenter(graph)
    return config, load_model(config, folder)


class OnnxSegmenter(nn.Module):
    """An exported ONNX graph run by onnxruntime on CPU, called like the torch network.

    ``segmenter(image)`` / ``segmenter(image, metadata)`` take a normalised (B, C, H, W) float tensor and
    return the logits tensor on the input's device.
    """

    def __init__(self, path: Path | str, threads: int | None = None):
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError:
            raise CheckpointError(
                "running ONNX graphs needs onnxruntime: pip install 'flairkit[onnx]' (or use the torch weights)"
            ) from None
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"ONNX graph {self.path} does not exist; export it with `flair export --onnx`")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own (non-exported) exception classes
            raise CheckpointError(f"{self.path} is not a loadable ONNX graph ({error}); export it again") from None
        self.input_names = [node.name for node in self._session.get_inputs()]
        if ONNX_IMAGE not in self.input_names:
            raise CheckpointError(f"{self.path} has no '{ONNX_IMAGE}' input; it was not exported by flairkit")
        shape = self._session.get_inputs()[self.input_names.index(ONNX_IMAGE)].shape
        self.in_channels = shape[1] if isinstance(shape[1], int) else None
        self.tile_shape = tuple(shape[2:]) if all(isinstance(s, int) for s in shape[2:]) else None
        out_shape = self._session.get_outputs()[0].shape
        self.n_classes = out_shape[1] if isinstance(out_shape[1], int) else None

    @property
    def use_metadata(self) -> bool:
        """Whether the graph takes the 45-value metadata encoding."""
        return ONNX_METADATA in self.input_names

    def forward(self, image: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
        if image.ndim != 4 or (self.in_channels is not None and image.shape[1] != self.in_channels):
            raise CheckpointError(
                f"{self.path} takes (batch, {self.in_channels}, H, W) images, got {tuple(image.shape)}; "
                "check data.channels"
            )
        if self.tile_shape is not None and tuple(image.shape[2:]) != self.tile_shape:
            raise CheckpointError(
                f"{self.path} was exported for {self.tile_shape[0]}x{self.tile_shape[1]} tiles, got "
                f"{image.shape[2]}x{image.shape[3]}; set detect.tile_size={self.tile_shape[0]} or export again "
                "with the tile size you need"
            )
        feeds = {ONNX_IMAGE: image.detach().to("cpu", torch.float32).contiguous().numpy()}
        if self.use_metadata:
            if metadata is None:
                raise ValueError("this graph was exported with metadata (data.metadata=true) but none was given")
            feeds[ONNX_METADATA] = metadata.detach().to("cpu", torch.float32).contiguous().numpy()
        (logits,) = self._session.run([ONNX_LOGITS], feeds)
        return torch.from_numpy(logits).to(image.device)
