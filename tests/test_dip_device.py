"""Device choice and the speed settings each device gets."""

from __future__ import annotations

import pytest

from dippas_core.config import DIPConfig
from dippas_core.errors import DeviceError

torch = pytest.importorskip("torch")

from dippas_core.dip.device import (  # noqa: E402
    describe_devices,
    resolve_device,
    speed_settings,
    torch_threads,
)


def _expected_auto() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    assert resolve_device("auto").type == _expected_auto()
    assert resolve_device(None).type == _expected_auto()
    # pretend: no CUDA, MPS present -> mps; neither -> cpu
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_device("auto") == torch.device("cuda", 0)


def test_cpu_is_always_there():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_missing_gpu_is_a_clear_error():
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(DeviceError) as info:
        resolve_device(f"cuda:{n}")
    message = str(info.value)
    assert f"cuda:{n}" in message and "cpu" in message  # names what was asked and what exists
    if not torch.backends.mps.is_available():
        with pytest.raises(DeviceError, match="MPS"):
            resolve_device("mps")


@pytest.mark.parametrize("spec", ["gpu7", "cuda:x", "xla"])
def test_nonsense_device_names(spec):
    with pytest.raises(DeviceError, match="available"):
        resolve_device(spec)


def test_describe_devices_lists_auto_first():
    lines = describe_devices()
    assert lines[0].endswith("[auto]")
    assert any(line.startswith("cpu") for line in lines)


def test_speed_settings_on_cpu():
    cpu = torch.device("cpu")
    auto = speed_settings(DIPConfig(), cpu)  # amp=True, channels_last=True mean "where it helps"
    assert (auto.amp_dtype, auto.channels_last, auto.grad_scaler, auto.tf32) == (
        None, True, False, False)
    off = speed_settings(DIPConfig(channels_last=False), cpu)
    assert not off.channels_last
    mps = speed_settings(DIPConfig(), torch.device("mps"))
    assert (mps.amp_dtype, mps.channels_last) == (None, False)
    forced = speed_settings(DIPConfig(amp="bf16", channels_last="on", compile=True), cpu)
    assert (forced.amp_dtype, forced.channels_last, forced.compile) == ("bfloat16", True, True)
    with pytest.raises(DeviceError, match="fp16"):
        speed_settings(DIPConfig(amp="fp16"), cpu)


@pytest.mark.parametrize(
    "capability, dtype, scaler",
    [
        ((9, 0), "bfloat16", False),  # H100
        ((8, 0), "bfloat16", False),  # A100
        ((7, 5), "float16", True),  # T4: bf16 only emulated
        ((7, 0), "float16", True),  # V100
    ],
)
def test_speed_settings_on_cuda(monkeypatch, capability, dtype, scaler):
    asked = []

    def get_capability(device=None):
        asked.append(device)
        return capability

    monkeypatch.setattr(torch.cuda, "get_device_capability", get_capability)
    # says True on V100/T4 (emulation) and looks at the current device: it must not decide
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    chosen = torch.device("cuda", 1)
    s = speed_settings(DIPConfig(), chosen)
    assert (s.amp_dtype, s.grad_scaler, s.channels_last, s.tf32) == (dtype, scaler, True, True)
    assert asked == [chosen]  # the chosen GPU, not the current one
    off = speed_settings(DIPConfig(amp=False, channels_last=False), chosen)
    assert (off.amp_dtype, off.channels_last) == (None, False)
    forced = speed_settings(DIPConfig(amp="fp16"), chosen)
    assert (forced.amp_dtype, forced.grad_scaler) == ("float16", True)


def test_mixed_gpus_each_get_their_own_precision(monkeypatch):
    """An A100 beside a V100: each device is judged on its own capability."""
    caps = {0: (7, 0), 1: (8, 0)}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: caps[d.index])
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert speed_settings(DIPConfig(), torch.device("cuda", 0)).amp_dtype == "float16"
    assert speed_settings(DIPConfig(), torch.device("cuda", 1)).amp_dtype == "bfloat16"


def test_torch_threads_context():
    before = torch.get_num_threads()
    with torch_threads(None):
        assert torch.get_num_threads() == before
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
