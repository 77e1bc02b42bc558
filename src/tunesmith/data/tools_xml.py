"""The newer tool-call formats (Qwen3.5, GLM-4.5, Seed-OSS, MiniMax, Ling, LFM2), written as LLaMA-Factory 0.9.5 does.

Formatters take the tool list (dicts) or the calls ((name, arguments JSON) pairs); extractors return such pairs, or
None when the text holds no call. tools.py registers them under the names templates.yaml uses.
"""

from __future__ import annotations

import ast
import json
import re

QWEN35_PROMPT = (
    "\n\n# Tools\n\nYou have access to the following functions:\n\n<tools>{tool_text}"
    "\n</tools>\n\nIf you choose to call a function ONLY reply in the following format with NO suffix:\n\n"
    "<tool_call>\n<function=example_function_name>\n<parameter=example_parameter_1>\nvalue_1\n</parameter>\n"
    "<parameter=example_parameter_2>\nThis is the value for the second parameter\nthat can span\nmultiple lines\n"
    "</parameter>\n</function>\n</tool_call>\n\n<IMPORTANT>\nReminder:\n"
    "- Function calls MUST follow the specified format: "
    "an inner <function=...></function> block must be nested within <tool_call></tool_call> XML tags\n"
    "- Required parameters MUST be specified\n"
    "- You may provide optional reasoning for your function call in natural language "
    "BEFORE the function call, but NOT after\n"
    "- If there is no function call available, answer the question like normal with your current knowledge "
    "and do not tell the user about function calls\n</IMPORTANT>"
)
GLM4_MOE_PROMPT = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>{tool_text}"
    "\n</tools>\n\nFor each function call, output the function name and arguments within the following XML format:"
    "\n<tool_call>{{function-name}}\n<arg_key>{{arg-key-1}}</arg_key>\n<arg_value>{{arg-value-1}}</arg_value>"
    "\n<arg_key>{{arg-key-2}}</arg_key>\n<arg_value>{{arg-value-2}}</arg_value>\n...\n</tool_call>\n"
)
SEED_PROMPT = (
    "system\nYou are Doubao, a helpful AI assistant. You may call one or more functions to assist with the user query."
    "Tool List:\nYou are authorized to use the following tools (described in JSON Schema format). Before performing "
    "any task, you must decide how to call them based on the descriptions and parameters of these tools.{tool_text}\n"
    "工具调用请遵循如下格式:\n<seed:tool_call>\n<function=example_function_name>\n<parameter=example_parameter_1>value_1"
    "</parameter>\n<parameter=example_parameter_2>This is the value for the second parameter\nthat can span\nmultiple "
    "lines</parameter>\n</function>\n</seed:tool_call>\n"
)
MINIMAX1_PROMPT = (
    "You are provided with these tools:\n<tools>\n{tool_text}</tools>\n\n"
    "If you need to call tools, please respond with <tool_calls></tool_calls> XML tags, and provide tool-name and "
    "json-object of arguments, following the format below:\n<tool_calls>\n"
    '{{"name": <tool-name-1>, "arguments": <args-json-object-1>}}\n...\n</tool_calls>'
)
MINIMAX2_PROMPT = (
    "\n\n# Tools\n\nYou may call one or more tools to assist with the user query.\n"
    "Here are the tools available in JSONSchema format:\n\n<tools>\n{tool_text}</tools>\n\n"
    "When making tool calls, use XML format to invoke tools and pass parameters:\n"
    '\n<minimax:tool_call>\n<invoke name="tool-name-1">\n<parameter name="param-key-1">param-value-1</parameter>\n'
    '<parameter name="param-key-2">param-value-2</parameter>\n...\n</invoke>\n</minimax:tool_call>'
)
LING_PROMPT = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>{tool_text}"
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{{"name": <function-name>, '
    '"arguments": <args-json-object>}}\n</tool_call>'
)
LFM2_PROMPT = "List of tools: <|tool_list_start|>{tool_text}<|tool_list_end|>"


def _unwrap(tool: dict) -> dict:
    return tool.get("function", "") if tool.get("type") == "function" else tool


def _wrap(tool: dict) -> dict:
    return tool if tool.get("type") == "function" else {"type": "function", "function": tool}


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False)


