"""What a training run prints: the run's own lines, not the libraries' notices about features it does not use."""

import subprocess
import sys
from pathlib import Path

DEMO_DATA = Path(__file__).resolve().parents[2] / "src" / "tunesmith" / "demo_data"
NOISE = ("Failed to load CPU gemm_4bit_forward", "Setting accelerator to CPU")


def test_a_plain_run_prints_no_library_noise(tiny_model_dir, tmp_path):
    (tmp_path / "run.yaml").write_text("stage: sft\n")
    args = ["train", "run.yaml", f"model_name_or_path={tiny_model_dir}", "dataset=tunesmith_identity", f"dataset_dir={DEMO_DATA}",
            "template=chatml", "max_samples=4", "max_steps=1", "report_to=none", "save_strategy=no",
            "output_dir=out"]
    run = subprocess.run([sys.executable, "-m", "tunesmith", *args], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert not [word for word in NOISE if word in run.stdout + run.stderr]
    assert (tmp_path / "out" / "all_results.json").is_file()


def test_verbose_keeps_the_notices_that_are_dropped_by_default():
    code = ("import logging, sys\nfrom tunesmith.cli import main\nmain(sys.argv[1:] + ['config', 'keys'])\n"
            "logging.getLogger('bitsandbytes.backends.cpu.ops').warning('Failed to load CPU gemm_4bit_forward: x')")
    quiet, verbose = (subprocess.run([sys.executable, "-c", code, *flags], capture_output=True, text=True,
                                     timeout=120, check=False) for flags in ([], ["--verbose"]))
    assert "gemm_4bit_forward" not in quiet.stderr
    assert "Failed to load CPU gemm_4bit_forward: x" in verbose.stderr
