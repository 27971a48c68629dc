"""Choosing the torch device and the speed settings that suit it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import DeviceError

if TYPE_CHECKING:  # torch is imported lazily: dippas_core must import without it
    import torch

    from ..config import DIPConfig

__all__ = [
    "resolve_device",
    "describe_devices",
    "device_is_cpu",
    "device_name",
    "recording_share",
    "recording_threads",
    "SpeedSettings",
    "speed_settings",
    "torch_threads",
    "usable_cpus",
]


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def recording_share(cores: int | None = None) -> int:
    """Torch threads of one inversion on the CPU while its snapshots are recorded: half the
    ``cores`` (default: :func:`usable_cpus`), at least one.

    The recording's ingest thread computes each kept snapshot's residual (Numba) on the other
    half: torch and Numba on the same cores slow each other several-fold.  The one rule for
    :func:`~dippas_core.run.record`, the tiles of a photo run and a Dask worker's share.
    """
    return max(1, (usable_cpus() if cores is None else int(cores)) // 2)


def device_is_cpu(spec: str) -> bool:
    """Whether the device ``spec`` (``"cpu"``, ``"cuda:1"``, ``"auto"`` …) runs on the CPU.

    ``"auto"`` is the CPU unless torch is already imported and sees a GPU (no import here).
    """
    spec = str(spec)
    if spec.startswith("cpu"):
        return True
    if spec != "auto":
        return False
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return True
    mps = getattr(torch.backends, "mps", None)
    return not (torch.cuda.is_available() or (mps is not None and mps.is_available()))


def recording_threads(config: DIPConfig) -> int | None:
    """Torch threads of a recorded inversion with ``config``: its ``torch_threads``, else on
    the CPU :func:`recording_share` (None elsewhere: torch's own setting)."""
    if not config.torch_threads and device_is_cpu(config.device):
        return recording_share()
    return config.torch_threads


def _available() -> list[str]:
    import torch

    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        names.append("mps")
    return names


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(spec: Any = "auto") -> torch.device:
    """Turn a device spec into an existing :class:`torch.device`.

    Parameters
    ----------
    spec : str or torch.device
        ``"auto"`` (CUDA, then Apple MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``.

    Raises
    ------
    DeviceError
        When the device does not exist here; the message lists the ones that do.
    """
    import torch

    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(spec.strip().lower() if isinstance(spec, str) else spec)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(
            f"{spec!r} is not a device name; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps' "
            f"(available here: {', '.join(_available())})"
        ) from exc
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {spec!r} asked for, but this torch ({torch.__version__}) sees no CUDA "
                "GPU; "
                f"available here: {', '.join(_available())}"
            )
        index = torch.cuda.current_device() if dev.index is None else dev.index
        count = torch.cuda.device_count()
        if index >= count:
            raise DeviceError(
                f"device {spec!r} does not exist: {count} CUDA GPU(s) here; "
                f"available: {', '.join(_available())}"
            )
        return torch.device("cuda", index)
    if dev.type == "mps":
        if not _mps_available():
            raise DeviceError(
                f"device {spec!r} asked for, but Apple MPS is not available; "
                f"available here: {', '.join(_available())}"
            )
        return torch.device("mps")
    raise DeviceError(
        f"device type {dev.type!r} is not supported; available here: {', '.join(_available())}"
    )


def device_name(device: torch.device) -> str:
    """A human-readable name, e.g. ``"cuda:0 (NVIDIA H100, 79.1 GiB)"`` or ``"cpu (2 threads)"``."""
    import torch

    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{device} ({props.name}, {props.total_memory / 2**30:.1f} GiB)"
    if device.type == "cpu":
        n = torch.get_num_threads()
        return f"cpu ({n} thread{'s' if n != 1 else ''})"
    return str(device)


def describe_devices() -> list[str]:
    """One line per device torch can use here, the one ``"auto"`` picks first."""
    import torch

    auto = resolve_device("auto")
    lines = [device_name(auto) + "  [auto]"]
    for name in _available():
        dev = torch.device(name)
        if dev != auto:
            lines.append(device_name(dev))
    return lines


@dataclass(frozen=True)
class SpeedSettings:
    """What a config's speed switches mean on one device (recorded with every run)."""

    amp_dtype: str | None  # "bfloat16", "float16" or None (float32)
    grad_scaler: bool  # fp16 needs loss scaling; bf16 and float32 do not
    channels_last: bool
    compile: bool
    tf32: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "amp_dtype": self.amp_dtype,
            "grad_scaler": self.grad_scaler,
            "channels_last": self.channels_last,
            "compile": self.compile,
            "tf32": self.tf32,
        }


def _native_bf16(device: torch.device) -> bool:
    """Whether the CUDA GPU ``device`` computes bfloat16 in hardware (compute capability >= 8).

    Not ``torch.cuda.is_bf16_supported()``: it is also True where bf16 is only emulated (V100,
    T4: slower than fp16) and it looks at the current device, not at ``device``.
    """
    import torch

    major, _minor = torch.cuda.get_device_capability(device)
    return major >= 8


def speed_settings(config: DIPConfig, device: torch.device) -> SpeedSettings:
    """Resolve ``amp``/``channels_last``/``compile`` of ``config`` for ``device``.

    ``"auto"`` turns mixed precision on for CUDA only, channels-last for CUDA and the CPU: on this
    project's CPU measurements (``benchmarks/bench_dip.py``) bf16 autocast makes an iteration
    slower, channels-last faster in most runs (up to 30 %). MPS keeps float32 and the default
    layout.  On CUDA, ``"auto"`` is bf16 on GPUs with native bf16 (compute capability 8.0 and
    up: A100, RTX 30xx, H100) and fp16 with a gradient scaler on older ones (V100, T4).
    """
    cuda = device.type == "cuda"
    amp = config.amp_mode
    if amp == "auto":
        amp = ("bf16" if _native_bf16(device) else "fp16") if cuda else "off"
    if amp == "fp16" and device.type == "cpu":
        raise DeviceError("amp='fp16' is not supported on the CPU; use amp='bf16' or amp=False")
    dtype = {"off": None, "bf16": "bfloat16", "fp16": "float16"}[amp]
    layout = config.layout_mode
    channels_last = layout == "on" or (layout == "auto" and device.type in ("cuda", "cpu"))
    return SpeedSettings(
        amp_dtype=dtype,
        grad_scaler=dtype == "float16" and cuda,
        channels_last=channels_last,
        compile=bool(config.compile),
        tf32=cuda,
    )


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` intra-op threads inside the block (no change when ``n`` is None), then restore."""
    import torch

    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)
