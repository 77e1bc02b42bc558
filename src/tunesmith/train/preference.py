"""Preference stages (rm, dpo, kto): collators for our pre-encoded columns and TRL trainers configured for them."""

from __future__ import annotations

import dataclasses
import logging

from tunesmith.data.records import IGNORE_INDEX
from tunesmith.errors import ConfigError

log = logging.getLogger(__name__)

# pref_loss -> TRL DPOTrainer loss_type; None: computed here from the policy's log-probs (TRL has no such loss).
TRL_PREF_LOSSES = {"sigmoid": "sigmoid", "hinge": "hinge", "ipo": "ipo", "orpo": None, "simpo": None}
REFERENCE_FREE = {"orpo", "simpo"}


# ---------------------------------------------------------------- collators


def _pad(rows, value):
    import torch

    return torch.nn.utils.rnn.pad_sequence([torch.tensor(row) for row in rows], batch_first=True,
                                           padding_value=value, padding_side="right")


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _sequences(features, prefix: str, pad_id: int, with_completion: bool) -> dict:
    ids = [f[f"{prefix}input_ids"] for f in features]
    out = {"input_ids": _pad(ids, pad_id), "attention_mask": _pad([[1] * len(row) for row in ids], 0)}
    if with_completion:
        out["completion_mask"] = _pad([[int(t != IGNORE_INDEX) for t in f[f"{prefix}labels"]] for f in features], 0)
    return out


def pairwise_collator(tokenizer, model, with_completion: bool = True):
    """Chosen rows then rejected rows in one right-padded batch (LLaMA-Factory's PairwiseDataCollatorWithPadding)."""
    pad_id = _pad_id(tokenizer)

    def collate(features):
        both = [{"input_ids": f[f"{side}_input_ids"], "labels": f[f"{side}_labels"]}
                for side in ("chosen", "rejected") for f in features]
        return _sequences(both, "", pad_id, with_completion)

    return collate


def reward_collator(tokenizer, model):
    """Pairwise batch for the value head: input ids and attention mask only."""
    return pairwise_collator(tokenizer, model, with_completion=False)


def feedback_collator(tokenizer, model):
    """KTO batch: the tagged answers, the mismatched KL answers (KL_*), and the desirable flags as `label`."""
    import torch

    pad_id = _pad_id(tokenizer)

    def collate(features):
        batch = _sequences(features, "", pad_id, True)
        batch.update({f"KL_{k}": v for k, v in _sequences(features, "kl_", pad_id, True).items()})
        batch["label"] = torch.tensor([bool(f["kto_tags"]) for f in features])
        return batch

    return collate


# ---------------------------------------------------------------- TRL configs


def trl_args(config_cls, args, **stage_keys):
    """A TRL config holding our training arguments (fields TRL's config knows) plus the stage's own keys."""
    names = {field.name for field in dataclasses.fields(config_cls) if field.init}
    # to_dict masks *_token values ("<HUB_TOKEN>"); the real value is read back from args.
    values = {key: (getattr(args, key) if key.endswith("_token") else value)
              for key, value in args.to_dict().items() if key in names}
    # Our data is encoded and cut to cutoff_len already; keep every column for our collators.
    values.update({key: value for key, value in (("max_length", None), ("remove_unused_columns", False))
                   if key in names}, **stage_keys)
    return config_cls(**values)


def adapter_list(value) -> list[str]:
    """LLaMA-Factory's comma-separated adapter folders as a list."""
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def load_ref_model(config, tokenizer):
    """ref_model as a frozen causal LM, with ref_model_adapters merged and quantized to ref_model_quantization_bit
    (LLaMA-Factory's create_ref_model). None: TRL uses the initial policy, or the base model under LoRA."""
    method, lf = config.method, config.lf_method
    if not method.ref_model:
        if lf.ref_model_adapters or lf.ref_model_quantization_bit:
            log.warning("ref_model_adapters / ref_model_quantization_bit act only with ref_model; not used")
        return None
    from tunesmith.model.load import load_model

    adapters = adapter_list(lf.ref_model_adapters)
    model_args = config.model.model_copy(update={"model_name_or_path": method.ref_model,
                                                 "adapter_name_or_path": adapters or None,
                                                 "quantization_bit": lf.ref_model_quantization_bit})
    method_args = method.model_copy(update={"finetuning_type": "lora" if adapters else "full"})
    return load_model(model_args, method_args, tokenizer, is_trainable=False)


class _PreEncoded:
    """Mixin: the datasets arrive tokenized with our column names, so TRL's own preparation is skipped."""

    def _prepare_dataset(self, dataset, *args, **kwargs):
        return dataset

    def _save(self, output_dir=None, state_dict=None):
        super()._save(output_dir, state_dict)
        # Under LoRA, TRL keeps the initial adapter as a frozen "ref" adapter, which peft saves in ref/: not an output.
        import shutil
        from pathlib import Path

        shutil.rmtree(Path(output_dir or self.args.output_dir) / "ref", ignore_errors=True)


