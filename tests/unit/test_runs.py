"""`tunesmith runs`: real tiny runs (finished, killed with kill -9, failed) listed with status, steps, losses, time and
size; the interrupted one resumed with the command the table prints."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tunesmith
from tunesmith import runs
from tunesmith.cli import main
from tunesmith.errors import ConfigError
from tunesmith.train import outputs

DEMO_DATA = Path(tunesmith.__file__).resolve().parent / "demo_data"
KILLPOINT = Path(__file__).resolve().parents[1] / "reliability" / "killpoint.py"
RUN_ARGS = ["dataset=tunesmith_identity", f"dataset_dir={DEMO_DATA}", "template=chatml", "cutoff_len=64",
            "max_steps=4", "per_device_train_batch_size=2", "learning_rate=1e-3", "logging_steps=1",
            "save_strategy=steps", "save_steps=2", "report_to=none", "seed=7"]


def argv(model_dir: Path, out: Path) -> list[str]:
    config = out.parent / "c.yaml"
    config.write_text("stage: sft\n")
    return ["train", str(config), f"model_name_or_path={model_dir}", f"output_dir={out}", *RUN_ARGS]


def killed_run(model_dir: Path, out: Path, kill: str) -> None:
    """A run SIGKILLed at `kill` (a killpoint.py event label), in a child process of the killpoint server."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(tunesmith.__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    request = {"argv": argv(model_dir, out), "out": str(out), "events": str(out.parent / "events"),
               "log": str(out.parent / "killed.log"), "kill": kill}
    done = subprocess.run([sys.executable, str(KILLPOINT)], input=json.dumps(request) + "\n", text=True,
                          capture_output=True, env=env, timeout=600, check=True)
    assert json.loads(done.stdout)["returncode"] == -9, (out.parent / "killed.log").read_text()


@pytest.fixture(scope="module")
def root(tiny_model_dir, tmp_path_factory) -> Path:
    """saves/done (finished), saves/killed (kill -9 before step 4: checkpoint-2 intact), saves/broken (the final
    save failed: disk full)."""
    if not hasattr(os, "fork"):
        pytest.skip("killpoint.py forks its runs (POSIX only)")
    root = tmp_path_factory.mktemp("workspace")
    saves = root / "saves"
    saves.mkdir()
    assert main(argv(tiny_model_dir, saves / "done")) == 0

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(outputs, "save_final", disk_full)
        with pytest.raises(OSError, match="No space left"):
            main(argv(tiny_model_dir, saves / "broken"))
    killed_run(tiny_model_dir, saves / "killed", kill="step:4")
    return root


def by_name(root: Path) -> dict[str, runs.Run]:
    return {run.name: run for run in runs.scan(root)}


def test_each_run_has_its_status_steps_losses_and_size(root):
    found = by_name(root)
    assert set(found) == {"saves/done", "saves/killed", "saves/broken"}
    done, killed, broken = found["saves/done"], found["saves/killed"], found["saves/broken"]
    logged = [loss for _, loss in runs.losses(done.path)]
    assert len(logged) == 4
    assert (done.status, done.step, done.total_steps, done.stage, done.method) == ("finished", 4, 4, "sft", "lora")
    assert done.last_loss == logged[-1] and done.best_loss == min(logged)
    assert done.duration > 0 and done.checkpoint is None and done.error == ""
    assert done.size == sum(path.stat().st_size for path in done.path.rglob("*") if path.is_file())
    assert (killed.status, killed.step, killed.total_steps, killed.checkpoint) == ("interrupted", 3, 4, "checkpoint-2")
    assert killed.resumable and broken.resumable and not done.resumable  # a failed run may be retried
    assert runs.losses(killed.path) == runs.losses(done.path)[:3]  # the same seed
    assert broken.status == "failed" and broken.error == "OSError: [Errno 28] No space left on device"
    assert broken.step == 4 and broken.checkpoint == "checkpoint-4"


def test_a_run_is_running_while_its_process_lives(root, tmp_path):
    import shutil

    from tunesmith.train import run_status

    out = shutil.copytree(root / "saves" / "killed", tmp_path / "live")
    record = run_status.read(out)
    assert record["status"] == "running"  # what the killed process left
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / run_status.STATUS_FILE).write_text(json.dumps({**record, "pid": sleeper.pid}))
        assert runs.read_run(out).status == "running"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert runs.read_run(out).status == "interrupted"  # its pid is gone


def test_the_table_and_the_cli(root, capsys):
    assert main(["runs", str(root)]) == 0
    text = capsys.readouterr().out
    header, *lines = text.splitlines()
    assert header.split()[:5] == ["run", "stage", "method", "model", "status"]
    rows = {line.split()[0]: line.split() for line in lines[:3]}
    assert rows["saves/done"][4] == "finished" and rows["saves/done"][5] == "4/4"
    assert rows["saves/killed"][4] == "interrupted" and rows["saves/killed"][5] == "3/4"
    assert rows["saves/broken"][4] == "failed"
    assert f"{runs.read_run(root / 'saves' / 'done').last_loss:.4f}" in " ".join(rows["saves/done"])
    assert "saves/broken: OSError: [Errno 28] No space left on device" in text
    assert "saves/killed: resume from checkpoint-2 with `tunesmith train" in text
    assert main(["runs", str(root / "nothing")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_the_printed_resume_command_finishes_the_interrupted_run(root, tmp_path):
    import shutil

    out = shutil.copytree(root / "saves" / "killed", tmp_path / "saves" / "killed")
    line = next(line for line in runs.format_table([runs.read_run(out)]).splitlines() if "resume from" in line)
    command = line.split("`")[1].split()
    assert command[:2] == ["tunesmith", "train"]
    assert main(command[1:]) == 0
    run = runs.read_run(out)
    assert (run.status, run.step, run.checkpoint) == ("finished", 4, None)
    assert runs.losses(out) == runs.losses(root / "saves" / "done")  # resumed == uninterrupted
    assert json.loads((out / "all_results.json").read_text())["resumed_from_checkpoint"] == "checkpoint-2"


def test_detail_shows_config_log_and_results(root):
    detail = runs.run_detail(root / "saves" / "done")
    assert "stage: sft" in detail.config and "max_steps: 4" in detail.config
    assert detail.results["train_loss"] > 0 and len(detail.losses) == 4
    assert "step 4/4" in detail.log or "training finished" in detail.log
    broken = runs.run_detail(root / "saves" / "broken")
    assert broken.results is None and "No space left on device" in broken.log


def test_only_run_folders_are_found(root, tmp_path):
    import shutil

    shutil.copytree(root / "saves" / "done", tmp_path / "a" / "b" / "run")
    shutil.copytree(root / "saves" / "done", tmp_path / ".hidden" / "run")
    (tmp_path / "notes").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "a")
    assert runs.find_runs(tmp_path) == [tmp_path / "a" / "b" / "run"]
    assert runs.find_runs(tmp_path, max_depth=2) == []
    assert runs.find_runs(tmp_path / "a" / "b" / "run") == [tmp_path / "a" / "b" / "run"]  # the root is a run
    with pytest.raises(ConfigError, match="is not a folder"):
        runs.find_runs(tmp_path / "missing")


def test_listing_imports_no_torch(root):
    code = ("import sys; from tunesmith import runs; assert len(runs.scan(sys.argv[1])) == 3; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code, str(root)], check=True, timeout=120)
