"""What differs between training stages, as one small spec per stage (data encoder, collator, trainer)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """How one stage is trained: which encoding its data gets, how batches are built, which trainer runs it."""

    encoding: str  # a key of tunesmith.data.encode's ENCODERS
    make_collator: Callable | None  # (tokenizer, model) -> collator; None: training comes in a later release
    make_trainer: Callable | None  # (**kwargs of transformers.Trainer) -> trainer


def _causal_lm_collator(tokenizer, model):
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100, padding=True)


def _seq2seq_trainer(**kwargs):
    from transformers import Seq2SeqTrainer

    return Seq2SeqTrainer(**kwargs)


STAGES: dict[str, StageSpec] = {
    "pt": StageSpec(encoding="pretrain", make_collator=_causal_lm_collator, make_trainer=_seq2seq_trainer),
    "sft": StageSpec(encoding="supervised", make_collator=_causal_lm_collator, make_trainer=_seq2seq_trainer),
    # Data for these stages is loaded, checked and encoded already; their trainers arrive with the stages issue.
    "rm": StageSpec(encoding="pairwise", make_collator=None, make_trainer=None),
    "dpo": StageSpec(encoding="pairwise", make_collator=None, make_trainer=None),
    "kto": StageSpec(encoding="feedback", make_collator=None, make_trainer=None),
    "ppo": StageSpec(encoding="unsupervised", make_collator=None, make_trainer=None),
}


def stage_spec(stage: str, training: bool = False) -> StageSpec:
    """The spec of a stage; with training=True, refuses stages whose trainer is not available yet."""
    from tunesmith.errors import ConfigError

    spec = STAGES[stage]
    if training and spec.make_trainer is None:
        trainable = ", ".join(name for name, item in STAGES.items() if item.make_trainer)
        raise ConfigError(f"training stage '{stage}' is not available yet (its data can already be checked with "
                          f"`tunesmith data check`); stages that train now: {trainable}")
    return spec
