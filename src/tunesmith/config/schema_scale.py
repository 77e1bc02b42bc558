"""Scale-out: torchrun, Ray, and LLaMA-Factory's Megatron/KTransformers/FP8 backends."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field

from tunesmith.config.schema_base import Group


class LaunchArgs(Group):
    """Scale-out: tunesmith relaunches itself under torchrun (DDP, DeepSpeed) or on Ray when these ask for it."""

    nproc_per_node: int = Field(1, ge=1, description="Processes (GPUs) per node; > 1 launches torchrun.")
    nnodes: int = Field(1, ge=1, description="Number of nodes.")
    node_rank: int = Field(0, ge=0, description="This node's rank (0 on the master).")
    # LLaMA-Factory writes `master_addr: null` / `master_port: null` for "the default"
    master_addr: Annotated[str, BeforeValidator(lambda v: "127.0.0.1" if v is None else v)] = Field(
        "127.0.0.1", description="Address of the rank-0 node."
    )
    master_port: Annotated[int, BeforeValidator(lambda v: 29500 if v is None else v)] = Field(
        29500, ge=1, le=65535, description="Port of the rank-0 node."
    )
    # As in LLaMA-Factory, Ray is used only when asked for (its USE_RAY=1 is honoured too); its worker count is 1
    use_ray: bool = Field(
        False,
        description="Train on Ray (Ray Train) with ray_num_workers workers; LLaMA-Factory's "
        "USE_RAY=1 environment variable means the same.",
    )
    ray_num_workers: int = Field(1, ge=1, description="Ray workers, used with use_ray: true (or USE_RAY=1).")
    ray_init_kwargs: dict | str | None = Field(None, description="Keyword arguments of ray.init (a mapping or JSON).")
    ray_storage_path: str | None = Field(None, description="Where Ray Train keeps run results (default ./saves).")
    ray_address: str | None = Field(None, description="Ray cluster to join; default: start a local one.")
    resources_per_worker: dict[str, float] | None = Field(
        None, description="Ray resources per worker, e.g. {CPU: 2} or {GPU: 1}; default 1 CPU (or 1 GPU)."
    )


class ScaleArgs(Group):
    """LLaMA-Factory's backends that need hardware or packages tunesmith does not use: accepted, refused when on."""

    use_mca: bool = Field(False, description="Megatron-Core through mcore_adapter (CUDA, Megatron).")
    use_megatron_bridge: bool = Field(False, description="Megatron Bridge training (CUDA, Megatron).")
    megatron_bridge_args: dict | str | None = Field(None, description="Megatron Bridge options.")
    use_hyper_parallel: bool = Field(False, description="HyperParallel training (Ascend NPU).")
    hyper_parallel_args: dict | str | None = Field(None, description="HyperParallel options.")
    hyper_parallel_cp_size: int = Field(1, ge=1, description="HyperParallel context parallel size.")
    fp8: bool = Field(False, description="FP8 training (GPUs with FP8: Hopper or newer).")
    fp8_backend: str = Field("auto", description="FP8 backend: auto, torchao, te or msamp.")
    fp8_enable_fsdp_float8_all_gather: bool = Field(False, description="FP8 all-gather under FSDP2.")
    use_kt: bool = Field(False, description="KTransformers MoE offloading (CUDA, KTransformers).")
    tensor_model_parallel_size: int = Field(1, description="Megatron: tensor parallel size.")
    pipeline_model_parallel_size: int = Field(1, description="Megatron: pipeline parallel size.")
    expert_model_parallel_size: int = Field(1, description="Megatron: expert parallel size.")
    context_parallel_size: int = Field(1, description="Megatron: context parallel size.")
    sequence_parallel: bool = Field(False, description="Megatron: sequence parallelism.")
    use_distributed_optimizer: bool = Field(True, description="Megatron: distributed optimizer.")
    overlap_param_gather: bool = Field(True, description="Megatron: overlap the parameter all-gather.")
    overlap_grad_reduce: bool = Field(True, description="Megatron: overlap the gradient reduce.")
    use_packed_sequences: bool = Field(False, description="Megatron: packed sequences.")
    mixed_precision: str = Field("bf16_mixed", description="Megatron: mixed precision recipe.")
    export_hf_on_finish: bool = Field(False, description="Megatron: export a Hugging Face checkpoint at the end.")
    virtual_pipeline_model_parallel_size: int | None = Field(None, description="Megatron: virtual pipeline size.")
    recompute_granularity: str | None = Field(None, description="Megatron: activation recompute granularity.")
    recompute_method: str | None = Field(None, description="Megatron: activation recompute method.")
    recompute_num_layers: int | None = Field(None, description="Megatron: layers recomputed.")
    account_for_embedding_in_pipeline_split: bool | None = Field(None, description="Megatron: pipeline split.")
    account_for_loss_in_pipeline_split: bool | None = Field(None, description="Megatron: pipeline split.")
    bias_activation_fusion: bool | None = Field(None, description="Megatron: fused bias + activation.")
    apply_rope_fusion: bool | None = Field(None, description="Megatron: fused RoPE.")
    masked_softmax_fusion: bool | None = Field(None, description="Megatron: fused masked softmax.")
    cross_entropy_loss_fusion: bool | None = Field(None, description="Megatron: fused cross entropy.")
    moe_grouped_gemm: bool | None = Field(None, description="Megatron: grouped GEMM for MoE experts.")
    moe_token_dispatcher_type: str | None = Field(None, description="Megatron: MoE token dispatcher.")
    calculate_per_token_loss: bool | None = Field(None, description="Megatron: per-token loss.")
    megatron_pretrained_checkpoint: str | None = Field(None, description="Megatron: checkpoint to start from.")
    extra_config: dict | str | None = Field(None, description="Megatron: extra provider options.")
    kt_cpu_activation: str | None = Field(None, description="KTransformers: CPU activation setting.")
    kt_weight_path: str | None = Field(None, description="KTransformers: expert weights.")
    kt_non_expert_weight_path: str | None = Field(None, description="KTransformers: non-expert weights.")
    kt_expert_checkpoint_path: str | None = Field(None, description="KTransformers: expert checkpoint.")
    kt_use_lora_experts: bool | None = Field(None, description="KTransformers: LoRA on experts.")
    kt_lora_expert_num: int | None = Field(None, description="KTransformers: experts with LoRA.")
    kt_lora_expert_intermediate_size: int | None = Field(None, description="KTransformers: expert LoRA size.")
    kt_config: dict | str | None = Field(None, description="KTransformers: advanced settings.")