# ---------------------------------------------------------------- dpo


def _ld_weighted(per_token, mask, ld_alpha):
    """Sum of each row's completion log-probs; LD-DPO: tokens past the shorter reply of the pair count ld_alpha."""
    import torch

    if ld_alpha is None:
        return per_token.sum(dim=1)
    position = mask.cumsum(dim=1)
    shared = torch.minimum(*mask.sum(dim=1).chunk(2)).repeat(2).unsqueeze(1)
    front = (position <= shared) & mask.bool()
    return (per_token * front).sum(dim=1) + ld_alpha * (per_token * (mask.bool() & ~front)).sum(dim=1)


def _bco_losses(trainer, chosen_ratio, rejected_ratio):
    """BCO: -log s(beta r_c - delta) - log s(-(beta r_r - delta)), delta the running mean reward (TRL's RunningMoments,
    as LLaMA-Factory uses)."""
    import torch
    import torch.nn.functional as F

    if getattr(trainer, "tunesmith_running", None) is None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from trl.experimental.bco.bco_trainer import RunningMoments
        trainer.tunesmith_running = RunningMoments(trainer.accelerator)
    beta = trainer.tunesmith_method.pref_beta
    chosen, rejected = beta * chosen_ratio, beta * rejected_ratio
    trainer.tunesmith_running.update(torch.cat((chosen, rejected)).mean().detach())
    delta = trainer.tunesmith_running.mean
    return -F.logsigmoid(chosen - delta) - F.logsigmoid(-(rejected - delta))


def _own_pref_loss(trainer, model, inputs, return_outputs):
    """LLaMA-Factory's preference losses from per-token log-probs: ORPO, SimPO, and DPO (sigmoid with label
    smoothing, hinge, ipo) with its BCO mix (pref_bco_weight) and LD-DPO weighting (ld_alpha, on the policy only)."""
    import torch
    import torch.nn.functional as F
    from trl.trainer.utils import selective_log_softmax

    method = trainer.tunesmith_method
    mode = "train" if trainer.model.training else "eval"
    input_ids = inputs["input_ids"]
    outputs = model(input_ids=input_ids, attention_mask=inputs["attention_mask"], use_cache=False)
    shift = inputs["completion_mask"][:, 1:]
    per_token = selective_log_softmax(outputs.logits[:, :-1].float(), input_ids[:, 1:]) * shift
    lengths = shift.sum(dim=1).clamp(min=1)
    logps = _ld_weighted(per_token, shift, trainer.tunesmith_lf.ld_alpha)
    averaged = method.pref_loss in ("ipo", "orpo", "simpo")
    if averaged:
        logps = logps / lengths
    chosen, rejected = logps.chunk(2)
    chosen_avg = chosen if averaged else chosen / lengths.chunk(2)[0]
    beta = method.pref_beta
    if method.pref_loss == "orpo":
        log_odds = (chosen - rejected) - (torch.log1p(-chosen.exp()) - torch.log1p(-rejected.exp()))
        losses = -chosen - beta * F.logsigmoid(log_odds)
        chosen_rewards, rejected_rewards = beta * chosen.detach(), beta * rejected.detach()
    elif method.pref_loss == "simpo":
        losses = -F.logsigmoid(beta * (chosen - rejected) - method.simpo_gamma)
        chosen_rewards, rejected_rewards = beta * chosen.detach(), beta * rejected.detach()
    else:
        with torch.no_grad():
            ref_chosen, ref_rejected = trainer.compute_ref_log_probs(trainer.ref_model or trainer.model, inputs)
        if averaged:  # ipo: the reference's log-probs are averaged per token too
            ref_chosen, ref_rejected = ref_chosen / lengths.chunk(2)[0], ref_rejected / lengths.chunk(2)[1]
        chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected
        margin = chosen_ratio - rejected_ratio
        if method.pref_loss == "hinge":
            losses = torch.relu(1 - beta * margin)
        elif method.pref_loss == "ipo":
            losses = (margin - 1 / (2 * beta)) ** 2
        else:
            eps = method.dpo_label_smoothing
            losses = -(1 - eps) * F.logsigmoid(beta * margin) - eps * F.logsigmoid(-beta * margin)
        if trainer.tunesmith_lf.pref_bco_weight > 1e-6:  # re-weighted mix of the two, as LLaMA-Factory does
            weight = trainer.tunesmith_lf.pref_bco_weight
            losses = (losses + weight * _bco_losses(trainer, chosen_ratio, rejected_ratio)) / (1.0 + weight)
        chosen_rewards, rejected_rewards = beta * chosen_ratio.detach(), beta * rejected_ratio.detach()
    if method.pref_ftx > 0 and method.pref_loss != "orpo":  # ORPO has its SFT term built in
        losses = losses + method.pref_ftx * -chosen_avg
    metrics = trainer._metrics[mode]
    metrics["rewards/chosen"].append(chosen_rewards.mean().item())
    metrics["rewards/rejected"].append(rejected_rewards.mean().item())
    metrics["rewards/accuracies"].append((chosen_rewards > rejected_rewards).float().mean().item())
    metrics["rewards/margins"].append((chosen_rewards - rejected_rewards).mean().item())
    loss = losses.mean()
    return (loss, outputs) if return_outputs else loss


