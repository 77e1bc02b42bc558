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


class ExportArgs(Group):
    """Merging adapters into the base model and saving it."""

    export_dir: str | None = Field(None, description="Where `tunesmith export` writes the merged model.")
    export_size: int = Field(5, ge=1, description="Largest shard of the exported weights, in GB.")
    export_dtype: Literal["float32", "float16", "bfloat16"] = Field("bfloat16", description="Exported weights dtype.")
    export_hub_model_id: str | None = Field(None, description="Also push the export to this hub repo (online).")
    # GGUF: a llama.cpp/Ollama file + Modelfile instead of safetensors shards
    export_format: Literal["safetensors", "gguf"] = Field(
        "safetensors", description="safetensors shards, or one GGUF file (llama.cpp/Ollama) with an Ollama Modelfile."
    )
    export_quantization: Literal["f16", "q8_0", "f32"] = Field("f16", description="GGUF tensor type (f16, q8_0, f32).")

    export_device: Literal["cpu", "auto"] = Field(
        "cpu", description="Where the merge runs: cpu or auto (accelerators)."
    )
    export_legacy_format: bool = Field(False, description="Save .bin (pickle) weights instead of safetensors.")
    export_quantization_bit: int | None = Field(None, description="GPTQ-quantize the export to this many bits.")
    export_quantization_dataset: str | None = Field(None, description="Calibration data file for GPTQ export.")
    export_quantization_nsamples: int = Field(128, ge=1, description="Calibration examples for GPTQ export.")
    export_quantization_maxlen: int = Field(1024, ge=1, description="Tokens per calibration example for GPTQ export.")