def _text(value) -> str:
    """An argument value as the XML formats write it: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else _dumps(value)


def _value(raw: str):
    try:
        return json.loads(raw.strip())
    except json.JSONDecodeError:
        return raw.strip()


# ---- tool lists
def qwen3_5_tools(tools: list[dict], date: str) -> str:
    return QWEN35_PROMPT.format(tool_text="".join("\n" + _dumps(_unwrap(tool)) for tool in tools))


def glm4_moe_tools(tools: list[dict], date: str) -> str:
    return GLM4_MOE_PROMPT.format(tool_text="".join("\n" + _dumps(_wrap(tool)) for tool in tools))


def seed_oss_tools(tools: list[dict], date: str) -> str:
    return SEED_PROMPT.format(tool_text="\n" + _dumps(tools))


def minimax1_tools(tools: list[dict], date: str) -> str:
    return MINIMAX1_PROMPT.format(tool_text="".join(_dumps(_unwrap(tool)) + "\n" for tool in tools))


def minimax2_tools(tools: list[dict], date: str) -> str:
    return MINIMAX2_PROMPT.format(tool_text="".join("<tool>" + _dumps(_unwrap(tool)) + "</tool>\n" for tool in tools))


def ling_tools(tools: list[dict], date: str) -> str:
    text = "".join("\n" + _dumps(_wrap(tool)) for tool in tools)
    return LING_PROMPT.format(tool_text=text) + "\ndetailed thinking off"


def lfm2_tools(tools: list[dict], date: str) -> str:
    return LFM2_PROMPT.format(tool_text=_dumps([_unwrap(tool) for tool in tools]))


# ---- calls
def qwen3_5_calls(calls) -> str:
    texts = []
    for name, arguments in calls:
        params = "".join(
            f"\n<parameter={key}>\n{_text(value)}\n</parameter>" for key, value in json.loads(arguments).items()
        )
        texts.append(f"<tool_call>\n<function={name}>{params}\n</function>\n</tool_call>")
    return "\n".join(texts)


def glm4_moe_calls(calls) -> str:
    texts = []
    for name, arguments in calls:
        params = "".join(
            f"\n<arg_key>{key}</arg_key>\n<arg_value>{_text(value)}</arg_value>"
            for key, value in json.loads(arguments).items()
        )
        texts.append(f"\n<tool_call>{name}{params}")
    return "\n".join(texts)


def seed_oss_calls(calls) -> str:
    texts = []
    for name, arguments in calls:
        params = "".join(
            f"\n<parameter={key}>{_text(value)}</parameter>" for key, value in json.loads(arguments).items()
        )
        texts.append(f"\n<seed:tool_call>\n<function={name}{params}\n</function>\n</seed:tool_call>")
    return "\n".join(texts)


def minimax1_calls(calls) -> str:
    texts = [_dumps({"name": name, "arguments": json.loads(arguments)}) for name, arguments in calls]
    return "<tool_calls>\n" + "\n".join(texts) + "\n</tool_calls>"


def minimax2_calls(calls) -> str:
    texts = []
    for name, arguments in calls:
        params = "".join(
            f'\n<parameter name="{key}">{_text(value)}</parameter>' for key, value in json.loads(arguments).items()
        )
        texts.append(f'<invoke name="{name}">{params}\n</invoke>')
    return "\n".join(texts)


def ling_calls(calls) -> str:
    texts = [_dumps({"name": name, "arguments": json.loads(arguments)}) for name, arguments in calls]
    return "\n".join(f"<tool_call>\n{text}\n</tool_call>" for text in texts)


def lfm2_calls(calls) -> str:
    texts = []
    for name, arguments in calls:
        kwargs = [
            f'{key}="{value}"' if isinstance(value, str) else f"{key}={_dumps(value)}"
            for key, value in json.loads(arguments).items()
        ]
        texts.append(f"{name}({', '.join(kwargs)})")
    return f"<|tool_call_start|>[{', '.join(texts)}]<|tool_call_end|>"


# ---- extractors
def _function_blocks(text: str, open_tag: str, close_tag: str, param: str) -> list[tuple[str, str]] | None:
    pattern = re.compile(
        rf"{re.escape(open_tag)}\s*<function=\s*([^\s<>]+)\s*(.*?)\s*</function>\s*"
        rf"{re.escape(close_tag)}",
        re.DOTALL,
    )
    calls = []
    for name, block in pattern.findall(text):
        arguments = {key: _value(raw) for key, raw in re.findall(param, block.strip(), re.DOTALL)}
        calls.append((name.strip(), _dumps(arguments)))
    return calls or None


def qwen3_5_extract(text: str):
    return _function_blocks(text, "<tool_call>", "</tool_call>", r"<parameter=(.*?)>(.*?)</parameter>")


def seed_oss_extract(text: str):
    return _function_blocks(text, "<seed:tool_call>", "</seed:tool_call>", r"<parameter=(.*?)>(.*?)</parameter>")


def glm4_moe_extract(text: str):
    calls = []
    for name, block in re.findall(r"<tool_call>([^\n<]+)(.*?)(?:</tool_call>|(?=<tool_call>)|$)", text, re.DOTALL):
        pairs = re.findall(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", block, re.DOTALL)
        calls.append((name.strip(), _dumps({key.strip(): _value(raw) for key, raw in pairs})))
    return calls or None


def minimax1_extract(text: str):
    match = re.search(r"<tool_calls>\s*(.+?)\s*</tool_calls>", text, re.DOTALL)
    calls = []
    for line in match.group(1).splitlines() if match else []:
        try:
            call = json.loads(line.strip())
            calls.append((call["name"], _dumps(call["arguments"])))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return calls or None


def minimax2_extract(text: str):
    match = re.search(r"<minimax:tool_call>\s*(.+?)\s*</minimax:tool_call>", text, re.DOTALL)
    calls = []
    for name, block in re.findall(r"<invoke name=\"(.*?)\">(.*?)</invoke>", match.group(1) if match else "", re.DOTALL):
        pairs = re.findall(r"<parameter name=\"(.*?)\">(.*?)</parameter>", block, re.DOTALL)
        calls.append((name.strip(), _dumps({key: _value(raw) for key, raw in pairs})))
    return calls or None


def _literal(node):
    if isinstance(node, ast.Name) and node.id in ("true", "false", "null"):
        return {"true": True, "false": False, "null": None}[node.id]
    return ast.literal_eval(node)


def lfm2_extract(text: str):
    match = re.search(r"<\|tool_call_start\|>(.*?)<\|tool_call_end\|>", text, re.DOTALL)
    if not match:
        return None
    try:
        tree = ast.parse(match.group(1).strip(), mode="eval").body
        nodes = tree.elts if isinstance(tree, ast.List) else [tree]
        calls = [(node.func.id, _dumps({kw.arg: _literal(kw.value) for kw in node.keywords})) for node in nodes]
    except (SyntaxError, ValueError, AttributeError):
        return None
    return calls or None


# name -> (tool list formatter, call formatter, extractor); "ling" extracts like "qwen" (tools.py fills it in)
FORMATS = {
    "qwen3_5": (qwen3_5_tools, qwen3_5_calls, qwen3_5_extract),
    "glm4_moe": (glm4_moe_tools, glm4_moe_calls, glm4_moe_extract),
    "seed_oss": (seed_oss_tools, seed_oss_calls, seed_oss_extract),
    "minimax1": (minimax1_tools, minimax1_calls, minimax1_extract),
    "minimax2": (minimax2_tools, minimax2_calls, minimax2_extract),
    "ling": (ling_tools, ling_calls, None),
    "lfm2": (lfm2_tools, lfm2_calls, lfm2_extract),
}
