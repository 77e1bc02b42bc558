"""LLaMA-Factory's model, method and data keys beyond tunesmith's own: each is accepted; most are refused with the
reason when set off their default (config/refusals.py), a few are honoured (print_param_status, eval_num_beams)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tunesmith.config.schema_base import Group, NameList


class LFModelArgs(Group):
    """LLaMA-Factory's other model keys: tokens, precision, checkpointing, hubs."""

    adapter_folder: str | None = Field(
        None, description="Folder whose sub-folders are adapters to merge (LLaMA-Factory)."
    )
    add_tokens: NameList = Field(None, description="Plain tokens added to the tokenizer, comma separated.")
    add_special_tokens: NameList = Field(None, description="Special tokens added to the tokenizer, comma separated.")
    new_special_tokens_config: str | dict | None = Field(
        None, description="YAML file or mapping: new special token -> description used to initialise it."
    )
    init_special_tokens: Literal["noise_init", "desc_init", "desc_init_w_noise"] = Field(
        "noise_init", description="How the embeddings of new special tokens start."
    )
    shift_attn: bool = Field(False, description="LongLoRA shift short attention (S^2-Attn).")
    mixture_of_depths: Literal["convert", "load"] | None = Field(None, description="Mixture-of-Depths conversion.")
    use_unsloth_gc: bool = Field(False, description="Unsloth's gradient checkpointing (CUDA only).")
    moe_aux_loss_coef: float | None = Field(None, description="Router auxiliary loss coefficient of MoE models.")
    use_reentrant_gc: bool = Field(
        True,
        description="Reentrant gradient checkpointing in LLaMA-Factory; tunesmith always checkpoints "
        "non-reentrantly (torch's recommendation; the gradients are the same), so true and false both load.",
    )
    upcast_layernorm: bool = Field(False, description="Keep layer norms in float32.")
    upcast_lmhead_output: bool = Field(False, description="Compute the output head's logits in float32.")
    train_from_scratch: bool = Field(False, description="Initialise the weights randomly instead of loading them.")
    offload_folder: str = Field("offload", description="Where weights offloaded from memory go (device_map offload).")
    use_kv_cache: bool = Field(True, description="Use the key/value cache when generating.")
    use_v1_kernels: bool = Field(False, description="LLaMA-Factory v1's fused kernels (CUDA).")
    infer_dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        "auto", description="Weights dtype for inference; auto = the `dtype` rule."
    )
    ms_hub_token: str | None = Field(None, description="ModelScope hub token (LLaMA-Factory).")
    om_hub_token: str | None = Field(None, description="Modelers (openMind) hub token (LLaMA-Factory).")
    print_param_status: bool = Field(False, description="Log every parameter's name, dtype and trainability.")
    quantization_device_map: Literal["auto"] | None = Field(
        None, description="Device map of a 4-bit model at inference."
    )


class LFMethodArgs(Group):
    """LLaMA-Factory's other training methods: OFT, optimizer-free losses, more preference and RL options."""

    # OFT (LLaMA-Factory's finetuning_type: oft)
    oft_rank: int = Field(0, ge=0, description="OFT rank (0: set by oft_block_size).")
    oft_block_size: int = Field(32, ge=0, description="OFT block size.")
    oft_target: NameList = Field(["all"], description="Modules OFT wraps: 'all' or a comma list.")
    module_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="OFT multiplicative dropout.")
    # More preference / RL options
    pref_bco_weight: float = Field(0.0, ge=0, description="DPO: weight of the BCO loss mixed in.")
    ld_alpha: float | None = Field(None, description="LD-DPO: weight of the verbose part of long replies.")
    ref_model_adapters: str | None = Field(
        None, description="Adapter folders (comma list) merged into `ref_model`, in order."
    )
    ref_model_quantization_bit: Literal[4, 8] | None = Field(
        None, description="Quantize `ref_model` to 4 or 8 bits (as quantization_bit)."
    )
    reward_model_adapters: str | None = Field(
        None, description="PPO: adapter folders (comma list) merged into `reward_model`, in order."
    )
    reward_model_quantization_bit: Literal[4, 8] | None = Field(
        None, description="PPO: quantize `reward_model` to 4 or 8 bits (its value model trains in full precision)."
    )
    reward_model_type: Literal["lora", "full", "api"] = Field(
        "lora",
        description="PPO: what `reward_model` is (lora: an rm run's adapter, full: a model folder); tunesmith "
        "reads the folder as it is either way; api is refused (no reward server is reached).",
    )
    ppo_score_norm: bool = Field(False, description="PPO: normalise reward scores (not in TRL 1.12).")
    ppo_target: float = Field(6.0, description="PPO: adaptive KL target (TRL 1.12's KL coefficient is fixed).")
    # Other LLaMA-Factory training methods and losses
    pure_bf16: bool = Field(False, description="Train purely in bfloat16, without mixed precision.")
    use_llama_pro: bool = Field(False, description="LLaMA Pro: train only the expanded blocks.")
    use_dft_loss: bool = Field(False, description="DFT loss (dynamic fine-tuning).")
    use_asft_loss: bool = Field(False, description="ASFT loss (anchored SFT).")
    asft_alpha: float = Field(0.1, description="ASFT: weight of its KL anchor.")
    use_eaft_loss: bool = Field(False, description="EAFT loss (entropy-adaptive fine-tuning).")
    eaft_alpha: float = Field(1.0, description="EAFT: exponent of its entropy weight.")


class LFDataArgs(Group):
    """LLaMA-Factory's other data keys."""

    neat_packing: bool = Field(False, description="Packing without cross-attention between packed examples.")
    buffer_size: int = Field(16384, ge=1, description="Shuffle buffer of streamed datasets (with `streaming`).")
    eval_num_beams: int | None = Field(None, ge=1, description="Beams of predict_with_generate (generation_num_beams).")
    ignore_pad_token_for_loss: bool = Field(True, description="Padding positions do not count in the loss.")
    preserve_thinking: bool = Field(False, description="Keep earlier turns' thinking in multi-turn reasoning data.")
    data_shared_file_system: bool = Field(False, description="Nodes share a file system: encode on one, read on all.")
