"""SwiGLU MLPs in training keep gate and up for the backward pass and recompute silu(gate) there.

down_proj(silu(gate_proj(x)) * up_proj(x)) run op by op keeps four (tokens, intermediate_size) tensors for the
backward pass: gate (for silu), silu(gate) and up (for the product) and the product (for down_proj). The product's
backward needs silu(gate) only as a factor, and silu(gate) is one elementwise pass over gate: recomputing it drops one
of the four, about 10 % of a LoRA step's saved activations (issue 15's 39M llama: 90 MB), for under 1 % of its time.
The gradients are the same ops in the same order (silu, then silu_backward), so they are bitwise equal.
Where down_proj is a plain nn.Linear (Full and Freeze fine-tunes, or LoRA not on it), the product is not kept either:
down_proj's backward needs it for its weight's gradient only, and recomputing it is one more elementwise pass, so
the layer keeps gate and up alone, two of the four (another 88 MB on that model); still bitwise equal. The same
for a LoRA down_proj on model/fast_lora.py's merged path (its input is needed only for the gradients of A and B):
the product is recomputed, bitwise the same gradients, 16 % of a LoRA step's saved activations fewer.

Only for the standard gated MLP (gate_proj, up_proj, down_proj, act_fn SiLU: llama, qwen2/3, mistral, ...), in
training with grad; anything else runs the model's own forward.
"""

from __future__ import annotations

import functools
import logging
import types

log = logging.getLogger(__name__)


@functools.cache
def _function():
    import torch

    from tunesmith.model.fast_lora import merged_backward, merged_weight

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

    class SiluMulLoraLinear(torch.autograd.Function):
        """A LoRA down_proj on the merged path (model/fast_lora.py) over silu(gate) * up, saving gate and up (the
        product, the LoRA layer's input, is recomputed for the gradients of A and B)."""

        @staticmethod
        def forward(ctx, gate, up, weight, bias, lora_a, lora_b, scaling, quantized):
            ctx.save_for_backward(gate, up, weight, lora_a, lora_b)
            ctx.scaling, ctx.quantized = scaling, quantized
            product = torch.nn.functional.silu(gate) * up
            return torch.nn.functional.linear(product, merged_weight(weight, lora_a, lora_b, scaling, quantized), bias)

        @staticmethod
        def backward(ctx, grad):
            gate, up, weight, lora_a, lora_b = ctx.saved_tensors
            needs = ctx.needs_input_grad
            silu = torch.nn.functional.silu(gate)
            grad_product, grad_a, grad_b = merged_backward(
                needs[0] or needs[1], needs[4], needs[5], silu * up, grad, weight, lora_a, lora_b, ctx.scaling,
                ctx.quantized,
            )
            grad_up = grad_product * silu if needs[1] else None
            grad_gate = torch.ops.aten.silu_backward(grad_product * up, gate) if needs[0] else None
            return grad_gate, grad_up, None, None, grad_a, grad_b, None, None

    return SiluMul, SiluMulLinear, SiluMulLoraLinear


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

    from tunesmith.model import fast_lora

    count = 0

    def forward(self, x):
        if not self.training or not torch.is_grad_enabled():
            return type(self).forward(self, x)
        function, with_down, with_lora_down = _function()
        down = self.down_proj
        if type(down) is torch.nn.Linear:  # plain down projection: the product is recomputed too
            return with_down.apply(self.gate_proj(x), self.up_proj(x), down.weight, down.bias)
        gate, up = self.gate_proj(x), self.up_proj(x)
        merged = fast_lora.operands(down, gate) if fast_lora.is_fast(down) else None
        if merged is not None:  # a LoRA down_proj on the merged path: its input, the product, is recomputed too
            return with_lora_down.apply(gate, up, *merged)
        return down(function.apply(gate, up))

    from transformers.models.llama.modeling_llama import LlamaMLP

    llama = LlamaMLP.forward.__code__
    for module in model.modules():
        if _is_swiglu(module, llama):
            module.forward = types.MethodType(forward, module)
            count += 1
    if count:
        log.info("MLP: %d SwiGLU layers recompute silu(gate) in the backward pass (one activation fewer each)", count)
    return count
