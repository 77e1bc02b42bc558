"""RMSNorm layers whose weight trains (Full, Freeze) keep only their input for the backward pass, not the normed copy.

weight * (x * rsqrt(mean(x^2) + eps)) run op by op keeps x and the (tokens, hidden) normed tensor for the weight's
gradient, besides the per-token rsqrt. The normed tensor is one multiply away from x: here a function keeps x and
the rsqrt only and recomputes it in backward, one (tokens, hidden) tensor fewer per norm (issue 15's 39M llama, a
packed 4x512 batch: 17 norms x 4 MB), for one elementwise pass. With a frozen weight (LoRA, QLoRA) autograd keeps
nothing more than that already, and the model's own forward runs. Loss and gradients equal the plain ones to float32
rounding (tests/unit/test_rmsnorm.py).

Only for the standard RMSNorm (LlamaRMSNorm's forward: llama, qwen2/3, mistral, ...) in float32, in training with grad.
"""

from __future__ import annotations

import logging
import types

log = logging.getLogger(__name__)


def _function():
    import torch

    class RMSNorm(torch.autograd.Function):
        """weight * x * rsqrt(mean(x^2) + eps), saving x, the rsqrt and the weight."""

        @staticmethod
        def forward(ctx, x, weight, eps):
            rstd = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
            ctx.save_for_backward(x, rstd, weight)
            return weight * (x * rstd)

        @staticmethod
        def backward(ctx, grad):
            x, rstd, weight = ctx.saved_tensors
            normed = x * rstd
            grad_weight = None
            if ctx.needs_input_grad[1]:
                grad_weight = (grad * normed).reshape(-1, normed.shape[-1]).sum(0)
            grad_x = None
            if ctx.needs_input_grad[0]:
                grad_normed = grad * weight
                grad_x = rstd * (grad_normed - normed * (grad_normed * normed).mean(-1, keepdim=True))
            return grad_x, grad_weight, None

    return RMSNorm


def use_recomputed_rmsnorm(model) -> int:
    """Switches the model's standard RMSNorm layers to the function above where their weight trains; returns how
    many layers it holds (the weight may be frozen later: each call checks)."""
    import torch
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    function, count, trainable = _function(), 0, 0
    llama = LlamaRMSNorm.forward.__code__

    def forward(self, x):
        weight = self.weight
        if (
            not self.training
            or not torch.is_grad_enabled()
            or not weight.requires_grad
            or x.dtype != torch.float32
            or weight.dtype != torch.float32
        ):
            return type(self).forward(self, x)
        return function.apply(x, weight, self.variance_epsilon)

    for module in model.modules():
        code = getattr(type(module).forward, "__code__", None)
        if code is not None and code.co_code == llama.co_code and code.co_names == llama.co_names:
            module.forward = types.MethodType(forward, module)
            count += 1
            trainable += module.weight.requires_grad
    if trainable:
        log.info("RMSNorm: %d layers whose weight trains keep only their input for the backward pass", trainable)
    return count
