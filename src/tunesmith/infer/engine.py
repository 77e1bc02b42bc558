"""The one inference engine behind chat, the API and the web chat: loads models exactly as training does."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterator

from tunesmith.data.records import ASSISTANT
from tunesmith.errors import ConfigError, DependencyError

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Reply:
    """One generated answer: its text, the tool calls parsed from it, and token counts."""

    text: str
    tool_calls: list | None  # [FunctionCall(name, arguments)] when the model called tools
    finish_reason: str  # "stop", "length" or "tool_calls"
    prompt_tokens: int
    completion_tokens: int


def _generation_kwargs(defaults, overrides: dict) -> dict:
    values = {**defaults.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
    values.pop("skip_special_tokens", None)
    if values.get("temperature") == 0:  # OpenAI clients send temperature 0 for greedy decoding
        values["do_sample"] = False
    if not values["do_sample"]:
        for key in ("temperature", "top_p", "top_k"):
            values.pop(key, None)
    return values


class ChatEngine:
    """Base model + adapters + template from a config; generation is serialised by a lock (one model, one GPU)."""

    def __init__(self, config):
        if config.infer.infer_backend == "vllm":
            try:
                import vllm  # noqa: F401
            except ImportError:
                raise DependencyError("infer_backend: vllm needs the vllm package and a CUDA GPU "
                                      "(pip install vllm); use infer_backend: huggingface") from None
            raise DependencyError("infer_backend: vllm is not supported by this tunesmith version yet; "
                                  "use infer_backend: huggingface")
        if not config.model.model_name_or_path:
            raise ConfigError(f"{config.source}: `model_name_or_path` is required")
        from tunesmith.data.pipeline import resolve_template
        from tunesmith.model.load import load_model, load_tokenizer

        self.config = config
        self.tokenizer = load_tokenizer(config.model)
        self.tokenizer.padding_side = "left"
        self.template = resolve_template(config.data, self.tokenizer)
        self.model = load_model(config.model, config.method, self.tokenizer, is_trainable=False,
                                cutoff_len=config.data.cutoff_len)
        self.lock = threading.Lock()
        path = config.model.adapter_name_or_path[-1] if config.model.adapter_name_or_path else \
            config.model.model_name_or_path
        self.name = config.infer.api_model_name or str(path).rstrip("/").split("/")[-1]

    def _prompt(self, messages: list[dict], system: str | None, tools: str | None) -> list[int]:
        conversation = [*messages, {"role": ASSISTANT, "content": ""}]
        prompt_ids, _ = self.template.encode_oneturn(self.tokenizer, conversation, system, tools)
        return prompt_ids

    def _inputs(self, prompt_ids: list[int], generation: dict, stop: list[str] | None):
        import torch

        inputs = torch.tensor([prompt_ids], device=self.model.device)
        kwargs = {**_generation_kwargs(self.config.generation, generation),
                  "eos_token_id": self.template.stop_token_ids(self.tokenizer),
                  "pad_token_id": self.tokenizer.pad_token_id, "attention_mask": torch.ones_like(inputs)}
        if stop:
            kwargs.update(stop_strings=stop, tokenizer=self.tokenizer)
        return inputs, kwargs

    def _finish(self, text: str, stop: list[str] | None, new_tokens: int, max_new_tokens: int, prompt_len: int,
                tools: str | None) -> Reply:
        for word in stop or []:
            if word in text:
                text = text[: text.index(word)]
        calls = self.template.extract_tool_calls(text) if tools else None
        reason = "tool_calls" if calls else ("length" if new_tokens >= max_new_tokens else "stop")
        return Reply(text=text, tool_calls=calls, finish_reason=reason, prompt_tokens=prompt_len,
                     completion_tokens=new_tokens)

    def chat(self, messages: list[dict], system: str | None = None, tools: str | None = None, n: int = 1,
             stop: list[str] | None = None, **generation) -> list[Reply]:
        """n complete replies to a conversation that ends with a user (or observation) turn."""
        import torch

        prompt_ids = self._prompt(messages, system, tools)
        inputs, kwargs = self._inputs(prompt_ids, generation, stop)
        max_new = kwargs["max_new_tokens"]
        replies = []
        with self.lock, torch.no_grad():
            for _ in range(n):
                output = self.model.generate(inputs, **kwargs)[0, inputs.shape[1]:]
                ids = [t for t in output.tolist() if t != self.tokenizer.pad_token_id]
                text = self.tokenizer.decode(ids, skip_special_tokens=self.config.generation.skip_special_tokens)
                replies.append(self._finish(text, stop, len(ids), max_new, len(prompt_ids), tools))
        return replies

    def stream(self, messages: list[dict], system: str | None = None, tools: str | None = None,
               stop: list[str] | None = None, **generation) -> Iterator[str]:
        """Yields the reply's text piece by piece as it is generated."""
        import torch
        from transformers import TextIteratorStreamer

        prompt_ids = self._prompt(messages, system, tools)
        inputs, kwargs = self._inputs(prompt_ids, generation, stop)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True,
                                        skip_special_tokens=self.config.generation.skip_special_tokens)
        errors = []

        def run():
            with self.lock, torch.no_grad():
                try:
                    self.model.generate(inputs, streamer=streamer, **kwargs)
                except Exception as exc:  # surfaced to the caller below
                    errors.append(exc)
                    streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        emitted = ""
        for piece in streamer:
            if stop and any(word in emitted + piece for word in stop):
                cut = min((emitted + piece).index(w) for w in stop if w in emitted + piece)
                if cut > len(emitted):
                    yield (emitted + piece)[len(emitted):cut]
                break
            emitted += piece
            if piece:
                yield piece
        worker.join()
        if errors:
            raise errors[0]
