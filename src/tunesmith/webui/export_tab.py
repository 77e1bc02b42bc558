"""The Export tab: writes the YAML `tunesmith export` reads (the Train tab's model keys plus the export keys) beside
the Train tab's config, runs that CLI and shows its output."""

from __future__ import annotations

from tunesmith.errors import TunesmithError
from tunesmith.webui import form
from tunesmith.webui.texts import ui

KEYS = ("export_dir", "export_size", "export_dtype")


def build_export_tab(gr, texts, fields: dict, train, workspace) -> tuple:
    """The tab's components and events; every path is confined to the workspace. Returns its fields by key and
    (export function, its inputs, its output), so the Runs tab can export a run in one click."""
    with texts.label(gr.Tab(ui("en", "tab_export"), elem_id="tab-export"), "tab_export"):
        with gr.Row(elem_classes=["ts-grid"]):
            export_fields = [texts.field(form.component(gr, fields[key], "en"), key) for key in KEYS]
        export_btn = texts.value(gr.Button(ui("en", "export_run"), variant="primary"), "export_run")
        export_log = texts.label(gr.Textbox(label=ui("en", "log"), lines=6, elem_id="export_log"), "log")

    def export(path, *values):
        import subprocess
        import sys

        *train_values, export_dir, export_size, export_dtype = values
        config = {**train.collect(*train_values), "export_dir": export_dir, "export_size": int(export_size or 5),
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

    inputs = [train.config_path, *train.inputs, *export_fields]
    export_btn.click(export, inputs, export_log, api_name="export")
    return dict(zip(KEYS, export_fields)), (export, inputs, export_log)
