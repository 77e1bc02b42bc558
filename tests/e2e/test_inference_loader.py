"""The one inference loader: every front door (chat/api/web chat engine, eval, predict, export, demo) places the
model on the device tunesmith detects, and builds generate() kwargs in one place."""

import pytest
import torch

from tunesmith.config.load import load_config
from tunesmith.device import detect_device
from tunesmith.infer import loader


def test_engine_model_goes_to_the_detected_device(tiny_model_dir, monkeypatch):
    """The device helper says where inference runs; the chat engine (chat, api, web chat) follows it. "meta" stands
    in for an accelerator on a CPU machine: a model the engine did not move would stay on cpu."""
    from tunesmith.infer.engine import ChatEngine

    monkeypatch.setattr(loader, "detect_device", lambda: "meta")
    engine = ChatEngine(load_config(None, {"model_name_or_path": str(tiny_model_dir), "template": "qwen"}))
    assert engine.model.device.type == "meta"
    assert all(param.device.type == "meta" for param in engine.model.parameters())


def test_eval_loads_on_the_detected_device(tiny_model_dir):
    _, _, model = loader.load_for_inference(
        load_config(None, {"model_name_or_path": str(tiny_model_dir), "template": "qwen"}), job="eval")
    assert model.device.type == detect_device()
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_export_does_not_move_the_model(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(loader, "detect_device", lambda: "meta")
    _, _, model = loader.load_for_inference(load_config(None, {"model_name_or_path": str(tiny_model_dir),
                                                               "template": "qwen"}), place=False)
    assert model.device.type == "cpu"


def test_generation_kwargs_one_builder(tiny_model_dir):
    config = load_config(None, {"model_name_or_path": str(tiny_model_dir), "template": "qwen", "top_k": 7})
    tokenizer, template, _ = loader.load_for_inference(config)
    sampled = loader.generation_kwargs(config.generation, tokenizer, template)
    assert sampled["do_sample"] is True and sampled["top_k"] == 7 and "skip_special_tokens" not in sampled
    assert sampled["eos_token_id"] == template.stop_token_ids(tokenizer)
    assert sampled["pad_token_id"] == tokenizer.pad_token_id is not None
    greedy = loader.generation_kwargs(config.generation, tokenizer, template, greedy=True)
    assert greedy["do_sample"] is False and not {"temperature", "top_p", "top_k"} & set(greedy)
    request = loader.generation_kwargs(config.generation, tokenizer, template, {"temperature": 0, "top_p": None})
    assert request["do_sample"] is False and "temperature" not in request


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_chat_engine_generates_on_cuda(tiny_model_dir):
    from tunesmith.infer.engine import ChatEngine

    engine = ChatEngine(load_config(None, {"model_name_or_path": str(tiny_model_dir), "template": "qwen",
                                           "do_sample": False, "max_new_tokens": 4}))
    assert detect_device() == "cuda" and engine.model.device.type == "cuda"
    reply = engine.chat([{"role": "user", "content": "hi"}])[0]
    assert reply.completion_tokens >= 1
