"""`tunesmith api`: an OpenAI-compatible server (FastAPI + uvicorn) over the shared inference engine."""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations, and `Request` is imported
# inside create_app (heavy imports stay in functions), so they must be evaluated where the handlers are defined.

import hmac
import json
import logging
import os
import threading
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field

from tunesmith.data.records import ASSISTANT, FUNCTION, OBSERVATION, USER

log = logging.getLogger(__name__)

MAX_STOP = 4  # as OpenAI
MAX_STOP_CHARS = 256


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


def _text(content, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if part.get("type") != "text":
            raise ApiError(400, f"{where}: only text content parts are supported, got {part.get('type')!r}",
                           param=where)
        if not isinstance(part.get("text"), str):
            raise ApiError(400, f"{where}: a text part needs a string `text`, got {part.get('text')!r:.80}",
                           param=where)
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
        raise ApiError(400, f"{where}: `arguments` is not valid JSON ({exc.msg} at character {exc.pos}); send a "
                            "JSON object as text, e.g. '{\"city\": \"Paris\"}'", param=where) from None
    if not isinstance(value, dict):
        raise ApiError(400, f"{where}: `arguments` must be a JSON object, got {arguments!r:.80}", param=where)
    return value


def to_conversation(request: ChatRequest) -> tuple[list[dict], str, str]:
    """OpenAI messages -> (canonical turns, system text, tools JSON); rejects what a template cannot encode."""
    system, turns = "", []
    messages = list(request.messages)
    if messages[0].role == "system":
        system = _text(messages.pop(0).content, "messages[0].content")
    first = len(request.messages) - len(messages)
    for number, message in enumerate(messages, start=first):
        where = f"messages[{number}]"
        if message.role == "system":
            raise ApiError(400, "a system message is only allowed first", param="messages")
        if message.role == "assistant" and message.tool_calls:
            calls = [{"name": call.function.name,
                      "arguments": _arguments(call.function.arguments, f"{where}.tool_calls[{index}].function")}
                     for index, call in enumerate(message.tool_calls)]
            turn = {"role": FUNCTION, "content": json.dumps(calls, ensure_ascii=False)}
        elif message.role in ("tool", "function"):
            turn = {"role": OBSERVATION, "content": _text(message.content, f"{where}.content")}
            if turns and turns[-1]["role"] == OBSERVATION:  # several tool results answer one call turn
                turns[-1]["content"] += "\n</tool_response>\n<tool_response>\n" + turn["content"]
                continue
        else:
            turn = {"role": USER if message.role == "user" else ASSISTANT,
                    "content": _text(message.content, f"{where}.content")}
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


def _stop_words(stop) -> list[str] | None:
    words = [stop] if isinstance(stop, str) else list(stop or [])
    if len(words) > MAX_STOP:
        raise ApiError(400, f"stop: at most {MAX_STOP} stop sequences are allowed, got {len(words)}", param="stop")
    if any(len(word) > MAX_STOP_CHARS for word in words):
        raise ApiError(400, f"stop: a stop sequence may hold at most {MAX_STOP_CHARS} characters", param="stop")
    return [word for word in words if word] or None


def _error(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
           code: str | None = None) -> dict:
    return ApiError(status, message, kind, param, code).body()


class Guard:
    """ASGI middleware: the API key on every path but /health (docs included), and the request body size limit."""

    def __init__(self, app, api_key: str | None, max_body: int):
        self.app, self.max_body = app, max_body
        self.expected = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope, receive, send):
        from starlette.exceptions import HTTPException
        from starlette.responses import JSONResponse

        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.expected and scope["path"] != "/health" and \
                not hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
            body = _error(401, "invalid or missing API key: send `Authorization: Bearer <key>`",
                          "authentication_error", code="invalid_api_key")
            return await JSONResponse(body, status_code=401)(scope, receive, send)
        too_large = f"the request body is larger than api_max_body_bytes ({self.max_body} bytes)"
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_body:
            return await JSONResponse(_error(413, too_large), status_code=413)(scope, receive, send)
        received = 0

        async def limited():  # a body sent without Content-Length is counted as it arrives
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise HTTPException(413, too_large)
            return message

        await self.app(scope, limited, send)


