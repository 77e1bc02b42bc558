"""Converts rows of Alpaca, ShareGPT, OpenAI-messages and plain-text datasets into canonical records."""

from __future__ import annotations

import json
import logging

from tunesmith.data.records import ANSWER_ROLES, ASSISTANT, FUNCTION, OBSERVATION, PROMPT_ROLES, SYSTEM, USER
from tunesmith.data.registry import DatasetSpec
from tunesmith.errors import DataError

log = logging.getLogger(__name__)

RECORD_COLUMNS = ("prompt", "response", "system", "tools", "kto_tag")
PAIRWISE_STAGES = ("rm", "dpo")


def detect_formatting(spec: DatasetSpec, column_names: list[str]) -> DatasetSpec:
    """For a dataset given as a path: sharegpt/openai when rows hold messages, text for pre-training, else alpaca."""
    import dataclasses

    if spec.formatting != "auto":
        return spec
    for column in ("messages", "conversations"):
        if column in column_names:
            return dataclasses.replace(spec, formatting="sharegpt", columns={"messages": column})
    if "text" in column_names and "instruction" not in column_names:
        return dataclasses.replace(spec, formatting="alpaca", columns={"prompt": "text", "response": None})
    return dataclasses.replace(spec, formatting="alpaca")


def _sharegpt_tags(spec: DatasetSpec, first_message) -> DatasetSpec:
    """Paths holding OpenAI-style role/content messages get the matching tags."""
    import dataclasses

    if spec.tags or spec.formatting != "sharegpt" or not isinstance(first_message, dict):
        return spec
    if "role" in first_message and "from" not in first_message:
        return dataclasses.replace(spec, formatting="openai")
    return spec


def _where(spec: DatasetSpec, index: int) -> str:
    return f"dataset '{spec.name}' ({spec.location}) record {index} (0-based)"


def _require_columns(spec: DatasetSpec, column_names: list[str], needed: dict[str, str | None]) -> None:
    missing = {key: col for key, col in needed.items() if col and col not in column_names}
    if missing:
        wanted = ", ".join(f"'{col}' ({key})" for key, col in missing.items())
        raise DataError(
            f"dataset '{spec.name}' ({spec.location}) has no column {wanted}; its columns are "
            f"{', '.join(column_names)}. Map them in dataset_info.json under \"columns\" "
            f"(formatting: {spec.formatting})"
        )


def _tools_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _kto(spec, row, index):
    column = spec.column("kto_tag")
    if not column:
        return None
    value = row.get(column)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise DataError(f"{_where(spec, index)}: kto_tag column '{column}' must be true or false, got {value!r}")
    return value


def alpaca_record(spec: DatasetSpec, row: dict, index: int, stage: str) -> dict | None:
    prompt = []
    history_column = spec.column("history")
    history = row.get(history_column) if history_column else None
    if isinstance(history, list):
        for turn in history:
            if not isinstance(turn, (list, tuple)) or len(turn) != 2:
                raise DataError(f"{_where(spec, index)}: each '{history_column}' item must be [query, answer]")
            prompt += [{"role": USER, "content": str(turn[0])}, {"role": ASSISTANT, "content": str(turn[1])}]
    query = [row.get(spec.column(key)) for key in ("prompt", "query") if spec.column(key)]
    query = [str(part) for part in query if part]
    if not query and stage != "pt":
        raise DataError(f"{_where(spec, index)}: empty '{spec.column('prompt')}' (the instruction)")
    prompt.append({"role": USER, "content": "\n".join(query)})
    response = []
    kto_tag = _kto(spec, row, index)
    if stage in PAIRWISE_STAGES:
        chosen, rejected = row.get(spec.column("chosen")), row.get(spec.column("rejected"))
        if not isinstance(chosen, str) or not isinstance(rejected, str):
            raise DataError(f"{_where(spec, index)}: chosen and rejected must both be text")
        response = [{"role": ASSISTANT, "content": chosen}, {"role": ASSISTANT, "content": rejected}]
    elif spec.column("response") and stage != "pt":
        answer = row.get(spec.column("response"))
        if isinstance(answer, str):
            response = [{"role": ASSISTANT, "content": answer}]
        elif stage in ("sft", "kto"):
            raise DataError(f"{_where(spec, index)}: '{spec.column('response')}' (the answer) is missing or not text")
    system = row.get(spec.column("system")) if spec.column("system") else ""
    tools = row.get(spec.column("tools")) if spec.column("tools") else ""
    return {"prompt": prompt, "response": response, "system": system or "", "tools": _tools_text(tools),
            "kto_tag": kto_tag}


