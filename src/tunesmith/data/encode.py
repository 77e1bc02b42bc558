"""Encoders from batches of canonical records to model inputs, one per kind of example, as LLaMA-Factory 0.9.5 does.

Each encoder takes a batch (dict of columns, as `datasets.map(batched=True)` gives) and returns new columns.
Records of the wrong shape are skipped, like LF; the caller reports len(records) - len(encoded).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from itertools import chain

from tunesmith.data.records import ASSISTANT, IGNORE_INDEX

# A record (all its texts together) may hold BOUND_FACTOR x cutoff_len x (the tokenizer's longest token, in
# characters) characters, and at least MIN_BOUND. One token never covers more characters than its vocabulary entry,
# so a record over the bound has more than BOUND_FACTOR x cutoff_len tokens: all but its first cutoff_len are cut
# anyway. Records within the bound are encoded exactly as before; those over it are skipped and counted (stage pt:
# tokenized in pieces of at most the bound). MIN_BOUND keeps LF's encoding for everything a tokenizer handles in
# one call at ease (about 1 MB of text: a few hundred MB at most).
BOUND_FACTOR = 8
MIN_BOUND = 1_000_000


def longest_token_chars(tokenizer) -> int:
    """Characters of the longest vocabulary entry: an upper bound on the characters one token covers (byte-level
    entries spell a byte as one character, so they are never shorter than the text they stand for)."""
    return max((len(token) for token in tokenizer.get_vocab()), default=1)


def text_bound(tokenizer, cutoff_len: int) -> int:
    """The most characters a record may hold and still be tokenized in one piece (see BOUND_FACTOR)."""
    return max(BOUND_FACTOR * cutoff_len * max(longest_token_chars(tokenizer), 1), MIN_BOUND)


def record_chars(records):
    """Characters of each record's texts (every turn's content, the system prompt and the tools), read with
    Arrow so a huge record is never turned into Python strings; a numpy int64 array."""
    import numpy as np
    import pyarrow.compute as pc

    parts = []
    for table in records.with_format("arrow").iter(batch_size=10_000):
        total = np.zeros(len(table), dtype=np.int64)
        for column in ("system", "tools"):
            total += pc.fill_null(pc.utf8_length(table[column]), 0).to_numpy()
        for column in ("prompt", "response"):
            lists = table[column].combine_chunks()
            flat = pc.list_flatten(lists)
            if flat.type.num_fields == 0:  # every list empty and untyped (e.g. pt's responses): no text
                continue
            contents = flat.field("content")
            lengths = pc.fill_null(pc.utf8_length(contents), 0).to_numpy()
            parents = pc.list_parent_indices(lists).to_numpy()
            total += np.bincount(parents, weights=lengths, minlength=len(table)).astype(np.int64)
        parts.append(total)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def over_long(records, bound: int) -> list[int]:
    """Positions of the records holding more than `bound` characters."""
    import numpy as np

    return np.flatnonzero(record_chars(records) > bound).tolist()


def infer_seqlen(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """How much of a prompt/answer pair fits in cutoff_len (LF's rule: a short answer is kept whole)."""
    if target_len * 2 < cutoff_len:
        max_target_len = cutoff_len
    elif source_len * 2 < cutoff_len:
        max_target_len = cutoff_len - source_len
    else:
        max_target_len = int(cutoff_len * (target_len / (source_len + target_len)))
    new_target_len = min(max_target_len, target_len)
    new_source_len = min(max(cutoff_len - new_target_len, 0), source_len)
    return new_source_len, new_target_len


def _rows(batch: dict):
    return zip(batch["prompt"], batch["response"], batch["system"], batch["tools"])


def encode_conversation(template, tokenizer, prompt: list[dict], response: list[dict], system: str, tools: str,
                        cutoff_len: int, train_on_prompt: bool = False,
                        mask_history: bool = False) -> tuple[list[int], list[int]]:
    """One supervised example: every answer trained (only the last with mask_history), truncated to cutoff_len."""
    discard_thoughts = mask_history and not template.preserve_thinking
    pairs = template.encode_multiturn(tokenizer, prompt + response, system, tools,
                                      discard_history_thoughts=discard_thoughts)
    eos = tokenizer.eos_token_id
    input_ids, labels = [], []
    total = 1 if template.efficient_eos else 0  # room for the final eos
    if mask_history:
        pairs = pairs[::-1]  # the last turns get the room first
    for turn, (source, target) in enumerate(pairs):
        if total >= cutoff_len:
            break
        source_len, target_len = infer_seqlen(len(source), len(target), cutoff_len - total)
        source, target = source[:source_len], target[:target_len]
        total += source_len + target_len
        if train_on_prompt:
            source_labels = source
        elif template.efficient_eos and turn != 0:
            # efficient_eos answers carry no end token; the next prompt's first position learns the eos instead
            source_labels = [eos] + [IGNORE_INDEX] * (source_len - 1)
        else:
            source_labels = [IGNORE_INDEX] * source_len
        target_labels = [IGNORE_INDEX] * target_len if mask_history and turn != 0 else target
        if mask_history:
            input_ids = source + target + input_ids
            labels = source_labels + target_labels + labels
        else:
            input_ids += source + target
            labels += source_labels + target_labels
    if template.efficient_eos:
        input_ids += [eos]
        labels += [eos]
    return input_ids, labels


def encode_supervised(batch: dict, template, tokenizer, cutoff_len: int, train_on_prompt: bool = False,
                      mask_history: bool = False) -> dict:
    """SFT examples. Unlike LF, an example whose labels are all masked (truncated away) is dropped, not kept."""
    out = {"input_ids": [], "attention_mask": [], "labels": []}
    for prompt, response, system, tools in _rows(batch):
        if len(prompt) % 2 != 1 or len(response) != 1:
            continue
        input_ids, labels = encode_conversation(template, tokenizer, prompt, response, system, tools, cutoff_len,
                                                train_on_prompt, mask_history)
        if all(label == IGNORE_INDEX for label in labels):
            continue  # nothing to learn; LF keeps it and a batch of such rows gives a NaN loss
        out["input_ids"].append(input_ids)
        out["attention_mask"].append([1] * len(input_ids))
        out["labels"].append(labels)
    return out


def encode_pretrain(batch: dict, tokenizer, cutoff_len: int, packing: bool = True, eos_text: str | None = None,
                    max_chars: int | None = None) -> dict:
    """Plain text + eos; packed: concatenated and cut into full cutoff_len blocks (the tail is dropped), else
    each text truncated. A bos is put first (overwriting a block's first token) when the tokenizer adds one.

    Labels are the ids with every pad id masked, as LF's pt collator makes them: pad is usually eos, so the eos
    between documents is not trained. A text longer than `max_chars` is tokenized in pieces of at most that many
    characters (packed; all of it is kept) or cut to its first `max_chars` (unpacked: only cutoff_len tokens stay)."""
    eos_text = tokenizer.eos_token if eos_text is None else eos_text
    texts = [messages[0]["content"] + eos_text for messages in batch["prompt"]]
    add_bos = getattr(tokenizer, "add_bos_token", False)
    if max_chars and any(len(text) > max_chars for text in texts):
        if packing:
            return _pack_in_pieces(texts, tokenizer, cutoff_len, max_chars, add_bos)
        texts = [text[:max_chars] for text in texts]
    if not packing:
        if add_bos:
            texts = [tokenizer.bos_token + text for text in texts]
        ids = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=cutoff_len)["input_ids"]
    else:
        stream = list(chain.from_iterable(tokenizer(texts, add_special_tokens=False)["input_ids"]))
        ids = [stream[i: i + cutoff_len] for i in range(0, len(stream) // cutoff_len * cutoff_len, cutoff_len)]
        if add_bos:
            for row in ids:
                row[0] = tokenizer.bos_token_id
    pad = tokenizer.pad_token_id
    labels = [[IGNORE_INDEX if token == pad else token for token in row] for row in ids]
    return {"input_ids": ids, "attention_mask": [[1] * len(row) for row in ids], "labels": labels}


def _pieces(text: str, max_chars: int):
    """`text` in pieces of at most max_chars characters, each cut before a single space between two words where
    there is one in the piece's second half (a cut inside a word or a run of spaces would tokenize it differently)."""
    start = 0
    while start < len(text):
        end = min(start + max_chars, len(text))
        if end < len(text):
            floor = start + max_chars // 2
            cut = text.rfind(" ", floor, end)
            while cut > floor and (text[cut - 1].isspace() or text[cut + 1].isspace()):
                cut = text.rfind(" ", floor, cut)
            end = cut if cut > floor else end
        yield text[start:end]
        start = end


def _pack_in_pieces(texts: list[str], tokenizer, cutoff_len: int, max_chars: int, add_bos: bool) -> dict:
    """Packing for a batch holding an over-long text: tokenized piece by piece into numpy, so memory stays at a few
    bytes per token. Same blocks as one tokenization, except perhaps a token at each piece boundary."""
    import numpy as np

    parts = [np.asarray(tokenizer(piece, add_special_tokens=False)["input_ids"], dtype=np.int64)
             for text in texts for piece in _pieces(text, max_chars)]
    stream = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    blocks = stream[: len(stream) // cutoff_len * cutoff_len].reshape(-1, cutoff_len)
    if add_bos and len(blocks):
        blocks[:, 0] = tokenizer.bos_token_id
    pad = tokenizer.pad_token_id
    labels = blocks.copy() if pad is None else np.where(blocks == pad, IGNORE_INDEX, blocks)
    return {"input_ids": list(blocks), "attention_mask": list(np.ones_like(blocks)), "labels": list(labels)}


def _oneturn(template, tokenizer, messages, system, tools) -> tuple[list[int], list[int]]:
    prompt_ids, answer_ids = template.encode_oneturn(tokenizer, messages, system, tools)
    if template.efficient_eos:
        answer_ids = answer_ids + [tokenizer.eos_token_id]
    return prompt_ids, answer_ids


def encode_unsupervised(batch: dict, template, tokenizer, cutoff_len: int) -> dict:
    """Prompt ids (ending with the answer cue) as input_ids and the reference answer as labels, for generation."""
    out = {"input_ids": [], "attention_mask": [], "labels": []}
    for prompt, response, system, tools in _rows(batch):
        if len(prompt) % 2 != 1:
            continue
        answer = response if len(response) == 1 else [{"role": ASSISTANT, "content": ""}]
        input_ids, labels = _oneturn(template, tokenizer, prompt + answer, system, tools)
        source_len, target_len = infer_seqlen(len(input_ids), len(labels), cutoff_len)
        out["input_ids"].append(input_ids[:source_len])
        out["attention_mask"].append([1] * source_len)
        out["labels"].append(labels[:target_len])
    return out


def encode_prompts(batch: dict, template, tokenizer, cutoff_len: int) -> dict:
    """GRPO: the prompt ids (ending with the answer cue, cut to cutoff_len), their text for the reward functions, and
    the reference answer (`solution`, "" when the record has none) that the accuracy reward compares with."""
    out = {"prompt": [], "prompt_ids": [], "solution": []}
    for prompt, response, system, tools in _rows(batch):
        if len(prompt) % 2 != 1:
            continue
        answer = response if len(response) == 1 else [{"role": ASSISTANT, "content": ""}]
        input_ids, _ = _oneturn(template, tokenizer, prompt + answer, system, tools)
        input_ids = input_ids[-cutoff_len:]  # keep the end: the question and the answer cue
        out["prompt_ids"].append(input_ids)
        out["prompt"].append(tokenizer.decode(input_ids))
        out["solution"].append(response[0]["content"] if len(response) == 1 else "")
    return out


def encode_pairwise(batch: dict, template, tokenizer, cutoff_len: int) -> dict:
    """Chosen and rejected sequences sharing one prompt, truncated together (rm, dpo, orpo, simpo)."""
    out = {f"{side}_{part}": [] for side in ("chosen", "rejected") for part in ("input_ids", "attention_mask", "labels")}
    for prompt, response, system, tools in _rows(batch):
        if len(prompt) % 2 != 1 or len(response) < 2:
            continue
        prompt_ids, chosen = _oneturn(template, tokenizer, prompt + response[:1], system, tools)
        _, rejected = _oneturn(template, tokenizer, prompt + response[1:2], system, tools)
        source_len, target_len = infer_seqlen(len(prompt_ids), max(len(chosen), len(rejected)), cutoff_len)
        for side, answer in (("chosen", chosen[:target_len]), ("rejected", rejected[:target_len])):
            out[f"{side}_input_ids"].append(prompt_ids[:source_len] + answer)
            out[f"{side}_attention_mask"].append([1] * (source_len + len(answer)))
            out[f"{side}_labels"].append([IGNORE_INDEX] * source_len + answer)
    return out


def encode_feedback(batch: dict, template, tokenizer, cutoff_len: int) -> dict:
    """KTO examples: the answer with its desirable/undesirable tag, plus the previous record's answer for the KL term
    (the batch's answers rotated by one, the first taking the last, as LF does)."""
    out = {key: [] for key in ("input_ids", "attention_mask", "labels", "kl_input_ids", "kl_attention_mask",
                               "kl_labels", "kto_tags")}
    responses = batch["response"]
    kl_responses = responses[-1:] + responses[:-1]
    for (prompt, response, system, tools), kl_response, tag in zip(_rows(batch), kl_responses, batch["kto_tag"]):
        if len(prompt) % 2 != 1 or len(response) != 1 or len(kl_response) != 1 or tag is None:
            continue
        for prefix, answer in (("", response), ("kl_", kl_response)):
            prompt_ids, answer_ids = _oneturn(template, tokenizer, prompt + answer, system, tools)
            source_len, target_len = infer_seqlen(len(prompt_ids), len(answer_ids), cutoff_len)
            answer_ids = answer_ids[:target_len]
            out[f"{prefix}input_ids"].append(prompt_ids[:source_len] + answer_ids)
            out[f"{prefix}attention_mask"].append([1] * (source_len + target_len))
            out[f"{prefix}labels"].append([IGNORE_INDEX] * source_len + answer_ids)
        out["kto_tags"].append(bool(tag))
    return out


ENCODERS: dict[str, Callable[..., dict]] = {"supervised": encode_supervised, "pretrain": encode_pretrain,
                                           "unsupervised": encode_unsupervised, "pairwise": encode_pairwise,
                                           "feedback": encode_feedback, "prompts": encode_prompts}


def encoder_for(encoding: str, *, template, tokenizer, data_args, max_chars: int | None = None) -> Callable[[dict], dict]:
    """A batch function for datasets.map with everything but the batch bound from the data settings. `max_chars`
    bounds the text handed to the tokenizer at once for stage pt (other stages skip over-long records before)."""
    # LF quirk: an explicit `packing: true` shortens cutoff_len by one (DataArguments.__post_init__), while the
    # packing that stage pt turns on by default keeps it.
    cutoff_len = data_args.cutoff_len - 1 if data_args.packing is True else data_args.cutoff_len
    if encoding == "supervised":
        return partial(encode_supervised, template=template, tokenizer=tokenizer, cutoff_len=cutoff_len,
                       train_on_prompt=data_args.train_on_prompt, mask_history=data_args.mask_history)
    if encoding == "pretrain":
        # LF quirk: llama3 documents end with <|end_of_text|>, not its (chat) eos <|eot_id|>
        eos_text = "<|end_of_text|>" if template is not None and template.name == "llama3" else None
        return partial(encode_pretrain, tokenizer=tokenizer, cutoff_len=cutoff_len,
                       packing=data_args.packing is not False, eos_text=eos_text,
                       max_chars=max_chars)
    return partial(ENCODERS[encoding], template=template, tokenizer=tokenizer, cutoff_len=cutoff_len)
