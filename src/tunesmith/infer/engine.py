"""The one inference engine behind chat, the API, the web chat and the demo: loads models exactly as training does."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator

from tunesmith.data.audio import AUDIO_PLACEHOLDER
from tunesmith.data.media import IMAGE_PLACEHOLDER, count_placeholders
from tunesmith.data.records import ASSISTANT
from tunesmith.errors import TunesmithError
from tunesmith.infer.audios import AudioInputError
from tunesmith.infer.images import ImageInputError
from tunesmith.infer.loader import generation_kwargs

log = logging.getLogger(__name__)

# A prompt longer than this many characters per allowed token is refused without tokenizing it (ordinary text is
# 1-5 characters a token), so an enormous message costs no tokenizer time.
CHARS_PER_TOKEN = 8
# An image costs at least this many tokens (<|vision_start|>, one <|image_pad|>, <|vision_end|>) in that estimate.
TOKENS_PER_IMAGE = 3


class ContextLengthError(TunesmithError):
    """The prompt does not fit the model's context (or the configured api_max_input_tokens)."""


class EngineBusy(TunesmithError):
    """The model did not become free before the request's deadline, or the engine is shutting down."""


@dataclasses.dataclass
class Prompt:
    """An encoded prompt: its token ids and, with images, the model's vision inputs (pixel_values, image_grid_thw);
    with audios, input_features and feature_attention_mask."""

    ids: list[int]
    vision: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Reply:
    """One generated answer: its text, the tool calls parsed from it, and token counts."""

    text: str
    tool_calls: list | None  # [FunctionCall(name, arguments)] when the model called tools
    finish_reason: str  # "stop", "length" (max tokens, context or deadline) or "tool_calls"
    prompt_tokens: int
    completion_tokens: int


def _context_length(model, tokenizer) -> int | None:
    """Positions the model can attend to: its config's max_position_embeddings (or the usual aliases)."""
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    return value if isinstance(value, int) and 0 < value < 10**7 else None


def _stop_criterion(prompt_len: int, should_stop, tokenizer=None, stop: list[str] | None = None,
                    skip_special_tokens: bool = True):
    """A transformers StoppingCriteria: ends generation when should_stop() is true or a stop string appears;
    counts the new tokens.

    Stop strings are looked for in the decoded tail of the reply (a few tokens per character of the longest one),
    so each step costs the same however large the vocabulary; transformers' stop_strings instead precomputes a
    table over the whole vocabulary for every new set of strings (seconds to minutes per request)."""
    import torch
    from transformers import StoppingCriteria

    window = 4 * max(len(word) for word in stop) + 2 if stop else 0  # a token holds at least one UTF-8 byte

    class Watch(StoppingCriteria):
        def __init__(self):
            self.generated, self.last, self.cut = 0, None, False

        def __call__(self, input_ids, scores, **kwargs):
            self.generated, self.last = input_ids.shape[-1] - prompt_len, int(input_ids[0, -1])
            self.cut = self.cut or should_stop()
            done = self.cut
            if stop and not done:
                tail = input_ids[0, -min(window, self.generated):].tolist()
                text = tokenizer.decode(tail, skip_special_tokens=skip_special_tokens)
                done = any(word in text for word in stop)
            return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)

    return Watch()


