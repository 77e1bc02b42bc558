"""Applies the fine-tuning method (full, freeze, lora, oft) to a loaded model and keeps trainable weights in float32."""

from __future__ import annotations

import logging

from tunesmith.errors import ConfigError
from tunesmith.model.freeze import expanded_modules, setup_freeze
from tunesmith.model.lora import lora_config, loraplus_optimizer, save_pissa_converted, save_pissa_init, setup_lora
from tunesmith.model.quantize import is_quantized
from tunesmith.model.vision import freeze_parts, is_vision_model, lora_targets

log = logging.getLogger(__name__)

__all__ = ["apply_method", "loraplus_optimizer", "save_pissa_converted", "save_pissa_init", "upcast_trainable"]


def _full(model, model_args, method_args, is_trainable, resized, lf_method):
    if is_trainable:
        model.requires_grad_(True)
        log.info("full fine-tuning: every parameter trains")
    return model


def _freeze(model, model_args, method_args, is_trainable, resized, lf_method):
    if is_trainable:
        setup_freeze(model, method_args, llama_pro=lf_method.use_llama_pro)
    return model


def _lora(model, model_args, method_args, is_trainable, resized, lf_method, multimodal=None):
    make_config = None
    if is_vision_model(model):  # the freeze_* keys decide which parts get adapters (LF's patch_target_modules)

        def make_config(model, model_args, method_args, resized):
            config = lora_config(model, model_args, method_args, resized)
            config.target_modules = set(lora_targets(model, list(method_args.lora_target or ["all"]), multimodal))
            return config

    elif lf_method.use_llama_pro:  # LLaMA Pro with LoRA: adapters only inside the expanded blocks

        def make_config(model, model_args, method_args, resized):
            config = lora_config(model, model_args, method_args, resized)
            config.target_modules = set(
                expanded_modules(model, sorted(config.target_modules), method_args.freeze_trainable_layers)
            )
            return config

    return setup_lora(model, model_args, method_args, is_trainable, embeddings_resized=resized,
                      make_config=make_config)


def _oft(model, model_args, method_args, is_trainable, resized, lf_method):
    from tunesmith.model.oft import setup_oft

    return setup_oft(model, model_args, method_args, lf_method, is_trainable, embeddings_resized=resized)


METHODS = {"full": _full, "freeze": _freeze, "lora": _lora, "oft": _oft}
ADAPTERS = ("lora", "oft")  # methods that save a peft adapter (and may train on a quantized model)


def apply_method(model, model_args, method_args, is_trainable: bool, *, embeddings_resized: bool = False,
                 lf_method=None, multimodal=None):
    """Sets which parameters train for finetuning_type full/freeze/lora/oft and returns the (possibly peft) model.

    embeddings_resized (or model_args.resize_vocab) makes LoRA/OFT train and save the embeddings and output head;
    lf_method (config.lf_method) holds OFT's and LLaMA Pro's keys (None: their defaults); multimodal
    (config.multimodal) the freeze_vision_tower/freeze_multi_modal_projector/freeze_language_model keys of a
    vision-language model (None: LF's defaults, only the language model trains).
    """
    if lf_method is None:
        from tunesmith.config.schema import LFMethodArgs

        lf_method = LFMethodArgs()
    kind = method_args.finetuning_type
    if is_trainable and is_quantized(model) and kind not in ADAPTERS:
        raise ConfigError(f"a quantized model can only be trained with finetuning_type: lora or oft, not {kind}")
    if kind not in METHODS:
        raise ConfigError(f"unknown finetuning_type '{kind}': choose {', '.join(METHODS)}")
    resized = embeddings_resized or model_args.resize_vocab
    if is_vision_model(model) and multimodal is None:
        from tunesmith.config.schema_data import MultimodalArgs

        multimodal = MultimodalArgs()
    if is_vision_model(model) and kind == "oft":
        raise ConfigError("OFT on a vision-language model is not supported yet; use finetuning_type lora, freeze "
                          "or full")
    if kind == "lora":
        model = _lora(model, model_args, method_args, is_trainable, resized, lf_method, multimodal)
    else:
        model = METHODS[kind](model, model_args, method_args, is_trainable, resized, lf_method)
    if is_trainable and kind in ("full", "freeze") and is_vision_model(model):
        freeze_parts(model, multimodal, kind)
    if is_trainable and not lf_method.pure_bf16:  # pure_bf16: trainable weights stay bfloat16, as in LLaMA-Factory
        upcast_trainable(model)
    return model


def upcast_trainable(model) -> None:
    """Trainable parameters in float32 even on a bf16/fp16 model: optimizer updates in half precision get lost."""
    import torch

    count = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32 and param.is_floating_point():
            param.data = param.data.to(torch.float32)
            count += 1
    if count:
        log.info("upcast %d trainable tensors to float32", count)
