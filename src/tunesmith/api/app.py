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
from typing import Any

from tunesmith.api.messages import ApiError, ChatRequest, to_conversation

log = logging.getLogger(__name__)

MAX_STOP = 4  # as OpenAI
MAX_STOP_CHARS = 256


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

    from tunesmith.data.audio import AUDIO_PLACEHOLDER
    from tunesmith.data.media import IMAGE_PLACEHOLDER, count_placeholders
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

    def encode(turns, system, tools, image_urls, audio_parts=()):
        """The prepared prompt (images and audios decoded here, in a worker thread, not on the event loop)."""
        from tunesmith.infer.audios import AudioInputError, decode_base64
        from tunesmith.infer.images import ImageInputError, load_image

        try:
            images = [load_image(url, where) for url, where in image_urls]
        except ImageInputError as exc:
            raise ApiError(400, str(exc), param="messages", code="invalid_image") from None
        try:
            audios = [engine.load_audio(decode_base64(data, where), where) for data, where in audio_parts]
        except AudioInputError as exc:
            raise ApiError(400, str(exc), param="messages", code="invalid_audio") from None
        try:
            return engine.prepare(turns, system, tools, images, audios)
        except (KeyError, TypeError, AttributeError) as exc:
            if not tools:
                raise
            raise ApiError(400, f"tools: a tool cannot be written in the template's tool format ({exc!r:.120}); "
                                "each needs a name, a description and JSON-schema parameters", param="tools") from None

    def check_images(turns, image_urls):
        """Images need a vision-language model, and there a text that holds <image> itself would be ambiguous."""
        if image_urls and not engine.takes_images:
            raise ApiError(400, f"{image_urls[0][1]}: {engine.no_images}", param="messages",
                           code="model_not_multimodal")
        if engine.takes_images and count_placeholders(turns) != len(image_urls):
            raise ApiError(400, f"the messages' text holds {IMAGE_PLACEHOLDER}, this model's image placeholder; send "
                                "images as image_url content parts and keep the text free of it", param="messages")

    def check_audios(turns, audio_parts):
        """Audios need an audio-language model, and there a text that holds <audio> itself would be ambiguous."""
        if audio_parts and not engine.takes_audios:
            raise ApiError(400, f"{audio_parts[0][1]}: {engine.no_audios}", param="messages",
                           code="model_not_multimodal")
        if engine.takes_audios and count_placeholders(turns, AUDIO_PLACEHOLDER) != len(audio_parts):
            raise ApiError(400, f"the messages' text holds {AUDIO_PLACEHOLDER}, this model's audio placeholder; send "
                                "audios as input_audio content parts and keep the text free of it", param="messages")

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": engine.name, "object": "model", "created": int(time.time()),
                                            "owned_by": "tunesmith"}]}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        audio_parts: list = []
        turns, system, tools, image_urls = to_conversation(body, audios=audio_parts)
        check_images(turns, image_urls)
        check_audios(turns, audio_parts)
        stop = _stop_words(body.stop)
        if body.stream and body.n != 1:
            raise ApiError(400, "streaming supports n=1 only", param="n")
        cancel, deadline = threading.Event(), time.monotonic() + settings.api_request_timeout
        generation: dict[str, Any] = {"temperature": body.temperature, "top_p": body.top_p,
                                      "max_new_tokens": body.max_completion_tokens or body.max_tokens}
        created, completion_id = int(time.time()), f"chatcmpl-{uuid.uuid4().hex}"
        release = take_place(cancel)
        try:
            prompt = await run_in_threadpool(encode, turns, system, tools, image_urls, audio_parts)
            options = {"system": system, "tools": tools, "stop": stop, "prompt": prompt, "cancel": cancel,
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
