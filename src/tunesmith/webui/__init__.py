"""Web UI (Gradio): the whole workflow in the browser, in English and Chinese."""
