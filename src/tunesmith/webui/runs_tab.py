"""The Runs tab: every run under a workspace folder (tunesmith.runs), its loss curve, config, log and results,
loss curves of several runs overlaid, and one click to resume, chat with or export a run."""

from __future__ import annotations

import re
from pathlib import Path

from tunesmith import runs
from tunesmith.errors import TunesmithError
from tunesmith.webui import form
from tunesmith.webui.runner import CliJob
from tunesmith.webui.texts import ui

PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)  # matplotlib's tab10
RESUME_STATUS = {
    "running": "runs_resuming",
    "done": "runs_resumed",
    "failed": "runs_resume_failed",
    "aborted": "status_aborted",
    "idle": "status_idle",
}


def headers(lang: str) -> list[str]:
    """The runs table's column names in a language (ui texts `runs_col_<header>`)."""
    return [ui(lang, f"runs_col_{name.replace(' ', '_')}") for name in runs.HEADERS]


def _slug(name: str) -> str:
    return re.sub(r"[^\w.-]+", "-", name).strip("-.") or "run"


class RunsView:
    """The tab's handlers, plain functions of the page's values (tests call them directly); every path they read or
    write is confined to the workspace root."""

    def __init__(self, gr, texts, workspace, fill_keys: list[str]):
        self.gr, self.texts, self.workspace, self.fill_keys = gr, texts, workspace, fill_keys
        self.run: CliJob | None = None  # the resume this page started

    def _t(self, text: str, **values) -> str:
        return ui(self.texts.lang, text).format(**values)

    def folder(self, value) -> Path:
        return self.workspace.path(value or ".", "runs folder")

    def _run(self, folder_value, name: str) -> Path:
        """The run folder `name` (as the table lists it) under the runs folder, checked to be inside the root."""
        path = self.workspace.path(self.folder(folder_value) / name, "run")
        if not (path / runs.RUN_CONFIG).is_file():
            raise TunesmithError(f"{name} is not a tunesmith run folder (no {runs.RUN_CONFIG}); press Refresh")
        return path

    # ---------------------------------------------------------------- the table and the selection

    def refresh(self, folder_value, selected):
        """(table rows, the selection's choices and kept values, a message)."""
        try:
            found = runs.scan(self.folder(folder_value))
        except TunesmithError as exc:
            return [], self.gr.update(choices=[], value=[]), f"**{self._t('status_failed')}**: {exc}"
        names = [run.name for run in found]
        kept = [name for name in selected or [] if name in names]
        message = "" if found else self._t("runs_none")
        return [runs.row(run) for run in found], self.gr.update(choices=names, value=kept), message

    def toggle(self, selected, table, index):
        """A click on row `index` of the table adds its run to the selection, or removes it."""
        rows = table.values.tolist() if hasattr(table, "values") else list(table or [])
        if index is None or not 0 <= index < len(rows):
            return self.gr.update()
        name = str(rows[index][0])
        chosen = list(selected or [])
        return [item for item in chosen if item != name] if name in chosen else [*chosen, name]

    def curves(self, folder_value, selected):
        """The loss curves of the selected runs as one frame (step, loss, run): one colour a run."""
        import pandas as pd

        points = []
        for name in selected or []:
            try:
                path = self._run(folder_value, name)
            except TunesmithError:
                continue
            points += [(step, loss, name) for step, loss in runs.losses(path)]
        return pd.DataFrame(points, columns=["step", "loss", "run"])

    def detail(self, folder_value, selected):
        """(summary, config, log tail, all_results.json) of the last selected run (the one picked most recently)."""
        if not selected:
            return self._t("runs_pick"), "", "", None
        try:
            path = self._run(folder_value, selected[-1])
            detail = runs.run_detail(path, self.folder(folder_value), allowed=self._readable)
        except TunesmithError as exc:
            return f"**{self._t('status_failed')}**: {exc}", "", "", None
        run = detail.run
        cells = dict(zip(runs.HEADERS, runs.row(run)))
        summary = (
            f"**{run.name}** — {run.status}, step {cells['steps']}, last loss {cells['last loss']}, best "
            f"{cells['best loss']}, {cells['time']}, {cells['size']}; model `{run.model}`"
        )
        if run.checkpoint and run.resumable:
            summary += f"; resumes from `{run.checkpoint}`"
        if run.error:
            summary += f"\n\n{run.error}"
        return summary, detail.config, detail.log, detail.results

    def _readable(self, path: Path) -> bool:
        try:
            self.workspace.path(path, "log")
        except TunesmithError:
            return False
        return True

    def show(self, folder_value, selected):
        """The curves, with a colour named for every selected run (a plot keeps the series it first drew
        otherwise), and the detail."""
        frame = self.curves(folder_value, selected)
        colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(dict.fromkeys(frame["run"]))}
        return (self.gr.update(value=frame, color_map=colors), *self.detail(folder_value, selected))

    # ---------------------------------------------------------------- resume, chat, export

    def _first(self, folder_value, selected) -> runs.Run:
        if not selected:
            raise TunesmithError(self._t("runs_pick"))
        return runs.read_run(self._run(folder_value, selected[-1]), self.folder(folder_value))

    def resume(self, folder_value, selected) -> str:
        """Starts `tunesmith train` on the run's recorded config with resume_from_checkpoint: true (the YAML is
        written to webui_runs/resume-NAME.yaml); it continues from the newest intact checkpoint."""
        if self.run is not None and self.run.running():
            return f"**{self._t('runs_resuming')}**: `{form.command_line(self.run.config_path)}`"
        try:
            run = self._first(folder_value, selected)
            if not run.resumable:
                raise TunesmithError(self._t("runs_not_resumable", name=run.name, status=run.status))
            config = self.workspace.confine(runs.resume_values(run.path))
            path = self.workspace.config_path(self.workspace.root / "webui_runs" / f"resume-{_slug(run.name)}.yaml")
        except TunesmithError as exc:
            return f"**{self._t('runs_resume_failed')}**: {exc}"
        error = form.validate(config)
        if error is not None:
            return f"**{self._t('runs_resume_failed')}**: {error}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(form.to_yaml(config), encoding="utf-8")
        self.run = CliJob(path, run.path, cwd=self.workspace.root).started()
        where = run.checkpoint or "step 0"
        return f"**{self._t('runs_resuming')}** {run.name} ({where}): `{form.command_line(path)}`"

    def poll(self) -> tuple[str, str, bool]:
        """(status of the resume this page started, its log tail, whether it has ended)."""
        if self.run is None:
            return "", "", False
        state = self.run.status()
        text = f"**{self._t(RESUME_STATUS[state])}**: `{form.command_line(self.run.config_path)}`"
        if self.run.failure():
            text += f"\n\n{self.run.failure()}"
        return text, self.run.log_tail(20), state != "running"

    def model_values(self, folder_value, selected) -> dict:
        """The finished run's model as config keys (base model + its adapter, or its full model), checked."""
        run = self._first(folder_value, selected)
        if run.status != "finished":
            raise TunesmithError(self._t("runs_not_finished", name=run.name, status=run.status))
        return self.workspace.confine(runs.model_values(run.path))

    def fill(self, folder_value, selected, action: str):
        """(message, ok, one value a fill key): the Train tab's model keys (and export_dir) set to the run's."""
        fields = form.fields()
        try:
            values = self.model_values(folder_value, selected)
            if action == "export":
                target = self.workspace.root / "exports" / _slug(selected[-1])
                values["export_dir"] = str(self.workspace.path(target, "export_dir", write=True))
        except TunesmithError as exc:
            return (f"**{self._t('status_failed')}**: {exc}", False, *(self.gr.update() for _ in self.fill_keys))
        updates = []
        for key in self.fill_keys:
            value = values.get(key, fields[key].default if key in fields else None)
            if key == "export_dir" and action != "export":
                updates.append(self.gr.update())
                continue
            updates.append(",".join(map(str, value)) if isinstance(value, (list, tuple)) else value)
        if action == "export":
            message = self._t("runs_exporting", path=values["export_dir"])
        else:
            message = self._t("runs_chat_loading")
        return (message, True, *updates)