class ChatEngine:
    """Base model + adapters + template from a config; generation is serialised by a lock (one model, one GPU).

    Every generation stops at the next token once its `cancel` event is set, its `deadline` (time.monotonic())
    passes, or `stop()` is called (server shutdown); new tokens are capped to what fits the context."""

    def __init__(self, config, job: str = "chat"):
        from tunesmith.infer.loader import load_audio_plugin, load_for_inference, load_image_plugin

        self.config = config
        self.tokenizer, self.template, self.model = load_for_inference(config, job=job)
        self.plugin, self.no_images = load_image_plugin(config, self.template)  # plugin None: text only (why)
        self.audio_plugin, self.no_audios = load_audio_plugin(config, self.template)  # Qwen2-Audio's, or None
        self.tokenizer.padding_side = "left"
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.context_length = _context_length(self.model, self.tokenizer)
        # the reply needs at least one position after the prompt
        limits = [n for n in (self.context_length and self.context_length - 1, config.infer.api_max_input_tokens) if n]
        self.max_input_tokens = min(limits) if limits else None
        path = config.model.adapter_name_or_path[-1] if config.model.adapter_name_or_path else \
            config.model.model_name_or_path
        self.name = config.infer.api_model_name or str(path).rstrip("/").split("/")[-1]

    def stop(self) -> None:
        """Ends every running and waiting generation at its next token (server shutdown); the engine stays stopped."""
        self.stopping.set()

    @property
    def takes_images(self) -> bool:
        return self.plugin is not None

    @property
    def takes_audios(self) -> bool:
        return self.audio_plugin is not None

    def load_audio(self, source, where: str = "audio"):
        """An audio for prepare(): bytes, a data: URL or a local path decoded at the model's sampling rate."""
        from tunesmith.infer.audios import load_audio

        if self.audio_plugin is None:
            raise AudioInputError(f"{where}: {self.no_audios}")
        return load_audio(source, self.audio_plugin.sampling_rate, where)

    def encode(self, messages: list[dict], system: str | None = None, tools: str | None = None,
               images: list | None = None, audios: list | None = None) -> list[int]:
        """The prompt's token ids (see prepare)."""
        return self.prepare(messages, system, tools, images, audios).ids

    def prepare(self, messages: list[dict], system: str | None = None, tools: str | None = None,
                images: list | None = None, audios: list | None = None) -> Prompt:
        """The encoded prompt; ContextLengthError when it cannot fit (refused by length before tokenizing).

        images (file paths or PIL images, in order) go where the messages' <image> placeholders are, one each, and
        are encoded as training encodes them: resized by image_max_pixels/image_min_pixels, each <image> expanded
        to the model's vision tokens; ImageInputError for a text-only model or a count that does not match.
        audios (decoded numpy arrays at the model's sampling rate, or file paths) likewise go where the <audio>
        placeholders are, expanded to the audio tokens of an audio-language model; AudioInputError otherwise."""
        images, audios = list(images or []), list(audios or [])
        limit = self.max_input_tokens
        # every message costs at least one token (its role markers), however short its text
        chars = len(system or "") + len(tools or "") + sum(len(m["content"] or "") + CHARS_PER_TOKEN
                                                            for m in messages)
        chars += (len(images) + len(audios)) * TOKENS_PER_IMAGE * CHARS_PER_TOKEN
        if limit and chars > limit * CHARS_PER_TOKEN:
            raise ContextLengthError(f"this model accepts prompts of at most {limit} tokens, but the messages hold "
                                     f"about {chars} characters, far more than {limit} tokens; shorten them")
        conversation, vision = [*messages, {"role": ASSISTANT, "content": ""}], {}
        if images or (self.plugin is not None and count_placeholders(messages)):
            if self.plugin is None:
                raise ImageInputError(self.no_images)
            placeholders = count_placeholders(messages)
            if placeholders != len(images):
                raise ImageInputError(f"the messages hold {placeholders} {IMAGE_PLACEHOLDER} placeholders but "
                                      f"{len(images)} images were given: each image needs one {IMAGE_PLACEHOLDER} "
                                      "where it goes in the text")
            conversation, vision = self.plugin.prepare(conversation, images)
        if audios or (self.audio_plugin is not None and count_placeholders(messages, AUDIO_PLACEHOLDER)):
            if self.audio_plugin is None:
                raise AudioInputError(self.no_audios)
            placeholders = count_placeholders(messages, AUDIO_PLACEHOLDER)
            if placeholders != len(audios):
                raise AudioInputError(f"the messages hold {placeholders} {AUDIO_PLACEHOLDER} placeholders but "
                                      f"{len(audios)} audios were given: each audio needs one {AUDIO_PLACEHOLDER} "
                                      "where it goes in the text")
            features = self.audio_plugin.inputs(audios)
            frames = features["feature_attention_mask"].sum(-1).tolist()
            try:
                conversation = self.audio_plugin.expand_lengths(conversation, frames)
            except TunesmithError as exc:  # too short an audio: said like any other unusable audio
                raise AudioInputError(str(exc)) from None
            vision = {**vision, **features}
        prompt_ids, _ = self.template.encode_oneturn(self.tokenizer, conversation, system, tools)
        if limit and len(prompt_ids) > limit:
            raise ContextLengthError(f"this model accepts prompts of at most {limit} tokens, but the messages are "
                                     f"{len(prompt_ids)} tokens; shorten them" + (" or send smaller images (or "
                                     "lower image_max_pixels)" if images else ""))
        return Prompt(ids=prompt_ids, vision=vision)

    def _inputs(self, prompt: Prompt, generation: dict, watch):
        import torch

        inputs = torch.tensor([prompt.ids], device=self.model.device)
        kwargs = {**generation_kwargs(self.config.generation, self.tokenizer, self.template, generation),
                  "attention_mask": torch.ones_like(inputs), "stopping_criteria": [watch]}
        if prompt.vision:  # as the training collator passes them (mm_token_type_ids: transformers 5's M-RoPE input)
            device, dtype = self.model.device, self.model.dtype
            kwargs.update({key: value.to(device, dtype=dtype) if value.is_floating_point() else value.to(device)
                           for key, value in prompt.vision.items()})
            if self.plugin is not None:  # the image family's per-token inputs (an audio model has no image plugin)
                kwargs.update(self.plugin.batch_inputs(self.tokenizer, inputs))
        if self.context_length:
            kwargs["max_new_tokens"] = max(1, min(kwargs["max_new_tokens"], self.context_length - len(prompt.ids)))
        return inputs, kwargs

    def _watch(self, prompt_len: int, should_stop, stop: list[str] | None):
        return _stop_criterion(prompt_len, should_stop, self.tokenizer, stop,
                               self.config.generation.skip_special_tokens)

    def _should_stop(self, cancel: threading.Event | None, deadline: float | None):
        def should_stop() -> bool:
            return self.stopping.is_set() or (cancel is not None and cancel.is_set()) or (
                deadline is not None and time.monotonic() > deadline)

        return should_stop

    def _acquire(self, should_stop) -> None:
        """Waits for the model, giving up when the request is cancelled or its deadline passes."""
        while not self.lock.acquire(timeout=0.1):
            if should_stop():
                raise EngineBusy("the model stayed busy until the request's deadline (or the server is stopping); "
                                 "retry later or raise api_request_timeout")

    def _finish(self, text: str, stop: list[str] | None, watch, max_new: int, prompt_len: int,
                tools: str | None) -> Reply:
        found = [text.index(word) for word in stop or [] if word in text]
        stopped = bool(found)
        if found:
            text = text[: min(found)]
        calls = self.template.extract_tool_calls(text) if tools else None
        ended = watch.last in self.template.stop_token_ids(self.tokenizer)
        cut = not stopped and (watch.cut or (watch.generated >= max_new and not ended))
        reason = "tool_calls" if calls else ("length" if cut else "stop")
        return Reply(text=text, tool_calls=calls, finish_reason=reason, prompt_tokens=prompt_len,
                     completion_tokens=watch.generated)

    def chat(self, messages: list[dict], system: str | None = None, tools: str | None = None, n: int = 1,
             stop: list[str] | None = None, *, images: list | None = None, prompt: Prompt | None = None,
             cancel: threading.Event | None = None, deadline: float | None = None, audios: list | None = None,
             **generation) -> list[Reply]:
        """n complete replies to a conversation that ends with a user (or observation) turn; `images` go where its
        <image> placeholders are; `prompt`: the conversation already prepared by `prepare` (then messages, system
        and images are not read; `tools` still says whether to look for tool calls in the reply)."""
        import torch

        prompt = prompt if prompt is not None else self.prepare(messages, system, tools, images, audios)
        prompt_ids = prompt.ids
        replies = []
        should_stop = self._should_stop(cancel, deadline)
        self._acquire(should_stop)
        try:
            with torch.no_grad():
                for _ in range(n):
                    watch = self._watch(len(prompt_ids), should_stop, stop)
                    inputs, kwargs = self._inputs(prompt, generation, watch)
                    output = self.model.generate(inputs, **kwargs)[0, inputs.shape[1]:]
                    ids = [t for t in output.tolist() if t != self.tokenizer.pad_token_id]
                    text = self.tokenizer.decode(ids, skip_special_tokens=self.config.generation.skip_special_tokens)
                    replies.append(self._finish(text, stop, watch, kwargs["max_new_tokens"], len(prompt_ids), tools))
        finally:
            self.lock.release()
        return replies

    def stream(self, messages: list[dict], system: str | None = None, tools: str | None = None,
               stop: list[str] | None = None, *, images: list | None = None, prompt: Prompt | None = None,
               cancel: threading.Event | None = None, deadline: float | None = None, result: list | None = None,
               audios: list | None = None, **generation) -> Iterator[str]:
        """Yields the reply's text piece by piece as it is generated; the finished Reply is appended to `result`.
        images and prompt: as for chat.

        Closing the iterator early (or setting `cancel`) stops the generation."""
        import torch
        from transformers import TextIteratorStreamer

        prompt = prompt if prompt is not None else self.prepare(messages, system, tools, images, audios)
        prompt_ids = prompt.ids
        cancel = cancel or threading.Event()
        should_stop = self._should_stop(cancel, deadline)
        watch = self._watch(len(prompt_ids), should_stop, stop)
        inputs, kwargs = self._inputs(prompt, generation, watch)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True,
                                        skip_special_tokens=self.config.generation.skip_special_tokens)
        errors = []

        def run():
            try:
                self._acquire(should_stop)
            except EngineBusy as exc:
                errors.append(exc)
                streamer.end()
                return
            try:
                with torch.no_grad():
                    self.model.generate(inputs, streamer=streamer, **kwargs)
            except Exception as exc:  # surfaced to the caller below
                errors.append(exc)
                streamer.end()
            finally:
                self.lock.release()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        emitted = ""
        try:
            for piece in streamer:
                if stop and any(word in emitted + piece for word in stop):
                    cut = min((emitted + piece).index(w) for w in stop if w in emitted + piece)
                    if cut > len(emitted):
                        yield (emitted + piece)[len(emitted):cut]
                    emitted += piece  # _finish cuts it at the stop string again and reports "stop"
                    break
                emitted += piece
                if piece:
                    yield piece
        finally:
            cancel.set()  # the reader is done (stop string, closed early): no more tokens are needed
            worker.join()
        if errors:
            raise errors[0]
        if result is not None:
            result.append(self._finish(emitted, stop, watch, kwargs["max_new_tokens"], len(prompt_ids), tools))
