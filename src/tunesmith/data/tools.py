"""Tool-call formats: how a template writes the tool list into the system text and an assistant's tool calls."""

from __future__ import annotations

import datetime
import json
import re
from typing import NamedTuple

from tunesmith.data import tools_gemma4, tools_xml
from tunesmith.errors import DataError


class FunctionCall(NamedTuple):
    name: str
    arguments: str  # JSON text


DEFAULT_PROMPT = (
    "You have access to the following tools:\n{tool_text}"
    "Use the following format if using a tool:\n```\n"
    "Action: tool name (one of [{tool_names}])\n"
    "Action Input: the input to the tool, in a JSON format representing the kwargs "
    '(e.g. ```{{"input": "hello world", "num_beams": 5}}```)\n```\n'
)
GLM4_PROMPT = (
    "你是一个名为 ChatGLM 的人工智能助手。你是基于智谱 AI 公司训练的语言模型 GLM-4 模型开发的，"
    "你的任务是针对用户的问题和要求提供适当的答复和支持。\n\n# 可用工具{tool_text}"
)
LLAMA3_PROMPT = (
    "Cutting Knowledge Date: December 2023\nToday Date: {date}\n\n"
    "You have access to the following functions. To call a function, please respond with JSON for a function call. "
    'Respond in the format {{"name": function name, "parameters": dictionary of argument name and its value}}. '
    "Do not use variables.\n\n{tool_text}"
)
QWEN_PROMPT = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>{tool_text}"
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{{"name": <function-name>, '
    '"arguments": <args-json-object>}}\n</tool_call>'
)


def _unwrap(tool: dict) -> dict:
    return tool.get("function", "") if tool.get("type") == "function" else tool


def _wrap(tool: dict) -> dict:
    return tool if tool.get("type") == "function" else {"type": "function", "function": tool}


def default_tools(tools: list[dict], date: str) -> str:
    text, names = "", []
    for tool in map(_unwrap, tools):
        params = ""
        for name, param in tool["parameters"]["properties"].items():
            required = ", required" if name in tool["parameters"].get("required", []) else ""
            enum = ", should be one of [{}]".format(", ".join(param["enum"])) if param.get("enum") else ""
            items = ", where each item should be {}".format(param["items"].get("type", "")) if param.get(
                "items") else ""
            params += f"  - {name} ({param.get('type', '')}{required}): {param.get('description', '')}{enum}{items}\n"
        text += f"> Tool Name: {tool['name']}\nTool Description: {tool.get('description', '')}\nTool Args:\n{params}\n"
        names.append(tool["name"])
    return DEFAULT_PROMPT.format(tool_text=text, tool_names=", ".join(names))


def default_calls(calls: list[FunctionCall]) -> str:
    return "\n".join(f"Action: {name}\nAction Input: {arguments}" for name, arguments in calls)


def glm4_tools(tools: list[dict], date: str) -> str:
    text = ""
    for tool in map(_unwrap, tools):
        body = json.dumps(tool, indent=4, ensure_ascii=False)
        text += f"\n\n## {tool['name']}\n\n{body}\n在调用上述函数时，请使用 Json 格式表示调用的参数。"
    return GLM4_PROMPT.format(tool_text=text)


def glm4_calls(calls: list[FunctionCall]) -> str:
    if len(calls) > 1:
        raise DataError("the glm4 tool format cannot express parallel function calls (more than one per turn)")
    return f"{calls[0].name}\n{calls[0].arguments}"


def llama3_tools(tools: list[dict], date: str) -> str:
    text = "".join(json.dumps(_wrap(tool), indent=4, ensure_ascii=False) + "\n\n" for tool in tools)
    return LLAMA3_PROMPT.format(date=date, tool_text=text)


def llama3_calls(calls: list[FunctionCall]) -> str:
    objects = [{"name": name, "parameters": json.loads(arguments)} for name, arguments in calls]
    return json.dumps(objects[0] if len(objects) == 1 else objects, ensure_ascii=False)


def mistral_tools(tools: list[dict], date: str) -> str:
    return "[AVAILABLE_TOOLS] " + json.dumps([_wrap(tool) for tool in tools], ensure_ascii=False) + "[/AVAILABLE_TOOLS]"


def mistral_calls(calls: list[FunctionCall]) -> str:
    return json.dumps([{"name": name, "arguments": json.loads(arguments)} for name, arguments in calls],
                      ensure_ascii=False)


def qwen_tools(tools: list[dict], date: str) -> str:
    text = "".join("\n" + json.dumps(_wrap(tool), ensure_ascii=False) for tool in tools)
    return QWEN_PROMPT.format(tool_text=text)


def qwen_calls(calls: list[FunctionCall]) -> str:
    texts = [json.dumps({"name": name, "arguments": json.loads(arguments)}, ensure_ascii=False)
             for name, arguments in calls]
    return "\n".join(f"<tool_call>\n{text}\n</tool_call>" for text in texts)


def _calls_from_objects(objects, arguments_key: str) -> list[FunctionCall] | None:
    objects = objects if isinstance(objects, list) else [objects]
    try:
        return [FunctionCall(o["name"], json.dumps(o[arguments_key], ensure_ascii=False)) for o in objects]
    except (KeyError, TypeError):
        return None


def _json_or_none(text: str):
    try:
        return json.loads(text.strip())
    except json.JSONDecodeError:
        return None


def default_extract(text: str):
    pattern = re.compile(r"Action:\s*([a-zA-Z0-9_]+)\s*Action Input:\s*(.+?)(?=\s*Action:|\s*$)", re.DOTALL)
    calls = []
    for name, raw in pattern.findall(text):
        arguments = _json_or_none(raw.strip().strip('"').strip("```"))
        if arguments is None:
            return None
        calls.append(FunctionCall(name.strip(), json.dumps(arguments, ensure_ascii=False)))
    return calls or None


def qwen_extract(text: str):
    found = re.findall(r"<tool_call>(.+?)</tool_call>(?=\s*<tool_call>|\s*$)", text, re.DOTALL)
    calls = []
    for raw in found:
        parsed = _json_or_none(raw)
        call = _calls_from_objects(parsed, "arguments") if isinstance(parsed, dict) else None
        if not call:
            return None
        calls += call
    return calls or None


def glm4_extract(text: str):
    if "\n" not in text:
        return None
    name, raw = text.split("\n", maxsplit=1)
    arguments = _json_or_none(raw)
    return None if arguments is None else [FunctionCall(name, json.dumps(arguments, ensure_ascii=False))]


def llama3_extract(text: str):
    parsed = _json_or_none(text)
    return None if parsed is None else _calls_from_objects(parsed, "parameters")


def mistral_extract(text: str):
    parsed = _json_or_none(text)
    return None if parsed is None else _calls_from_objects(parsed, "arguments")


EXTRACTORS = {"default": default_extract, "glm4": glm4_extract, "llama3": llama3_extract,
              "mistral": mistral_extract, "qwen": qwen_extract}
EXTRACTORS.update({name: extract or qwen_extract for name, (_, _, extract) in tools_xml.FORMATS.items()})
EXTRACTORS["gemma4"] = tools_gemma4.gemma4_extract


def extract_calls(name: str, text: str) -> list[FunctionCall] | None:
    """The tool calls in a generated reply written in the format's syntax, or None when it holds none."""
    calls = EXTRACTORS[name](text)
    return [FunctionCall(*call) for call in calls] if calls else None


# name -> (tool list formatter, function call formatter)
TOOL_FORMATS = {
    "default": (default_tools, default_calls),
    "glm4": (glm4_tools, glm4_calls),
    "llama3": (llama3_tools, llama3_calls),
    "mistral": (mistral_tools, mistral_calls),
    "qwen": (qwen_tools, qwen_calls),
}
TOOL_FORMATS.update({name: (tools, calls) for name, (tools, calls, _) in tools_xml.FORMATS.items()})
TOOL_FORMATS["gemma4"] = (tools_gemma4.gemma4_tools, tools_gemma4.gemma4_calls)


def check_format(name: str) -> str:
    if name not in TOOL_FORMATS:
        raise DataError(f"tool_format '{name}' is unknown; choose one of {', '.join(TOOL_FORMATS)}")
    return name


def format_tools(name: str, tools_json: str, date: str | None = None) -> str:
    """The tool list (JSON text) written the way the format expects; "" for an empty list."""
    try:
        tools = json.loads(tools_json)
    except json.JSONDecodeError:
        raise DataError(f"the tool list is not valid JSON: {tools_json[:200]!r}") from None
    if not tools:
        return ""
    date = date or datetime.datetime.now().strftime("%d %b %Y")
    return TOOL_FORMATS[name][0](tools, date)


def parse_calls(json_text: str) -> list[FunctionCall]:
    try:
        calls = json.loads(json_text)
    except json.JSONDecodeError:
        raise DataError(f"a function-call turn is not valid JSON: {json_text[:200]!r}") from None
    calls = calls if isinstance(calls, list) else [calls]
    try:
        return [FunctionCall(call["name"], json.dumps(call["arguments"], ensure_ascii=False)) for call in calls]
    except (KeyError, TypeError):
        raise DataError(f"a function call needs \"name\" and \"arguments\": {json_text[:200]!r}") from None


def format_function_turn(name: str, content: str, thought_words, tool_call_words) -> str:
    """An assistant turn that calls tools: optional thought text, then the calls in the format's syntax."""
    formatter = TOOL_FORMATS[name][1]
    call_match = None
    if tool_call_words:
        pattern = re.compile(rf"{re.escape(tool_call_words[0])}(.*?){re.escape(tool_call_words[1])}", re.DOTALL)
        call_match = pattern.search(content)
    if call_match is not None:
        thought = content.replace(call_match.group(0), "")
        return thought + formatter(parse_calls(call_match.group(1)))
    thought_match = None
    if thought_words:
        pattern = re.compile(rf"{re.escape(thought_words[0])}(.*?){re.escape(thought_words[1])}", re.DOTALL)
        thought_match = pattern.search(content)
    json_part = content.replace(thought_match.group(0), "") if thought_match else content
    text = formatter(parse_calls(json_part))
    return thought_match.group(0) + text if thought_match else text
