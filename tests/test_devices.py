"""One device resolver, inference precision, math settings, loader workers and the prediction writer (issue 13)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml
from typer.testing import CliRunner

from conftest import tiny_config
from flairkit import devices
from flairkit.cli.main import app
from flairkit.config import load_config
from flairkit.data.datamodule import build_dataset, split_records
from flairkit.data.datasets import collate_patches
from flairkit.data.rasters import read_raster
from flairkit.detection.network import wants_onnx
from flairkit.detection.run import detect
from flairkit.detection.settings import resolve_settings
from flairkit.devices import (
    available_cpus,
    cgroup_cpu_limit,
    default_num_workers,
    math_settings,
    resolve_device,
    resolve_precision,
    strict_float32,
)
from flairkit.errors import ConfigError, DataError
from flairkit.evaluation import predict as predict_module
from flairkit.evaluation.predict import _BackgroundWriter, predict, prediction_path
from flairkit.models.build import build_model
from flairkit.models.export import export_bundle
from flairkit.models.factory import build_aerial_model
from flairkit.models.inference import fold_batchnorm, masked_argmax
from flairkit.models.loader import load_model
from flairkit.models.onnx import OnnxDeviceError, OnnxSegmenter, onnx_on_device, onnx_providers
from flairkit.training.module import SegmentationTask
from test_detection_run import K, write_ortho
from test_models_factory import SharedConvOutput, _calibrated, _config

CUDA0 = torch.device("cuda", 0)
DEVICE_ENV = ("LOCAL_RANK", "SLURM_LOCALID", "LOCAL_WORLD_SIZE", "SLURM_CPUS_PER_TASK")


@pytest.fixture
def clean_env(monkeypatch):
    for key in DEVICE_ENV:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


@pytest.fixture
def gpus(clean_env):
    """A machine that reports ``count`` CUDA GPUs of compute capability ``capability`` (no GPU is touched)."""

    def make(count: int, capability: tuple[int, int] = (8, 0)):
        clean_env.setattr(torch.cuda, "is_available", lambda: count > 0)
        clean_env.setattr(torch.cuda, "device_count", lambda: count)
        clean_env.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        clean_env.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
        clean_env.setattr(devices, "_mps_available", lambda: False)
        return clean_env

    return make


# --- devices ---------------------------------------------------------------------------------------------


def test_cuda_means_this_ranks_gpu_and_an_explicit_index_is_honoured(gpus):
    env = gpus(2)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cuda") == CUDA0  # no launcher variables: rank 0
    env.setenv("LOCAL_RANK", "3")
    for name in ("cuda", "gpu", "auto"):
        assert resolve_device(name) == torch.device("cuda", 1)  # 3 % 2
    assert resolve_device("cuda:0") == CUDA0
    env.setenv("SLURM_LOCALID", "0")
    assert resolve_device("cuda") == torch.device("cuda", 1)  # LOCAL_RANK first
    env.delenv("LOCAL_RANK")
    assert resolve_device("cuda") == CUDA0
    env.setenv("SLURM_LOCALID", "5")
    assert resolve_device("cuda") == torch.device("cuda", 1)


def test_without_launcher_variables_the_given_local_rank_picks_the_gpu(gpus):
    gpus(4)
    assert resolve_device("cuda", local_rank=6) == torch.device("cuda", 2)
    assert devices.env_local_rank(default=6) == 6


def test_missing_or_unknown_devices_are_clear_errors_naming_the_setting(gpus):
    env = gpus(2)
    with pytest.raises(ConfigError, match=r"detect\.device \(--device\) is 'cuda:2', but this process sees 2 CUDA"):
        resolve_device("cuda:2", "detect.device (--device)")
    with pytest.raises(ConfigError, match=r"evaluate\.device is 'cuda1', which is not a device"):
        resolve_device("cuda1", "evaluate.device")
    with pytest.raises(ConfigError, match=r"device is 'mps', but Apple MPS is not available"):
        resolve_device("mps")
    env.setenv("LOCAL_RANK", "one")
    with pytest.raises(ConfigError, match=r"LOCAL_RANK='one' is not a whole number"):
        resolve_device("cuda")
    gpus(0)
    assert resolve_device("auto") == torch.device("cpu")
    for name in ("cuda", "gpu", "cuda:0"):
        with pytest.raises(ConfigError, match=rf"--device is '{name}', but CUDA is not available: .*set it to cpu"):
            resolve_device(name, "--device")


def test_auto_precision_is_bf16_on_gpus_that_compute_it_and_32_elsewhere(gpus):
    gpus(1, capability=(8, 0))
    assert resolve_precision("auto", CUDA0) == torch.bfloat16
    assert resolve_precision("fp16", CUDA0) == torch.float16
    assert resolve_precision("32", CUDA0) is None
    gpus(1, capability=(7, 0))
    assert resolve_precision("auto", CUDA0) is None
    assert resolve_precision("fp16", CUDA0) == torch.float16
    with pytest.raises(ConfigError, match=r"detect\.precision is 'bf16', but Tesla V100 has no bf16 arithmetic"):
        resolve_precision("bf16", CUDA0, "detect.precision")
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) is None
    assert resolve_precision("bf16", cpu) == torch.bfloat16
    with pytest.raises(ConfigError, match=r"precision is '16', which is not a precision"):
        resolve_precision("16", cpu)


def test_a_precision_torch_cannot_autocast_on_the_cpu_is_refused_not_silently_run_in_float32(monkeypatch):
    def old_torch_autocast(device_type, dtype=None, enabled=True):
        import warnings

        warnings.warn("In CPU autocast, but the target dtype is not supported. Disabling autocast.", stacklevel=2)

    monkeypatch.setattr(torch, "autocast", old_torch_autocast)
    with pytest.raises(ConfigError, match=r"evaluate\.precision is 'fp16', but torch .* set it to 32 or bf16"):
        resolve_precision("fp16", torch.device("cpu"), "evaluate.precision")


def test_precision_and_device_keys_are_validated_in_the_config():
    config = load_config(None, ["detect.precision=32", "evaluate.precision=bf16", "detect.device=cuda:1"])
    assert (config.detect.precision, config.evaluate.precision, config.detect.device) == ("32", "bf16", "cuda:1")
    with pytest.raises(ConfigError, match=r"evaluate\.device: must be auto, cpu, cuda"):
        load_config(None, ["evaluate.device=cuda1"])
    with pytest.raises(ConfigError, match=r"detect\.precision"):
        load_config(None, ["detect.precision=16"])


def test_math_settings_allow_tf32_and_autotuning_on_cuda_only_and_restore_them():
    before = torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()
    with math_settings(CUDA0):
        assert torch.backends.cudnn.benchmark and torch.get_float32_matmul_precision() == "high"
        with math_settings(CUDA0, training=True, precision="32", fixed_shapes=False):
            assert not torch.backends.cudnn.benchmark and torch.get_float32_matmul_precision() == "highest"
        assert torch.get_float32_matmul_precision() == "high"
    assert (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()) == before
    with math_settings(torch.device("cpu")):
        assert (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()) == before


# --- BatchNorm folding ----------------------------------------------------------------------------------


def test_batchnorm_folding_check_runs_in_float32_whatever_the_callers_precision():
    torch.manual_seed(0)
    model = _calibrated(build_aerial_model(_config("model.encoder=resnet18", "data.channels=[1,2,3]")))
    torch.set_float32_matmul_precision("medium")
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the comparison in bf16 differs by ~5%
            folded = fold_batchnorm(model, torch.rand(1, 3, 64, 64))
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision("highest")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())


def test_a_refused_batchnorm_folding_is_logged(caplog):
    model = _calibrated(SharedConvOutput())
    with caplog.at_level(logging.WARNING, logger="flairkit.models.inference"):
        assert fold_batchnorm(model, torch.rand(1, 3, 16, 16)) is model
    assert "BatchNorm not folded" in caplog.text and "running the network unfolded" in caplog.text


def test_strict_float32_turns_autocast_and_tf32_off_and_restores_them():
    torch.set_float32_matmul_precision("high")
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            with strict_float32("cpu"):
                assert torch.nn.functional.linear(torch.rand(2, 3), torch.rand(4, 3)).dtype == torch.float32
                assert torch.get_float32_matmul_precision() == "highest" and not torch.backends.cudnn.allow_tf32
            assert torch.nn.functional.linear(torch.rand(2, 3), torch.rand(4, 3)).dtype == torch.bfloat16
        assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.allow_tf32
    finally:
        torch.set_float32_matmul_precision("highest")


# --- mixed precision in detection and prediction --------------------------------------------------------


class TinyNet(torch.nn.Module):
    """Conv -> tanh -> conv: several classes in smooth regions, and a hook point on its first convolution."""

    def __init__(self, bands: int = 5, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.first = torch.nn.Conv2d(bands, 8, 3, padding=1)
        self.head = torch.nn.Conv2d(8, K, 1)
        self.dtypes: list[torch.dtype] = []
        self.first.register_forward_hook(lambda _m, _i, output: self.dtypes.append(output.dtype))

    def forward(self, image: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(torch.tanh(self.first(image)))


def _smooth_ortho(path: Path, height: int = 150, width: int = 170) -> Path:
    y, x = np.mgrid[0:height, 0:width]
    bands = [np.sin(x / (9 + 4 * b)) + np.cos(y / (13 + 3 * b)) for b in range(5)]
    return write_ortho(path, np.clip(np.stack(bands) * 60 + 128, 1, 255).astype(np.uint8))


def test_detection_in_bf16_autocasts_the_forward_pass_and_agrees_with_float32(tmp_path):
    config = load_config(None, ["detect.tile_size=64", "detect.margin=16", "detect.backend=torch"])
    ortho = _smooth_ortho(tmp_path / "ortho.tif")
    maps = {}
    for precision, dtype in (("32", torch.float32), ("bf16", torch.bfloat16)):
        model = TinyNet()
        detect(config, model, [ortho], tmp_path / f"{precision}.tif", precision=precision)
        # Every pass in ``dtype`` but one: the BatchNorm-folding check runs in float32 whatever the precision.
        assert model.dtypes.count(dtype) == len(model.dtypes) - (dtype != torch.float32) > 2
        with rasterio.open(tmp_path / f"{precision}.tif") as src:
            maps[precision] = src.read(1)
    assert len(np.unique(maps["32"])) >= 5
    assert (maps["32"] == maps["bf16"]).mean() >= 0.99
    with pytest.raises(ConfigError, match=r"detect\.device \(--device\) is 'cuda', but CUDA is not available"):
        detect(config, TinyNet(), [ortho], tmp_path / "gpu.tif", device="cuda")


@pytest.fixture(scope="module")
def predict_config(tiny_world, tmp_path_factory):
    return tiny_config(tiny_world, tmp_path_factory.mktemp("runs"), "evaluate.batch_size=3")


def _reference_predictions(config, model) -> dict[str, np.ndarray]:
    """Each test patch's classes computed in this thread, batched as predict batches them."""
    records = split_records(config, "test")
    dataset = build_dataset(config, records, with_labels=False)
    task = SegmentationTask(config, model=model).eval()
    size = config.evaluate.batch_size
    expected = {}
    with torch.inference_mode():
        for start in range(0, len(dataset), size):
            items = [dataset[i] for i in range(start, min(start + size, len(dataset)))]
            batch = task.prepare_batch(collate_patches(items))
            logits, _ = task(batch)
            classes = masked_argmax(logits, task.nomenclature.disabled).numpy()
            for row, index in zip(classes, batch["index"].tolist(), strict=True):
                expected[records[index].image.stem] = row
    return expected


