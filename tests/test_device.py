"""Device and precision choice (ENABLE_CUDA, CUDA_DEVICE, PRECISION)."""

from __future__ import annotations

import pytest
import torch

from services.inference.device import DeviceChoice, DeviceError, choose_device


def test_cpu_defaults_to_fp32():
    choice = choose_device(enable_cuda=False)
    assert choice == DeviceChoice(device="cpu", precision="fp32")
    assert choice.torch_dtype is torch.float32 and not choice.is_cuda


def test_bf16_on_cpu_is_allowed_and_works():
    choice = choose_device(False, precision="bf16")
    assert choice.precision == "bf16" and choice.torch_dtype is torch.bfloat16
    layer = torch.nn.Linear(8, 4).to(device=choice.torch_device, dtype=choice.torch_dtype)
    out = layer(torch.ones(2, 8, dtype=choice.torch_dtype))
    assert out.dtype is torch.bfloat16 and out.shape == (2, 4)


def test_fp16_on_cpu_is_refused_with_alternatives():
    with pytest.raises(DeviceError) as info:
        choose_device(False, precision="fp16")
    message = str(info.value)
    assert "fp16" in message and "CPU" in message and "bf16" in message and "fp32" in message


@pytest.mark.parametrize("bad", ["int8", "fp64", "half-ish"])
def test_unknown_precision_refused(bad):
    with pytest.raises(DeviceError, match="PRECISION"):
        choose_device(False, precision=bad)


def test_precision_is_case_insensitive():
    assert choose_device(False, precision=" FP32 ").precision == "fp32"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_requested_without_a_gpu_is_refused_clearly():
    with pytest.raises(DeviceError) as info:
        choose_device(enable_cuda=True)
    assert "ENABLE_CUDA" in str(info.value) and "ENABLE_CUDA=0" in str(info.value)


class FakeGpus:
    """Pretends ``count`` GPUs are visible, so the CUDA branches are checked on a CPU-only machine."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, count: int, bf16: bool = True) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Old GPU")


def test_cuda_defaults_to_fp16(monkeypatch):
    FakeGpus(monkeypatch, 2)
    choice = choose_device(True)
    assert choice == DeviceChoice(device="cuda:0", precision="fp16")
    assert choice.is_cuda and choice.torch_dtype is torch.float16
    assert choose_device(True, cuda_device=1, precision="fp32") == DeviceChoice("cuda:1", "fp32")


def test_cuda_device_index_checked(monkeypatch):
    FakeGpus(monkeypatch, 2)
    with pytest.raises(DeviceError, match=r"CUDA_DEVICE=2 but only 2 GPU\(s\).*0, 1"):
        choose_device(True, cuda_device=2)
    with pytest.raises(DeviceError, match="CUDA_DEVICE"):
        choose_device(True, cuda_device=-1)


def test_bf16_on_a_gpu_without_it_is_refused(monkeypatch):
    FakeGpus(monkeypatch, 1, bf16=False)
    with pytest.raises(DeviceError, match="bf16.*Old GPU.*fp16"):
        choose_device(True, precision="bf16")
    FakeGpus(monkeypatch, 1, bf16=True)
    assert choose_device(True, precision="bf16").precision == "bf16"


def test_no_visible_gpu_refused(monkeypatch):
    FakeGpus(monkeypatch, 0)
    with pytest.raises(DeviceError, match="ENABLE_CUDA=1 but"):
        choose_device(True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_real_gpu_runs_at_the_chosen_precision():
    choice = choose_device(True, cuda_device=0)
    layer = torch.nn.Linear(8, 4).to(device=choice.torch_device, dtype=choice.torch_dtype)
    out = layer(torch.ones(2, 8, device=choice.torch_device, dtype=choice.torch_dtype))
    assert out.device.type == "cuda" and out.dtype is torch.float16