def _tag_roles(spec: DatasetSpec) -> dict:
    return {spec.tag("user_tag"): USER, spec.tag("assistant_tag"): ASSISTANT, spec.tag("observation_tag"): OBSERVATION,
            spec.tag("function_tag"): FUNCTION, spec.tag("system_tag"): SYSTEM}


def _message(spec, message, index, roles) -> dict:
    role_tag, content_tag = spec.tag("role_tag"), spec.tag("content_tag")
    if not isinstance(message, dict) or role_tag not in message:
        raise DataError(f"{_where(spec, index)}: every message needs a '{role_tag}' key (the role tag); got "
                        f"{message!r:.120}")
    role = message[role_tag]
    content = message.get(content_tag)
    if spec.formatting == "openai" and message.get("tool_calls") and role in (spec.tag("assistant_tag"),
                                                                              spec.tag("function_tag")):
        calls = [call.get("function", call) for call in message["tool_calls"]]
        return {"role": FUNCTION, "content": json.dumps(calls, ensure_ascii=False)}
    if role not in roles:
        allowed = ", ".join(repr(tag) for tag in roles if tag)
        raise DataError(f"{_where(spec, index)}: unknown role {role!r} in '{role_tag}'; allowed: {allowed} "
                        "(set \"tags\" in dataset_info.json if your data uses other names)")
    if content is None and not message.get("tool_calls"):
        raise DataError(f"{_where(spec, index)}: a message has no '{content_tag}' (the content tag)")
    if not isinstance(content, str):
        content = json.dumps(content, ensure_ascii=False)
    return {"role": roles[role], "content": content}


def _merge_tool_results(messages: list[dict]) -> list[dict]:
    """OpenAI data gives one tool message per result; templates expect them as one observation turn."""
    merged = []
    for message in messages:
        if message["role"] == OBSERVATION and merged and merged[-1]["role"] == OBSERVATION:
            merged[-1] = {"role": OBSERVATION,
                          "content": merged[-1]["content"] + "\n</tool_response>\n<tool_response>\n" +
                          message["content"]}
        else:
            merged.append(message)
    return merged


def sharegpt_record(spec: DatasetSpec, row: dict, index: int, stage: str) -> dict | None:
    """None when the turns are out of order (LLaMA-Factory skips such records too; the caller counts them)."""
    roles = _tag_roles(spec)
    raw = row.get(spec.column("messages"))
    if not isinstance(raw, list):
        raise DataError(f"{_where(spec, index)}: '{spec.column('messages')}' must be a list of messages")
    messages = [_message(spec, message, index, roles) for message in raw]
    system = ""
    if messages and messages[0]["role"] == SYSTEM:
        system = messages[0]["content"]
        messages = messages[1:]
    elif spec.column("system"):
        system = row.get(spec.column("system")) or ""
    if spec.formatting == "openai":
        messages = _merge_tool_results(messages)
    for turn, message in enumerate(messages):
        if message["role"] not in (PROMPT_ROLES if turn % 2 == 0 else ANSWER_ROLES):
            return None
    pairwise = stage in PAIRWISE_STAGES
    if (len(messages) % 2 == 0) == pairwise:  # pairwise data ends with the prompt; others with the answer
        return None
    if pairwise:
        picked = []
        for key in ("chosen", "rejected"):
            value = row.get(spec.column(key))
            if not isinstance(value, dict):
                raise DataError(f"{_where(spec, index)}: '{spec.column(key)}' must be one message object")
            picked.append(_message(spec, value, index, roles))
        if any(m["role"] not in ANSWER_ROLES for m in picked):
            return None
        prompt, response = messages, picked
    elif stage == "pt":
        prompt, response = messages, []
    else:
        prompt, response = messages[:-1], messages[-1:]
    tools = row.get(spec.column("tools")) if spec.column("tools") else ""
    return {"prompt": prompt, "response": response, "system": system or "", "tools": _tools_text(tools),
            "kto_tag": _kto(spec, row, index)}


