"""The LM head and its cross-entropy in training, chunk by chunk: the (label tokens, vocab) logits never exist whole.

A causal LM's training loss runs lm_head over the hidden states at the labelled positions, then cross_entropy: at
the start of the backward pass the log-softmax output (saved) and the gradients of the logits (two more) are each a
(label tokens, vocab) float32 tensor. For issue 15's 39M llama (vocab 16,000) and a packed 4x512 batch that is about
three times 80 MB, live on top of all the saved activations: it sets the step's peak memory. Here each chunk of
rows computes its logits, its log-sum-exp and, in the same pass, the gradient of the summed loss with respect to its
hidden states (softmax - one-hot, times the head's weight) and to the head's weight when it trains (a full fine-tune;
LoRA freezes it): the backward pass only scales those. The same matmuls as the plain path (the forward's logits and
the backward's two products), one softmax instead of two passes, and at most one chunk of logits alive.
Loss and gradients equal transformers' ForCausalLMLoss to float32 rounding (tests/unit/test_fused_head.py).

Only where the model's forward is LlamaForCausalLM's (the same bytecode and names: llama, qwen2, qwen3, mistral, ...),
its loss is ForCausalLMLoss, the head a bias-free float32 nn.Linear, and the batch comes from the causal-LM collator
with labels only where they are (a boolean logits_to_keep and shift_labels), in training with grad; anything else
(eval, generation, LF's DFT/EAFT/ASFT losses that read the logits) runs the model's own forward.
"""

from __future__ import annotations

import functools
import inspect
import logging
import types

from tunesmith.data.records import IGNORE_INDEX

log = logging.getLogger(__name__)

CHUNK_ELEMENTS = 8 * 1024 * 1024  # logits per chunk: 32 MB of float32 (524 rows at vocab 16,000)


@functools.cache  # one class, not one per training step
def _function():
    import torch

    class LinearCrossEntropy(torch.autograd.Function):
        """sum over rows of cross_entropy(hidden @ weight^T, targets) / divisor; rows with IGNORE_INDEX are skipped."""

        @staticmethod
        def forward(ctx, hidden, weight, targets, divisor, chunk_rows):
            wants_hidden, wants_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
            grad_hidden = torch.zeros_like(hidden) if wants_hidden else None
            grad_weight = torch.zeros_like(weight) if wants_weight else None
            total = hidden.new_zeros((), dtype=torch.float32)
            for start in range(0, hidden.shape[0], chunk_rows):
                rows = slice(start, start + chunk_rows)
                part, target = hidden[rows], targets[rows]
                valid = target != IGNORE_INDEX
                safe = target.masked_fill(~valid, 0)
                logits = part @ weight.t()
                picked = logits.gather(1, safe[:, None]).squeeze(1)
                high = logits.amax(dim=-1, keepdim=True)
                probs = logits.sub_(high).exp_()  # in place of the chunk's logits: no second vocab-wide tensor
                sums = probs.sum(dim=-1, keepdim=True)
                total += ((high + sums.log()).squeeze(1) - picked).mul_(valid).sum()  # log-sum-exp - the target's
                if not (wants_hidden or wants_weight):
                    continue
                probs.div_(sums)  # softmax
                probs[torch.arange(len(safe)), safe] -= 1.0  # d(sum of losses)/d logits = softmax - one-hot
                if not bool(valid.all()):  # the collator's label-only rows are all valid: no pass over the chunk
                    probs.mul_(valid[:, None])
                if wants_hidden:
                    grad_hidden[rows] = probs @ weight
                if wants_weight:
                    grad_weight.addmm_(probs.t(), part)
            ctx.save_for_backward(grad_hidden, grad_weight)
            ctx.divisor = divisor
            return total / divisor

        @staticmethod
        def backward(ctx, grad):
            grad_hidden, grad_weight = ctx.saved_tensors
            scale = grad / ctx.divisor
            return (
                grad_hidden * scale if grad_hidden is not None else None,
                grad_weight * scale if grad_weight is not None else None,
                None,
                None,
                None,
            )

    return LinearCrossEntropy


