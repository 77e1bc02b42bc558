"""`tunesmith env`: the platform, torch build, accelerators and package versions, for installs and bug reports."""

from __future__ import annotations

import json
import platform
from importlib import metadata

from tunesmith import __version__
from tunesmith import device as devices

# Read with importlib.metadata: none of these is imported just to learn its version.
PACKAGES = (
    "transformers",
    "tokenizers",
    "peft",
    "trl",
    "datasets",
    "accelerate",
    "gradio",
    "bitsandbytes",
    "deepspeed",
    "hqq",
    "liger-kernel",
    "flash-attn",
)
NOT_INSTALLED = "not installed"


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return NOT_INSTALLED


def _torch_facts() -> dict:
    """torch's version and the accelerator stacks it was built for; None for those it was not."""
    try:
        import torch
    except ImportError:
        return {"version": NOT_INSTALLED, "cuda": None, "rocm": None, "npu": None, "xpu": None, "mps": False}
    npu = package_version("torch_npu")
    return {
        "version": str(torch.__version__),
        "cuda": torch.version.cuda,
        "rocm": getattr(torch.version, "hip", None),
        "npu": None if npu == NOT_INSTALLED else npu,  # torch_npu is a separate package on top of a CPU torch
        "xpu": getattr(torch.version, "xpu", None),
        "mps": bool(torch.backends.mps.is_built()),
    }


def collect() -> dict:
    """Every fact `tunesmith env` prints, as plain JSON-ready values."""
    facts = {
        "tunesmith": __version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "torch": _torch_facts(),
    }
    if facts["torch"]["version"] == NOT_INSTALLED:
        facts.update(device="cpu", bf16=False, accelerators=[])
    else:
        device = devices.detect_device()
        facts.update(device=device, bf16=devices.bf16_supported(device), accelerators=devices.accelerators(device))
    facts["accelerator_count"] = len(facts["accelerators"])
    facts["packages"] = {name: package_version(name) for name in PACKAGES}
    return facts


def _torch_line(torch: dict) -> str:
    if torch["version"] == NOT_INSTALLED:
        return NOT_INSTALLED
    builds = [
        f"{label} {torch[key]}"
        for key, label in (("cuda", "CUDA"), ("rocm", "ROCm"), ("npu", "torch_npu"), ("xpu", "XPU"))
        if torch[key]
    ]
    if torch["mps"]:
        builds.append("MPS")
    return f"{torch['version']} ({', '.join(builds) or 'CPU only'})"


def format_text(facts: dict) -> str:
    rows = [
        ("tunesmith", facts["tunesmith"]),
        ("platform", f"{facts['platform']} ({facts['machine']})"),
        ("python", facts["python"]),
        ("torch", _torch_line(facts["torch"])),
        ("device", f"{facts['device']} (bf16: {'yes' if facts['bf16'] else 'no'})"),
        ("accelerators", str(facts["accelerator_count"])),
    ]
    for accel in facts["accelerators"]:
        rows.append((f"  {facts['device']}:{accel['index']}", f"{accel['name']}, {accel['memory_gib']} GiB"))
    rows += list(facts["packages"].items())
    width = max(len(name) for name, _ in rows) + 2
    return "\n".join(f"{name:<{width}}{value}" for name, value in rows)


def run_env(as_json: bool = False) -> int:
    facts = collect()
    print(json.dumps(facts, indent=2) if as_json else format_text(facts))
    return 0
