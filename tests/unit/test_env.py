"""`tunesmith env` and the device helpers, on a CPU-only machine."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch

from tunesmith import __version__, device
from tunesmith.cli import main
from tunesmith.env import PACKAGES, package_version

SRC = Path(__file__).resolve().parents[2] / "src"

HAS_ACCELERATOR = (
    torch.cuda.is_available()
    or torch.backends.mps.is_available()
    or (hasattr(torch, "xpu") and torch.xpu.is_available())
    or importlib.util.find_spec("torch_npu") is not None
)
cpu_only = pytest.mark.skipif(HAS_ACCELERATOR, reason="this machine has an accelerator")


def env_json(capsys) -> dict:
    assert main(["env", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@cpu_only
def test_json_reports_this_cpu_machine(capsys):
    facts = env_json(capsys)
    assert facts["tunesmith"] == __version__
    assert facts["torch"]["version"] == torch.__version__
    assert facts["torch"]["cuda"] == torch.version.cuda
    assert facts["device"] == "cpu"
    assert facts["accelerator_count"] == 0 and facts["accelerators"] == []
    assert facts["bf16"] is False
    assert facts["python"].startswith(f"{sys.version_info.major}.{sys.version_info.minor}.")
    assert list(facts["packages"]) == list(PACKAGES)
    assert {"transformers", "peft", "trl", "datasets", "accelerate", "gradio", "bitsandbytes", "deepspeed"} <= set(
        PACKAGES
    )
    assert facts["packages"]["transformers"] == metadata.version("transformers")
    assert facts["packages"]["peft"] == metadata.version("peft")


@cpu_only
def test_text_output(capsys):
    assert main(["env"]) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert lines["torch"].startswith(torch.__version__)
    assert lines["device"] == "cpu (bf16: no)"
    assert lines["accelerators"] == "0"
    assert lines["transformers"] == metadata.version("transformers")


def test_missing_package_reads_not_installed():
    assert package_version("surely-not-an-installed-package") == "not installed"


@cpu_only
def test_device_helpers_on_cpu():
    assert device.detect_device() == "cpu"
    assert device.is_available("cpu") and not device.is_available("cuda")
    assert device.device_count() == 0 and device.device_count("cuda") == 0
    assert device.bf16_supported() is False
    assert device.accelerators() == []
    with pytest.raises(ValueError, match="unknown device"):
        device.is_available("tpu")


def test_help_and_env_parsing_do_not_import_torch():
    code = (
        "import sys; from tunesmith.cli import build_parser; "
        "args = build_parser().parse_args(['env', '--json']); assert args.json; "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        env={"PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
