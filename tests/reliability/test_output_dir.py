"""output_dir safety: overwrite removes only a previous tunesmith run; the preflight refuses with a message, before
any data or model load, what would fail later (read-only folder, parent a file, no disk space)."""

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tunesmith.cli import main
from tunesmith.errors import ConfigError
from tunesmith.train import output_safety

DEMO_DATA = Path(__file__).resolve().parents[2] / "src" / "tunesmith" / "demo_data"
CONFIG = """\
model_name_or_path: model
dataset: tunesmith_identity
dataset_dir: data
template: chatml
cutoff_len: 64
max_steps: 1
per_device_train_batch_size: 2
save_strategy: "no"
report_to: none
"""


def files(root: Path) -> dict[str, bytes]:
    """Every file under root with its bytes (links by their target), to compare before and after."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            found[str(path.relative_to(root))] = os.readlink(path).encode()
        elif path.is_file():
            found[str(path.relative_to(root))] = path.read_bytes()
    return found


def train(*overrides, config="train.yaml"):
    return main(["train", config, *overrides])


@pytest.fixture(scope="module")
def previous_run(tiny_model_dir, tmp_path_factory):
    """A real finished run (two steps, two checkpoints), copied by the tests that need one."""
    out = tmp_path_factory.mktemp("previous") / "run"
    (out.parent / "sft.yaml").write_text("stage: sft\n")
    assert main(["train", str(out.parent / "sft.yaml"), f"model_name_or_path={tiny_model_dir}", "dataset=tunesmith_identity",
                 f"dataset_dir={DEMO_DATA}", "template=chatml", "cutoff_len=64", f"output_dir={out}", "max_steps=2",
                 "save_steps=1", "per_device_train_batch_size=2", "report_to=none"]) == 0
    assert (out / "checkpoint-2").is_dir()
    return out


@pytest.fixture
def project(tiny_model_dir, tmp_path, monkeypatch):
    """A working folder as a user has it: train.yaml, its model and its data (copies: a failing test may delete
    them), and the run started from there."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copytree(tiny_model_dir, root / "model")
    shutil.copytree(DEMO_DATA, root / "data")
    (root / "train.yaml").write_text(CONFIG)
    monkeypatch.chdir(root)
    return root


@contextlib.contextmanager
def read_only(folder: Path):
    """Makes folder read-only for this process: chmod for a normal user; as root, whom chmod does not stop, the
    immutable attribute (chattr +i). Skips where neither really stops a write."""
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(0o555)

        def undo():
            folder.chmod(mode)
    else:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)],
                                                             check=False, capture_output=True).returncode != 0:
            pytest.skip("running as root (chmod does not stop root) and chattr +i is not available on this disk")

        def undo():
            subprocess.run(["chattr", "-i", str(folder)], check=True)
    try:
        probe = folder / ".write-probe"
        try:
            probe.touch()
        except OSError:
            pass
        else:
            probe.unlink()
            pytest.skip(f"cannot make {folder} read-only here")
        yield folder
    finally:
        undo()


def refused(capsys, *words):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for word in words:
        assert word in err, err
    return err


# ---------------------------------------------------------------- what overwrite never removes


@pytest.mark.parametrize("output_dir, words", [
    (".", ["it is the working folder"]),
    ("..", ["it holds the working folder"]),
    ("model", ["it is model_name_or_path of this run"]),
    ("data", ["it is dataset_dir of this run"]),
])
def test_overwrite_never_removes_the_working_folder_or_what_the_run_reads(project, capsys, output_dir, words):
    before = files(project.parent)
    assert train(f"output_dir={output_dir}", "overwrite_output_dir=true") == 2
    refused(capsys, "refusing to clear", *words)
    assert files(project.parent) == before


def test_overwrite_never_removes_a_run_inside_the_model_folder(project, previous_run, capsys):
    shutil.copytree(previous_run, project / "model" / "run")
    before = files(project)
    assert train("output_dir=model/run", "overwrite_output_dir=true") == 2
    refused(capsys, "is inside model_name_or_path")
    assert files(project) == before