async def _until_done(request, cancel: threading.Event, call):
    """Runs call() in a worker thread; sets `cancel` as soon as the client disconnects (or this task is cancelled)."""
    import asyncio

    from starlette.concurrency import run_in_threadpool

    task = asyncio.ensure_future(run_in_threadpool(call))
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=0.25)
            if not task.done() and await request.is_disconnected():
                cancel.set()
        return task.result()
    finally:
        if not task.done():
            cancel.set()


def create_app(engine, api_key: str | None = None, settings=None):
    """The FastAPI app; `engine` is a ChatEngine. Limits are the api_* keys of `settings` (an InferArgs; default
    the engine's config)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException

    from tunesmith.errors import TunesmithError
    from tunesmith.infer.engine import ContextLengthError, EngineBusy

    settings = settings or engine.config.infer
    app = FastAPI(title="tunesmith API")
    app.add_middleware(Guard, api_key=api_key, max_body=settings.api_max_body_bytes)
    busy = {"requests": 0}  # running or waiting for the model; only touched on the event loop

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(ContextLengthError)
    async def context_error(request: Request, exc: ContextLengthError):
        return JSONResponse(_error(400, str(exc), param="messages", code="context_length_exceeded"), status_code=400)

    @app.exception_handler(EngineBusy)
    async def busy_error(request: Request, exc: EngineBusy):
        return JSONResponse(_error(503, str(exc), "server_error", code="timeout"), status_code=503)

    @app.exception_handler(TunesmithError)
    async def user_error(request: Request, exc: TunesmithError):
        return JSONResponse(_error(400, str(exc)), status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        messages = {404: f"Invalid URL ({request.method} {request.url.path})",
                    405: f"Method {request.method} is not allowed on {request.url.path}"}
        return JSONResponse(_error(exc.status_code, messages.get(exc.status_code, str(exc.detail))),
                            status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            reason = (first.get("ctx") or {}).get("error", "JSON decode error")
            where = first.get("loc", ())[-1]
            return JSONResponse(_error(400, f"the request body is not valid JSON: {reason} at character {where}"),
                                status_code=400)
        param = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        return JSONResponse(_error(400, f"{param or 'request body'}: {first.get('msg', 'invalid request')}",
                                   param=param), status_code=400)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception):
        return JSONResponse(_error(500, f"internal server error ({type(exc).__name__}); see the server log",
                                   "server_error"), status_code=500)

    class Stream(StreamingResponse):
        """An event stream that gives back its queue place and stops its generation however it ends."""

        def __init__(self, content, release):
            super().__init__(content, media_type="text/event-stream")
            self.release = release

        async def __call__(self, scope, receive, send):
            try:
                await super().__call__(scope, receive, send)
            finally:
                self.release()

    def take_place(cancel: threading.Event):
        if busy["requests"] > settings.api_max_queue:
            raise ApiError(429, f"the server is busy ({busy['requests']} requests running or waiting, "
                                f"api_max_queue {settings.api_max_queue}); retry shortly", "rate_limit_error",
                           code="rate_limit_exceeded")
        busy["requests"] += 1
        released = []

        def release():
            cancel.set()
            if not released:
                released.append(True)
                busy["requests"] -= 1

        return release

    def encode(turns, system, tools):
        try:
            return engine.encode(turns, system, tools)
        except (KeyError, TypeError, AttributeError) as exc:
            if not tools:
                raise
            raise ApiError(400, f"tools: a tool cannot be written in the template's tool format ({exc!r:.120}); "
                                "each needs a name, a description and JSON-schema parameters", param="tools") from None

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": engine.name, "object": "model", "created": int(time.time()),
                                            "owned_by": "tunesmith"}]}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        turns, system, tools = to_conversation(body)
        stop = _stop_words(body.stop)
        if body.stream and body.n != 1:
            raise ApiError(400, "streaming supports n=1 only", param="n")
        cancel, deadline = threading.Event(), time.monotonic() + settings.api_request_timeout
        generation: dict[str, Any] = {"temperature": body.temperature, "top_p": body.top_p,
                                      "max_new_tokens": body.max_completion_tokens or body.max_tokens}
        created, completion_id = int(time.time()), f"chatcmpl-{uuid.uuid4().hex}"
        release = take_place(cancel)
        try:
            prompt_ids = await run_in_threadpool(encode, turns, system, tools)
            options = {"system": system, "tools": tools, "stop": stop, "prompt_ids": prompt_ids, "cancel": cancel,
                       "deadline": deadline, **generation}
            if not body.stream:
                replies = await _until_done(request, cancel, lambda: engine.chat(turns, n=body.n, **options))
                return _completion(replies, completion_id, created, engine.name)
            result: list = []
            pieces = engine.stream(turns, result=result, **options)
            first = await _until_done(request, cancel, lambda: next(pieces, None))  # busy/timeout errors: a status
            response, release = Stream(_events(first, pieces, result, bool(tools), completion_id, created,
                                               engine.name), release), None
            return response
        finally:
            if release is not None:
                release()

    return app


def _completion(replies, completion_id: str, created: int, model: str) -> dict:
    choices = []
    for index, reply in enumerate(replies):
        message = {"role": "assistant", "content": reply.text}
        if reply.tool_calls:
            message = {"role": "assistant", "content": None, "tool_calls": _tool_calls(reply.tool_calls)}
        choices.append({"index": index, "message": message, "finish_reason": reply.finish_reason})
    prompt_tokens = replies[0].prompt_tokens
    completion_tokens = sum(reply.completion_tokens for reply in replies)
    return {"id": completion_id, "object": "chat.completion", "created": created, "model": model,
            "choices": choices, "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                          "total_tokens": prompt_tokens + completion_tokens}}


async def _events(first, pieces, result: list, with_tools: bool, completion_id: str, created: int, model: str):
    """Server-sent events of one streamed reply; with tools the reply is sent whole at the end, as text or calls."""
    import anyio

    from tunesmith.errors import TunesmithError

    def chunk(delta: dict, finish: str | None) -> str:
        body = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""}, None)
    try:
        piece = first
        while piece is not None:
            if not with_tools:
                yield chunk({"content": piece}, None)
            # abandon_on_cancel: a client that goes away cancels this task at once; the generation then stops too
            piece = await anyio.to_thread.run_sync(next, pieces, None, abandon_on_cancel=True)
        reply = result[0]
        if with_tools and reply.tool_calls:
            calls = [{"index": index, **call} for index, call in enumerate(_tool_calls(reply.tool_calls))]
            yield chunk({"content": None, "tool_calls": calls}, None)
        elif with_tools and reply.text:
            yield chunk({"content": reply.text}, None)
        yield chunk({}, reply.finish_reason)
    except TunesmithError as exc:
        yield f"data: {json.dumps(_error(400, str(exc)), ensure_ascii=False)}\n\n"
    except Exception as exc:
        log.exception("streamed generation failed")
        yield f"data: {json.dumps(_error(500, f'internal server error ({type(exc).__name__})', 'server_error'))}\n\n"
    yield "data: [DONE]\n\n"


def run_api(config) -> int:
    """Loads the engine and serves until interrupted; SIGTERM/Ctrl-C stop running generations at once."""
    import uvicorn

    from tunesmith.infer.engine import ChatEngine

    host = config.infer.api_host
    port = config.infer.api_port or int(os.environ.get("API_PORT", "8000"))
    api_key = config.infer.api_key or os.environ.get("API_KEY") or None
    engine = ChatEngine(config, job="api")

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            engine.stop()  # uvicorn waits for running requests: end their generations at the next token
            super().handle_exit(sig, frame)

    print(f"tunesmith API on http://{host}:{port}/v1 (key {'required' if api_key else 'not required'})", flush=True)
    Server(uvicorn.Config(create_app(engine, api_key=api_key), host=host, port=port, log_level="info",
                          timeout_graceful_shutdown=5)).run()
    return 0
