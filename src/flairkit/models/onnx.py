"""ONNX graphs of aerial networks: export, run with ONNX Runtime on the CPU or a CUDA GPU, pick its providers.

A graph takes input ``image`` (normalised float NCHW, dynamic batch) and optional input ``metadata``, and gives
output ``logits``. :class:`OnnxSegmenter` is called like the torch network it was exported from.
"""

from __future__ import annotations

import copy
import inspect
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flairkit.config.schema import FlairConfig
from flairkit.errors import CheckpointError, ConfigError
from flairkit.models.huggingface import HuggingFaceSegmenter
from flairkit.models.weights import BUNDLE_WEIGHTS, load_network

logger = logging.getLogger(__name__)

BUNDLE_ONNX = "model.onnx"
ONNX_OPSET = 17
ONNX_IMAGE = "image"
ONNX_METADATA = "metadata"
ONNX_LOGITS = "logits"


class OnnxDeviceError(ConfigError):
    """ONNX Runtime has no execution provider for the device asked for."""


def onnx_providers(device: torch.device | str) -> list[Any] | None:
    """ONNX Runtime's execution providers that compute on ``device`` (CPU; CUDA with onnxruntime-gpu), else None."""
    device = torch.device(device)
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    return None


def _no_provider(device: torch.device) -> str:
    fix = "pip install onnxruntime-gpu in place of onnxruntime" if device.type == "cuda" else "it runs on CPU and CUDA"
    return f"ONNX Runtime has no execution provider for {device} here ({fix})"


class OnnxSegmenter(nn.Module):
    """An exported ONNX graph run by onnxruntime on the CPU or a CUDA GPU, called like the torch network.

    ``segmenter(image)`` / ``segmenter(image, metadata)`` take a normalised (B, C, H, W) float tensor and
    return the logits tensor on the input's device. A ``device`` onnxruntime cannot compute on is an
    :class:`OnnxDeviceError`, never a silent fallback to the CPU.
    """

    def __init__(self, path: Path | str, threads: int | None = None, device: torch.device | str = "cpu"):
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
        self.device = torch.device(device)
        providers = onnx_providers(self.device)
        if providers is None:
            raise OnnxDeviceError(_no_provider(self.device))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as error:  # onnxruntime raises its own (non-exported) exception classes
            raise CheckpointError(f"{self.path} is not a loadable ONNX graph ({error}); export it again") from None
        wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
        if self._session.get_providers()[0] != wanted:  # e.g. onnxruntime-gpu without the CUDA libraries it needs
            raise OnnxDeviceError(
                f"ONNX Runtime could not start {wanted} for {self.device} (it would run on "
                f"{self._session.get_providers()[0]}); check the CUDA and cuDNN libraries onnxruntime-gpu needs"
            )
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


def onnx_on_device(segmenter: OnnxSegmenter, config: FlairConfig, device: torch.device) -> nn.Module:
    """``segmenter`` where ``device`` computes: ONNX Runtime's provider for it when installed, else, with a
    warning, the torch network of the bundle the graph belongs to (returned on the CPU, for the caller to move).

    A graph without torch weights beside it and no provider for ``device`` is an :class:`OnnxDeviceError`.
    """
    device = torch.device(device)
    if segmenter.device == device:
        return segmenter
    try:
        return OnnxSegmenter(segmenter.path, device=device)
    except OnnxDeviceError as reason:
        folder = segmenter.path.parent
        if not (folder / BUNDLE_WEIGHTS).is_file():
            raise OnnxDeviceError(
                f"{reason}; and {segmenter.path} has no torch weights ({BUNDLE_WEIGHTS}) beside it to run instead: "
                "give the bundle folder or its torch weights, or run on the CPU (--device cpu)"
            ) from None
        logger.warning("%s: running the torch network of %s on %s instead", reason, folder, device)
        return load_network(config, folder)


def _onnx_export_kwargs() -> dict[str, Any]:
    # torch >= 2.9 defaults to the dynamo exporter, which needs onnxscript; the TorchScript one does not.
    return {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


_WITHOUT_ONNX = "export the bundle without --onnx: its torch weights run wherever flairkit does"


def _unexportable(model: nn.Module) -> str | None:
    """Why torch's ONNX exporter cannot export ``model``, when that is known without trying."""
    if isinstance(model, HuggingFaceSegmenter) and model.seg_model.config.model_type == "upernet":
        return "transformers' UperNet (its pyramid pooling needs input sizes that the exporter's trace does not keep)"
    return None


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
    reason = _unexportable(model)
    if reason is not None:
        raise CheckpointError(f"torch's ONNX exporter cannot export {reason}; {_WITHOUT_ONNX}")
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
        try:
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
        except Exception as error:  # the exporter raises many classes; only transformers networks are expected to
            if not isinstance(network, HuggingFaceSegmenter):
                raise
            first_line = str(error).splitlines()[0][:200]
            raise CheckpointError(
                f"torch's ONNX exporter cannot export this HuggingFace transformers network ({first_line}); "
                f"{_WITHOUT_ONNX}"
            ) from None


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


def verify_onnx(model: nn.Module, path: Path, in_channels: int, tile_size: int) -> None:
    """Run the ONNX graph on a random batch of two and compare with the torch model."""
    error, tolerance = _onnx_error(model, OnnxSegmenter(path), in_channels, tile_size)
    if not error <= tolerance:
        raise CheckpointError(
            f"the ONNX graph differs from the torch model by {error:.3g} (tolerance {tolerance:.3g}); "
            "export without --onnx and report the architecture/encoder that failed"
        )


def onnx_runtime_model(
    model: nn.Module, in_channels: int, threads: int | None = None, device: torch.device | str = "cpu"
) -> OnnxSegmenter | None:
    """``model`` exported for any tile size and loaded in ONNX Runtime on ``device``, or None when that is not possible.

    None when onnxruntime or the exporter is missing, the network is not an aerial one or cannot be exported
    (transformers' UperNet), or the graph does not reproduce the torch model on a small random batch; callers then
    keep the torch model.
    """
    try:
        import onnx  # noqa: F401  (the exporter needs it)
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    if not hasattr(model, "seg_model") or getattr(model, "use_metadata", False):
        return None
    if _unexportable(model) is not None:
        return None
    probe = 64
    with tempfile.TemporaryDirectory(prefix="flairkit-onnx-") as folder:
        path = Path(folder) / "model.onnx"
        try:
            export_onnx(model, path, in_channels, probe, any_tile_size=True)
            graph = OnnxSegmenter(path, threads=threads, device=device)  # the session keeps the graph in memory
            error, tolerance = _onnx_error(model, graph, in_channels, probe)
        except Exception as failure:  # any exporter or runtime failure means: stay with torch
            logger.warning("ONNX Runtime unavailable for this network (%s); running it in torch", failure)
            return None
    if not error <= tolerance:
        logger.warning("the ONNX graph differs from the torch network by %.3g; running it in torch", error)
        return None
    return graph
