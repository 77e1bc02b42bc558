"""The web UI's Runs tab on real tiny runs: two finished runs listed with their losses, their loss curves overlaid, an
interrupted run resumed to completion from the page, and a finished run's model put into the Chat tab."""

import shutil
import time
from pathlib import Path

import pytest

import tunesmith
from tunesmith import runs
from tunesmith.cli import main
from tunesmith.webui import form

DEMO_DATA = Path(tunesmith.__file__).resolve().parent / "demo_data"
RUN_ARGS = ["dataset=tunesmith_identity", f"dataset_dir={DEMO_DATA}", "template=chatml", "cutoff_len=64",
            "max_steps=4", "per_device_train_batch_size=2", "logging_steps=1", "save_strategy=steps", "save_steps=2",
            "report_to=none", "seed=7"]


def train(root: Path, name: str, *overrides: str) -> Path:
    out = root / "saves" / name
    (root / "c.yaml").write_text("stage: sft\n")
    code = main(["train", str(root / "c.yaml"), f"model_name_or_path={root / 'model'}", f"output_dir={out}",
                 *RUN_ARGS, *overrides])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def root(tiny_model_dir, tmp_path_factory) -> Path:
    """A workspace with the tiny model and saves/a, saves/b (finished, two learning rates) and saves/c (a's config,
    killed during its final save: checkpoint-2 is its newest intact checkpoint)."""
    pytest.importorskip("gradio")
    root = tmp_path_factory.mktemp("workspace")
    shutil.copytree(tiny_model_dir, root / "model")  # the UI reads nothing outside its root
    train(root, "a", "learning_rate=1e-3")
    train(root, "b", "learning_rate=5e-3")
    c = train(root, "c", "learning_rate=1e-3")
    for name in ("all_results.json", "trainer_state.json", "adapter_model.safetensors", "adapter_config.json"):
        (c / name).unlink()
    shutil.rmtree(c / "checkpoint-4")
    return root


@pytest.fixture
def view(root):
    import gradio as gr

    from tunesmith.webui.runs_tab import build_runs_tab
    from tunesmith.webui.texts import Relabel
    from tunesmith.webui.workspace import Workspace

    fill_keys = ["model_name_or_path", "adapter_name_or_path", "finetuning_type", "template", "export_dir"]
    with gr.Blocks():
        fill = {key: gr.Textbox() for key in fill_keys}
        return build_runs_tab(gr, Relabel(gr, form.fields()), Workspace(root), fill)


def test_finished_runs_are_listed_with_their_losses(view, root):
    rows, choices, message = view.refresh(".", [])
    table = {row[0]: dict(zip(runs.HEADERS, row)) for row in rows}
    assert set(table) == {"saves/a", "saves/b", "saves/c"} and message == ""
    assert choices["choices"] == [row[0] for row in rows]
    for name in ("a", "b"):
        run = runs.read_run(root / "saves" / name)
        logged = [loss for _, loss in runs.losses(run.path)]
        assert table[f"saves/{name}"]["status"] == "finished" and table[f"saves/{name}"]["steps"] == "4/4"
        assert table[f"saves/{name}"]["last loss"] == f"{logged[-1]:.4f}"
        assert table[f"saves/{name}"]["best loss"] == f"{min(logged):.4f}"
        assert table[f"saves/{name}"]["model"] == "model" and table[f"saves/{name}"]["method"] == "lora"
    assert table["saves/c"]["status"] == "interrupted"
    summary, config, log, results = view.detail(".", ["saves/a"])
    assert "**saves/a** — finished" in summary and "learning_rate: 0.001" in config
    assert "step 4/4" in log or "training finished" in log
    assert results["train_loss"] > 0
    assert "resumes from `checkpoint-2`" in view.detail(".", ["saves/c"])[0]


def test_two_runs_overlay_their_loss_curves(view, root):
    frame = view.curves(".", ["saves/a", "saves/b"])
    assert sorted(frame["run"].unique()) == ["saves/a", "saves/b"]
    for name in ("a", "b"):
        series = frame[frame["run"] == f"saves/{name}"]
        assert list(zip(series["step"], series["loss"])) == runs.losses(root / "saves" / name)
    assert view.toggle(["saves/a"], [["saves/b"], ["saves/a"]], 0) == ["saves/a", "saves/b"]  # a click adds a row
    assert view.toggle(["saves/a", "saves/b"], [["saves/b"]], 0) == ["saves/a"]  # a second click removes it


