"""`tunesmith api`: an OpenAI-compatible server (FastAPI + uvicorn) over the shared inference engine."""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field

from tunesmith.data.records import ASSISTANT, FUNCTION, OBSERVATION, USER


class ApiError(Exception):
    """An OpenAI-style error: HTTP status, message, type and the offending parameter."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
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


def _text(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if part.get("type") != "text":
            raise ApiError(400, f"only text content parts are supported, got {part.get('type')!r}", param="messages")
        parts.append(part.get("text", ""))
    return "".join(parts)


def to_conversation(request: ChatRequest) -> tuple[list[dict], str, str]:
    """OpenAI messages -> (canonical turns, system text, tools JSON); rejects what a template cannot encode."""
    system, turns = "", []
    messages = list(request.messages)
    if messages[0].role == "system":
        system = _text(messages.pop(0).content)
    for message in messages:
        if message.role == "system":
            raise ApiError(400, "a system message is only allowed first", param="messages")
        if message.role == "assistant" and message.tool_calls:
            calls = [{"name": call.function.name, "arguments": json.loads(call.function.arguments)
                      if isinstance(call.function.arguments, str) else (call.function.arguments or {})}
                     for call in message.tool_calls]
            turn = {"role": FUNCTION, "content": json.dumps(calls, ensure_ascii=False)}
        elif message.role in ("tool", "function"):
            turn = {"role": OBSERVATION, "content": _text(message.content)}
            if turns and turns[-1]["role"] == OBSERVATION:  # several tool results answer one call turn
                turns[-1]["content"] += "\n</tool_response>\n<tool_response>\n" + turn["content"]
                continue
        else:
            turn = {"role": USER if message.role == "user" else ASSISTANT, "content": _text(message.content)}
        turns.append(turn)
    for index, turn in enumerate(turns):
        expected = (USER, OBSERVATION) if index % 2 == 0 else (ASSISTANT, FUNCTION)
        if turn["role"] not in expected:
            raise ApiError(400, f"messages must alternate user/tool and assistant turns; message {index} has role "
                                f"{turn['role']!r}", param="messages")
    if len(turns) % 2 == 0:
        raise ApiError(400, "the last message must be from the user (or a tool result)", param="messages")
    tools = json.dumps([tool.get("function", tool) if tool.get("type") == "function" else tool
                        for tool in request.tools], ensure_ascii=False) if request.tools else ""
    return turns, system, tools


def _tool_calls(calls) -> list[dict]:
    return [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
             "function": {"name": call.name, "arguments": call.arguments}} for call in calls]


def create_app(engine, api_key: str | None = None):
    """The FastAPI app; `engine` is a ChatEngine (or anything with its chat/stream/name)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

    app = FastAPI(title="tunesmith API")

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        return JSONResponse(ApiError(400, f"{param or 'request'}: {first.get('msg', 'invalid request')}",
                                     param=param).body(), status_code=400)

    @app.middleware("http")
    async def check_key(request: Request, call_next):
        if api_key and request.url.path.startswith("/v1/"):
            header = request.headers.get("authorization", "")
            if header != f"Bearer {api_key}":
                error = ApiError(401, "invalid or missing API key: send `Authorization: Bearer <key>`",
                                 kind="authentication_error", code="invalid_api_key")
                return JSONResponse(error.body(), status_code=401)
        return await call_next(request)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": engine.name, "object": "model", "created": int(time.time()),
                                            "owned_by": "tunesmith"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: ChatRequest):
        turns, system, tools = to_conversation(request)
        stop = [request.stop] if isinstance(request.stop, str) else request.stop
        generation: dict[str, Any] = {"temperature": request.temperature, "top_p": request.top_p,
                                      "max_new_tokens": request.max_completion_tokens or request.max_tokens}
        created, completion_id = int(time.time()), f"chatcmpl-{uuid.uuid4().hex}"
        if request.stream:
            if request.n != 1:
                raise ApiError(400, "streaming supports n=1 only", param="n")

            def chunk(delta: dict, finish: str | None) -> str:
                body = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                        "model": engine.name, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

            def events():
                yield chunk({"role": "assistant", "content": ""}, None)
                for piece in engine.stream(turns, system=system, tools=tools, stop=stop, **generation):
                    yield chunk({"content": piece}, None)
                yield chunk({}, "stop")
                yield "data: [DONE]\n\n"

            return StreamingResponse(iterate_in_threadpool(events()), media_type="text/event-stream")

        replies = await run_in_threadpool(engine.chat, turns, system=system, tools=tools, n=request.n, stop=stop,
                                          **generation)
        choices = []
        for index, reply in enumerate(replies):
            message = {"role": "assistant", "content": reply.text}
            if reply.tool_calls:
                message = {"role": "assistant", "content": None, "tool_calls": _tool_calls(reply.tool_calls)}
            choices.append({"index": index, "message": message, "finish_reason": reply.finish_reason})
        prompt_tokens = replies[0].prompt_tokens
        completion_tokens = sum(reply.completion_tokens for reply in replies)
        return {"id": completion_id, "object": "chat.completion", "created": created, "model": engine.name,
                "choices": choices, "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                              "total_tokens": prompt_tokens + completion_tokens}}

    return app


def run_api(config) -> int:
    """Loads the engine and serves until interrupted."""
    import uvicorn

    from tunesmith.infer.engine import ChatEngine

    host = config.infer.api_host
    port = config.infer.api_port or int(os.environ.get("API_PORT", "8000"))
    api_key = config.infer.api_key or os.environ.get("API_KEY") or None
    app = create_app(ChatEngine(config), api_key=api_key)
    print(f"tunesmith API on http://{host}:{port}/v1 (key {'required' if api_key else 'not required'})")
    uvicorn.run(app, host=host, port=port, log_level="info")
    return 0
