"""What trains: stage, fine-tuning type, adapters, preference/RL options and losses."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tunesmith.config.schema_base import Group, NameList


class MethodArgs(Group):
    """What to train: stage, fine-tuning type and its options."""

    stage: Literal["pt", "sft", "rm", "dpo", "kto", "ppo"] = Field("sft", description="Training stage.")
    finetuning_type: Literal["lora", "oft", "freeze", "full"] = Field("lora", description="Which parameters train.")
    # LoRA
    lora_rank: int = Field(8, ge=1, description="LoRA rank r.")
    lora_alpha: int | None = Field(None, ge=1, description="LoRA alpha; default 2 x lora_rank.")
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    lora_target: NameList = Field(
        ["all"], description="Modules LoRA wraps: 'all' (every linear layer but the output head) or a comma list."
    )
    additional_target: NameList = Field(
        None, description="Modules trained in full and saved with the adapter, e.g. embed_tokens,lm_head."
    )
    loraplus_lr_ratio: float | None = Field(None, gt=0, description="LoRA+: B matrices learn at lr x this ratio.")
    loraplus_lr_embedding: float = Field(1e-6, gt=0, description="LoRA+: learning rate of LoRA embedding layers.")
    use_rslora: bool = Field(False, description="rsLoRA: scale by alpha / sqrt(r) instead of alpha / r.")
    use_dora: bool = Field(False, description="DoRA: weight-decomposed LoRA.")
    pissa_init: bool = Field(False, description="Initialise LoRA with PiSSA (principal singular vectors).")
    pissa_iter: int = Field(16, ge=-1, description="Fast-SVD iterations for PiSSA; -1 = exact SVD.")
    pissa_convert: bool = Field(False, description="Save the PiSSA adapter as a plain LoRA adapter.")
    create_new_adapter: bool = Field(False, description="Merge the given adapters and train a new one on top.")
    # Freeze
    freeze_trainable_layers: int = Field(
        2, description="Freeze tuning: N > 0 trains the last N layers, N < 0 the first |N| layers."
    )
    freeze_trainable_modules: NameList = Field(
        ["all"], description="Freeze tuning: modules trained inside those layers, 'all' or e.g. mlp,self_attn."
    )
    freeze_extra_modules: NameList = Field(
        None, description="Freeze tuning: modules outside the layers that also train, e.g. embed_tokens,norm."
    )
    # Preference and RL stages
    pref_beta: float = Field(0.1, gt=0, description="Beta of the preference loss.")
    pref_ftx: float = Field(0.0, ge=0, description="Weight of the SFT loss mixed into DPO.")
    pref_loss: Literal["sigmoid", "hinge", "ipo", "kto_pair", "orpo", "simpo"] = Field(
        "sigmoid", description="Preference loss."
    )
    dpo_label_smoothing: float = Field(0.0, ge=0, le=0.5, description="Robust DPO label smoothing.")
    kto_chosen_weight: float = Field(1.0, gt=0, description="KTO weight of desirable examples.")
    kto_rejected_weight: float = Field(1.0, gt=0, description="KTO weight of undesirable examples.")
    simpo_gamma: float = Field(0.5, description="SimPO target reward margin.")
    ref_model: str | None = Field(None, description="Reference model for DPO/KTO; default: the initial policy.")
    reward_model: str | None = Field(
        None, description="PPO: reward model folder, the output of stage rm or a one-label sequence classifier."
    )
    ppo_epochs: int = Field(4, ge=1, description="PPO: optimisation epochs over each batch of generated replies.")
    ppo_buffer_size: int = Field(
        1,
        ge=1,
        description="PPO: mini-batches (per_device_train_batch_size x gradient_accumulation_steps) per batch "
        "of generated replies.",
    )
    ppo_whiten_rewards: bool = Field(False, description="PPO: whiten the rewards before computing the advantages.")
    # Reporting
    compute_accuracy: bool = Field(False, description="Report token accuracy at evaluation.")
    disable_shuffling: bool = Field(False, description="Keep the training data in order.")

    @model_validator(mode="after")
    def _lora_only_options(self):
        if self.finetuning_type != "lora":
            for key in ("loraplus_lr_ratio", "use_rslora", "use_dora", "pissa_init", "create_new_adapter"):
                if getattr(self, key):
                    raise ValueError(f"`{key}` only applies to finetuning_type: lora (got {self.finetuning_type})")
        if self.pissa_convert and not self.pissa_init:
            raise ValueError("`pissa_convert` needs `pissa_init: true`")
        if self.stage == "ppo" and not self.reward_model:
            raise ValueError(
                "stage ppo needs `reward_model`: a reward model folder (the output of a stage rm run, or "
                "a Hugging Face sequence-classification model with one label)"
            )
        if self.pref_loss == "kto_pair":
            raise ValueError(
                "pref_loss kto_pair is not available with TRL 1.12; use stage: kto with kto_tag data, or "
                "pref_loss sigmoid, hinge, ipo, orpo or simpo"
            )
        if self.dpo_label_smoothing > 0 and self.pref_loss != "sigmoid":
            raise ValueError("`dpo_label_smoothing` only applies to pref_loss: sigmoid")
        return self
