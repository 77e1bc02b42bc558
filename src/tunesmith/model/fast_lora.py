"""LoRA linear layers in training through one merged-weight matmul: y = x (W + s B A)^T, exact to fp32 rounding.

peft computes base(x) + s * B(A(x)): besides the base matmul, two skinny rank-r matmuls forward, four backward, and
three elementwise passes over the (tokens, out_features) output (scale, add; the scale again backward). On a CPU
those run far below the matmul rate (measured: LoRA adds 30-45 % to a linear layer's forward+backward at r 8,
2,048 tokens, hidden 512). Folding s B A into the frozen weight first costs out x in x r flops per step and leaves
one big matmul each way plus four skinny ones backward (dA, dB), with no elementwise pass over the output: the LoRA
overhead falls by about two thirds (same measurement).

Only where the two are the same function of x: an unmerged, enabled, plain LoRA adapter (no DoRA or other variant,
no dropout, no lora_bias, one active adapter) on a float32 nn.Linear whose weight is frozen, or on a bitsandbytes
4-bit layer on the CPU computing in float32 (QLoRA: its CPU matmul dequantizes the weight to float32 and multiplies,
forward and backward; here the dequantized weight is merged instead, and dequantized again for the backward pass, as
bitsandbytes does), in training with grad. Anything else (8-bit, HQQ or GPU bases, bf16/fp16, dropout,
eval/generation) takes peft's own forward. The parameters,
their names, what peft saves and merges are peft's: only the arithmetic of the forward and backward differs.
"""

from __future__ import annotations

import functools
import logging
import types

log = logging.getLogger(__name__)


@functools.cache
def _function():
    import torch

    class MergedLoraLinear(torch.autograd.Function):
        """y = x W_eff^T + bias, W_eff = W + s B A; gradients for x, A and B (W is frozen)."""

        @staticmethod
        def forward(ctx, x, weight, bias, lora_a, lora_b, scaling, quantized=None):
            # quantized: a bnb 4-bit base layer; its weight is dequantized here and again in backward, not kept
            ctx.save_for_backward(x, weight, lora_a, lora_b)  # not the merged weight: a copy of W per layer
            ctx.scaling, ctx.quantized = scaling, quantized
            return torch.nn.functional.linear(x, merged_weight(weight, lora_a, lora_b, scaling, quantized), bias)

        @staticmethod
        def backward(ctx, grad):
            x, weight, lora_a, lora_b = ctx.saved_tensors
            grad_x, grad_a, grad_b = merged_backward(
                ctx.needs_input_grad[0], ctx.needs_input_grad[3], ctx.needs_input_grad[4],
                x, grad, weight, lora_a, lora_b, ctx.scaling, ctx.quantized,
            )
            return grad_x, None, None, grad_a, grad_b, None, None

    return MergedLoraLinear


def merged_weight(weight, lora_a, lora_b, scaling: float, quantized=None):
    """W + s B A, W dequantized first for a bnb 4-bit base (`quantized`: the base layer)."""
    import torch

    if quantized is not None:
        weight = _dequantized(quantized)
    return torch.addmm(weight, lora_b, lora_a, alpha=scaling)


def merged_backward(need_x, need_a, need_b, x, grad, weight, lora_a, lora_b, scaling, quantized=None):
    """Gradients of y = x (W + s B A)^T for x, A and B (each None where not needed)."""
    x2, grad2 = x.reshape(-1, x.shape[-1]), grad.reshape(-1, grad.shape[-1])
    grad_x = None
    if need_x:  # merged again: out x in x r flops, against keeping it for the whole step
        grad_x = grad @ merged_weight(weight, lora_a, lora_b, scaling, quantized)
    # (r, tokens) @ (tokens, features): the layouts MKL runs fast for a small r
    grad_a = (grad2 @ lora_b).t() @ x2 * scaling if need_a else None
    grad_b = ((x2 @ lora_a.t()).t() @ grad2).t() * scaling if need_b else None
    return grad_x, grad_a, grad_b


