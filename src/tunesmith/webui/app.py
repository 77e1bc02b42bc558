"""`tunesmith webui`: Gradio front door that writes the same YAML the CLI reads and runs the same command; one module
per tab (train_tab, eval_tab, chat_tab, export_tab), composed here."""

from __future__ import annotations

import time
from pathlib import Path

from tunesmith.webui import form
from tunesmith.webui.texts import LANGUAGES, Relabel, ui
from tunesmith.webui.workspace import Workspace


def build_app(workdir: str | Path = ".", trust_remote_code: bool = False):
    """The Blocks app; every path it reads or writes is inside workdir (its workspace root), training configs and
    logs go to workdir/webui_runs, and jobs run there. trust_remote_code: whether a page may turn that key on."""
    import gradio as gr

    from tunesmith.webui.chat_tab import build_chat_tab
    from tunesmith.webui.eval_tab import build_eval_tab
    from tunesmith.webui.export_tab import build_export_tab
    from tunesmith.webui.runs_tab import build_runs_tab
    from tunesmith.webui.style import page_css
    from tunesmith.webui.train_tab import build_train_tab

    fields = form.fields()
    workspace = Workspace(workdir, trust_remote_code)
    texts = Relabel(gr, fields)
    with gr.Blocks(title="tunesmith") as app:
        texts.title(gr.Markdown(f"## {ui('en', 'title')}"))
        lang = texts.label(gr.Dropdown(choices=list(LANGUAGES), value="en", label=ui("en", "lang"), elem_id="lang"),
                           "lang")
        timer = gr.Timer(1.0)
        # in page order; Runs comes last because it fills the Train, Chat and Export tabs' fields. Tabs that do not fit
        # wrap onto a second row: Gradio's overflow menu hid them on a phone, and once on a loaded machine (a
        # measurement taken mid-render) even at desktop width
        with gr.Tabs(overflow_behavior="wrap"):
            train = build_train_tab(gr, texts, fields, lang, timer, workspace)
            build_eval_tab(gr, texts, fields, lang, train.config_path, train.inputs, train.collect, timer, workspace)
            chat = build_chat_tab(gr, texts, train, workspace)
            export_fields, export = build_export_tab(gr, texts, fields, train, workspace)
            build_runs_tab(gr, texts, workspace, {**dict(zip(train.keys, train.inputs)), **export_fields}, chat, export,
                           lang)
        gr.HTML(f"<style>{page_css(texts.keys)}</style>", elem_id="ts-style", padding=False)
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
