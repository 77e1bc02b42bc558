"""`tunesmith webui`: Gradio front door that writes the same YAML the CLI reads and runs the same command."""

from __future__ import annotations

import time
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.webui import form
from tunesmith.webui.eval_tab import build_eval_tab
from tunesmith.webui.runner import TrainingRun, read_progress
from tunesmith.webui.runs_tab import build_runs_tab
from tunesmith.webui.texts import LANGUAGES, Relabel, label, ui
from tunesmith.webui.workspace import Workspace, WorkspaceError

SECTION_TITLES = {"model": "sec_model", "train": "sec_train", "extra": "sec_extra", "freeze": "sec_freeze",
                  "lora": "sec_lora", "rlhf": "sec_rlhf", "output": "sec_output"}
OPEN_SECTIONS = ("model", "train")


def _component(gr, field: form.Field, lang: str, elem_id: str | None = None):
    """The input widget of one config key, labelled in lang; its elem_id is the key unless given."""
    text, help_text = label(lang, field.key, field.help)
    common = {"label": text, "info": help_text, "value": field.default, "elem_id": elem_id or field.key}
    if field.kind == "choice":
        return gr.Dropdown(choices=[c for c in field.choices], **common)
    if field.kind == "bool":
        return gr.Checkbox(**common)
    if field.kind in ("int", "float") and field.default is not None:  # a browser sends an empty Number as 0
        return gr.Number(precision=0 if field.kind == "int" else None, **common)
    if field.kind == "list":
        value = ",".join(field.default) if isinstance(field.default, list) else field.default
        return gr.Textbox(**{**common, "value": value})
    return gr.Textbox(**{**common, "value": None if field.default is None else str(field.default)})


def _text(content) -> str:
    """Chatbot message content (a string, or Gradio's list of typed parts) as plain text."""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content or "")


def _format_seconds(value) -> str:
    if value is None:
        return "--:--"
    value = int(value)
    return f"{value // 3600:02d}:{value % 3600 // 60:02d}:{value % 60:02d}"