def _dequantized(base):
    """A bnb Linear4bit's weight as float32 (out, in): what its CPU matmul multiplies by (bnb's gemm_4bit there)."""
    import bitsandbytes.functional as bnb_functional
    import torch

    return bnb_functional.dequantize_4bit(base.weight.data, base.weight.quant_state).to(torch.float32)


def _is_4bit(base) -> bool:
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return False
    return type(base) is Linear4bit


def _base_applies(base, x) -> bool:
    """The base layer is a frozen float32 nn.Linear, or a bnb 4-bit layer on the CPU computing in float32."""
    import torch

    if (base.bias is not None and base.bias.requires_grad) or x.dtype != torch.float32:
        return False
    if type(base) is torch.nn.Linear:
        return not base.weight.requires_grad and base.weight.dtype == torch.float32
    return (
        _is_4bit(base)
        and x.device.type == "cpu"
        and base.compute_dtype in (None, torch.float32)
        and getattr(base.weight, "quant_state", None) is not None
        and not getattr(base.weight.quant_state, "packing_format_for_cpu", False)  # bnb's inference layout
        and (base.bias is None or base.bias.dtype == torch.float32)
    )


def _applies(module, x) -> bool:
    import torch

    if module.disable_adapters or module.merged or not module.training or not torch.is_grad_enabled():
        return False
    active = module.active_adapters
    if len(active) != 1 or active[0] not in module.lora_A or active[0] in module.lora_variant:
        return False
    name = active[0]
    return (
        _base_applies(module.base_layer, x)
        and not module.fan_in_fan_out
        and not module.use_dora.get(name, False)
        and not module.lora_bias.get(name, False)
        and isinstance(module.lora_dropout[name], torch.nn.Identity)
        and module.lora_A[name].weight.dtype == module.lora_B[name].weight.dtype == torch.float32
    )


def operands(module, x):
    """(weight, bias, lora_a, lora_b, scaling, quantized) of a LoRA layer whose merged path applies to x, else None;
    quantized is the bnb 4-bit base layer (weight None then) or None."""
    import torch

    if not _applies(module, x):
        return None
    name = module.active_adapters[0]
    base = module.base_layer
    lora = module.lora_A[name].weight, module.lora_B[name].weight, float(module.scaling[name])
    if type(base) is not torch.nn.Linear:  # bnb 4-bit
        from bitsandbytes.nn.modules import fix_4bit_weight_quant_state_from_module

        fix_4bit_weight_quant_state_from_module(base)
        return None, base.bias, *lora, base
    return base.weight, base.bias, *lora, None


def fast_forward(self, x, *args, **kwargs):
    """A LoRA layer's forward with use_fast_lora: the merged-weight matmul where it applies, else peft's."""
    merged = None if args or kwargs else operands(self, x)
    if merged is None:
        return type(self).forward(self, x, *args, **kwargs)
    return _function().apply(x, *merged)


def is_fast(module) -> bool:
    """Whether use_fast_lora switched this module (it may still take peft's forward, see operands)."""
    return getattr(getattr(module, "forward", None), "__func__", None) is fast_forward


def use_fast_lora(model) -> int:
    """Routes the plain float32 LoRA linear layers of a peft model through the merged-weight matmul in training;
    returns how many layers can take it (the others, and every layer outside training, run peft's forward)."""
    try:
        from peft.tuners.lora.layer import Linear
    except ImportError:
        return 0
    import torch

    layers = [Linear]
    try:
        from peft.tuners.lora.bnb import Linear4bit

        layers.append(Linear4bit)
    except ImportError:  # peft defines it only where bitsandbytes imports
        pass
    count, quantized = 0, 0
    for module in model.modules():
        base = getattr(module, "base_layer", None)
        if type(module) not in layers or not (type(base) is torch.nn.Linear or _is_4bit(base)):
            continue
        module.forward = types.MethodType(fast_forward, module)
        count += 1
        quantized += type(base) is not torch.nn.Linear
    if count:
        log.info(
            "LoRA: %d linear layers%s train through one merged-weight matmul in float32 (exact to fp32 rounding)",
            count,
            f" ({quantized} bitsandbytes 4-bit, on the CPU)" if quantized else "",
        )
    return count