def _guarded(gr, then):
    """`then` = (fn, inputs, outputs) run after a fill only when it succeeded (its first input is the ok flag)."""
    fn, inputs, outputs = then
    count = len(outputs) if isinstance(outputs, (list, tuple)) else 1

    def run(ok, *values):
        if not ok:
            return gr.update() if count == 1 else [gr.update()] * count
        return fn(*values)

    return run, inputs, outputs


def build_runs_tab(gr, texts, workspace, fill: dict | None = None, chat=None, export=None, lang=None) -> RunsView:
    """The Runs tab. fill: components by config key (the Train tab's model keys, the Export tab's export_dir) that
    Chat / Export set from a finished run; chat / export: (fn, inputs, outputs) run right after that fill (the Chat
    tab's Load model, the Export tab's Export), so each is one click; lang: the page's language dropdown (the table
    is listed again with its column names in that language). Returns the handlers."""
    fill = {
        key: component
        for key, component in (fill or {}).items()
        if key in form.SECTIONS["model"] or key == "export_dir"
    }
    view = RunsView(gr, texts, workspace, list(fill))
    with texts.label(gr.Tab(ui("en", "tab_runs"), elem_id="tab-runs"), "tab_runs") as tab:
        texts.value(gr.Markdown(ui("en", "runs_note")), "runs_note")
        with gr.Row():
            folder = texts.label(
                gr.Textbox(
                    value=".",
                    label=ui("en", "runs_folder"),
                    info=ui("en", "runs_folder_help"),
                    elem_id="runs_folder",
                    scale=4,
                ),
                "runs_folder",
            )
            refresh_btn = texts.value(gr.Button(ui("en", "runs_refresh"), elem_id="runs_refresh"), "runs_refresh")
        table = texts.table(
            gr.Dataframe(headers=headers("en"), label=ui("en", "runs_table"), interactive=False, elem_id="runs_table"),
            "runs_table",
            headers,
        )
        message = gr.Markdown("", elem_id="runs_message")
        selected = texts.label(
            gr.Dropdown(
                choices=[],
                value=[],
                multiselect=True,
                label=ui("en", "runs_selected"),
                info=ui("en", "runs_selected_help"),
                elem_id="runs_selected",
            ),
            "runs_selected",
        )
        with gr.Row():
            resume_btn = texts.value(gr.Button(ui("en", "runs_resume"), elem_id="runs_resume"), "runs_resume")
            chat_btn = texts.value(gr.Button(ui("en", "runs_chat"), elem_id="runs_chat"), "runs_chat")
            export_btn = texts.value(gr.Button(ui("en", "runs_export"), elem_id="runs_export"), "runs_export")
        action = gr.Markdown("", elem_id="runs_action")
        curves = texts.label(
            gr.LinePlot(x="step", y="loss", color="run", label=ui("en", "runs_curves"), elem_id="runs_curves"),
            "runs_curves",
        )
        summary = gr.Markdown("", elem_id="runs_summary")
        with gr.Row():
            config = texts.label(
                gr.Code(label=ui("en", "runs_config"), language="yaml", elem_id="runs_config"), "runs_config"
            )
            with gr.Column():
                log = texts.label(
                    gr.Textbox(label=ui("en", "runs_log"), lines=12, max_lines=12, elem_id="runs_log"), "runs_log"
                )
                results = texts.label(gr.JSON(label=ui("en", "runs_results"), elem_id="runs_results"), "runs_results")
        ok = gr.State(False)
        timer = gr.Timer(2.0)

    def select_row(chosen, rows, event):
        return view.toggle(chosen, rows, event.index[0] if event is not None else None)

    select_row.__annotations__["event"] = gr.SelectData  # gradio passes the click by this type (not a string)

    def tick(folder_value, chosen):
        text, tail, ended = view.poll()
        if not text:
            return gr.update(), gr.update(), gr.update(), gr.update()
        rows, choices, _ = view.refresh(folder_value, chosen) if ended else (gr.update(), gr.update(), None)
        if ended:
            view.run = None  # reported once; the table now shows the run's new state
        return text, tail, rows, choices

    shown = [curves, summary, config, log, results]
    # every event has a name of its own: an unnamed one is named after its function and could take the app's names
    refresh_btn.click(view.refresh, [folder, selected], [table, selected, message], api_name="runs_refresh")
    folder.submit(view.refresh, [folder, selected], [table, selected, message], api_name="runs_folder")
    tab.select(view.refresh, [folder, selected], [table, selected, message], api_name="runs_open")  # lists them
    table.select(select_row, [selected, table], selected, api_name="runs_select_row")
    selected.change(view.show, [folder, selected], shown, api_name="runs_show")
    resume_btn.click(view.resume, [folder, selected], action, api_name="runs_resume")
    timer.tick(tick, [folder, selected], [action, log, table, selected], api_name="runs_tick")
    if lang is not None:  # a table shows the headers of its value: new names come with the rows
        lang.change(
            lambda lang_value, f, s: gr.update(value=view.refresh(f, s)[0], headers=headers(lang_value)),
            [lang, folder, selected],
            table,
            api_name="runs_relabel",
        )
    fill_outputs = [action, ok, *fill.values()]
    for button, name, then in ((chat_btn, "chat", chat), (export_btn, "export", export)):
        event = button.click(
            lambda f, s, name=name: view.fill(f, s, name), [folder, selected], fill_outputs, api_name=f"runs_{name}"
        )
        if then is not None:
            fn, inputs, outputs = _guarded(gr, then)
            event.then(fn, [ok, *inputs], outputs, api_name=f"runs_{name}_then")
    return view