def linear_cross_entropy(hidden, weight, targets, num_items_in_batch=None, chunk_rows: int | None = None):
    """ForCausalLMLoss(hidden @ weight^T, shift_labels=targets): the summed cross-entropy over num_items_in_batch when
    given (the Trainer's count over the accumulated batch), else the mean over the valid targets."""
    import torch

    if num_items_in_batch is None:
        divisor = (targets != IGNORE_INDEX).sum().item()  # 0 -> nan, as cross_entropy's mean of nothing
    else:
        divisor = num_items_in_batch.item() if torch.is_tensor(num_items_in_batch) else num_items_in_batch
    rows = chunk_rows or max(1, CHUNK_ELEMENTS // weight.shape[0])
    return _function().apply(hidden, weight, targets.to(hidden.device), float(divisor), rows)


def _llama_forward_code():
    from transformers.models.llama.modeling_llama import LlamaForCausalLM

    return inspect.unwrap(LlamaForCausalLM.forward).__code__


def _applies(model, llama) -> bool:
    """The model's forward is LlamaForCausalLM's, its loss ForCausalLMLoss, its head a bias-free float32 nn.Linear."""
    import torch
    from transformers.loss.loss_utils import ForCausalLMLoss

    code = getattr(inspect.unwrap(type(model).forward), "__code__", None)
    head = getattr(model, "lm_head", None)
    return (
        code is not None
        and code.co_code == llama.co_code
        and code.co_names == llama.co_names
        and getattr(model, "loss_function", None) is ForCausalLMLoss
        and type(head) is torch.nn.Linear
        and head.bias is None
        and head.weight.dtype == torch.float32
    )


def _in_use(model, kwargs) -> bool:
    import torch

    keep = kwargs.get("logits_to_keep")
    return (
        model.training
        and torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")  # mixed precision: the plain path upcasts its logits
        and not torch.is_autocast_enabled("cuda")
        and kwargs.get("labels") is not None
        and kwargs.get("shift_labels") is not None
        and torch.is_tensor(keep)
        and keep.dtype == torch.bool
        and keep.ndim == 2
        and not kwargs.get("output_hidden_states")
        and kwargs.get("return_dict", True) is not False
    )


def forward(self, *args, **kwargs):
    """LlamaForCausalLM.forward with the head and loss fused; the same outputs except `logits` (None)."""
    if args or not _in_use(self, kwargs):
        return type(self).forward(self, *args, **kwargs)
    from transformers.modeling_outputs import CausalLMOutputWithPast

    kwargs.pop("labels")
    keep = kwargs.pop("logits_to_keep")
    kwargs.pop("return_dict", None)
    outputs = self.model(**kwargs)  # input_ids, position_ids, ..., and the loss kwargs, as the original passes them
    hidden = outputs.last_hidden_state[keep]
    loss = linear_cross_entropy(hidden, self.lm_head.weight, kwargs["shift_labels"], kwargs.get("num_items_in_batch"))
    return CausalLMOutputWithPast(
        loss=loss,
        logits=None,
        past_key_values=outputs.past_key_values,
        hidden_states=outputs.hidden_states,
        attentions=outputs.attentions,
    )


def use_fused_head(model) -> bool:
    """Routes the causal LM's head and loss through linear_cross_entropy in training where it applies (see above)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not _applies(base, _llama_forward_code()):
        return False

    @functools.wraps(type(base).forward)  # its signature stays visible: the Trainer keeps the columns forward names
    def fused(self, *args, **kwargs):
        return forward(self, *args, **kwargs)

    base.forward = types.MethodType(fused, base)
    log.info("LM head: logits and cross-entropy in chunks at labelled positions (the full logits never exist)")
    return True
