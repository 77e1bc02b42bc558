"""What differs between training stages, as one small spec per stage (data encoder, collator, trainer)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """How one stage is trained: which encoding its data gets, how batches are built, which trainer runs it."""

    encoding: str  # a key of tunesmith.data.encode's ENCODERS
    make_collator: Callable  # (tokenizer, model) -> collator
    make_trainer: Callable  # (**kwargs of transformers.Trainer) -> trainer


def _causal_lm_collator(tokenizer, model):
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100, padding=True)


def _seq2seq_trainer(**kwargs):
    from transformers import Seq2SeqTrainer

    return Seq2SeqTrainer(**kwargs)


STAGES: dict[str, StageSpec] = {
    "pt": StageSpec(encoding="pretrain", make_collator=_causal_lm_collator, make_trainer=_seq2seq_trainer),
    "sft": StageSpec(encoding="supervised", make_collator=_causal_lm_collator, make_trainer=_seq2seq_trainer),
}


def stage_spec(stage: str) -> StageSpec:
    from tunesmith.errors import ConfigError

    if stage not in STAGES:
        raise ConfigError(f"stage '{stage}' is not available yet; available stages: {', '.join(STAGES)}")
    return STAGES[stage]
