"""The Train tab: the most used options shown, the rest in sections; writes the YAML `tunesmith train` reads, runs that
CLI and follows its progress, speed, memory and loss; previews the dataset as the model sees it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.webui import form
from tunesmith.webui.runner import CliJob, format_bytes, read_progress
from tunesmith.webui.texts import ui

STATUS = {"running": "status_running", "done": "status_done", "failed": "status_failed", "aborted": "status_aborted",
          "idle": "status_idle"}


@dataclasses.dataclass
class TrainForm:
    """What the other tabs take from the Train tab: its config path box, its inputs (in form.SECTIONS order) and
    collect(*values) -> the config dict."""

    config_path: object
    inputs: list
    keys: list[str]

    def collect(self, *values) -> dict:
        return form.to_config(dict(zip(self.keys, values)))


def format_seconds(value) -> str:
    if value is None:
        return "--:--"
    value = int(value)
    return f"{value // 3600:02d}:{value % 3600 // 60:02d}:{value % 60:02d}"


def progress_text(lang: str, status: str, info: dict, memory: dict) -> str:
    """`Running — 3/10 (30%), 00:00:04 elapsed, 00:00:09 left · 812 tokens/s · memory 1.2 GiB RAM, 3.0 GiB GPU`."""
    text = (f"**{ui(lang, STATUS[status])}** — {info['step']}/{info['total_steps']} ({info['percentage'] or 0:.0f}%), "
            f"{format_seconds(info['elapsed'])} {ui(lang, 'elapsed')}, {format_seconds(info['remaining'])} "
            f"{ui(lang, 'left')}")
    if info.get("tokens_per_second"):
        text += f" · {info['tokens_per_second']:,.0f} {ui(lang, 'tokens_per_second')}"
    if memory:
        parts = [f"{format_bytes(memory['ram'])} RAM"] + ([f"{format_bytes(memory['gpu'])} GPU"] if "gpu" in memory
                                                           else [])
        text += f" · {ui(lang, 'memory')} {', '.join(parts)}"
    return text


def estimate_text(config: dict, lang: str) -> str:
    """`tunesmith estimate` on the form's config (model.memory.build, estimate.table): the breakdown, a warning when
    the peak exceeds the free memory, or the error in plain words."""
    from tunesmith.config.load import load_config, require
    from tunesmith.estimate import table
    from tunesmith.model.memory import build, free_memory, size

    try:
        loaded = load_config(None, config)
        require(loaded, "model_name_or_path", job="estimate")
        est, (device, free) = build(loaded), free_memory()
    except TunesmithError as exc:
        return f"**{ui(lang, 'estimate_failed')}**: {exc}"
    text = f"```\n{table(loaded, est, (device, free))}\n```"
    if free is not None and est.peak > free:
        warning = ui(lang, "estimate_too_big").format(peak=size(est.peak), device=device, free=size(free))
        text = f"**{warning}**\n\n{text}"
    return text


def _fields(gr, texts, fields: dict, section: str, components: dict) -> None:
    with gr.Row(elem_classes=["ts-grid"]):
        if section == "model":
            families = form.families()
            components["model_family"] = texts.label(
                gr.Dropdown(choices=list(families), value=None, elem_id="model_family", label=ui("en", "model_family"),
                            info=ui("en", "model_family_help"), elem_classes=["ts-wrap"]), "model_family")
        for key in form.SECTIONS[section]:
            components[key] = texts.field(form.component(gr, fields[key], "en"), key)


def build_train_tab(gr, texts, fields: dict, lang, timer, workspace) -> TrainForm:
    """The tab's components and events; every path it reads or writes is confined to the workspace."""
    import pandas as pd

    state = {"run": None}
    keys = [key for section in form.SECTIONS.values() for key in section]
    components: dict[str, object] = {}
    runs_dir = workspace.root / "webui_runs"
    with texts.label(gr.Tab(ui("en", "tab_train"), elem_id="tab-train"), "tab_train"):
        for section in form.SECTIONS:
            title = f"sec_{section}"
            if section in form.ALWAYS_SHOWN:
                texts.heading(gr.Markdown(f"### {ui('en', title)}", elem_classes=["ts-heading"]), title)
                _fields(gr, texts, fields, section, components)
            else:
                with texts.label(gr.Accordion(ui("en", title), open=False, elem_id=f"sec-{section}"), title):
                    _fields(gr, texts, fields, section, components)
        config_path = texts.label(gr.Textbox(label=ui("en", "config_path"), value=str(runs_dir / "train.yaml"),
                                             elem_id="config_path", elem_classes=["ts-wrap"]), "config_path")
        with gr.Row(elem_classes=["ts-buttons"]):
            preview_btn = texts.value(gr.Button(ui("en", "preview")), "preview")
            save_btn = texts.value(gr.Button(ui("en", "save")), "save")
            load_btn = texts.value(gr.Button(ui("en", "load")), "load")
            data_btn = texts.value(gr.Button(ui("en", "preview_datasets"), elem_id="preview_datasets"),
                                   "preview_datasets")
            estimate_btn = texts.value(gr.Button(ui("en", "estimate"), elem_id="estimate"), "estimate")
            start_btn = texts.value(gr.Button(ui("en", "start"), variant="primary", elem_id="start"), "start")
            abort_btn = texts.value(gr.Button(ui("en", "abort"), variant="stop"), "abort")
        marks = gr.Markdown("", elem_id="bad_fields")
        data_view = gr.HTML("", elem_id="data_preview")
        estimate_view = gr.Markdown("", elem_id="estimate_view")
        command = gr.Code(label="YAML", language="yaml")
        status = gr.Markdown(ui("en", "status_idle"), elem_id="train_status")
        progress = texts.label(gr.Slider(0, 100, value=0, label=ui("en", "progress"), interactive=False,
                                         elem_id="progress"), "progress")
        loss = texts.label(gr.LinePlot(x="step", y="loss", label=ui("en", "loss"), elem_id="loss"), "loss")
        log = texts.label(gr.Textbox(label=ui("en", "log"), lines=12, max_lines=12, autoscroll=True), "log")
        refresh_btn = gr.Button(visible=False)  # the API's /refresh (the page itself follows the timer)
    inputs = [components[key] for key in keys]
    train = TrainForm(config_path, inputs, keys)
    collect = train.collect

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
        from tunesmith.data.registry import read_registry
        from tunesmith.webui.data_view import error_html, preview_html

        try:
            config = workspace.confine(collect(*values))
            dataset_dir = str(workspace.dataset_dir(config))
            registered = sorted(read_registry(dataset_dir))
        except TunesmithError as exc:
            return error_html(exc)
        return preview_html(config, dataset_dir, registered, texts.lang)

    def estimate(*values):
        try:
            config = workspace.confine(collect(*values))
        except TunesmithError as exc:
            return f"**{ui(texts.lang, 'estimate_failed')}**: {exc}"
        return estimate_text(config, texts.lang)

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
        from tunesmith.config.load import read_yaml

        try:
            path = workspace.config_path(path, "config path")
            data = read_yaml(path)  # the CLI's reader: `save_strategy: no` stays "no", 1e-4 is a number
        except TunesmithError as exc:
            raise gr.Error(str(exc)) from None
        unknown = [key for key in data if key not in fields]
        if unknown:
            gr.Warning(f"{path}: not on the form, not loaded: {', '.join(unknown)}")
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
        state["run"] = CliJob(path, output_dir, cwd=workspace.root).started()
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
        text = progress_text(lang_value, run.status(), info, run.memory())
        if run.failure():
            text += f"\n\n{run.failure()}"
        frame = pd.DataFrame(info["losses"], columns=["step", "loss"])
        return text, info["percentage"] or 0, frame, run.log_tail()

    def mark(*values):
        """Marks the fields the config's error names (and clears the others); a line says which to check."""
        try:
            error = form.validate(workspace.confine(collect(*values)))
        except TunesmithError as exc:
            error = str(exc)
        bad = set(form.named_keys(error or "", keys))
        updates = [gr.update(elem_classes=["ts-field", "ts-bad"] if key in bad else ["ts-field"]) for key in keys]
        note = f"**{ui(texts.lang, 'bad_fields')}**: " + ", ".join(f"`{key}`" for key in keys if key in bad)
        return [note if bad else "", *updates]

    def pick_family(name):
        entry = form.families().get(name) or {}
        return entry.get("path") or gr.update(), entry.get("template") or gr.update()

    preview_btn.click(preview, [config_path, *inputs], command, api_name="preview").then(
        mark, inputs, [marks, *inputs], api_visibility="private")
    save_btn.click(save, [config_path, *inputs], command, api_name="save").then(
        mark, inputs, [marks, *inputs], api_visibility="private")
    data_btn.click(preview_data, inputs, data_view, api_name="preview_data")
    estimate_btn.click(estimate, inputs, estimate_view, api_name="estimate")
    load_btn.click(load, [config_path], inputs, api_name="load")
    start_btn.click(start, [config_path, *inputs], [status, log], api_name="start").then(
        mark, inputs, [marks, *inputs], api_visibility="private")
    abort_btn.click(abort, None, status, api_name="abort")
    timer.tick(refresh, [lang], [status, progress, loss, log])
    refresh_btn.click(refresh, [lang], [status, progress, loss, log], api_name="refresh")
    components["model_family"].change(pick_family, [components["model_family"]],
                                      [components["model_name_or_path"], components["template"]],
                                      api_name="pick_family")
    return train
