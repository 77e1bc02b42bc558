"""The Evaluate & Predict tab: writes the YAML `tunesmith eval` reads, runs that CLI, shows its log and scores."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.webui import form
from tunesmith.webui.runner import CliJob, read_eval_results
from tunesmith.webui.texts import ui

MODES = ("benchmark", "predict")
STATUS = {"running": "eval_running", "done": "eval_done", "failed": "eval_failed", "aborted": "status_aborted",
          "idle": "status_idle"}


def build_eval_tab(gr, texts, fields: dict, lang, config_path, train_inputs: list, collect, timer, workspace) -> None:
    """The tab's components and events; `collect(*train_values)` is the Train tab's config (its model keys are used);
    every path is confined to the workspace."""
    state = {"run": None, "folder": None}
    keys = [key for section in form.EVAL_SECTIONS.values() for key in section]
    components = {}
    with texts.label(gr.Tab(ui("en", "tab_eval"), elem_id="tab-eval"), "tab_eval"):
        texts.value(gr.Markdown(ui("en", "eval_note")), "eval_note")
        mode = texts.choices(gr.Radio(choices=[(ui("en", f"eval_mode_{m}"), m) for m in MODES], value="benchmark",
                                      label=ui("en", "eval_mode"), elem_id="eval_mode"), "eval_mode", MODES)
        for section in ("benchmark", "predict"):
            with texts.label(gr.Accordion(ui("en", f"sec_{section}"), open=True), f"sec_{section}"), \
                    gr.Row(elem_classes=["ts-grid"]):
                for key in form.EVAL_SECTIONS[section]:
                    field = dataclasses.replace(fields[key], default=form.EVAL_DEFAULTS.get(key, fields[key].default))
                    components[key] = texts.field(form.component(gr, field, "en", f"eval-{key}"), key)
        with gr.Row(elem_classes=["ts-buttons"]):
            components["save_dir"] = texts.field(form.component(gr, fields["save_dir"], "en", "eval-save_dir"), "save_dir")
            preview_btn = texts.value(gr.Button(ui("en", "preview")), "preview")
            start_btn = texts.value(gr.Button(ui("en", "eval_start"), variant="primary", elem_id="eval_start"),
                                    "eval_start")
            abort_btn = texts.value(gr.Button(ui("en", "eval_abort"), variant="stop"), "eval_abort")
        command = gr.Code(label="YAML", language="yaml")
        status = gr.Markdown(ui("en", "status_idle"), elem_id="eval_status")
        results = texts.label(gr.Dataframe(headers=["name", "value"], label=ui("en", "eval_results"),
                                           elem_id="eval_results", interactive=False), "eval_results")
        log = texts.label(gr.Textbox(label=ui("en", "log"), lines=10, max_lines=10, autoscroll=True), "log")

    def build(path, mode_value, *values):
        """The eval YAML's path (beside the Train tab's config) and its config, paths checked; WorkspaceError."""
        train_values, eval_values = values[: len(train_inputs)], values[len(train_inputs):]
        config = form.eval_config(collect(*train_values), dict(zip(keys, eval_values)), mode_value)
        path = workspace.config_path(path)
        if not config.get("save_dir"):  # results need a new folder; pick one beside the config
            config["save_dir"] = str(path.parent / f"{mode_value}-{time.strftime('%Y%m%d-%H%M%S')}")
        return path.with_name(f"{mode_value}.yaml"), workspace.confine(config)

    def preview(path, mode_value, *values):
        try:
            eval_path, config = build(path, mode_value, *values)
        except TunesmithError as exc:
            return f"# error: {exc}"
        error = form.validate(config)
        text = f"# {form.command_line(eval_path, 'eval')}\n" + form.to_yaml(config)
        return text if error is None else f"# error: {error}\n" + text

    def start(path, mode_value, *values):
        if state["run"] is not None and state["run"].running():
            return f"**{ui(texts.lang, 'eval_running')}**", gr.update(), ""
        try:
            eval_path, config = build(path, mode_value, *values)
        except TunesmithError as exc:
            return f"**{ui(texts.lang, 'eval_failed')}**: {exc}", gr.update(), ""
        error = form.validate(config)
        if error is not None:
            return f"**{ui(texts.lang, 'eval_failed')}**: {error}", gr.update(), ""
        eval_path.parent.mkdir(parents=True, exist_ok=True)
        eval_path.write_text(form.to_yaml(config), encoding="utf-8")
        state["folder"] = Path(config["save_dir"])
        state["run"] = CliJob(eval_path, state["folder"], job="eval", cwd=workspace.root).started()
        return f"**{ui(texts.lang, 'eval_running')}**: `{form.command_line(eval_path, 'eval')}`", config["save_dir"], ""

    def abort():
        if state["run"] is not None:
            state["run"].abort()
        return f"**{ui(texts.lang, 'status_aborted')}**"

    def refresh(lang_value):
        run = state["run"]
        if run is None:
            return gr.update(), gr.update(), gr.update()
        name = run.status()
        text = f"**{ui(lang_value, STATUS[name])}** — `{form.command_line(run.config_path, 'eval')}`"
        if run.failure():
            text += f"\n\n{run.failure()}"
        rows = read_eval_results(state["folder"]) if name == "done" else None
        return text, [list(row) for row in rows] if rows else gr.update(), run.log_tail()

    eval_inputs = [config_path, mode, *train_inputs, *(components[key] for key in keys)]
    preview_btn.click(preview, eval_inputs, command, api_name="eval_preview")
    start_btn.click(start, eval_inputs, [status, components["save_dir"], log], api_name="eval_start")
    abort_btn.click(abort, None, status, api_name="eval_abort")
    timer.tick(refresh, [lang], [status, results, log], api_name="eval_refresh")