def build_app(workdir: str | Path = ".", trust_remote_code: bool = False):
    """The Blocks app; every path it reads or writes is inside workdir (its workspace root), training configs and
    logs go to workdir/webui_runs, and jobs run there. trust_remote_code: whether a page may turn that key on."""
    import gradio as gr
    import pandas as pd

    fields = form.fields()
    workspace = Workspace(workdir, trust_remote_code)
    runs_dir = workspace.root / "webui_runs"
    state = {"run": None}
    keys = [key for section in form.SECTIONS.values() for key in section]
    components: dict[str, object] = {}
    texts = Relabel(gr, fields)
    families = form.families()

    with gr.Blocks(title="tunesmith") as app:
        texts.title(gr.Markdown(f"## {ui('en', 'title')}"))
        lang = texts.label(gr.Dropdown(choices=list(LANGUAGES), value="en", label=ui("en", "lang"),
                                       elem_id="lang"), "lang")
        with texts.label(gr.Tab(ui("en", "tab_train"), elem_id="tab-train"), "tab_train"):
            for section, section_keys in form.SECTIONS.items():
                box = gr.Accordion(ui("en", SECTION_TITLES[section]), open=section in OPEN_SECTIONS)
                with texts.label(box, SECTION_TITLES[section]), gr.Row():
                    if section == "model":
                        family = texts.label(gr.Dropdown(choices=list(families), value=None, elem_id="model_family",
                                                         label=ui("en", "model_family"),
                                                         info=ui("en", "model_family_help")), "model_family")
                    for key in section_keys:
                        components[key] = texts.field(_component(gr, fields[key], "en"), key)
            with gr.Row():
                config_path = texts.label(gr.Textbox(label=ui("en", "config_path"),
                                                     value=str(runs_dir / "train.yaml")), "config_path")
                preview_btn = texts.value(gr.Button(ui("en", "preview")), "preview")
                save_btn = texts.value(gr.Button(ui("en", "save")), "save")
                load_btn = texts.value(gr.Button(ui("en", "load")), "load")
                data_btn = texts.value(gr.Button(ui("en", "preview_datasets")), "preview_datasets")
                start_btn = texts.value(gr.Button(ui("en", "start"), variant="primary", elem_id="start"), "start")
                abort_btn = texts.value(gr.Button(ui("en", "abort"), variant="stop"), "abort")
            command = gr.Code(label="YAML", language="yaml")
            status = gr.Markdown(ui("en", "status_idle"), elem_id="train_status")
            progress = texts.label(gr.Slider(0, 100, value=0, label=ui("en", "progress"), interactive=False,
                                             elem_id="progress"), "progress")
            loss = texts.label(gr.LinePlot(x="step", y="loss", label=ui("en", "loss"), elem_id="loss"), "loss")
            log = texts.label(gr.Textbox(label=ui("en", "log"), lines=12, max_lines=12, autoscroll=True), "log")
            timer = gr.Timer(1.0)

        inputs = [components[key] for key in keys]
        build_eval_tab(gr, texts, fields, lang, config_path, inputs, lambda *values: collect(*values), timer,
                       workspace)

        with texts.label(gr.Tab(ui("en", "tab_chat"), elem_id="tab-chat"), "tab_chat"):
            with gr.Row():
                chat_load = texts.value(gr.Button(ui("en", "chat_load"), elem_id="chat_load"), "chat_load")
                chat_unload = texts.value(gr.Button(ui("en", "chat_unload")), "chat_unload")
                chat_state = gr.Markdown("", elem_id="chat_state")
            system = texts.label(gr.Textbox(label=ui("en", "chat_system")), "chat_system")
            tools = texts.label(gr.Textbox(label=ui("en", "chat_tools"), lines=2), "chat_tools")
            with gr.Row():
                temperature = texts.field(gr.Slider(0, 1.5, value=0.95, label="temperature",
                                                    elem_id="chat_temperature"), "temperature")
                top_p = texts.field(gr.Slider(0.01, 1.0, value=0.7, label="top_p"), "top_p")
                max_new_tokens = texts.field(gr.Slider(1, 2048, value=256, step=1, label="max_new_tokens"),
                                             "max_new_tokens")
            chatbot = gr.Chatbot(height=300, elem_id="chatbot")
            with gr.Row():
                query = texts.label(gr.Textbox(label=ui("en", "chat_input"), scale=4, elem_id="chat_input"),
                                    "chat_input")
                send = texts.value(gr.Button(ui("en", "chat_send"), variant="primary", elem_id="chat_send"),
                                   "chat_send")
                clear = texts.value(gr.Button(ui("en", "chat_clear")), "chat_clear")
        with texts.label(gr.Tab(ui("en", "tab_export"), elem_id="tab-export"), "tab_export"):
            with gr.Row():
                export_fields = {key: texts.field(_component(gr, fields[key], "en"), key)
                                 for key in ("export_dir", "export_size", "export_dtype")}
                export_btn = texts.value(gr.Button(ui("en", "export_run"), variant="primary"), "export_run")
            export_log = texts.label(gr.Textbox(label=ui("en", "log"), lines=6, elem_id="export_log"), "log")
        build_runs_tab(gr, texts, workspace, {**components, **export_fields}, (lambda *v: load_chat(*v), inputs,
                       chat_state), (lambda *v: export(*v), [config_path, *inputs, *export_fields.values()], export_log))

        def collect(*values) -> dict:
            return form.to_config(dict(zip(keys, values)))

        def failed(error) -> str:
            return f"**{ui(texts.lang, 'status_failed')}**: {error}"

        def preview(path, *values):
            config = collect(*values)
            try:
                path, config = workspace.config_path(path), workspace.confine(config)
            except TunesmithError as exc:
                return f"# error: {exc}\n" + form.to_yaml(config)
            error = form.validate(config)
            text = f"# {form.command_line(path)}\n" + form.to_yaml(config)
            return text if error is None else f"# error: {error}\n" + text

        def preview_data(*values):
            import json

            from tunesmith.data.loader import load_records
            from tunesmith.data.registry import read_registry

            try:
                config = workspace.confine(collect(*values))
                dataset_dir = str(workspace.dataset_dir(config))
                registered = ", ".join(sorted(read_registry(dataset_dir)))
                names = [n.strip() for n in str(config.get("dataset", "")).split(",") if n.strip()]
                if not names:
                    return f"# registered in {dataset_dir}: {registered}"
                records = load_records(names, dataset_dir, config.get("stage", "sft"), max_samples=3)
            except TunesmithError as exc:
                return f"# error: {exc}"
            rows = [json.dumps(records[i], ensure_ascii=False, indent=1) for i in range(len(records))]
            return f"# registered in {dataset_dir}: {registered}\n# first records of {', '.join(names)}:\n" + \
                "\n".join(rows)

        def save(path, *values):
            config = collect(*values)
            try:
                path = workspace.config_path(path)
                workspace.confine(config)
            except TunesmithError as exc:
                return f"# error: {exc}\n# nothing saved"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(form.to_yaml(config), encoding="utf-8")
            return f"# saved {path}\n" + form.to_yaml(config)

        def load(path):
            import yaml

            try:
                path = workspace.config_path(path, "config path")
            except WorkspaceError as exc:
                raise gr.Error(str(exc)) from None
            if not path.is_file():
                raise gr.Error(f"{path} not found; give the path of a saved config (.yaml)")
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            if not isinstance(data, dict):
                raise gr.Error(f"{path} is not a YAML mapping of config keys")
            return [gr.update(value=",".join(v) if isinstance(v := data.get(key, fields[key].default), list) else v)
                    for key in keys]

        def start(path, *values):
            try:
                path, config = workspace.config_path(path), workspace.confine(collect(*values))
            except TunesmithError as exc:
                return failed(exc), ""
            error = form.validate(config)
            if error is not None:
                return failed(error), ""
            if state["run"] is not None and state["run"].running():
                return f"**{ui(texts.lang, 'status_running')}**", ""
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(form.to_yaml(config), encoding="utf-8")
            output_dir = Path(config.get("output_dir") or workspace.root / "saves" / "run")
            state["run"] = TrainingRun(path, output_dir, cwd=workspace.root)
            state["run"].start()
            return f"**{ui(texts.lang, 'status_running')}**: `{form.command_line(path)}`", ""

        def abort():
            if state["run"] is not None:
                state["run"].abort()
            return f"**{ui(texts.lang, 'status_aborted')}**"

        def refresh(lang_value):
            run = state["run"]
            if run is None:
                return gr.update(), gr.update(), gr.update(), gr.update()
            info = read_progress(run.output_dir)
            name = {"running": "status_running", "done": "status_done", "failed": "status_failed",
                    "aborted": "status_aborted", "idle": "status_idle"}[run.status()]
            text = (f"**{ui(lang_value, name)}** — {info['step']}/{info['total_steps']} "
                    f"({info['percentage']:.0f}%), {_format_seconds(info['elapsed'])} elapsed, "
                    f"{_format_seconds(info['remaining'])} left")
            if run.failure():
                text += f"\n\n{run.failure()}"
            frame = pd.DataFrame(info["losses"], columns=["step", "loss"])
            return text, info["percentage"] or 0, frame, run.log_tail()

        def pick_family(name):
            entry = families.get(name) or {}
            return entry.get("path") or gr.update(), entry.get("template") or gr.update()

        def load_chat(*values):
            from tunesmith.config.load import load_config
            from tunesmith.infer.engine import ChatEngine

            try:
                state["engine"] = ChatEngine(load_config(None, workspace.confine(collect(*values))))
            except TunesmithError as exc:
                return failed(exc)
            return f"{ui(texts.lang, 'chat_loaded')}: `{state['engine'].name}`"

        def unload_chat():
            state.pop("engine", None)
            return ui(texts.lang, "chat_unloaded")

        def respond(message, history, system_text, tools_text, temp, nucleus, limit):
            engine = state.get("engine")
            history = list(history or [])
            if engine is None:
                history.append({"role": "assistant", "content": ui(texts.lang, "chat_need_model")})
                yield history, ""
                return
            turns = [{"role": m["role"], "content": _text(m["content"])} for m in history] + [
                {"role": "user", "content": message}]
            history += [{"role": "user", "content": message}, {"role": "assistant", "content": ""}]
            for piece in engine.stream(turns, system=system_text or None, tools=tools_text or None,
                                       temperature=temp, top_p=nucleus, max_new_tokens=int(limit)):
                history[-1]["content"] += piece
                yield history, ""

        def export(path, *values):
            import subprocess
            import sys

            *train_values, export_dir, export_size, export_dtype = values
            config = {**collect(*train_values), "export_dir": export_dir, "export_size": int(export_size or 5),
                      "export_dtype": export_dtype}
            config.pop("output_dir", None)
            try:
                export_path, config = workspace.config_path(path).with_name("export.yaml"), workspace.confine(config)
            except TunesmithError as exc:
                return f"error: {exc}"
            export_path.parent.mkdir(parents=True, exist_ok=True)
            export_path.write_text(form.to_yaml(config), encoding="utf-8")
            done = subprocess.run([sys.executable, "-m", "tunesmith", "export", str(export_path)],
                                  check=False, capture_output=True, text=True, cwd=workspace.root)
            return (done.stdout + done.stderr)[-4000:]

        chat_load.click(load_chat, inputs, chat_state, api_name="chat_load")
        chat_unload.click(unload_chat, None, chat_state, api_name="chat_unload")
        send.click(respond, [query, chatbot, system, tools, temperature, top_p, max_new_tokens], [chatbot, query],
                   api_name="chat")
        clear.click(list, None, chatbot)
        export_btn.click(export, [config_path, *inputs, *export_fields.values()], export_log, api_name="export")
        preview_btn.click(preview, [config_path, *inputs], command, api_name="preview")
        save_btn.click(save, [config_path, *inputs], command, api_name="save")
        data_btn.click(preview_data, inputs, command, api_name="preview_data")
        load_btn.click(load, [config_path], inputs, api_name="load")
        start_btn.click(start, [config_path, *inputs], [status, log], api_name="start")
        abort_btn.click(abort, None, status, api_name="abort")
        timer.tick(refresh, [lang], [status, progress, loss, log])
        gr.Button(visible=False).click(refresh, [lang], [status, progress, loss, log], api_name="refresh")
        family.change(pick_family, [family],
                      [components["model_name_or_path"], components["template"]], api_name="pick_family")
        lang.change(texts.updates, [lang], texts.components)
    return app


def run_webui(host: str = "127.0.0.1", port: int = 7860, share: bool = False, auth: list | None = None,
              root: str | Path = ".", trust_remote_code: bool = False) -> int:
    """Serves the app; refuses (DoorError) to listen beyond loopback or to share without credentials."""
    from tunesmith.webui.door import check_exposure

    check_exposure(host, share, auth or [])
    Workspace(root)  # a missing --root fails before gradio is imported
    app = build_app(root, trust_remote_code)
    print(f"tunesmith web UI on http://{host}:{port} (workspace {Path(root).resolve()}"
          f"{', login required' if auth else ''}{', trust_remote_code allowed' if trust_remote_code else ''})")
    app.queue().launch(server_name=host, server_port=port, share=share, auth=list(auth) if auth else None)
    while True:  # launch() returns when not blocking in some environments
        time.sleep(3600)
