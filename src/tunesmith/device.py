"""Which accelerator tunesmith runs on (cuda, npu, xpu, mps or cpu): the one place that decides it."""

from __future__ import annotations

import importlib.util

# In the order they are preferred when several are present. ROCm builds of torch report AMD GPUs as "cuda" (HIP).
DEVICES = ("cuda", "npu", "xpu", "mps", "cpu")


def _torch():
    import torch

    return torch


def _npu_available() -> bool:
    """Ascend NPUs appear as torch.npu only once torch_npu is imported; it is looked up first so that
    machines without it never pay for (or see warnings from) the import."""
    if importlib.util.find_spec("torch_npu") is None:
        return False
    try:
        import torch_npu  # noqa: F401  (registers torch.npu)
    except (ImportError, OSError, RuntimeError):  # installed, but the CANN libraries or the driver are missing
        return False
    npu = getattr(_torch(), "npu", None)
    return bool(npu is not None and npu.is_available())


def is_available(device: str) -> bool:
    """Whether this machine can run on `device` (one of DEVICES)."""
    torch = _torch()
    if device == "cuda":
        return torch.cuda.is_available()
    if device == "npu":
        return _npu_available()
    if device == "xpu":
        return hasattr(torch, "xpu") and torch.xpu.is_available()
    if device == "mps":
        return torch.backends.mps.is_available()
    if device == "cpu":
        return True
    raise ValueError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")


def detect_device() -> str:
    """The device training and inference use: the first of cuda, npu, xpu, mps that is present, else cpu."""
    return next(device for device in DEVICES if is_available(device))


def device_count(device: str | None = None) -> int:
    """How many accelerators of `device` (default: the detected one) are visible; 0 on cpu."""
    device = device or detect_device()
    if device == "cpu" or not is_available(device):
        return 0
    if device == "mps":
        return 1
    return getattr(_torch(), device).device_count()


def bf16_supported(device: str | None = None) -> bool:
    """Whether `device` (default: the detected one) runs bfloat16 natively. False on cpu, where float32 is
    the fast choice for training."""
    device = device or detect_device()
    if device == "cpu" or not is_available(device):
        return False
    torch = _torch()
    if device == "mps":
        try:  # bf16 on MPS depends on the macOS version; asking the backend is the reliable test
            torch.ones(1, dtype=torch.bfloat16, device="mps")
        except (RuntimeError, TypeError):
            return False
        return True
    module = getattr(torch, device)
    check = getattr(module, "is_bf16_supported", None)
    return bool(check()) if check is not None else False


def accelerators(device: str | None = None) -> list[dict]:
    """Name and memory (GiB) of each visible accelerator of `device` (default: the detected one)."""
    device = device or detect_device()
    count = device_count(device)
    if count == 0:
        return []
    torch = _torch()
    if device == "mps":
        memory = torch.mps.recommended_max_memory() if hasattr(torch.mps, "recommended_max_memory") else 0
        return [{"index": 0, "name": "Apple MPS", "memory_gib": round(memory / 2**30, 1)}]
    found = []
    for index in range(count):
        props = getattr(torch, device).get_device_properties(index)
        memory = getattr(props, "total_memory", 0)
        found.append({"index": index, "name": str(props.name), "memory_gib": round(memory / 2**30, 1)})
    return found
