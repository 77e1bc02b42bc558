"""Scores multiple-choice prompts: the answer letter with the highest next-token logit, computing only the last
position's logits (left-padded batches with explicit position ids, `logits_to_keep=1`)."""

from __future__ import annotations

from tunesmith.data.records import ASSISTANT, USER
from tunesmith.errors import TemplateError
from tunesmith.evaluate.benchmark import CHOICES


def letter_ids(template, tokenizer) -> tuple[list[int], list[int]]:
    """(ids the template puts in the answer before the letter, the id of each letter A-D).

    The letters are encoded as assistant answers, so the ids are the ones the model produces after the answer cue
    (e.g. "A" rather than " A"), and whatever every answer starts with (an empty <think></think> of reasoning
    templates) is appended to each prompt before scoring."""
    answers = []
    for letter in CHOICES:
        _, ids = template.encode_oneturn(tokenizer, [{"role": USER, "content": "?"},
                                                     {"role": ASSISTANT, "content": letter}])
        answers.append(ids)
    shared = 0
    while all(len(ids) > shared for ids in answers) and len({ids[shared] for ids in answers}) == 1:
        shared += 1
    firsts = [ids[shared] if len(ids) > shared else None for ids in answers]
    if None in firsts or len(set(firsts)) != len(CHOICES):
        raise TemplateError(f"the letters {', '.join(CHOICES)} do not start with distinct tokens in this template's "
                            f"answers ({[tokenizer.convert_ids_to_tokens(ids) for ids in answers]}); benchmark "
                            f"scoring needs one token per letter")
    return answers[0][:shared], firsts


def left_pad(rows: list[list[int]], pad_id: int):
    """input_ids, attention_mask and position_ids of left-padded rows (positions count real tokens only)."""
    import torch

    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, width - len(row):] = 1
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return input_ids, attention_mask, position_ids


def next_token_logits(model, rows: list[list[int]], pad_id: int):
    """The logits after the last token of each row, shape (rows, vocab), in float32."""
    import torch

    input_ids, attention_mask, position_ids = (t.to(model.device) for t in left_pad(rows, pad_id))
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids,
              "use_cache": False}
    with torch.inference_mode():
        try:
            logits = model(**inputs, logits_to_keep=1).logits
        except TypeError as exc:  # a custom (remote-code) model without logits_to_keep: every position, then slice
            if "logits_to_keep" not in str(exc):
                raise
            logits = model(**inputs).logits
    return logits[:, -1, :].float()


def choice_probs(model, rows: list[list[int]], choice_ids: list[int], pad_id: int):
    """Softmax over the four letters' logits for each row, shape (rows, 4)."""
    import torch

    return torch.softmax(next_token_logits(model, rows, pad_id)[:, choice_ids], dim=-1).cpu()
