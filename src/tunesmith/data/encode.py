"""Encoders from canonical records to input_ids/attention_mask/labels, one per kind of training example."""

from __future__ import annotations

from functools import partial
from itertools import chain

from tunesmith.data.records import IGNORE_INDEX


def infer_seqlen(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """How much of a prompt/answer pair fits in cutoff_len (LLaMA-Factory's rule: keep answers whole if short)."""
    if target_len * 2 < cutoff_len:
        max_target_len = cutoff_len
    elif source_len * 2 < cutoff_len:
        max_target_len = cutoff_len - source_len
    else:
        max_target_len = int(cutoff_len * (target_len / (source_len + target_len)))
    new_target_len = min(max_target_len, target_len)
    new_source_len = min(max(cutoff_len - new_target_len, 0), source_len)
    return new_source_len, new_target_len


def encode_conversation(template, tokenizer, prompt: list[dict], response: list[dict], system: str, tools: str,
                        cutoff_len: int, train_on_prompt: bool = False, mask_history: bool = False):
    """One supervised example: every answer trained (only the last with mask_history), truncated to cutoff_len."""
    pairs = template.encode_multiturn(tokenizer, prompt + response, system, tools,
                                      discard_history_thoughts=mask_history)
    eos = tokenizer.eos_token_id
    input_ids, labels = [], []
    total = 1 if template.efficient_eos else 0
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


def encode_supervised(batch: dict, *, template, tokenizer, data_args) -> dict:
    """Batched supervised encoding; records that are not prompt(odd turns) + one answer are skipped like LF."""
    out = {"input_ids": [], "attention_mask": [], "labels": []}
    for prompt, response, system, tools in zip(batch["prompt"], batch["response"], batch["system"], batch["tools"]):
        if len(prompt) % 2 != 1 or len(response) != 1:
            continue
        input_ids, labels = encode_conversation(template, tokenizer, prompt, response, system, tools,
                                                data_args.cutoff_len, data_args.train_on_prompt,
                                                data_args.mask_history)
        if all(label == IGNORE_INDEX for label in labels):
            continue  # nothing left to train on (truncated away); the pipeline reports the count
        out["input_ids"].append(input_ids)
        out["attention_mask"].append([1] * len(input_ids))
        out["labels"].append(labels)
    return out


def encode_pretrain(batch: dict, *, template, tokenizer, data_args) -> dict:
    """Plain text + eos, concatenated and cut into cutoff_len blocks (packing), or each text truncated."""
    name = getattr(template, "name", None)
    eos_text = "<|end_of_text|>" if name == "llama3" else tokenizer.eos_token
    texts = [messages[0]["content"] + eos_text for messages in batch["prompt"]]
    add_bos = getattr(tokenizer, "add_bos_token", False)
    packing = data_args.packing is not False
    if not packing:
        if add_bos:
            texts = [tokenizer.bos_token + text for text in texts]
        ids = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=data_args.cutoff_len)["input_ids"]
    else:
        stream = list(chain.from_iterable(tokenizer(texts, add_special_tokens=False)["input_ids"]))
        block = data_args.cutoff_len
        ids = [stream[i: i + block] for i in range(0, len(stream) // block * block, block)]
        if add_bos:
            for row in ids:
                row[0] = tokenizer.bos_token_id
    return {"input_ids": ids, "attention_mask": [[1] * len(row) for row in ids], "labels": [list(row) for row in ids]}


def encode_unsupervised(batch: dict, *, template, tokenizer, data_args) -> dict:
    """Prompt ids (ending with the answer cue) and the reference answer as labels, for generation and eval."""
    out = {"input_ids": [], "attention_mask": [], "labels": []}
    for prompt, response, system, tools in zip(batch["prompt"], batch["response"], batch["system"], batch["tools"]):
        if len(prompt) % 2 != 1:
            continue
        messages = prompt + (response[:1] if response else [{"role": "assistant", "content": ""}])
        input_ids, labels = template.encode_oneturn(tokenizer, messages, system, tools)
        if template.efficient_eos:
            labels = labels + [tokenizer.eos_token_id]
        source_len, target_len = infer_seqlen(len(input_ids), len(labels), data_args.cutoff_len)
        input_ids, labels = input_ids[:source_len], labels[:target_len]
        out["input_ids"].append(input_ids)
        out["attention_mask"].append([1] * len(input_ids))
        out["labels"].append(labels)
    return out


def _answer_ids(template, tokenizer, prompt, answer, system, tools):
    prompt_ids, answer_ids = template.encode_oneturn(tokenizer, prompt + [answer], system, tools)
    if template.efficient_eos:
        answer_ids = answer_ids + [tokenizer.eos_token_id]
    return prompt_ids, answer_ids


def encode_pairwise(batch: dict, *, template, tokenizer, data_args) -> dict:
    """Chosen and rejected sequences sharing one prompt, truncated together (rm, dpo, orpo, simpo)."""
    keys = [f"{side}_{part}" for side in ("chosen", "rejected") for part in ("input_ids", "attention_mask", "labels")]
    out = {key: [] for key in keys}
    for prompt, response, system, tools in zip(batch["prompt"], batch["response"], batch["system"], batch["tools"]):
        if len(prompt) % 2 != 1 or len(response) < 2:
            continue
        prompt_ids, chosen = _answer_ids(template, tokenizer, prompt, response[0], system, tools)
        _, rejected = _answer_ids(template, tokenizer, prompt, response[1], system, tools)
        source_len, target_len = infer_seqlen(len(prompt_ids), max(len(chosen), len(rejected)), data_args.cutoff_len)
        prompt_ids = prompt_ids[:source_len]
        for side, answer in (("chosen", chosen[:target_len]), ("rejected", rejected[:target_len])):
            out[f"{side}_input_ids"].append(prompt_ids + answer)
            out[f"{side}_attention_mask"].append([1] * (source_len + len(answer)))
            out[f"{side}_labels"].append([IGNORE_INDEX] * source_len + answer)
    return out


def encode_feedback(batch: dict, *, template, tokenizer, data_args) -> dict:
    """KTO examples: the answer with its desirable/undesirable tag, plus a mismatched answer for the KL term."""
    out = {key: [] for key in ("input_ids", "attention_mask", "labels", "kl_input_ids", "kl_attention_mask",
                               "kl_labels", "kto_tags")}
    responses = batch["response"]
    kl_responses = [responses[-1]] + responses[:-1]  # each prompt paired with another record's answer
    for prompt, response, kl_response, system, tools, tag in zip(
            batch["prompt"], responses, kl_responses, batch["system"], batch["tools"], batch["kto_tag"]):
        if len(prompt) % 2 != 1 or len(response) != 1 or not kl_response or tag is None:
            continue
        for prefix, answer in (("", response[0]), ("kl_", kl_response[0])):
            prompt_ids, answer_ids = _answer_ids(template, tokenizer, prompt, answer, system, tools)
            source_len, target_len = infer_seqlen(len(prompt_ids), len(answer_ids), data_args.cutoff_len)
            ids = prompt_ids[:source_len] + answer_ids[:target_len]
            out[f"{prefix}input_ids"].append(ids)
            out[f"{prefix}attention_mask"].append([1] * len(ids))
            out[f"{prefix}labels"].append([IGNORE_INDEX] * source_len + answer_ids[:target_len])
        out["kto_tags"].append(bool(tag))
    return out


ENCODERS = {"supervised": encode_supervised, "pretrain": encode_pretrain, "unsupervised": encode_unsupervised,
            "pairwise": encode_pairwise, "feedback": encode_feedback}


def encoder_for(encoding: str, *, template, tokenizer, data_args):
    """A batch function for datasets.map with everything but the batch bound."""
    return partial(ENCODERS[encoding], template=template, tokenizer=tokenizer, data_args=data_args)