def test_predictions_written_by_the_writer_thread_are_those_of_the_model(predict_config, tmp_path):
    config = predict_config
    model = build_model(config, pretrained_encoder=False).eval()
    result = predict(config, model, tmp_path)
    records = split_records(config, "test")
    assert result.written == [prediction_path(tmp_path, r.image) for r in records]
    expected = _reference_predictions(config, model)
    for record in records:
        np.testing.assert_array_equal(
            read_raster(prediction_path(tmp_path, record.image))[0], expected[record.image.stem]
        )


def test_prediction_in_bf16_autocasts_the_forward_pass_and_agrees_with_float32(predict_config, tmp_path):
    runs = {}
    for precision, dtype in (("32", torch.float32), ("bf16", torch.bfloat16)):
        config = predict_config.model_copy(deep=True)
        config.evaluate.precision = precision
        model = TinyNet()
        result = predict(config, model, tmp_path / precision)
        assert set(model.dtypes) == {dtype}
        runs[precision] = np.stack([read_raster(path)[0] for path in result.written])
    assert (runs["32"] == runs["bf16"]).mean() >= 0.99


def test_a_failed_prediction_write_stops_the_run_with_its_error(predict_config, tmp_path, monkeypatch):
    real_write = predict_module.write_raster
    calls = []

    def failing_write(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise DataError(f"{path}: cannot write the raster (disk full)")
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(predict_module, "write_raster", failing_write)
    with pytest.raises(DataError, match="disk full"):
        predict(predict_config, TinyNet(), tmp_path)
    assert prediction_path(tmp_path, split_records(predict_config, "test")[0].image).exists()
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*.part"))


def test_background_writer_keeps_order_and_raises_the_first_failure_in_the_caller():
    written: list[Path] = []
    with _BackgroundWriter(2, written) as writer:
        for name in ("a", "b", "c"):
            writer.submit(lambda name=name: Path(name))
    assert written == [Path("a"), Path("b"), Path("c")]

    def fail() -> Path:
        raise OSError("no space left on device")

    written.clear()
    with pytest.raises(OSError, match="no space left"), _BackgroundWriter(1, written) as writer:
        writer.submit(fail)
        for _ in range(50):  # never blocks: later jobs are taken and dropped
            writer.submit(lambda: Path("later"))
    assert written == []


# --- ONNX Runtime on a GPU --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_bundle(tmp_path_factory):
    config = load_config(None, ["model.encoder=resnet18", "model.encoder_weights=null", "data.channels=[1,2,3]"])
    torch.manual_seed(0)
    model = build_model(config, pretrained_encoder=False).eval()
    folder = export_bundle(config, model, tmp_path_factory.mktemp("onnx") / "bundle", onnx=True, tile_size=64)
    return config, model, folder


def test_onnx_graph_on_a_gpu_without_the_cuda_provider_runs_the_torch_network_and_says_so(
    onnx_bundle, monkeypatch, caplog
):
    import onnxruntime

    config, model, folder = onnx_bundle
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    segmenter = load_model(config, folder / "model.onnx")
    assert onnx_providers(CUDA0) is None and onnx_providers("cpu") == ["CPUExecutionProvider"]
    assert onnx_on_device(segmenter, config, torch.device("cpu")) is segmenter
    with caplog.at_level(logging.WARNING, logger="flairkit.models.onnx"):
        network = onnx_on_device(segmenter, config, CUDA0)
    assert not isinstance(network, OnnxSegmenter)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(network.state_dict()[key], value)
    assert "no execution provider for cuda:0" in caplog.text and "onnxruntime-gpu" in caplog.text
    assert "running the torch network" in caplog.text

    alone = folder.parent / "alone"
    alone.mkdir()
    shutil.copy(folder / "model.onnx", alone / "model.onnx")
    with pytest.raises(OnnxDeviceError, match=r"no torch weights \(model\.safetensors\) beside it.*--device cpu"):
        onnx_on_device(OnnxSegmenter(alone / "model.onnx"), config, CUDA0)


def test_a_cuda_provider_that_does_not_start_is_not_a_silent_cpu_run(onnx_bundle, monkeypatch, caplog):
    import onnxruntime

    config, _, folder = onnx_bundle
    listed = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: listed)
    with pytest.raises(OnnxDeviceError, match="could not start CUDAExecutionProvider"):
        OnnxSegmenter(folder / "model.onnx", device=CUDA0)
    with caplog.at_level(logging.WARNING, logger="flairkit.models.onnx"):
        network = onnx_on_device(OnnxSegmenter(folder / "model.onnx"), config, CUDA0)
    assert not isinstance(network, OnnxSegmenter) and "could not start CUDAExecutionProvider" in caplog.text


