"""Settings of the model itself (loading, quantization, tokens) and of its export."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from tunesmith.config.schema_base import Group, NameList


class ModelArgs(Group):
    """Which model to load and how."""

    model_name_or_path: str | None = Field(None, description="Local model folder or Hugging Face hub id.")
    adapter_name_or_path: NameList = Field(None, description="Adapter folder(s), comma separated; merged in order.")
    cache_dir: str | None = Field(None, description="Where downloaded models and datasets are cached.")
    model_revision: str = Field("main", description="Hub revision (branch, tag or commit) of the model.")
    trust_remote_code: bool = Field(False, description="Allow running code shipped with the model or dataset.")
    use_fast_tokenizer: bool = Field(True, description="Use the fast (Rust) tokenizer.")
    split_special_tokens: bool = Field(False, description="Tokenize special tokens in text as plain text.")
    resize_vocab: bool = Field(False, description="Resize the embeddings to the tokenizer's size.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype; auto = float32 on CPU, bfloat16 on GPUs that support it, else float16."
    )
    flash_attn: Literal["auto", "sdpa", "eager", "fa2", "disabled"] = Field(
        "auto", description="Attention implementation: auto, sdpa, eager (also 'disabled'), fa2 (FlashAttention-2)."
    )
    rope_scaling: Literal["linear", "dynamic", "yarn", "llama3"] | None = Field(
        None, description="RoPE scaling method for contexts beyond the model's length."
    )
    quantization_bit: Literal[4, 8] | None = Field(None, description="Quantize the base model to 4 or 8 bits.")
    quantization_method: Literal["bitsandbytes", "bnb", "hqq"] = Field(
        "bitsandbytes", description="Quantization backend."
    )
    quantization_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type (bitsandbytes).")
    double_quantization: bool = Field(True, description="Double quantization (bitsandbytes 4-bit).")
    hqq_group_size: int = Field(64, ge=8, description="HQQ quantization group size.")
    rope_scaling_factor: float | None = Field(
        None, ge=1, description="RoPE scaling factor; default ceil(cutoff_len / max_position_embeddings)."
    )
    use_unsloth: bool = Field(False, description="Load through Unsloth's patched model (CUDA only).")
    enable_liger_kernel: bool = Field(False, description="Apply Liger Kernel's fused ops (CUDA only).")
    disable_gradient_checkpointing: bool = Field(False, description="Turn gradient checkpointing off.")
    low_cpu_mem_usage: bool = Field(
        True, description="Load weights without a second copy in memory (always, with transformers 5)."
    )

    @field_validator("low_cpu_mem_usage")
    @classmethod
    def _always_low_memory(cls, value):
        if not value:
            raise ValueError(
                "low_cpu_mem_usage: false is not possible: transformers 5 always loads weights without "
                "a second copy; remove the key"
            )
        return value

    hf_hub_token: str | None = Field(None, description="Token for private hub models.")

    # LLaMA-Factory's other model keys; those tunesmith cannot honour are refused when set (config/refusals.py)
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
        True, description="Reentrant gradient checkpointing in LLaMA-Factory; tunesmith always checkpoints "
        "non-reentrantly (torch's recommendation; the gradients are the same), so true and false both load.")
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


class ExportArgs(Group):
    """Merging adapters into the base model and saving it."""

    export_dir: str | None = Field(None, description="Where `tunesmith export` writes the merged model.")
    export_size: int = Field(5, ge=1, description="Largest shard of the exported weights, in GB.")
    export_dtype: Literal["float32", "float16", "bfloat16"] = Field("bfloat16", description="Exported weights dtype.")
    export_hub_model_id: str | None = Field(None, description="Also push the export to this hub repo (online).")

    export_device: Literal["cpu", "auto"] = Field(
        "cpu", description="Where the merge runs: cpu or auto (accelerators)."
    )
    export_legacy_format: bool = Field(False, description="Save .bin (pickle) weights instead of safetensors.")
    export_quantization_bit: int | None = Field(None, description="GPTQ-quantize the export to this many bits.")
    export_quantization_dataset: str | None = Field(None, description="Calibration data file for GPTQ export.")
    export_quantization_nsamples: int = Field(128, ge=1, description="Calibration examples for GPTQ export.")
    export_quantization_maxlen: int = Field(1024, ge=1, description="Tokens per calibration example for GPTQ export.")
