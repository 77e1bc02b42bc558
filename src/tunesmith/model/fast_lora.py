"""LoRA linear layers in training through one merged-weight matmul: y = x (W + s B A)^T, exact to fp32 rounding.

peft computes base(x) + s * B(A(x)): besides the base matmul, two skinny rank-r matmuls forward, four backward, and
three elementwise passes over the (tokens, out_features) output (scale, add; the scale again backward). On a CPU
those run far below the matmul rate (measured: LoRA adds 30-45 % to a linear layer's forward+backward at r 8,
2,048 tokens, hidden 512). Folding s B A into the frozen weight first costs out x in x r flops per step and leaves
one big matmul each way plus four skinny ones backward (dA, dB), with no elementwise pass over the output: the LoRA
overhead falls by about two thirds (same measurement).

Only where the two are the same function of x: an unmerged, enabled, plain LoRA adapter (no DoRA or other variant,
no dropout, no lora_bias, one active adapter) on a float32 nn.Linear whose weight is frozen, in training with grad.
Anything else (quantized base layers, bf16/fp16, dropout, eval/generation) takes peft's own forward. The parameters,
their names, what peft saves and merges are peft's: only the arithmetic of the forward and backward differs.
"""

from __future__ import annotations

import logging
import types

log = logging.getLogger(__name__)


def _function():
    import torch

    class MergedLoraLinear(torch.autograd.Function):
        """y = x W_eff^T + bias, W_eff = W + s B A; gradients for x, A and B (W is frozen)."""

        @staticmethod
        def forward(ctx, x, weight, bias, lora_a, lora_b, scaling):
            ctx.save_for_backward(x, weight, lora_a, lora_b)  # not the merged weight: a copy of W per layer
            ctx.scaling = scaling
            return torch.nn.functional.linear(x, torch.addmm(weight, lora_b, lora_a, alpha=scaling), bias)

        @staticmethod
        def backward(ctx, grad):
            x, weight, lora_a, lora_b = ctx.saved_tensors
            x2, grad2 = x.reshape(-1, x.shape[-1]), grad.reshape(-1, grad.shape[-1])
            grad_x = None
            if ctx.needs_input_grad[0]:  # merged again: out x in x r flops, against keeping it for the whole step
                grad_x = grad @ torch.addmm(weight, lora_b, lora_a, alpha=ctx.scaling)
            # (r, tokens) @ (tokens, features): the layouts MKL runs fast for a small r
            grad_a = (grad2 @ lora_b).t() @ x2 * ctx.scaling if ctx.needs_input_grad[3] else None
            grad_b = ((x2 @ lora_a.t()).t() @ grad2).t() * ctx.scaling if ctx.needs_input_grad[4] else None
            return grad_x, None, None, grad_a, grad_b, None

    return MergedLoraLinear


def _applies(module, x) -> bool:
    import torch

    if module.disable_adapters or module.merged or not module.training or not torch.is_grad_enabled():
        return False
    active = module.active_adapters
    if len(active) != 1 or active[0] not in module.lora_A or active[0] in module.lora_variant:
        return False
    name = active[0]
    base = module.base_layer
    return (
        type(base) is torch.nn.Linear
        and not base.weight.requires_grad
        and (base.bias is None or not base.bias.requires_grad)
        and not module.fan_in_fan_out
        and not module.use_dora.get(name, False)
        and not module.lora_bias.get(name, False)
        and isinstance(module.lora_dropout[name], torch.nn.Identity)
        and x.dtype == base.weight.dtype == module.lora_A[name].weight.dtype == torch.float32
    )


def _forward(function):
    def forward(self, x, *args, **kwargs):
        if args or kwargs or not _applies(self, x):
            return type(self).forward(self, x, *args, **kwargs)
        name = self.active_adapters[0]
        base = self.base_layer
        return function.apply(
            x, base.weight, base.bias, self.lora_A[name].weight, self.lora_B[name].weight, float(self.scaling[name])
        )

    return forward


def use_fast_lora(model) -> int:
    """Routes the plain float32 LoRA linear layers of a peft model through the merged-weight matmul in training;
    returns how many layers can take it (the others, and every layer outside training, run peft's forward)."""
    try:
        from peft.tuners.lora.layer import Linear
    except ImportError:
        return 0
    import torch

    function, count = _function(), 0
    forward = _forward(function)
    for module in model.modules():
        if type(module) is not Linear or type(module.base_layer) is not torch.nn.Linear:
            continue
        module.forward = types.MethodType(forward, module)
        count += 1
    if count:
        log.info(
            "LoRA: %d float32 linear layers train through one merged-weight matmul (exact to fp32 rounding)", count
        )
    return count
