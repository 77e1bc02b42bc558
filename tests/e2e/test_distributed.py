"""`tunesmith train --nproc-per-node 2` relaunches itself under torchrun: DDP on CPU (gloo) equals one process."""

import json
import socket
from pathlib import Path

import pytest

from tunesmith.cli import main

DEMO_DATA = Path(__file__).resolve().parents[2] / "src" / "tunesmith" / "demo_data"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def losses(out: Path) -> list[float]:
    state = json.loads((out / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def common_args(tmp_path: Path, model_dir) -> list[str]:
    """The same tiny full fine-tune for every engine: 8 examples, 3 steps, one global batch per step."""
    (tmp_path / "c.yaml").write_text("stage: sft\n")
    return [str(tmp_path / "c.yaml"), f"model_name_or_path={model_dir}", "dataset=tunesmith_identity",
            f"dataset_dir={DEMO_DATA}", "template=chatml", "max_samples=8", "max_steps=3", "learning_rate=1e-2",
            "report_to=none", "save_strategy=no", "logging_steps=1", "finetuning_type=full", "seed=3"]


@pytest.mark.distributed
def test_ddp_two_processes_match_one_process_with_the_same_global_batch(tiny_model_dir, tmp_path):
    common = common_args(tmp_path, tiny_model_dir)
    assert main(["train", *common, f"output_dir={tmp_path / 'one'}", "per_device_train_batch_size=8"]) == 0
    assert main(["train", *common, f"output_dir={tmp_path / 'two'}", "per_device_train_batch_size=4",
                 "--nproc-per-node", "2", "--master-port", str(free_port())]) == 0
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-4)
    # rank 0 alone writes the outputs, and writes them once
    assert (tmp_path / "two" / "model.safetensors").is_file()
    lines = (tmp_path / "two" / "trainer_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]


@pytest.mark.distributed
@pytest.mark.parametrize("stage", ["z2", "z3"])
def test_deepspeed_zero_matches_plain_training_and_saves_a_loadable_model(tiny_model_dir, tmp_path, stage):
    pytest.importorskip("deepspeed")
    from transformers import AutoModelForCausalLM

    repo = Path(__file__).resolve().parents[2]
    common = [*common_args(tmp_path, tiny_model_dir), "per_device_train_batch_size=8"]
    assert main(["train", *common, f"output_dir={tmp_path / 'plain'}"]) == 0
    config = repo / "examples" / "deepspeed" / f"ds_{stage}_config.json"
    assert main(["train", *common, f"output_dir={tmp_path / stage}", f"deepspeed={config}",
                 "--master-port", str(free_port())]) == 0
    assert losses(tmp_path / stage) == pytest.approx(losses(tmp_path / "plain"), rel=1e-4)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / stage)  # ZeRO-3 gathers 16-bit weights on save
    assert model.get_input_embeddings().weight.shape[0] >= 1024


@pytest.mark.distributed
def test_ray_two_workers_match_one_process(tiny_model_dir, tmp_path):
    pytest.importorskip("ray")
    common = common_args(tmp_path, tiny_model_dir)
    assert main(["train", *common, f"output_dir={tmp_path / 'one'}", "per_device_train_batch_size=8"]) == 0
    assert main(["train", *common, f"output_dir={tmp_path / 'ray'}", "per_device_train_batch_size=4",
                 "ray_num_workers=2", f"ray_storage_path={tmp_path / 'ray-runs'}"]) == 0
    assert losses(tmp_path / "ray") == pytest.approx(losses(tmp_path / "one"), rel=1e-4)
    assert (tmp_path / "ray" / "model.safetensors").is_file()


@pytest.mark.gpu
@pytest.mark.distributed
def test_fsdp_on_two_gpus_trains_the_shipped_example(tiny_model_dir, tmp_path):
    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA GPUs")
    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "fsdp"
    assert main(["train", str(repo / "examples" / "accelerate" / "train_fsdp.yaml"),
                 f"model_name_or_path={tiny_model_dir}", f"dataset_dir={DEMO_DATA}", f"output_dir={out}",
                 "max_steps=2", "--nproc-per-node", "2", "--master-port", str(free_port())]) == 0
    assert (out / "model.safetensors").is_file()