def test_an_interrupted_run_is_resumed_to_completion(view, root, monkeypatch):
    from tunesmith.webui.runner import CliJob

    assert "Only an interrupted or failed run" in view.resume(".", ["saves/a"])
    polls, start = [], CliJob.start
    # the page's 2-second timer polls beside the click: one arriving while the process starts must not end the job
    # (it did on a loaded machine: the job was published before its process existed, polled "idle", and forgotten)
    monkeypatch.setattr(CliJob, "start", lambda job: (polls.append(view.poll()), start(job)))
    started = view.resume(".", ["saves/c"])
    assert started.startswith("**Resuming** saves/c (checkpoint-2)"), started
    assert polls == [("", "", False)]
    deadline = time.monotonic() + 300
    status, log, ended = view.poll()
    while not ended and time.monotonic() < deadline:
        time.sleep(1)
        status, log, ended = view.poll()
    assert "Finished" in status, log
    run = runs.read_run(root / "saves" / "c")
    assert (run.status, run.step, run.total_steps) == ("finished", 4, 4)
    assert runs.losses(root / "saves" / "c") == runs.losses(root / "saves" / "a")  # resumed == uninterrupted
    assert (root / "webui_runs" / "resume-saves-c.yaml").is_file()


def test_chat_and_export_take_a_finished_run_in_one_click(view, root):
    from tunesmith.config.load import load_config
    from tunesmith.infer.engine import ChatEngine

    message, ok, *values = view.fill(".", ["saves/b"], "chat")
    filled = dict(zip(view.fill_keys, values))
    assert ok and "Chat tab" in message
    assert filled["model_name_or_path"] == str(root / "model") and filled["adapter_name_or_path"] == str(
        root / "saves" / "b")
    # what the Chat tab's Load model then does with the Train tab's values
    page = {key: field.default for key, field in form.fields().items() if key in form.SECTIONS["model"]}
    page.update({key: value for key, value in filled.items() if key != "export_dir"})
    engine = ChatEngine(load_config(None, view.workspace.confine(form.to_config(page))))
    assert engine.name == "b"
    assert isinstance("".join(engine.stream([{"role": "user", "content": "Hi"}], max_new_tokens=3)), str)
    message, ok, *values = view.fill(".", ["saves/a"], "export")
    assert ok and dict(zip(view.fill_keys, values))["export_dir"] == str(root / "exports" / "saves-a")


def test_paths_stay_inside_the_workspace(view, root, tmp_path):
    rows, _, message = view.refresh("/", [])
    assert rows == [] and "outside it" in message
    shutil.copytree(root / "saves" / "a", tmp_path / "outside")
    assert "outside it" in view.detail(".", [f"../{tmp_path.name}/outside"])[0]
    assert not view.fill(".", ["../outside"], "chat")[1]
    assert "Select a run first" in view.resume(".", [])


def test_the_app_has_the_runs_tab(root):
    from tunesmith.webui.app import build_app

    app = build_app(root)
    assert any(getattr(block, "elem_id", None) == "tab-runs" for block in app.blocks.values())
    names = {fn.api_name for fn in app.fns.values()}
    assert {"runs_refresh", "runs_show", "runs_resume", "runs_chat", "runs_export"} <= names


def test_runs_table_headers_follow_the_language(root):
    import gradio as gr

    from tunesmith.webui.runs_tab import build_runs_tab, headers
    from tunesmith.webui.texts import Relabel
    from tunesmith.webui.workspace import Workspace

    texts = Relabel(gr, form.fields())
    with gr.Blocks():
        build_runs_tab(gr, texts, Workspace(root))
    assert headers("en") == runs.HEADERS
    shown = [update.get("headers") for update in texts.updates("zh") if "headers" in update]
    assert shown == [headers("zh")] and "最新损失" in shown[0] and not set(shown[0]) & set(runs.HEADERS)
