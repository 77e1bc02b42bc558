"""The Train tab's dataset preview: `tunesmith data check`'s summary (token lengths, truncation) above a table of the
first encoded examples with their trained tokens highlighted; both from tunesmith.data_job, as the CLI prints them."""

from __future__ import annotations

import contextlib
import html
import io
import json

from tunesmith.webui.texts import ui

ROWS = 5  # examples shown


def error_html(message) -> str:
    return f'<div class="ts-data"><p class="ts-error">error: {html.escape(str(message))}</p></div>'


def _marked(text: str) -> str:
    """data_job.render's text, its ⟦trained⟧ spans as <mark>."""
    from tunesmith.data_job import TRAINED_CLOSE, TRAINED_OPEN

    escaped = html.escape(text)
    return escaped.replace(TRAINED_OPEN, "<mark>").replace(TRAINED_CLOSE, "</mark>")


def _table(headers: list[str], rows: list[list[str]], text_column: int) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    names = [html.escape(h, quote=True) for h in headers]  # a phone shows each cell with its column's name
    body = "".join("<tr>" + "".join(f'<td class="ts-text">{cell}</td>' if i == text_column else
                                    f'<td data-label="{names[i]}">{cell}</td>' for i, cell in enumerate(row)) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def encoded_rows(config, lang: str, n: int = ROWS) -> str:
    """The first n training examples, one row per sequence (chosen/rejected are two), as the trainer gets them."""
    from tunesmith import data_job
    from tunesmith.data.records import IGNORE_INDEX

    tokenizer, encoded = data_job._encoded(config)
    rows = []
    for index in range(min(n, len(encoded))):
        for name, input_ids, labels in data_job.sequences(encoded[index]):
            trained = sum(1 for label in labels if label != IGNORE_INDEX)
            rows.append([str(index), html.escape(name), str(len(input_ids)), str(trained),
                         _marked(data_job.render(tokenizer, input_ids, labels))])
    headers = ["#", ui(lang, "data_col_part"), ui(lang, "data_col_tokens"), ui(lang, "data_col_trained"),
               ui(lang, "data_col_text")]
    return _table(headers, rows, 4)


def check_summary(config) -> str:
    """What `tunesmith data check` prints for this config (counts, p50/p90/p99/max token lengths, truncation)."""
    from tunesmith import data_job

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        data_job.check(config)
    return out.getvalue()


def raw_rows(records, lang: str, n: int = ROWS) -> str:
    rows = [[str(i), f"{html.escape(json.dumps(records[i], ensure_ascii=False, indent=1))}"]
            for i in range(min(n, len(records)))]
    return _table(["#", ui(lang, "data_col_record")], rows, 1)


def preview_html(values: dict, dataset_dir: str, registered: list[str], lang: str) -> str:
    """The preview of a confined config (values): the data check summary and the encoded examples when a model is
    given (its tokenizer encodes them), else the raw records; errors in plain words."""
    from tunesmith.config.load import load_config
    from tunesmith.data.loader import load_records
    from tunesmith.errors import TunesmithError

    registered_line = (f"<p><b>{html.escape(ui(lang, 'data_registered'))}</b> ({html.escape(dataset_dir)}): "
                       f"{html.escape(', '.join(registered))}</p>")
    parts = [registered_line]
    names = [n.strip() for n in str(values.get("dataset") or "").split(",") if n.strip()]
    try:
        if names and values.get("model_name_or_path"):
            config = load_config(None, values)
            summary = check_summary(config)
            parts += [f"<p>{html.escape(ui(lang, 'data_note'))}</p>",
                      f"<pre>$ tunesmith data check\n{html.escape(summary)}</pre>", encoded_rows(config, lang)]
        elif names:
            records = load_records(names, dataset_dir, values.get("stage", "sft"), max_samples=ROWS)
            parts += [f"<p>{html.escape(ui(lang, 'data_need_model'))}</p>", raw_rows(records, lang)]
    except TunesmithError as exc:
        parts.append(f'<p class="ts-error">error: {html.escape(str(exc))}</p>')
    return '<div class="ts-data">' + "".join(parts) + "</div>"
