"""OpenAI chat requests as the engine's conversation: request models, content parts (text, image_url and
input_audio), roles and tool calls, and the OpenAI-shaped ApiError."""

import json
from typing import Literal

from pydantic import BaseModel, Field

from tunesmith.data.audio import AUDIO_PLACEHOLDER
from tunesmith.data.media import IMAGE_PLACEHOLDER
from tunesmith.data.records import ASSISTANT, FUNCTION, OBSERVATION, USER


class ApiError(Exception):
    """An OpenAI-style error: HTTP status, message, type and the offending parameter."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class FunctionSpec(BaseModel):
    name: str
    arguments: str | dict | None = None


class ToolCall(BaseModel):
    id: str | None = None
    type: str = "function"
    function: FunctionSpec


class Message(BaseModel):
    role: Literal["system", "user", "assistant", "tool", "function"]
    content: str | list[dict] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class ChatRequest(BaseModel):
    model: str
    messages: list[Message] = Field(min_length=1)
    tools: list[dict] | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=8)
    stream: bool = False


def _image_url(part: dict, where: str) -> str:
    """The URL of an image_url part: {"image_url": {"url": ...}} (OpenAI), or the URL as a string."""
    value = part.get("image_url")
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url.strip():
        raise ApiError(
            400,
            f'{where}: an image_url part needs `image_url: {{"url": "data:image/png;base64,..."}}`, got {value!r:.80}',
            param=where,
        )
    return url


def _input_audio(part: dict, where: str) -> str:
    """The base64 data of an input_audio part: {"input_audio": {"data": "<base64>", "format": "wav"}} (OpenAI)."""
    value = part.get("input_audio")
    data = value.get("data") if isinstance(value, dict) else None
    if not isinstance(data, str) or not data.strip():
        raise ApiError(
            400,
            f'{where}: an input_audio part needs `input_audio: {{"data": "<base64 of the audio '
            f'file>", "format": "wav"}}`, got {value!r:.80}',
            param=where,
        )
    return data


def _text(content, where: str, images: list | None = None, audios: list | None = None) -> str:
    """A message's content as text. image_url parts (user messages: images is a list) become <image> placeholders
    at their place, and their (url, where) are appended to images; they are decoded later, off the event loop.
    input_audio parts likewise become <audio>, their (base64 data, where) appended to audios (a list: the caller
    takes audios)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for index, part in enumerate(content):
        kind = part.get("type")
        if kind == "image_url" and images is not None:
            images.append((_image_url(part, f"{where}[{index}].image_url"), f"{where}[{index}].image_url"))
            parts.append(IMAGE_PLACEHOLDER)
            continue
        if kind == "image_url":
            raise ApiError(400, f"{where}: images are accepted in user messages only", param=where)
        if kind == "input_audio" and audios is not None and images is not None:
            audios.append((_input_audio(part, f"{where}[{index}].input_audio"), f"{where}[{index}].input_audio"))
            parts.append(AUDIO_PLACEHOLDER)
            continue
        if kind == "input_audio" and audios is not None:
            raise ApiError(400, f"{where}: audios are accepted in user messages only", param=where)
        if kind == "video_url":
            raise ApiError(400, f"{where}: videos are not taken by chat or the API yet (they train, on Qwen-VL "
                           "models); send text and images", param=where)
        if kind != "text":
            supported = "text, image_url and input_audio" if audios is not None else "text and image_url"
            raise ApiError(400, f"{where}: only {supported} content parts are supported, got {kind!r}", param=where)
        if not isinstance(part.get("text"), str):
            raise ApiError(
                400, f"{where}: a text part needs a string `text`, got {part.get('text')!r:.80}", param=where
            )
        parts.append(part["text"])
    return "".join(parts)


def _arguments(arguments, where: str) -> dict:
    """A tool call's arguments: a JSON object, given as one or as JSON text."""
    if isinstance(arguments, dict):
        return arguments
    if not arguments:
        return {}
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError as exc:
        raise ApiError(
            400,
            f"{where}: `arguments` is not valid JSON ({exc.msg} at character {exc.pos}); send a "
            'JSON object as text, e.g. \'{"city": "Paris"}\'',
            param=where,
        ) from None
    if not isinstance(value, dict):
        raise ApiError(400, f"{where}: `arguments` must be a JSON object, got {arguments!r:.80}", param=where)
    return value


def to_conversation(
    request: ChatRequest, audios: list | None = None
) -> tuple[list[dict], str, str, list[tuple[str, str]]]:
    """OpenAI messages -> (canonical turns, system text, tools JSON, images): rejects what a template cannot encode.
    images: each user image_url part's (url, where), in order; its turn holds <image> where the part was. With
    `audios` (a list), each user input_audio part's (base64 data, where) is appended to it, <audio> in its turn."""
    system, turns, images = "", [], []
    messages = list(request.messages)
    if messages[0].role == "system":
        system = _text(messages.pop(0).content, "messages[0].content", audios=audios)
    first = len(request.messages) - len(messages)
    for number, message in enumerate(messages, start=first):
        where = f"messages[{number}]"
        if message.role == "system":
            raise ApiError(400, "a system message is only allowed first", param="messages")
        if message.role == "assistant" and message.tool_calls:
            calls = [
                {
                    "name": call.function.name,
                    "arguments": _arguments(call.function.arguments, f"{where}.tool_calls[{index}].function"),
                }
                for index, call in enumerate(message.tool_calls)
            ]
            turn = {"role": FUNCTION, "content": json.dumps(calls, ensure_ascii=False)}
        elif message.role in ("tool", "function"):
            turn = {"role": OBSERVATION, "content": _text(message.content, f"{where}.content", audios=audios)}
            if turns and turns[-1]["role"] == OBSERVATION:  # several tool results answer one call turn
                turns[-1]["content"] += "\n</tool_response>\n<tool_response>\n" + turn["content"]
                continue
        else:
            user = message.role == "user"
            turn = {
                "role": USER if user else ASSISTANT,
                "content": _text(message.content, f"{where}.content", images if user else None, audios),
            }
        turns.append(turn)
    for index, turn in enumerate(turns):
        expected = (USER, OBSERVATION) if index % 2 == 0 else (ASSISTANT, FUNCTION)
        if turn["role"] not in expected:
            raise ApiError(
                400,
                f"messages must alternate user/tool and assistant turns; message {index} has role {turn['role']!r}",
                param="messages",
            )
    if len(turns) % 2 == 0:
        raise ApiError(400, "the last message must be from the user (or a tool result)", param="messages")
    tools = (
        json.dumps(
            [tool.get("function", tool) if tool.get("type") == "function" else tool for tool in request.tools],
            ensure_ascii=False,
        )
        if request.tools
        else ""
    )
    return turns, system, tools, images
