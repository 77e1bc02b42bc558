"""Causal-LM training batches: padding-free packing of each batch's examples, and logits only where labels are."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from tunesmith.data.records import IGNORE_INDEX

log = logging.getLogger(__name__)


def first_fit(lengths: list[int], capacity: int | None) -> list[list[int]]:
    """Example indices grouped into rows of at most `capacity` tokens, first-fit by decreasing length (an example
    longer than `capacity` gets a row of its own); capacity None: one row holding every example, in order."""
    if capacity is None:
        return [list(range(len(lengths)))]
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for row, free in enumerate(room):
            if lengths[index] <= free:
                rows[row].append(index)
                room[row] -= lengths[index]
                break
        else:
            rows.append([index])
            room.append(capacity - lengths[index])
    return rows


def supports_fast_paths(model) -> bool:
    """Whether the model's code builds its causal mask from packed position_ids (transformers' create_causal_mask)
    and slices hidden states with a boolean logits_to_keep (slice_logits_to_keep): read from its modeling file."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    source = getattr(sys.modules.get(type(base).__module__), "__file__", None)
    if not source:
        return False
    try:
        text = Path(source).read_text(encoding="utf-8")
    except OSError:
        return False
    return "create_causal_mask(" in text and "slice_logits_to_keep(" in text


class CausalLMCollator:
    """Training batches without padding work; evaluation batches (model.eval()) right-padded as before, so eval
    losses and metrics see the same tensors as without the fast paths.

    packing: the batch's examples are packed first-fit into rows of at most `capacity` tokens (capacity None: all in
    one row, no padding at all, for attention that works per example, model/packed_attention.py); position_ids restart
    at 0 for each example and there is no attention_mask, so transformers builds a block-diagonal causal mask (no
    attention across examples, LLaMA-Factory's neat_packing semantics); each row is padded to the longest row by a
    segment of its own, use_cache is False (with a cache transformers ignores packed positions), and the first label of each example is -100 (it would be predicted from the example
    before it; unpacked it is never predicted either).
    label_logits: `logits_to_keep` (a boolean mask of the positions whose next token has a label) and
    `shift_labels` go with the batch, so the LM head and the cross-entropy run only where a loss is taken.
    Both are exact: the same loss and gradients as the padded batch, to float rounding.
    """

    def __init__(
        self,
        tokenizer,
        model,
        capacity: int | None,
        packing: bool = True,
        label_logits: bool = True,
        pad_to_multiple_of: int | None = None,
    ):
        from transformers import DataCollatorForSeq2Seq

        self.model = model
        self.capacity = capacity
        self.packing = packing
        self.label_logits = label_logits
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.padded = DataCollatorForSeq2Seq(
            tokenizer, model=model, label_pad_token_id=IGNORE_INDEX, padding=True, pad_to_multiple_of=pad_to_multiple_of
        )

    def __call__(self, features: list[dict]) -> dict:
        training = getattr(self.model, "training", True)
        if not training or not (self.packing or self.label_logits):
            return self.padded(features)
        batch = self.pack(features) if self.packing else self.padded(features)
        if self.label_logits:
            add_label_logits(batch)
        return batch

    def pack(self, features: list[dict]) -> dict:
        import torch

        lengths = [len(feature["input_ids"]) for feature in features]
        rows = first_fit(lengths, self.capacity)
        ids, labels, positions = [], [], []
        for row in rows:
            row_ids, row_labels, row_positions = [], [], []
            for index in row:
                feature = features[index]
                row_ids += list(feature["input_ids"])
                row_labels += [IGNORE_INDEX, *list(feature["labels"])[1:]]
                row_positions += range(lengths[index])
            ids.append(row_ids)
            labels.append(row_labels)
            positions.append(row_positions)
        width = max(len(row) for row in ids)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        for row_ids, row_labels, row_positions in zip(ids, labels, positions):
            pad = width - len(row_ids)
            row_ids += [self.pad_id] * pad
            row_labels += [IGNORE_INDEX] * pad
            row_positions += range(pad)  # a segment of its own: real tokens never attend to it
        # use_cache=False: transformers reads packed position_ids only without a KV cache
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "position_ids": torch.tensor(positions),
            "use_cache": False,
        }


def add_label_logits(batch: dict) -> None:
    """Adds logits_to_keep (positions whose next token is labelled) and the flat shift_labels they predict."""
    import torch

    labels = batch["labels"]
    shifted = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    keep = shifted != IGNORE_INDEX
    batch["logits_to_keep"] = keep
    batch["shift_labels"] = shifted[keep]


def causal_lm_collator(tokenizer, model, capacity: int | None = None, packing: bool = True, label_logits: bool = True):
    """The collator for sft/pt: CausalLMCollator where the model supports its fast paths, else plain padding."""
    from transformers import DataCollatorForSeq2Seq

    if (packing or label_logits) and supports_fast_paths(model):
        capacity = capacity or getattr(getattr(model, "config", None), "max_position_embeddings", None) or 2048
        return CausalLMCollator(tokenizer, model, capacity, packing=packing, label_logits=label_logits)
    if packing or label_logits:
        log.info("%s builds its attention mask its own way: batches are padded (no packing)", type(model).__name__)
    return DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=IGNORE_INDEX, padding=True)


def configure(collator, config) -> None:
    """Applies the config to a CausalLMCollator (no-op for other collators): `packing: false` turns packing off (and
    NEFTune does, unless `packing: true`), cutoff_len bounds the packed rows, LF's DFT/EAFT/ASFT losses get the
    logits of every position."""
    if not isinstance(collator, CausalLMCollator):
        return
    if config.data.packing is False:
        collator.packing = False
    elif config.data.packing is None and config.train.neftune_noise_alpha:
        collator.packing = False  # NEFTune scales its noise by the row's length: per example, as LF's padded batches
        log.info("neftune_noise_alpha: batches are padded, as in LLaMA-Factory (NEFTune's noise scales with the row "
                 "length; `packing: true` packs anyway)")
    collator.capacity = config.data.cutoff_len
    lf = config.lf_method
    if lf.use_dft_loss or lf.use_eaft_loss or lf.use_asft_loss:  # LF's losses read every position's logits
        collator.label_logits = False
    log.info(
        "training batches: %s, logits %s",
        "packed padding-free (position_ids per example)" if collator.packing else "right-padded",
        "only at labelled positions" if collator.label_logits else "at every position",
    )