def dpo_trainer(*, config, model, args, processing_class, **kwargs):
    """TRL's DPOTrainer on our pairwise columns; ORPO/SimPO (reference-free), cDPO, BCO mix and LD-DPO computed in
    _own_pref_loss."""
    from trl import DPOConfig, DPOTrainer

    method = config.method
    if method.pref_loss not in TRL_PREF_LOSSES:
        raise ConfigError(f"pref_loss: {method.pref_loss} is not available for stage dpo; choose "
                          f"{', '.join(TRL_PREF_LOSSES)} (for KTO use stage: kto)")
    lf = config.lf_method  # BCO mix and LD-DPO: LLaMA-Factory's versions differ from TRL's
    own = (TRL_PREF_LOSSES[method.pref_loss] is None or method.dpo_label_smoothing > 0
           or lf.pref_bco_weight > 1e-6 or lf.ld_alpha is not None)
    if method.pref_loss in REFERENCE_FREE and method.ref_model:
        log.warning("pref_loss %s is reference-free; ref_model %s is not used", method.pref_loss, method.ref_model)
    loss_type, weights = [TRL_PREF_LOSSES[method.pref_loss] or "sigmoid"], [1.0]
    if method.pref_ftx > 0 and not own:
        loss_type, weights = loss_type + ["sft"], weights + [method.pref_ftx]  # TRL's chosen-token NLL
    dpo_args = trl_args(DPOConfig, args, beta=method.pref_beta, loss_type=loss_type, loss_weights=weights)

    class PreferenceTrainer(_PreEncoded, DPOTrainer):
        tunesmith_method = method
        tunesmith_lf = config.lf_method

        def _compute_loss(self, model, inputs, return_outputs):
            if own:
                return _own_pref_loss(self, model, inputs, return_outputs)
            return super()._compute_loss(model, inputs, return_outputs)

    ref_model = None if method.pref_loss in REFERENCE_FREE else load_ref_model(config, processing_class)
    trainer = PreferenceTrainer(model=model, ref_model=ref_model, args=dpo_args, processing_class=processing_class,
                                **kwargs)
    if method.pref_loss in REFERENCE_FREE:
        trainer.ref_model = None  # TRL builds one for full fine-tuning; these losses never read it
    return trainer


# ---------------------------------------------------------------- kto


def kto_trainer(*, config, model, args, processing_class, **kwargs):
    """TRL's KTOTrainer on our feedback columns, with desirable/undesirable weights."""
    from trl import KTOConfig, KTOTrainer

    method = config.method
    # TRL pairs each answer with its batch neighbour for the KL term, so it demands sequential sampling and a batch
    # of 2 or more. Our encoder pairs them when encoding (kl_input_ids, as LLaMA-Factory does), so any order and any
    # batch size are right: TRL's checks are passed with "sequential" and batch 2, and the user's values restored.
    sampling, batch = args.train_sampling_strategy, args.per_device_train_batch_size
    kto_args = trl_args(KTOConfig, args, beta=method.pref_beta, desirable_weight=method.kto_chosen_weight,
                        undesirable_weight=method.kto_rejected_weight, train_sampling_strategy="sequential",
                        per_device_train_batch_size=max(batch, 2))

    class FeedbackTrainer(_PreEncoded, KTOTrainer):
        pass

    trainer = FeedbackTrainer(model=model, ref_model=load_ref_model(config, processing_class), args=kto_args,
                              processing_class=processing_class, **kwargs)
    trainer.args.train_sampling_strategy = sampling
    trainer.args.per_device_train_batch_size = batch
    trainer._train_batch_size = trainer.args.train_batch_size  # what the dataloader reads
    return trainer


# ---------------------------------------------------------------- rm


def reward_trainer(*, config, model, args, processing_class, **kwargs):
    """TRL's RewardTrainer: pairwise loss -log sigmoid(r_chosen - r_rejected); logs accuracy and margin."""
    from trl import RewardConfig, RewardTrainer

    class ValueHeadTrainer(_PreEncoded, RewardTrainer):
        pass

    return ValueHeadTrainer(model=model, args=trl_args(RewardConfig, args), processing_class=processing_class,
                            **kwargs)
