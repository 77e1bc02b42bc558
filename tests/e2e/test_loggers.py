"""Loggers through report_to (TensorBoard, W&B offline, MLflow file store) and LLaMA-Factory's use_swanlab (offline):
each writes its files during a short training run on the tiny model."""

import importlib.util
from pathlib import Path

import pytest

from tunesmith.cli import main
from tunesmith.config.load import load_config
from tunesmith.errors import TunesmithError

DEMO_DATA = Path(__file__).resolve().parents[2] / "src" / "tunesmith" / "demo_data"


def needs(package):
    return pytest.mark.skipif(
        importlib.util.find_spec(package) is None,
        reason=f"{package} is not installed (pip install 'tunesmith[loggers]')",
    )


def overrides(model_dir, out):
    return [
        f"model_name_or_path={model_dir}",
        "dataset=tunesmith_identity",
        f"dataset_dir={DEMO_DATA}",
        "template=chatml",
        "cutoff_len=64",
        f"output_dir={out}",
        "max_steps=2",
        "per_device_train_batch_size=2",
        "logging_steps=1",
        "save_strategy=no",
        "seed=7",
    ]


def train(model_dir, out, *extra):
    config = Path(str(out) + ".yaml")
    config.write_text("stage: sft\n")
    assert main(["train", str(config), *overrides(model_dir, out), *extra]) == 0
    return Path(out)


@needs("tensorboard")
def test_tensorboard_writes_event_files(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    out = train(tiny_model_dir, tmp_path / "tb", "report_to=tensorboard")
    events = list((out / "runs").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


@needs("wandb")
def test_wandb_offline_writes_a_run(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    train(tiny_model_dir, tmp_path / "wb", "report_to=wandb", "run_name=tiny-wandb")
    runs = list((tmp_path / "wandb-dir" / "wandb").glob("offline-run-*"))
    assert runs and list(runs[0].glob("*.wandb"))


@needs("mlflow")
def test_mlflow_file_store_records_metrics(tiny_model_dir, tmp_path, monkeypatch):
    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tunesmith-test")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow 3 asks for this to use a plain folder
    train(tiny_model_dir, tmp_path / "ml", "report_to=mlflow")
    losses = [path for path in store.rglob("metrics/loss") if path.is_file()]
    assert losses and len(losses[0].read_text().splitlines()) == 2  # one line per logged step


@needs("swanlab")
def test_use_swanlab_offline_writes_its_log_dir(tiny_model_dir, tmp_path):
    logdir = tmp_path / "swanlog"
    train(
        tiny_model_dir,
        tmp_path / "sl",
        "report_to=none",
        "use_swanlab=true",
        "swanlab_mode=offline",
        f"swanlab_logdir={logdir}",
        "swanlab_project=tiny",
        "swanlab_run_name=tiny-run",
    )
    files = [path for path in logdir.rglob("*") if path.is_file()]
    assert files, f"nothing under {logdir}"


def test_use_swanlab_in_cloud_mode_without_a_key_is_refused(tiny_model_dir, tmp_path, capsys):
    config = tmp_path / "sl.yaml"
    config.write_text("stage: sft\nuse_swanlab: true\n")
    code = main(["train", str(config), *overrides(tiny_model_dir, tmp_path / "out")])
    assert code != 0 and "swanlab_mode: offline" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(TunesmithError, match="swanlab_mode"):
        load_config(config, [*overrides(tiny_model_dir, tmp_path / "out"), "swanlab_mode=nope"])