def test_detect_backend_onnx_on_a_gpu_without_the_cuda_provider_warns_and_keeps_torch(monkeypatch, caplog):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    onnx = resolve_settings(load_config(None, ["detect.backend=onnx"]), None, None)
    auto = resolve_settings(load_config(None), None, None)
    with caplog.at_level(logging.WARNING, logger="flairkit.detection.network"):
        assert not wants_onnx(onnx, CUDA0)
    assert "no execution provider for cuda:0" in caplog.text and "running the network in torch" in caplog.text
    caplog.clear()
    assert not wants_onnx(auto, CUDA0) and not caplog.text  # auto: torch on GPUs, no warning
    assert wants_onnx(onnx, torch.device("cpu")) and wants_onnx(auto, torch.device("cpu"))


# --- loader workers ---------------------------------------------------------------------------------------


def test_cgroup_quota_v2_and_v1(tmp_path):
    assert cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 3
    v1 = tmp_path / "v1"
    (v1 / "cpu,cpuacct").mkdir(parents=True)
    (v1 / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu,cpuacct" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(v1) is None
    (v1 / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("400000\n")
    assert cgroup_cpu_limit(v1) == 4


def test_loader_workers_follow_affinity_quota_and_local_ranks(tmp_path, clean_env):
    clean_env.setattr(devices.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert available_cpus(tmp_path) == 16
    assert default_num_workers(cgroup_root=tmp_path) == 8  # 15, at most 8
    clean_env.setenv("LOCAL_WORLD_SIZE", "4")
    assert default_num_workers(cgroup_root=tmp_path) == 3  # 16 / 4 ranks - 1
    assert default_num_workers(local_world_size=2, cgroup_root=tmp_path) == 7
    (tmp_path / "cpu.max").write_text("800000 100000\n")
    assert available_cpus(tmp_path) == 8
    assert default_num_workers(cgroup_root=tmp_path) == 1  # 8 / 4 - 1
    clean_env.delenv("LOCAL_WORLD_SIZE")
    clean_env.setenv("SLURM_CPUS_PER_TASK", "2")
    assert available_cpus(tmp_path) == 2 and default_num_workers(cgroup_root=tmp_path) == 1
    clean_env.setattr(devices.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert default_num_workers(cgroup_root=tmp_path) == 0


def test_training_loaders_share_the_cpus_between_the_ranks_lightning_starts(tmp_path, clean_env):
    from types import SimpleNamespace

    from flairkit.data.datamodule import FlairDataModule

    clean_env.setattr(devices.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    clean_env.setattr(devices, "CGROUP_ROOT", tmp_path)
    module = FlairDataModule(tiny_config(tmp_path, tmp_path))
    assert module._local_world_size() is None  # no trainer: as the launcher says
    module.trainer = SimpleNamespace(num_devices=4)
    assert module._local_world_size() == 4
    assert default_num_workers(module._local_world_size(), cgroup_root=tmp_path) == 3
    clean_env.setenv("SLURM_CPUS_PER_TASK", "4")  # srun gave each task its own CPUs already
    assert module._local_world_size() is None


# --- command line -----------------------------------------------------------------------------------------


def test_commands_take_device_and_precision_options(tmp_path, gpus):
    gpus(0)
    config_path = tmp_path / "detect.yaml"
    overrides = {"data": {"channels": [1, 2, 3]}, "model": {"encoder": "resnet18", "encoder_weights": None}}
    config_path.write_text(yaml.safe_dump({**overrides, "detect": {"tile_size": 64, "margin": 16}}))
    torch.manual_seed(0)
    torch.save(build_model(load_config(config_path), pretrained_encoder=False).state_dict(), tmp_path / "w.pth")
    ortho = write_ortho(tmp_path / "ortho.tif", np.full((3, 40, 40), 100, dtype=np.uint8))
    args = [
        "detect",
        str(ortho),
        "-o",
        str(tmp_path / "map.tif"),
        "-c",
        str(config_path),
        "-w",
        str(tmp_path / "w.pth"),
    ]
    result = CliRunner().invoke(app, [*args, "--device", "cuda", "--no-progress"])
    assert result.exit_code != 0
    assert "detect.device (--device) is 'cuda', but CUDA is not available" in " ".join(result.output.split())
    result = CliRunner().invoke(app, [*args, "--precision", "16", "--no-progress"])
    assert result.exit_code != 0 and "detect.precision" in result.output
    result = CliRunner().invoke(app, [*args, "--device", "cpu", "--precision", "bf16", "--no-progress"])
    assert result.exit_code == 0, result.output


def test_predict_and_evaluate_take_device_and_precision_options(predict_config, tmp_path, gpus):
    gpus(0)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(predict_config.model_dump(mode="json")))
    torch.save(build_model(predict_config, pretrained_encoder=False).state_dict(), tmp_path / "w.pth")
    args = ["-c", str(config_path), "-w", str(tmp_path / "w.pth"), "--no-progress"]
    for command in ("predict", "evaluate"):
        result = CliRunner().invoke(app, [command, str(tmp_path / command), *args, "--device", "cuda:1"])
        assert result.exit_code != 0
        assert "evaluate.device (--device) is 'cuda:1', but CUDA is not available" in " ".join(result.output.split())
    result = CliRunner().invoke(
        app, ["predict", str(tmp_path / "bf16"), *args, "--device", "cpu", "--precision", "bf16"]
    )
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "bf16").glob("PRED_*.tif"))) == len(split_records(predict_config, "test"))
