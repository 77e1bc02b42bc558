"""Attention for padding-free packed training rows: each packed example attends to itself through sdpa's causal kernel.

A packed row (data/collate.py) holds several examples, its position_ids restarting at 0 for each. transformers turns
that into a block-diagonal mask over the whole row, and sdpa with an explicit mask computes every query-key block of
the row, the blocks across examples and above the diagonal included, only to mask them out. Here each example's slice
goes through transformers' own `sdpa_attention_forward` with `is_causal=True`, so the kernel skips the upper triangle
and nothing is computed across examples: the same attention (the mask's pattern exactly), for sum(L_i^2)/2 instead of
row_length^2 work. Batches that are not packed, decoding with a cache and sliding-window layers take the plain sdpa
path with the mask transformers built (registered under our name: sdpa's mask function, which skips building the
unused mask of a packed batch, packed_sdpa_mask).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

NAME = "tunesmith_packed_sdpa"


def packed_sdpa_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """transformers' attention-function signature; query/key/value are (rows, heads, length, head_dim)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    segments = _segments(kwargs.get("position_ids"), query, key, kwargs, module)
    if segments is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    import torch

    # split, not slicing: the backward of a slice writes its gradient into a zero-filled copy of the whole tensor,
    # once per example and per row, where split's backward is a single cat (those fills and copies were 7 % of a
    # LoRA step's profile; a 4 x 512 packed batch's attention forward+backward went from 70 to 56 ms, 1 thread).
    rows = []
    for bounds, q_row, k_row, v_row in zip(segments, query.split(1), key.split(1), value.split(1)):
        sizes = [end - start for start, end in bounds]
        parts = [
            sdpa_attention_forward(
                module, q, k, v, None, dropout=dropout, scaling=scaling, is_causal=True
            )[0]
            for q, k, v in zip(q_row.split(sizes, dim=2), k_row.split(sizes, dim=2), v_row.split(sizes, dim=2))
        ]
        rows.append(torch.cat(parts, dim=1))  # (1, length, heads, head_dim), as sdpa_attention_forward returns
    return torch.cat(rows, dim=0), None


def _segments(position_ids, query, key, kwargs, module) -> list[list[tuple[int, int]]] | None:
    """Each row's (start, end) example slices when the batch is packed and the per-example path is exact, else None."""
    if position_ids is None or position_ids.dim() != 2 or query.shape[2] != key.shape[2]:
        return None  # decoding with a cache, or positions not given per row
    if (
        query.shape[2] != position_ids.shape[1]
        or kwargs.get("sliding_window")
        or getattr(module, "sliding_window", None)
    ):
        return None
    if position_ids.shape[0] != query.shape[0]:
        position_ids = position_ids.expand(query.shape[0], -1)
    # transformers' rule (find_packed_sequence_indices): an example starts wherever the position does not go up by 1
    starts = (position_ids[:, 1:] - position_ids[:, :-1]) != 1
    if not bool(starts.any()):
        return None  # one example per row: sdpa's own causal path already applies
    length = position_ids.shape[1]
    out = []
    for row in starts.tolist():
        begins = [0] + [index + 1 for index, start in enumerate(row) if start]
        out.append(list(zip(begins, begins[1:] + [length])))
    return out


def packed_sdpa_mask(*args, **kwargs):
    """sdpa's mask function (transformers' sdpa_mask), except for a packed training batch of a model without
    sliding-window or chunked layers: there packed_sdpa_attention keeps each example to itself and the mask would go
    unused, yet it is a (rows, 1, length, length) tensor: 1 GB for one row of 32 K tokens. transformers asks for a
    mask without causal skip, no 2D attention_mask, no local window and queries over their own keys exactly when it
    found packed position_ids (or a model adds its own mask functions: image tokens, which are never packed here)."""
    from transformers.masking_utils import sdpa_mask

    if (
        not args
        and kwargs.get("attention_mask") is None
        and not kwargs.get("allow_is_causal_skip", True)
        and kwargs.get("local_size") is None
        and kwargs.get("q_length") == kwargs.get("kv_length")
        and not kwargs.get("q_offset")
        and not kwargs.get("kv_offset")
        and _full_attention_only(kwargs.get("config"))
    ):
        return None
    return sdpa_mask(*args, **kwargs)


def _full_attention_only(config) -> bool:
    """Every layer attends over the whole sequence (no sliding window or chunks), by the model's config."""
    if config is None:
        return False
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        return all(kind == "full_attention" for kind in layer_types)
    return not (getattr(config, "sliding_window", None) or getattr(config, "attention_chunk_size", None))


def use_packed_attention(model) -> bool:
    """Switches a model that runs sdpa to the per-example packed attention (registering it with transformers'
    AttentionInterface and sdpa's mask under NAME); True when it did."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "_attn_implementation", None) != "sdpa":
        return False
    AttentionInterface.register(NAME, packed_sdpa_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, packed_sdpa_mask)
    base.set_attn_implementation(NAME)
    if base.config._attn_implementation != NAME:
        return False
    log.info("attention: sdpa per packed example (causal kernel, no work across examples)")
    return True


def one_row_per_batch(model) -> bool:
    """Whether a packed batch can be a single row: every attention layer runs per example (NAME, no sliding window;
    a sliding layer takes sdpa with the whole row's mask, whose work grows with the row's length squared)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "_attn_implementation", None) != NAME:
        return False
    return not any(getattr(module, "sliding_window", None) for module in base.modules())
