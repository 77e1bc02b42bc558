"""SwiGLU MLPs in training keep gate and up for the backward pass and recompute silu(gate) there.

down_proj(silu(gate_proj(x)) * up_proj(x)) run op by op keeps four (tokens, intermediate_size) tensors for the
backward pass: gate (for silu), silu(gate) and up (for the product) and the product (for down_proj). The product's
backward needs silu(gate) only as a factor, and silu(gate) is one elementwise pass over gate: recomputing it drops one
of the four, about 10 % of a LoRA step's saved activations (issue 15's 39M llama: 90 MB), for under 1 % of its time.
The gradients are the same ops in the same order (silu, then silu_backward), so they are bitwise equal.
Where down_proj is a plain nn.Linear (Full and Freeze fine-tunes, or LoRA not on it), the product is not kept either:
down_proj's backward needs it for its weight's gradient only, and recomputing it is one more elementwise pass, so
the layer keeps gate and up alone, two of the four (another 88 MB on that model); still bitwise equal.

Only for the standard gated MLP (gate_proj, up_proj, down_proj, act_fn SiLU: llama, qwen2/3, mistral, ...), in
training with grad; anything else runs the model's own forward.
"""

from __future__ import annotations

import logging
import types

log = logging.getLogger(__name__)


def _function():
    import torch

    class SiluMul(torch.autograd.Function):
        """silu(gate) * up, saving gate and up only."""

        @staticmethod
        def forward(ctx, gate, up):
            ctx.save_for_backward(gate, up)
            return torch.nn.functional.silu(gate) * up

        @staticmethod
        def backward(ctx, grad):
            gate, up = ctx.saved_tensors
            grad_up = grad * torch.nn.functional.silu(gate) if ctx.needs_input_grad[1] else None
            grad_gate = torch.ops.aten.silu_backward(grad * up, gate) if ctx.needs_input_grad[0] else None
            return grad_gate, grad_up

    class SiluMulLinear(torch.autograd.Function):
        """linear(silu(gate) * up, weight, bias), saving gate and up (the product is recomputed for weight's grad)."""

        @staticmethod
        def forward(ctx, gate, up, weight, bias):
            ctx.save_for_backward(gate, up, weight)
            ctx.has_bias = bias is not None
            return torch.nn.functional.linear(torch.nn.functional.silu(gate) * up, weight, bias)

        @staticmethod
        def backward(ctx, grad):
            gate, up, weight = ctx.saved_tensors
            silu = torch.nn.functional.silu(gate)
            grad_weight = grad_bias = grad_gate = grad_up = None
            if ctx.needs_input_grad[2]:
                product = (silu * up).reshape(-1, up.shape[-1])
                grad_weight = grad.reshape(-1, grad.shape[-1]).t() @ product
            if ctx.has_bias and ctx.needs_input_grad[3]:
                grad_bias = grad.reshape(-1, grad.shape[-1]).sum(0)
            if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
                grad_product = grad @ weight
                grad_up = grad_product * silu if ctx.needs_input_grad[1] else None
                grad_gate = torch.ops.aten.silu_backward(grad_product * up, gate) if ctx.needs_input_grad[0] else None
            return grad_gate, grad_up, grad_weight, grad_bias

    return SiluMul, SiluMulLinear


def _is_swiglu(module, llama) -> bool:
    """The MLP's forward is LlamaMLP's (`llama`: its code; the same bytecode and names) and its act_fn is SiLU."""
    import torch
    from transformers.activations import SiLUActivation

    code = getattr(type(module).forward, "__code__", None)
    return (
        code is not None
        and code.co_code == llama.co_code
        and code.co_names == llama.co_names
        and isinstance(getattr(module, "act_fn", None), (SiLUActivation, torch.nn.SiLU))
    )


def use_recomputed_swiglu(model) -> int:
    """Switches the model's standard SwiGLU MLPs to the recomputing product in training; returns how many."""
    import torch

    (function, with_down), count = _function(), 0

    def forward(self, x):
        if not self.training or not torch.is_grad_enabled():
            return type(self).forward(self, x)
        down = self.down_proj
        if type(down) is torch.nn.Linear:  # plain down projection: the product is recomputed too
            return with_down.apply(self.gate_proj(x), self.up_proj(x), down.weight, down.bias)
        return down(function.apply(self.gate_proj(x), self.up_proj(x)))

    from transformers.models.llama.modeling_llama import LlamaMLP

    llama = LlamaMLP.forward.__code__
    for module in model.modules():
        if _is_swiglu(module, llama):
            module.forward = types.MethodType(forward, module)
            count += 1
    if count:
        log.info("MLP: %d SwiGLU layers recompute silu(gate) in the backward pass (one activation fewer each)", count)
    return count
