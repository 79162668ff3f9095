"""Where a process computes and how: its device, its inference precision, its math settings, its loader workers.

Every command resolves ``auto|cpu|cuda|gpu|cuda:N|mps`` here together with the process's local rank
(``LOCAL_RANK`` from torchrun and Lightning, ``SLURM_LOCALID`` under srun), so that each rank of a machine
gets its own GPU; and sizes its data loading from the CPUs it may really use (affinity mask, cgroup quota),
shared with the other ranks of the machine.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing.util
import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from flairkit.config.schema import DEVICE_PATTERN
from flairkit.errors import ConfigError

CGROUP_ROOT = Path("/sys/fs/cgroup")
MAX_LOADER_WORKERS = 8
"""More loader processes than this bring nothing for 512 px patches and cost memory."""
_SOCKET_PATH_MAX = 107
_SOCKET_NAME_LENGTH = len("/pymp-12345678/listener-12345678")
"""What multiprocessing appends to the temporary folder to name a worker's socket."""

_DTYPES = {"32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _env_int(key: str) -> int | None:
    value = os.environ.get(key)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(
            f"the environment variable {key}={value!r} is not a whole number; unset it or fix the launcher"
        ) from None


def env_local_rank(default: int = 0) -> int:
    """This process's rank on its machine: LOCAL_RANK (torchrun, Lightning), else SLURM_LOCALID, else ``default``."""
    for key in ("LOCAL_RANK", "SLURM_LOCALID"):
        value = _env_int(key)
        if value is not None:
            return value
    return default


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def _no_cuda_reason() -> str:
    if torch.version.cuda is None and torch.version.hip is None:
        return f"this torch build ({torch.__version__}) has no CUDA support (install a CUDA build of torch)"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    shown = f", CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
    return f"no GPU is visible (check the driver with nvidia-smi{shown})"


def resolve_device(name: str = "auto", key: str = "device", local_rank: int | None = None) -> torch.device:
    """The torch device of this process for a device ``name``; ``key`` names the setting in errors.

    ``cuda`` and ``gpu`` (and ``auto`` when CUDA is present) mean this rank's GPU, cuda:(local rank % GPU
    count), the local rank being ``local_rank`` or else :func:`env_local_rank`; ``cuda:N`` is taken as
    given; ``auto`` falls back to Apple MPS, then to the CPU. A device that is asked for but absent is an error.
    """
    if not re.fullmatch(DEVICE_PATTERN, name):
        raise ConfigError(f"{key} is {name!r}, which is not a device; set it to auto, cpu, cuda, cuda:N or mps")
    if name == "cpu":
        return torch.device("cpu")
    cuda = torch.cuda.is_available()
    if name == "mps" or (name == "auto" and not cuda):
        if _mps_available():
            return torch.device("mps")
        if name == "mps":
            raise ConfigError(f"{key} is 'mps', but Apple MPS is not available on this machine; set it to auto or cpu")
        return torch.device("cpu")
    if not cuda:
        raise ConfigError(f"{key} is {name!r}, but CUDA is not available: {_no_cuda_reason()}; or set it to cpu")
    count = torch.cuda.device_count()
    if name.startswith("cuda:"):
        index = int(name.partition(":")[2])
        if index >= count:
            raise ConfigError(
                f"{key} is {name!r}, but this process sees {count} CUDA device(s), cuda:0 to cuda:{count - 1}; "
                f"set it to one of them, or to cuda for this rank's GPU"
            )
        return torch.device("cuda", index)
    rank = env_local_rank() if local_rank is None else local_rank
    return torch.device("cuda", rank % count)


def _native_bf16(device: torch.device) -> bool:
    """Whether a CUDA ``device`` computes bf16 in hardware (Ampere and newer; on ROCm, what torch reports)."""
    if torch.version.hip is not None:
        return torch.cuda.is_bf16_supported()
    return torch.cuda.get_device_capability(device) >= (8, 0)


def resolve_precision(precision: str, device: torch.device, key: str = "precision") -> torch.dtype | None:
    """The autocast dtype of inference on ``device`` for a precision setting; None means float32.

    ``auto``: bf16 on CUDA GPUs that compute it natively (Ampere and newer), float32 elsewhere (CPU, MPS,
    older GPUs). ``bf16`` and ``fp16`` are honoured wherever torch's autocast supports them (both on CUDA;
    bf16 and, in recent torch, fp16 on the CPU, where they are slower than float32 without AVX512-BF16/FP16
    or AMX) and refused with the reason elsewhere.
    """
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" and _native_bf16(device) else None
    if precision not in _DTYPES:
        raise ConfigError(f"{key} is {precision!r}, which is not a precision; set it to auto, 32, bf16 or fp16")
    dtype = _DTYPES[precision]
    if dtype is None:
        return None
    if device.type == "cuda":
        if dtype == torch.bfloat16 and not _native_bf16(device):
            name = torch.cuda.get_device_name(device)
            raise ConfigError(
                f"{key} is 'bf16', but {name} has no bf16 arithmetic (Ampere and newer have); set it to fp16 or 32"
            )
        return dtype
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns, then silently runs float32, when it cannot autocast
        try:
            torch.autocast(device.type, dtype=dtype)
        except (RuntimeError, UserWarning) as error:
            raise ConfigError(
                f"{key} is {precision!r}, but torch {torch.__version__} cannot compute in {precision} on "
                f"{device.type} ({error}); set it to 32" + (" or bf16" if dtype == torch.float16 else "")
            ) from None
    return dtype


def precision_name(dtype: torch.dtype | None) -> str:
    """``32``, ``bf16`` or ``fp16``: the setting that gives ``dtype``."""
    return next(name for name, value in _DTYPES.items() if value == dtype)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``, or nothing for float32 (None)."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


@contextlib.contextmanager
def math_settings(
    device: torch.device, *, training: bool = False, precision: str = "32", fixed_shapes: bool = True
) -> Iterator[None]:
    """cuDNN autotuning and float32 matmul precision for work on a CUDA ``device``, restored afterwards.

    ``torch.backends.cudnn.benchmark`` (with ``fixed_shapes``) times cuDNN's convolution algorithms at the
    first batch of each input shape and keeps the fastest: a gain when shapes repeat (patches, detection
    tiles of one size per raster), a loss when every batch differs. Float32 matmuls may use TF32 on Ampere
    and newer ('high', about 1e-3 relative error, as cuDNN convolutions already do by default) for
    inference and mixed-precision training; 32-bit training (``precision`` "32") keeps full float32
    matmuls ('highest'). Nothing changes on other devices.
    """
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()
    torch.backends.cudnn.benchmark = fixed_shapes
    torch.set_float32_matmul_precision("highest" if training and precision == "32" else "high")
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved[0]
        torch.set_float32_matmul_precision(saved[1])


@contextlib.contextmanager
def strict_float32(device_type: str) -> Iterator[None]:
    """Full float32 arithmetic inside: no autocast on ``device_type``, no TF32 in matmuls or cuDNN; restored after."""
    try:
        no_autocast: contextlib.AbstractContextManager = torch.autocast(device_type, enabled=False)
    except RuntimeError:  # a device type this torch cannot autocast (MPS in older torch): nothing to turn off
        no_autocast = contextlib.nullcontext()
    saved = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False
    try:
        with no_autocast:
            yield
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cudnn.allow_tf32 = saved[1]


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> int | None:
    """CPUs granted by the cgroup CPU quota under ``root`` (rounded up), or None when there is none.

    Reads cgroup v2 ``cpu.max`` ("max 100000" or "<quota> <period>"), else cgroup v1
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota -1: none), at ``root`` or in its cpu controller folder.
    """
    root = Path(root)
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    for folder in (root, root / "cpu", root / "cpu,cpuacct"):
        try:
            quota_us = int((folder / "cpu.cfs_quota_us").read_text())
            period_us = int((folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota_us <= 0 or period_us <= 0 else max(1, math.ceil(quota_us / period_us))
    return None


def available_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup quota and by SLURM_CPUS_PER_TASK."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    for limit in (cgroup_cpu_limit(cgroup_root), _env_int("SLURM_CPUS_PER_TASK")):
        if limit is not None and limit > 0:
            cpus = min(cpus, limit)
    return max(1, cpus)


def default_num_workers(local_world_size: int | None = None, cgroup_root: Path = CGROUP_ROOT) -> int:
    """Loader processes of this process: its share of :func:`available_cpus` minus one for itself, at most 8.

    The share divides the CPUs between the ``local_world_size`` processes of the machine that start from
    the same CPUs (default LOCAL_WORLD_SIZE, set by torchrun; srun gives each task its own CPUs already).
    """
    if local_world_size is None:
        local_world_size = _env_int("LOCAL_WORLD_SIZE") or 1
    share = available_cpus(cgroup_root) // max(1, local_world_size)
    return max(0, min(share - 1, MAX_LOADER_WORKERS))


def ensure_worker_socket_dir() -> None:
    """Before starting loader workers: give multiprocessing a folder short enough for its Unix sockets.

    Workers hand batches over through a socket under multiprocessing's temporary folder, made in TMPDIR, and a
    socket path holds at most 107 bytes: under a deep TMPDIR every worker hangs (CPython gh-132124). Then that
    folder is made in /tmp instead; everything else keeps TMPDIR.
    """
    if os.name != "posix" or len(os.fsencode(tempfile.gettempdir())) + _SOCKET_NAME_LENGTH <= _SOCKET_PATH_MAX:
        return
    previous, tempfile.tempdir = tempfile.tempdir, "/tmp"
    try:
        multiprocessing.util.get_temp_dir()  # made once per process, removed at exit
    finally:
        tempfile.tempdir = previous