def test_overwrite_never_removes_the_config_file_adapter_or_tokenized_data(project, capsys):
    (project / "configs").mkdir()
    shutil.move(project / "train.yaml", project / "configs" / "train.yaml")
    (project / "adapters" / "first").mkdir(parents=True)
    (project / "adapters" / "first" / "adapter_config.json").write_text("{}")
    (project / "cache" / "tokenized").mkdir(parents=True)
    (project / "cache" / "tokenized" / "dataset_info.json").write_text("{}")
    before = files(project)
    config = "configs/train.yaml"
    assert train("output_dir=configs", "overwrite_output_dir=true", config=config) == 2
    refused(capsys, "holds the config file of this run")
    assert train("output_dir=adapters", "overwrite_output_dir=true", "adapter_name_or_path=adapters/first",
                 config=config) == 2
    refused(capsys, "holds adapter_name_or_path of this run")
    assert train("output_dir=cache", "overwrite_output_dir=true", "tokenized_path=cache/tokenized",
                 config=config) == 2
    refused(capsys, "holds tokenized_path of this run")
    assert files(project) == before


def test_overwrite_never_removes_home(project, monkeypatch, capsys):
    home = project / "home"
    home.mkdir()
    (home / ".bashrc").write_text("# mine")
    monkeypatch.setenv("HOME", str(home))
    assert train(f"output_dir={home}", "overwrite_output_dir=true") == 2
    refused(capsys, "it is your home folder")
    assert (home / ".bashrc").read_text() == "# mine"


def test_root_and_cwd_ancestors_are_never_removable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for folder, words in [(Path("/"), "root folder"), (tmp_path.parent, "holds the working folder")]:
        with pytest.raises(ConfigError, match=words):
            output_safety.check_removable(folder, [])


def test_overwrite_refuses_a_folder_that_is_not_a_run(project, tiny_model_dir, capsys):
    (project / "notes").mkdir()
    (project / "notes" / "ideas.txt").write_text("mine")
    shutil.copytree(tiny_model_dir, project / "other-model")  # model files only: a model, not a run
    before = files(project)
    assert train("output_dir=notes", "overwrite_output_dir=true") == 2
    refused(capsys, "it is not a tunesmith training run (no tunesmith_config.yaml)")
    assert train("output_dir=other-model", "overwrite_output_dir=true") == 2
    refused(capsys, "it is not a tunesmith training run")
    assert files(project) == before


def test_overwrite_refuses_a_run_holding_other_files(project, previous_run, capsys):
    shutil.copytree(previous_run, project / "run")
    (project / "run" / "my_notes.txt").write_text("mine")
    (project / "run" / "checkpoint-1" / "keep.md").write_text("mine")
    (project / "run" / "plots").mkdir()
    before = files(project)
    assert train("output_dir=run", "overwrite_output_dir=true") == 2
    refused(capsys, "holds files a tunesmith run does not write", "checkpoint-1/keep.md", "my_notes.txt", "plots/")
    assert files(project) == before


def test_overwrite_replaces_a_previous_run_without_following_links(project, previous_run, capsys):
    shutil.copytree(previous_run, project / "run")
    precious = project / "precious.bin"
    precious.write_bytes(b"not yours")
    (project / "run" / "pytorch_model.bin").symlink_to(precious)
    model = files(project / "model")
    assert train("output_dir=run", "overwrite_output_dir=true") == 0
    run = project / "run"
    assert not (run / "checkpoint-1").exists() and not (run / "checkpoint-2").exists()  # the old run is gone
    assert not (run / "pytorch_model.bin").exists()
    assert (run / "all_results.json").is_file() and (run / "adapter_model.safetensors").is_file()
    assert precious.read_bytes() == b"not yours"
    assert files(project / "model") == model and (project / "train.yaml").is_file()


# ---------------------------------------------------------------- preflight


