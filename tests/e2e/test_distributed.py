"""`tunesmith train --nproc-per-node 2` relaunches itself under torchrun: DDP and DeepSpeed ZeRO-2/3 on CPU (gloo),
and Ray with 2 workers, give the losses of one process with the same global batch."""

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


@pytest.fixture(scope="module")
def one_process_losses(tiny_model_dir, tmp_path_factory) -> list[float]:
    """The reference every engine is held to: one process, per-device batch 8 (run once for the whole module)."""
    tmp_path = tmp_path_factory.mktemp("one-process")
    assert main(["train", *common_args(tmp_path, tiny_model_dir), f"output_dir={tmp_path / 'one'}",
                 "per_device_train_batch_size=8"]) == 0
    return losses(tmp_path / "one")


def assert_encoded_once(stderr: str) -> None:
    """With tokenized_path set, the main process encodes and saves while the others wait, then they load its copy."""
    assert stderr.count("encoded data saved to tokenized_path") == 1
    assert stderr.count("loading encoded data from tokenized_path") == 1


@pytest.mark.distributed
def test_ddp_two_processes_match_one_process_with_the_same_global_batch(tiny_model_dir, tmp_path, capfd,
                                                                      one_process_losses):
    common = common_args(tmp_path, tiny_model_dir)
    assert main(["train", *common, f"output_dir={tmp_path / 'two'}", "per_device_train_batch_size=4",
                 f"tokenized_path={tmp_path / 'encoded'}", "--nproc-per-node", "2",
                 "--master-port", str(free_port())]) == 0
    assert losses(tmp_path / "two") == pytest.approx(one_process_losses, rel=1e-4)
    assert_encoded_once(capfd.readouterr().err)
    # rank 0 alone writes the outputs, and writes them once
    assert (tmp_path / "two" / "model.safetensors").is_file()
    lines = (tmp_path / "two" / "trainer_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]


@pytest.mark.distributed
@pytest.mark.parametrize("stage", ["z2", "z3"])
def test_deepspeed_zero_two_processes_match_one_process_and_save_a_loadable_model(tiny_model_dir, tmp_path, capfd,
                                                                                  one_process_losses, stage):
    pytest.importorskip("deepspeed")
    from transformers import AutoModelForCausalLM

    repo = Path(__file__).resolve().parents[2]
    config = repo / "examples" / "deepspeed" / f"ds_{stage}_config.json"
    out = tmp_path / stage
    assert main(["train", *common_args(tmp_path, tiny_model_dir), f"output_dir={out}", f"deepspeed={config}",
                 "per_device_train_batch_size=4", f"tokenized_path={tmp_path / 'encoded'}", "--nproc-per-node", "2",
                 "--master-port", str(free_port())]) == 0
    assert losses(out) == pytest.approx(one_process_losses, rel=1e-4)
    assert_encoded_once(capfd.readouterr().err)
    lines = (out / "trainer_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]  # rank 0 alone logs
    model = AutoModelForCausalLM.from_pretrained(out)  # ZeRO-3 gathers 16-bit weights on save
    assert model.get_input_embeddings().weight.shape[0] >= 1024


@pytest.mark.distributed
def test_ray_two_workers_match_one_process(tiny_model_dir, tmp_path, one_process_losses, monkeypatch):
    pytest.importorskip("ray")
    common = common_args(tmp_path, tiny_model_dir)
    monkeypatch.chdir(tmp_path)  # relative paths mean the driver's folder in the workers too
    assert main(["train", *common, "output_dir=ray", "per_device_train_batch_size=4",
                 "use_ray=true", "ray_num_workers=2", "ray_storage_path=ray-runs"]) == 0
    assert losses(tmp_path / "ray") == pytest.approx(one_process_losses, rel=1e-4)
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


@pytest.mark.distributed
def test_a_mistake_found_by_the_workers_is_shown_once_without_torchrun_banner(tiny_model_dir, tmp_path, capfd):
    common = common_args(tmp_path, tiny_model_dir)
    code = main(["train", *common, "dataset=no_such_dataset", f"output_dir={tmp_path / 'bad'}", "--nproc-per-node",
                 "2", "--master-port", str(free_port())])
    err = capfd.readouterr().err
    assert code == 2
    assert err.count("tunesmith: error: dataset 'no_such_dataset' is not registered") == 1
    assert "ChildFailedError" not in err and "Traceback" not in err and "failed (exitcode" not in err


def test_fsdp_without_several_processes_says_how_to_launch(tiny_model_dir, tmp_path, capsys):
    code = main(["train", *common_args(tmp_path, tiny_model_dir), "fsdp=full_shard", f"output_dir={tmp_path / 'f'}"])
    assert code == 2 and "`fsdp` shards the model over several processes: add --nproc-per-node N" in \
        capsys.readouterr().err


def test_ray_asking_for_more_cpus_than_the_machine_has_stops_at_once(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import os

    pytest.importorskip("ray")
    monkeypatch.setenv("USE_RAY", "1")  # LLaMA-Factory's switch, honoured as use_ray: true
    workers = (os.cpu_count() or 1) + 1
    code = main(["train", *common_args(tmp_path, tiny_model_dir), f"ray_num_workers={workers}",
                 f"output_dir={tmp_path / 'r'}"])
    assert code == 2 and f"ray_num_workers: {workers} x resources_per_worker CPU: 1 needs {workers} CPUs" in \
        capsys.readouterr().err
