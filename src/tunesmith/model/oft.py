"""OFT through peft (LLaMA-Factory's finetuning_type: oft): orthogonal blocks on the linear layers, saved as an
adapter that loads, merges and resumes exactly like a LoRA one (model/lora.py's setup does that part)."""

from __future__ import annotations

import logging

from tunesmith.errors import ConfigError
from tunesmith.model.lora import resolve_targets, saved_modules, setup_lora

log = logging.getLogger(__name__)


def oft_config(model, method_args, oft, embeddings_resized: bool = False):
    """peft's OFTConfig from oft_rank / oft_block_size / oft_target / module_dropout (`oft`: config.lf_method),
    checked against the model."""
    from peft import OFTConfig, TaskType

    rank, block = oft.oft_rank, oft.oft_block_size
    if bool(rank) == bool(block):  # peft: r x oft_block_size = in_features, so exactly one of them is given
        raise ConfigError(
            f"OFT takes oft_rank or oft_block_size, exactly one of them non-zero (got oft_rank: {rank}, "
            f"oft_block_size: {block}); e.g. oft_block_size: 32 (the default), or oft_rank: 8 with oft_block_size: 0"
        )
    targets = list(oft.oft_target or ["all"])
    if targets == ["all"] and list(method_args.lora_target or ["all"]) != ["all"]:
        targets = list(method_args.lora_target)  # LLaMA-Factory 0.9.5 wraps lora_target's modules with OFT
    targets = resolve_targets(model, targets, "oft_target")
    if oft.use_llama_pro:  # LLaMA Pro: only the expanded blocks get OFT
        from tunesmith.model.freeze import expanded_modules

        targets = expanded_modules(model, targets, method_args.freeze_trainable_layers)
    value_model = type(model).__name__.endswith("ForSequenceClassification")
    log.info("OFT: r=%d block_size=%d module_dropout=%g on %s", rank, block, oft.module_dropout, ",".join(targets))
    return OFTConfig(
        task_type=TaskType.SEQ_CLS if value_model else TaskType.CAUSAL_LM,
        inference_mode=False,
        r=rank,
        oft_block_size=block,
        target_modules=targets,
        module_dropout=oft.module_dropout,
        modules_to_save=saved_modules(model, method_args, embeddings_resized),
    )


def setup_oft(model, model_args, method_args, oft, is_trainable: bool, embeddings_resized: bool = False):
    """adapter_name_or_path merged or resumed as for LoRA, then a fresh OFT adapter when training needs one."""

    def make_config(model, model_args, method_args, resized):
        return oft_config(model, method_args, oft, resized)

    return setup_lora(model, model_args, method_args, is_trainable, embeddings_resized, make_config=make_config)
