"""What differs between training stages, as one small spec per stage (data encoder, collator, trainer)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """How one stage is trained: which encoding its data gets, how batches are built, which trainer runs it."""

    encoding: str  # a key of tunesmith.data.encode's ENCODERS
    make_collator: Callable  # (tokenizer, model) -> collator
    make_trainer: Callable  # (config=..., **kwargs of transformers.Trainer) -> trainer
    head: str = "causal_lm"  # which model tunesmith.model.load builds: causal_lm or value (one score per sequence)
    check: Callable | None = None  # (config) -> None: the stage's own limits, before any launch, data or model load


def _causal_lm_collator(tokenizer, model):
    from transformers import DataCollatorForSeq2Seq

    from tunesmith.data.records import IGNORE_INDEX

    return DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=IGNORE_INDEX, padding=True)


def _supervised_collator(tokenizer, model):
    from tunesmith.data.collate import causal_lm_collator

    return causal_lm_collator(tokenizer, model)


def _argmax(logits, labels):
    """Keeps only the predicted ids at evaluation, so token accuracy never holds all logits in memory."""
    if isinstance(logits, (list, tuple)):
        logits = logits[0]
    return logits.argmax(dim=-1)


def _token_accuracy(eval_prediction) -> dict:
    from tunesmith.evaluate.metrics import token_accuracy

    return {"accuracy": token_accuracy(eval_prediction.predictions, eval_prediction.label_ids)}


def _seq2seq_trainer(config=None, **kwargs):
    from transformers import Seq2SeqTrainer

    if config is not None and config.method.compute_accuracy:  # eval_accuracy, as LLaMA-Factory reports it
        kwargs.update(compute_metrics=_token_accuracy, preprocess_logits_for_metrics=_argmax)
    method = config.lf_method if config is not None else None
    if method is not None and (method.use_dft_loss or method.use_eaft_loss or method.use_asft_loss):  # LF's losses
        from tunesmith.train.losses import sft_trainer

        return sft_trainer(config=config, **kwargs)
    return Seq2SeqTrainer(**kwargs)


def _no_collator(tokenizer, model) -> None:
    """GRPO batches rows as they are (TRL generates from them); its trainer takes no collator."""


def _lazy(name: str, module: str = "preference") -> Callable:
    """tunesmith.train.<module>.<name>, imported only when the stage runs (it imports TRL)."""

    def call(*args, **kwargs):
        import importlib

        return getattr(importlib.import_module(f"tunesmith.train.{module}"), name)(*args, **kwargs)

    call.__name__ = name
    return call


STAGES: dict[str, StageSpec] = {
    "pt": StageSpec(encoding="pretrain", make_collator=_causal_lm_collator, make_trainer=_seq2seq_trainer),
    "sft": StageSpec(encoding="supervised", make_collator=_supervised_collator, make_trainer=_seq2seq_trainer),
    "rm": StageSpec(encoding="pairwise", make_collator=_lazy("reward_collator"), make_trainer=_lazy("reward_trainer"),
                    head="value"),
    "dpo": StageSpec(encoding="pairwise", make_collator=_lazy("pairwise_collator"), make_trainer=_lazy("dpo_trainer")),
    "kto": StageSpec(encoding="feedback", make_collator=_lazy("feedback_collator"), make_trainer=_lazy("kto_trainer")),
    "ppo": StageSpec(encoding="unsupervised", make_collator=_lazy("prompt_collator", "ppo"),
                     make_trainer=_lazy("ppo_trainer", "ppo"), check=_lazy("check", "ppo")),
    "grpo": StageSpec(encoding="prompts", make_collator=_no_collator, make_trainer=_lazy("grpo_trainer", "grpo"),
                      check=_lazy("check", "grpo")),
}


def check_stage(config) -> StageSpec:
    """The spec of the config's stage, after its own check: `tunesmith train` runs this before it launches any
    process (torchrun, Ray) and before any data or model loads; a run_training call runs it again."""
    from tunesmith.train.optimizers import check as check_optimizer

    spec = STAGES[config.method.stage]
    if spec.check:
        spec.check(config)
    check_optimizer(config)  # GaLore/APOLLO/BAdam/Adam-mini/Muon: their refusals and packages
    return spec
