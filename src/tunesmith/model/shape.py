"""What the memory arithmetic needs to know about a model (Shape, from its config) and the activations one training
batch keeps for its backward pass: shared by `tunesmith estimate` (model/memory.py) and the gradient-checkpointing
decision (model/load.py)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Shape:
    """What the arithmetic needs to know about the model, counted on the meta device."""

    parameters: int
    trainable: int
    weight_bytes: float
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    dtype: str = "float32"
    lora_rank: int = 0
    lora_modules_per_layer: int = 0


def text_shape(text, parameters: int = 0, trainable: int = 0, weight_bytes: float = 0.0, **rest) -> Shape:
    """The Shape a text model's config gives (layer sizes, heads, vocab); the counts as given (0: not counted)."""
    heads = text.num_attention_heads
    return Shape(
        parameters=parameters,
        trainable=trainable,
        weight_bytes=weight_bytes,
        hidden=text.hidden_size,
        intermediate=getattr(text, "intermediate_size", None) or 4 * text.hidden_size,
        layers=text.num_hidden_layers,
        heads=heads,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads,
        vocab=text.vocab_size,
        **rest,
    )


def activation_bytes(shape: Shape, batch: int, seq_len: int, elem: int, *, checkpointing: bool, eager: bool) -> float:
    """Bytes autograd keeps between forward and backward for one micro-batch, plus the loss's logits.

    Per token and decoder layer, following Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
    Transformer Models", sec. 4.1: sbh(34 + 5as/h) for GPT) redone for a Llama block (RMSNorm, GQA, SwiGLU, no
    dropout): two RMSNorms keep their input and output (4h), q/k/v/attention output (h_q + 2 h_kv + h), the SwiGLU
    MLP its gate, up, SiLU(gate) and product (4i), each LoRA module its rank-r intermediate. sdpa/flash attention keep
    only a logsumexp per head and row (Dao et al. 2022); eager attention keeps the softmax matrix, heads x s per
    token, in float32. With (non-reentrant) checkpointing each layer keeps its input only and one layer is recomputed
    at a time during backward (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost"). The head: logits
    (V in the compute dtype), their float32 upcast for the loss and log-softmax (2 x 4V), as transformers'
    ForCausalLMLoss computes it.
    """
    h, i = shape.hidden, shape.intermediate
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    per_layer = (4 * h + q + 2 * kv + h + 4 * i + shape.lora_rank * shape.lora_modules_per_layer) * elem
    if eager:
        per_layer += shape.heads * seq_len * 4
    tokens = batch * seq_len
    layers = per_layer * shape.layers if not checkpointing else h * elem * shape.layers + per_layer
    head = shape.vocab * (elem + 8)
    return tokens * (layers + head + h * elem)  # + the embedding output
