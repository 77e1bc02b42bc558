"""Resume is exact and idempotent: a finished run resumed changes nothing, a checkpoint at the last step only gets
its final save, damaged checkpoints are skipped, and kill -9 at random points of a real run, resumed, ends in the
weights and per-step losses of the uninterrupted run, each step logged once.

Runs go through killpoint.py, a fork server that runs the CLI in child processes and SIGKILLs one at an exact
point (see its docstring), so a run costs seconds rather than the imports."""

import hashlib
import json
import os
import random
import select
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import tunesmith
from tunesmith.cli import main
from tunesmith.train.checkpoints import checkpoint_problem

DEMO_DATA = Path(tunesmith.__file__).resolve().parent / "demo_data"
KILLPOINT = Path(__file__).resolve().parent / "killpoint.py"
STEPS = 12  # 10 steps an epoch: the run crosses an epoch boundary
RUN_ARGS = ["dataset=tunesmith_identity,tunesmith_skills", f"dataset_dir={DEMO_DATA}", "template=chatml",
            "cutoff_len=64", f"max_steps={STEPS}", "per_device_train_batch_size=2", "learning_rate=1e-3",
            "lora_dropout=0.1", "logging_steps=1", "save_strategy=steps", "save_steps=3", "save_total_limit=2",
            "report_to=none", "seed=7"]


class Runner:
    """The killpoint.py server: run(out, kill=label) runs `tunesmith train` on out in a child process."""

    def __init__(self, model_dir: Path, work: Path):
        self.model_dir, self.work, self.count = model_dir, work, 0
        (work / "c.yaml").write_text("stage: sft\n")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(tunesmith.__file__).parents[1]),
                                                            os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen([sys.executable, str(KILLPOINT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)

    def run(self, out: Path, *overrides: str, kill: str | None = None) -> tuple[int, list[str], str]:
        """(exit code, -9 when killed; the run's event labels; its log)."""
        self.count += 1
        events, log = self.work / f"events-{self.count}", self.work / f"log-{self.count}"
        argv = ["train", str(self.work / "c.yaml"), f"model_name_or_path={self.model_dir}", f"output_dir={out}",
                *RUN_ARGS, *overrides]
        request = {"argv": argv, "out": str(out), "events": str(events), "log": str(log), "kill": kill}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], 600)  # a safety net only
        assert ready, f"run {self.count} did not answer within 10 minutes; its log: {log}"
        answer = self.proc.stdout.readline()
        assert answer, f"the killpoint server died; last log: {log}"
        labels = events.read_text().splitlines() if events.exists() else []
        return json.loads(answer)["returncode"], labels, log.read_text(errors="replace")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def runner(tiny_model_dir, tmp_path_factory):
    if not hasattr(os, "fork"):
        pytest.skip("killpoint.py forks its runs (POSIX only)")
    server = Runner(tiny_model_dir, tmp_path_factory.mktemp("killpoint"))
    yield server
    server.close()