def test_output_dir_whose_parent_is_a_file_is_a_message(project, capsys):
    (project / "file.txt").write_text("mine")
    # an unregistered dataset: the preflight answers first, before any data is read
    assert train("output_dir=file.txt/run", "dataset=not_registered") == 2
    refused(capsys, "output_dir file.txt/run cannot be created: file.txt is a file, not a folder")
    assert (project / "file.txt").read_text() == "mine"
    assert train("output_dir=file.txt") == 2
    refused(capsys, "output_dir file.txt is a file, not a folder")


def test_read_only_output_dir_is_a_message_before_any_load(project, capsys):
    (project / "out").mkdir()
    with read_only(project / "out"):
        assert train("output_dir=out", "dataset=not_registered") == 2
        refused(capsys, "output_dir out: cannot write into it: out is read-only")
        assert list((project / "out").iterdir()) == []


def test_read_only_parent_is_a_message(project, capsys):
    (project / "locked").mkdir()
    with read_only(project / "locked"):
        assert train("output_dir=locked/run") == 2
        refused(capsys, "output_dir locked/run: cannot create it: locked is read-only")
    assert not (project / "locked" / "run").exists()


def test_overwrite_on_a_read_only_run_is_a_message_and_removes_nothing(project, previous_run, capsys):
    shutil.copytree(previous_run, project / "run")
    before = files(project / "run")
    with read_only(project / "run"):
        assert train("output_dir=run", "overwrite_output_dir=true") == 2
        refused(capsys, "cannot clear the previous run (overwrite_output_dir): run is read-only")
    with read_only(project / "run" / "checkpoint-2"):
        assert train("output_dir=run", "overwrite_output_dir=true") == 2
        refused(capsys, "cannot clear the previous run (overwrite_output_dir): run/checkpoint-2 is read-only")
    assert files(project / "run") == before


def test_too_little_disk_space_for_one_save_is_a_message(project, capsys):
    weights = project / "model" / "model.safetensors"
    free = shutil.disk_usage(project).free
    try:
        os.truncate(weights, free + 2**30)  # sparse: takes no room, but a full save of this model would
    except OSError:
        pytest.skip("this disk cannot hold a sparse file that large")
    assert train("output_dir=out", "finetuning_type=full") == 2
    refused(capsys, "GiB free, but one save of this run needs about")
    assert not (project / "out").exists()


def test_multi_process_checkpoints_are_recognised_and_anything_else_is_not(tmp_path):
    """The names DeepSpeed (seen in a real ZeRO-2/3 run) and FSDP (accelerate's names) write in checkpoint-N."""
    run = tmp_path / "run"
    names = ["tunesmith_config.yaml", "all_results.json.tmp", "model-00001-of-00002.safetensors",
             "model.safetensors.index.json", "checkpoint-1/latest", "checkpoint-1/zero_to_fp32.py",
             "checkpoint-1/zero_to_torch.py", "checkpoint-1/rng_state_1.pth", "checkpoint-1/scheduler.pt",
             "checkpoint-1/global_step1/zero_pp_rank_0_mp_rank_00_optim_states.pt",
             "checkpoint-1/global_step1/mp_rank_00_model_states.pt", "checkpoint-2/pytorch_model_fsdp.bin",
             "checkpoint-2/optimizer.bin", "checkpoint-2/pytorch_model_fsdp_0/__0_0.distcp",
             "checkpoint-2/pytorch_model_fsdp_0/.metadata", "checkpoint-2/optimizer_0/__1_0.distcp",
             "runs/Dec02_10-16-18_vm/events.out.tfevents.1796206640.vm", "pissa_init/adapter_model.safetensors"]
    for name in names:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("x")
    assert output_safety.foreign_files(run) == []
    for name in ["checkpoint-1/global_step1/notes.txt", "runs/notes.txt", "pissa_init/data.json", "data.jsonl",
                 "checkpoint-2/optimizer_0/.gitignore"]:
        (run / name).write_text("mine")
        assert output_safety.foreign_files(run) == [name]
        (run / name).unlink()
