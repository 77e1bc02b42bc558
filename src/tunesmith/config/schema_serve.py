"""How replies are generated and served (chat, api, predict)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tunesmith.config.schema_base import Group


class GenerationArgs(Group):
    """How replies are sampled (chat, api, predict); LLaMA-Factory's names and defaults."""

    do_sample: bool = Field(True, description="Sample; false = greedy (or beam) decoding.")
    temperature: float = Field(0.95, ge=0, description="Sampling temperature.")
    top_p: float = Field(0.7, gt=0, le=1, description="Nucleus sampling: keep the smallest set with this mass.")
    top_k: int = Field(50, ge=0, description="Sample among the k most likely tokens (0 = no limit).")
    num_beams: int = Field(1, ge=1, description="Beam search width (1 = none).")
    max_new_tokens: int = Field(1024, ge=1, description="Most tokens generated per reply.")
    repetition_penalty: float = Field(1.0, gt=0, description="Penalty for repeated tokens (1.0 = none).")
    length_penalty: float = Field(1.0, description="Beam search length penalty.")
    skip_special_tokens: bool = Field(True, description="Drop special tokens from decoded replies.")


class InferArgs(Group):
    """Serving: backend and the API server's address and key."""

    infer_backend: Literal["huggingface", "vllm", "sglang", "ktransformers"] = Field(
        "huggingface", description="Inference engine."
    )

    api_host: str = Field("127.0.0.1", description="API server host (0.0.0.0 listens on every interface).")
    api_port: int | None = Field(None, ge=1, le=65535, description="API server port; default $API_PORT or 8000.")
    api_key: str | None = Field(None, description="Key every API request must send; default $API_KEY (none: open).")
    api_model_name: str | None = Field(None, description="Model name the API reports; default the model folder.")
    api_max_input_tokens: int | None = Field(
        None,
        ge=1,
        description="Most prompt tokens per API request (400 "
        "context_length_exceeded beyond); default the model's context length.",
    )
    api_request_timeout: float = Field(
        300,
        gt=0,
        description="Seconds an API request may wait for and use the "
        "model; its generation stops there (finish_reason length).",
    )
    api_max_queue: int = Field(8, ge=0, description="API requests that may wait while one generates; more get 429.")
    api_max_body_bytes: int = Field(16 * 2**20, ge=1024, description="Largest API request body; larger get 413.")

    max_length: int = Field(
        1024,
        ge=1,
        description="LLaMA-Factory's generate max_length: used there only when "
        "max_new_tokens <= 0, which cannot be, so max_new_tokens decides (as in LLaMA-Factory).",
    )
    vllm_maxlen: int = Field(4096, description="vLLM: context length (infer_backend: vllm).")
    vllm_gpu_util: float = Field(0.7, description="vLLM: GPU memory fraction.")
    vllm_enforce_eager: bool = Field(False, description="vLLM: no CUDA graphs.")
    vllm_max_lora_rank: int = Field(32, description="vLLM: largest LoRA rank.")
    vllm_config: dict | str | None = Field(None, description="vLLM: engine options.")
    sglang_maxlen: int = Field(4096, description="SGLang: context length (infer_backend: sglang).")
    sglang_mem_fraction: float = Field(0.7, description="SGLang: GPU memory fraction.")
    sglang_tp_size: int = Field(-1, description="SGLang: tensor parallel size (-1 = every GPU).")
    sglang_config: dict | str | None = Field(None, description="SGLang: engine options.")
    sglang_lora_backend: str = Field("triton", description="SGLang: LoRA backend.")