@pytest.fixture(scope="module")
def reference(runner, tmp_path_factory) -> tuple[Path, list[str]]:
    """The uninterrupted run (output folder, and the labels of its events in order)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    code, labels, log = runner.run(out)
    assert code == 0, log
    return out, labels


def copy_run(reference, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    return out


def hashes(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def logged(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]


def step_losses(out: Path) -> list[tuple[int, float]]:
    return [(record["step"], record["loss"]) for record in logged(out) if "loss" in record]


def results(out: Path) -> dict:
    return json.loads((out / "all_results.json").read_text())


def assert_same_as_reference(out: Path, reference) -> None:
    """Equal final weights (exactly: CPU training with one seed is deterministic) and per-step losses; each step
    logged once; no step past max_steps; every checkpoint left is intact."""
    expected = load_file(reference[0] / "adapter_model.safetensors")
    resumed = load_file(out / "adapter_model.safetensors")
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[name], resumed[name]) for name in expected)
    assert [record["step"] for record in logged(out)] == list(range(1, STEPS + 1))
    assert step_losses(out) == step_losses(reference[0])
    assert results(out)["train_loss"] == pytest.approx(results(reference[0])["train_loss"], rel=1e-9)
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == STEPS
    assert not (out / f"checkpoint-{STEPS + 1}").exists()
    assert not (out / ".staging-final").exists()
    assert (out / f"checkpoint-{STEPS}").is_dir()
    assert all(checkpoint_problem(folder) == "" for folder in out.glob("checkpoint-*"))


def remove_final_save(out: Path) -> None:
    """What a kill before or during the final save leaves: the checkpoints, without the final files."""
    for name in ("all_results.json", "trainer_state.json", "adapter_model.safetensors", "adapter_config.json"):
        (out / name).unlink()


def test_resuming_a_finished_run_changes_nothing(runner, reference, tmp_path):
    out = copy_run(reference, tmp_path)
    before = hashes(out)
    code, _, log = runner.run(out, "resume_from_checkpoint=true")
    assert code == 0, log
    assert "already holds the finished run (step 12): nothing to train, nothing written" in log
    assert hashes(out) == before


def test_a_finished_run_resumed_with_more_steps_trains_them(runner, reference, tmp_path):
    out = copy_run(reference, tmp_path)
    code, _, log = runner.run(out, "resume_from_checkpoint=true", f"max_steps={STEPS + 3}")
    assert code == 0, log
    assert f"resuming from {out / 'checkpoint-12'} (step 12 of 15)" in log
    assert [record["step"] for record in logged(out)] == list(range(1, STEPS + 4))
    assert step_losses(out)[:STEPS] == step_losses(reference[0])
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == STEPS + 3
    assert results(out)["resumed_from_checkpoint"] == "checkpoint-12"


def test_a_checkpoint_at_the_last_step_only_gets_its_final_save(runner, reference, tmp_path):
    out = copy_run(reference, tmp_path)
    remove_final_save(out)
    code, labels, log = runner.run(out, "resume_from_checkpoint=true")
    assert code == 0, log
    assert "checkpoint-12 is at the last step (12 of 12): no step left to train" in log
    assert not any(label.startswith("step:") for label in labels)  # not one step trained
    assert not any(label.startswith("save:checkpoint-") for label in labels)  # no checkpoint written
    checkpoint = load_file(out / "checkpoint-12" / "adapter_model.safetensors")
    final = load_file(out / "adapter_model.safetensors")
    assert all(torch.equal(checkpoint[name], final[name]) for name in checkpoint)
    assert_same_as_reference(out, reference)
    assert results(out)["resumed_from_checkpoint"] == "checkpoint-12"


@pytest.mark.parametrize("damaged, problem", [
    ("trainer_state.json", "trainer_state.json is not valid JSON"),
    ("adapter_model.safetensors", "adapter_model.safetensors cannot be opened"),
])
def test_a_damaged_newest_checkpoint_is_skipped_for_the_previous_intact_one(runner, reference, tmp_path, damaged,
                                                                            problem):
    out = copy_run(reference, tmp_path)
    remove_final_save(out)  # the run was killed while it wrote its last checkpoint
    path = out / "checkpoint-12" / damaged
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    code, _, log = runner.run(out, "resume_from_checkpoint=true")
    assert code == 0, log
    assert f"skipping damaged checkpoint {out / 'checkpoint-12'}: {problem}" in log
    assert f"resuming from {out / 'checkpoint-9'} (step 9 of 12)" in log
    assert_same_as_reference(out, reference)
    assert results(out)["resumed_from_checkpoint"] == "checkpoint-9"


def test_no_resumable_checkpoint_is_a_message_naming_each(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "run"
    for step in (3, 6):  # 3: killed before its trainer_state.json; 6: with an empty adapter
        folder = out / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(b"")
    (out / "checkpoint-6" / "trainer_state.json").write_text(json.dumps({"global_step": 6}))
    (out / "tunesmith_config.yaml").write_text("stage: sft\n")  # a run: yet checkpoint-6 got its trainer state
    (tmp_path / "c.yaml").write_text("stage: sft\n")
    argv = ["train", str(tmp_path / "c.yaml"), f"model_name_or_path={tiny_model_dir}", f"output_dir={out}",
            *RUN_ARGS]
    assert main([*argv, "resume_from_checkpoint=true"]) == 2
    error = capsys.readouterr().err
    assert f"no checkpoint in {out} can be resumed" in error
    assert "checkpoint-3: trainer_state.json is missing" in error
    assert "checkpoint-6: adapter_model.safetensors cannot be opened" in error
    assert "Traceback" not in error
    assert main([*argv, f"resume_from_checkpoint={out / 'checkpoint-6'}"]) == 2
    assert "checkpoint-6 cannot be resumed: adapter_model.safetensors cannot be opened" in capsys.readouterr().err


def kill_points(labels: list[str], seed: int) -> list[str]:
    """Three events of the uninterrupted run, in order, from a seeded RNG: two anywhere from the first step to the
    last checkpoint, one in the final save. Only labels that occur once, and would occur again in a resumed run
    (save_total_limit's deletions depend on which checkpoints a resumed run finds), qualify."""
    last_checkpoint = labels.index(f"open:checkpoint-{STEPS}/trainer_state.json")
    once = [index for index, label in enumerate(labels) if labels.count(label) == 1 and not label.startswith("rmtree")]
    training = [index for index in once if labels.index("step:1") <= index <= last_checkpoint]
    final = [index for index in once if index > last_checkpoint]
    rng = random.Random(seed)
    return [labels[index] for index in [*sorted(rng.sample(training, 2)), rng.choice(final)]]


# Any seed passes (1 to 12 were run); these three make chains that cover a kill before the first checkpoint (the
# run starts over), kills mid-step and in half-written checkpoints (fallback), and kills during the final save.
@pytest.mark.parametrize("seed", [1, 3, 11])
def test_kill_9_at_random_points_then_resume_gives_the_uninterrupted_run(runner, reference, tmp_path, seed):
    out = tmp_path / "run"
    points = kill_points(reference[1], seed)
    for number, point in enumerate(points):
        resume = ["resume_from_checkpoint=true"] if number else []
        code, labels, log = runner.run(out, *resume, kill=point)
        assert code == -9 and labels[-1] == point, f"run {number + 1} was to be killed at {point}: {log}"
    code, _, log = runner.run(out, "resume_from_checkpoint=true")
    assert code == 0, f"killed at {points}, the last resume failed: {log}"
    assert_same_as_reference(out, reference)