def required_columns(spec: DatasetSpec, stage: str) -> dict[str, str | None]:
    if spec.formatting == "alpaca":
        needed = {"prompt": spec.column("prompt")}
        if stage in PAIRWISE_STAGES:
            needed.update(chosen=spec.column("chosen"), rejected=spec.column("rejected"))
        elif stage in ("sft", "kto"):
            needed["response"] = spec.column("response")
    else:
        needed = {"messages": spec.column("messages")}
        if stage in PAIRWISE_STAGES:
            needed.update(chosen=spec.column("chosen"), rejected=spec.column("rejected"))
    if stage == "kto":
        needed["kto_tag"] = spec.column("kto_tag")
    return needed


def check_stage(spec: DatasetSpec, stage: str) -> None:
    if stage in PAIRWISE_STAGES and not spec.ranking and spec.formatting != "auto":
        raise DataError(f"dataset '{spec.name}' is not a ranking dataset; stage {stage} needs chosen/rejected "
                        "answers (set \"ranking\": true and the chosen/rejected columns in dataset_info.json)")
    if stage == "kto" and not spec.column("kto_tag"):
        raise DataError(f"dataset '{spec.name}' has no kto_tag column; stage kto needs one (a true/false column "
                        "mapped as \"kto_tag\" under \"columns\" in dataset_info.json)")


def convert(dataset, spec: DatasetSpec, stage: str, num_proc: int | None = None):
    """Maps a loaded dataset onto canonical records; fails on the first bad record with its index."""
    spec = detect_formatting(spec, dataset.column_names)
    if spec.formatting == "sharegpt" and len(dataset):
        first = dataset[0].get(spec.column("messages"))
        spec = _sharegpt_tags(spec, first[0] if isinstance(first, list) and first else None)
    check_stage(spec, stage)
    _require_columns(spec, dataset.column_names, required_columns(spec, stage))
    to_record = alpaca_record if spec.formatting == "alpaca" else sharegpt_record

    def convert_batch(batch, indices):
        out = {column: [] for column in (*RECORD_COLUMNS, "_keep")}
        keys = list(batch)
        for position, index in enumerate(indices):
            row = {key: batch[key][position] for key in keys}
            record = to_record(spec, row, index, stage)
            keep = record is not None
            record = record or {"prompt": [], "response": [], "system": "", "tools": "", "kto_tag": None}
            for column in RECORD_COLUMNS:
                out[column].append(record[column])
            out["_keep"].append(keep)
        return out

    converted = dataset.map(convert_batch, batched=True, with_indices=True, remove_columns=dataset.column_names,
                            num_proc=num_proc, load_from_cache_file=False,
                            desc=f"converting {spec.name}" if len(dataset) > 5000 else None)
    kept = converted.filter(lambda keep: keep, input_columns="_keep", load_from_cache_file=False)
    skipped = len(converted) - len(kept)
    if skipped:
        log.warning("dataset '%s': skipped %d of %d records whose turns are out of order (user/assistant must "
                    "alternate)", spec.name, skipped, len(converted))
    return kept.remove_columns("_keep")
