"""Every YAML in examples/ trains through the CLI (a couple of steps on the tiny model)."""

from pathlib import Path

import pytest

from tunesmith.cli import main
from tunesmith.config.load import load_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in (REPO / "examples").glob("*.yaml")  # eval: test_eval.py; VL: test_vl_train.py;
                  if not p.stem.startswith(("eval", "train_vl", "train_audio", "train_omni")))  # audio: test_audio_train.py;
# omni: test_omni.py


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_trains(path, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    overrides = [f"model_name_or_path={tiny_model_dir}", f"output_dir={out}", "max_steps=2", "save_steps=1000",
                 f"dataset_dir={REPO / 'src' / 'tunesmith' / 'demo_data'}"]
    config = load_config(path)
    if config.method.stage == "ppo":  # its reward model is what examples/train_rm.yaml writes
        rm = tmp_path / "rm"
        assert main(["train", str(REPO / "examples" / "train_rm.yaml"), *overrides[:1], f"output_dir={rm}",
                     *overrides[2:]]) == 0
        overrides.append(f"reward_model={rm}")
    assert main(["train", str(path), *overrides]) == 0
    assert (out / "all_results.json").is_file()
    method = config.method.finetuning_type
    assert (out / ("adapter_model.safetensors" if method == "lora" else "model.safetensors")).is_file()


def test_tiny_command_builds_a_model(tmp_path, capsys):
    assert main(["tiny", str(tmp_path / "m"), "--arch", "qwen2"]) == 0
    assert (tmp_path / "m" / "model.safetensors").is_file()
    assert main(["tiny", str(tmp_path / "m")]) == 2
    assert "already" in capsys.readouterr().err
