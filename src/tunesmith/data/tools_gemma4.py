"""Gemma 4's tool format (declarations and calls in its own `<|"|>`-quoted syntax), as LLaMA-Factory 0.9.5 writes it."""

from __future__ import annotations

import json
import re

QUOTE = '<|"|>'


def _quoted(text) -> str:
    return f"{QUOTE}{text}{QUOTE}"


def _declaration(tool: dict) -> str:
    tool = tool.get("function", tool) if tool.get("type") == "function" else tool
    text = f"declaration:{tool['name']}{{description:{_quoted(tool.get('description', ''))}"
    params = tool.get("parameters")
    if params:
        parts = []
        if params.get("properties"):
            fields = []
            for name, schema in params["properties"].items():
                items = []
                if schema.get("description"):
                    items.append(f"description:{_quoted(schema['description'])}")
                if schema.get("type"):
                    items.append(f"type:{_quoted(str(schema['type']).upper())}")
                fields.append(f"{name}:{{{','.join(items)}}}")
            parts.append(f"properties:{{{','.join(fields)}}}")
        if params.get("required"):
            parts.append("required:[" + ",".join(_quoted(item) for item in params["required"]) + "]")
        if params.get("type"):
            parts.append(f"type:{_quoted(str(params['type']).upper())}")
        text += f",parameters:{{{','.join(parts)}}}"
    response = tool.get("response")
    if response:
        parts = [f"description:{_quoted(response['description'])}"] if response.get("description") else []
        if str(response.get("type", "")).upper() == "OBJECT":
            parts.append(f"type:{_quoted('OBJECT')}")
        text += f",response:{{{','.join(parts)}}}"
    return text + "}"


def gemma4_tools(tools: list[dict], date: str) -> str:
    return "\n".join(_declaration(tool) for tool in tools)


def _value(value) -> str:
    if isinstance(value, str):
        return _quoted(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{_value(value[key])}" for key in sorted(value)) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_value(item) for item in value) + "]"
    return "null" if value is None else str(value)


def gemma4_calls(calls) -> str:
    texts = []
    for name, arguments in calls:
        try:
            parsed = json.loads(arguments)
        except (TypeError, json.JSONDecodeError):
            parsed = arguments
        if isinstance(parsed, dict):
            body = ",".join(f"{key}:{_value(parsed[key])}" for key in sorted(parsed))
        else:
            body = parsed if isinstance(parsed, str) else _value(parsed)
        texts.append(f"<|tool_call>call:{name}{{{body}}}<tool_call|>")
    return "".join(texts)


def _arguments(text: str) -> str:
    text = text.strip()
    if not text:
        return "{}"
    as_json = re.sub(
        r"<\|\"\|>(.*?)<\|\"\|>",
        lambda m: json.dumps(m.group(1), ensure_ascii=False),
        "{" + text + "}",
        flags=re.DOTALL,
    )
    as_json = re.sub(r"(^|[{\s,])([A-Za-z_][A-Za-z0-9_]*)(\s*:)", r'\1"\2"\3', as_json)
    for candidate in (as_json, text):
        try:
            return json.dumps(json.loads(candidate), ensure_ascii=False)
        except json.JSONDecodeError:
            continue
    return text


def gemma4_extract(text: str):
    found = re.findall(r"<\|tool_call>call:([^{\s]+)\{(.*?)\}<tool_call\|>", text, re.DOTALL)
    return [(name.strip(), _arguments(body)) for name, body in found] or None
