"""Choose where the model runs (``ENABLE_CUDA``, ``CUDA_DEVICE``) and at what precision (``PRECISION``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")


class DeviceError(ValueError):
    """The requested device or precision cannot be used here; the message says what to set instead."""


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # "cpu" or "cuda:N"
    precision: str  # fp32 | fp16 | bf16

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def torch_dtype(self) -> Any:
        import torch

        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.precision]

    @property
    def torch_device(self) -> Any:
        import torch

        return torch.device(self.device)


def choose_device(enable_cuda: bool, cuda_device: int = 0, precision: str | None = None) -> DeviceChoice:
    """Pick the device and precision, refusing combinations that cannot work.

    Default precision: fp16 on CUDA, fp32 on CPU. fp16 on CPU is refused (slow and lossy in
    PyTorch's CPU kernels); bf16 on CPU is allowed.
    """
    import torch

    if precision is not None:
        precision = precision.strip().lower()
        if precision not in PRECISIONS:
            raise DeviceError(f"PRECISION must be one of {', '.join(PRECISIONS)}, not {precision!r}")

    if not enable_cuda:
        if precision == "fp16":
            raise DeviceError(
                "PRECISION=fp16 is not supported on CPU (ENABLE_CUDA is off): "
                "use PRECISION=bf16 or PRECISION=fp32, or set ENABLE_CUDA=1 on a machine with a GPU")
        return DeviceChoice(device="cpu", precision=precision or "fp32")

    if isinstance(cuda_device, bool) or not isinstance(cuda_device, int) or cuda_device < 0:
        raise DeviceError(f"CUDA_DEVICE must be a GPU index (0, 1, ...), not {cuda_device!r}")
    if not torch.cuda.is_available():
        build = "this PyTorch build has no CUDA support" if torch.version.cuda is None \
            else "no CUDA GPU is visible (check the driver and CUDA_VISIBLE_DEVICES)"
        raise DeviceError(f"ENABLE_CUDA=1 but {build}: set ENABLE_CUDA=0 to run on CPU")
    count = torch.cuda.device_count()
    if cuda_device >= count:
        raise DeviceError(
            f"CUDA_DEVICE={cuda_device} but only {count} GPU(s) are visible "
            f"(valid: {', '.join(str(i) for i in range(count))})")
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise DeviceError(
            f"PRECISION=bf16 is not supported by GPU {cuda_device} "
            f"({torch.cuda.get_device_name(cuda_device)}): use PRECISION=fp16 or PRECISION=fp32")
    return DeviceChoice(device=f"cuda:{cuda_device}", precision=precision or "fp16")
