"""LLaMA-Factory's model options: pure_bf16, upcast_layernorm, upcast_lmhead_output and moe_aux_loss_coef."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

# LLaMA-Factory's LAYERNORM_NAMES (extras/constants.py): a 1-d parameter whose name holds one of these is a norm
LAYERNORM_NAMES = ("norm", "ln")
# model types whose config takes output_router_logits / router_aux_loss_coef (LLaMA-Factory's model_utils/moe.py)
ROUTER_LOGITS = (
    "dbrx", "ernie4_5_moe", "granitemoe", "jamba", "jetmoe", "llama4", "mixtral", "olmoe", "phimoe", "qwen2_moe",
    "qwen3_moe",
)
ROUTER_COEF = ("ernie4_5_moe", "granitemoe", "jamba", "llama4", "mixtral", "olmoe", "phimoe", "qwen2_moe", "qwen3_moe")
TEXT_ROUTER_LOGITS = ("glm4v_moe_text", "qwen3_moe")


def configure_moe(config, coef: float | None, is_trainable: bool) -> None:
    """Turns on the router logits and sets the router auxiliary loss coefficient, as LLaMA-Factory does."""
    if not is_trainable or not coef:
        return
    model_type = getattr(config, "model_type", None)
    text_config = getattr(config, "text_config", None)
    text_type = getattr(text_config, "model_type", None)
    if model_type in ROUTER_LOGITS:
        config.output_router_logits = True
    if text_config is not None and text_type in TEXT_ROUTER_LOGITS:
        text_config.output_router_logits = True
    if model_type in ROUTER_COEF:
        config.router_aux_loss_coef = coef
    elif text_config is not None and text_type == "qwen3_moe":
        text_config.router_aux_loss_coef = coef
    elif model_type == "deepseek":
        config.aux_loss_alpha = coef
    elif model_type == "jetmoe":
        config.aux_loss_coef = coef
    else:
        log.warning("moe_aux_loss_coef: model type %s has no router loss coefficient; ignored", model_type)


def upcast_layernorm(model) -> int:
    """Norm weights (1-d parameters named *norm* / *ln*) in float32; returns how many were cast."""
    import torch

    count = 0
    for name, param in model.named_parameters():
        if param.ndim == 1 and any(part in name for part in LAYERNORM_NAMES) and param.dtype != torch.float32:
            param.data = param.data.to(torch.float32)
            count += 1
    log.info("upcast_layernorm: %d norm weights in float32", count)
    return count


def _fp32_output(module, args, output):
    import torch

    return output.to(torch.float32)


def upcast_lmhead_output(model) -> bool:
    """A forward hook casting the output head's logits to float32 (when the head is a half-precision Linear)."""
    import torch

    head = model.get_output_embeddings()
    if isinstance(head, torch.nn.Linear) and head.weight.dtype != torch.float32:
        head.register_forward_hook(_fp32_output)
        log.info("upcast_lmhead_output: lm_head outputs in float32")
        return True
    return False
