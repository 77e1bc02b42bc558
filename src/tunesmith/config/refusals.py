"""LLaMA-Factory features tunesmith accepts in a config but cannot run, each with the reason and what is needed.

A feature is "on" when one of its keys differs from LLaMA-Factory's default (or `on` says so); at its default a key
means what tunesmith does anyway, or "off". A feature's `options` act only while it is on, in LLaMA-Factory too
(galore_rank does nothing without use_galore), so they load at any value when it is off.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from tunesmith.errors import ConfigError

NOT_YET = "is not supported by tunesmith yet"
MEGATRON = (
    "Megatron training (mcore_adapter / Megatron Bridge) needs CUDA GPUs and Megatron-Core; use DeepSpeed or "
    "FSDP (`deepspeed:`, `fsdp:`)"
)
# LLaMA-Factory's environment switches for backends tunesmith does not have (USE_RAY is honoured: train/ray_launch.py)
ENV_SWITCHES = {"USE_MCA": MEGATRON, "USE_MEGATRON_BRIDGE": MEGATRON}
# Multimodal keys tunesmith honours (images on Qwen-VL, LLaVA/LLaVA-NeXT, Gemma 3 and InternVL models:
# data/vision*.py, model/vision*.py; image_do_pan_and_scan is Gemma 3's and crop_to_patches InternVL's, each refused
# with another template by data/vision.py's make_plugin; audios on Qwen2-Audio: data/audio.py; videos on Qwen-VL:
# data/video.py, data/vision_video.py, as in LF acting only on records that carry videos); the others of the group
# are refused off their defaults with the reason below.
MULTIMODAL_HONOURED = ("media_dir", "image_max_pixels", "image_min_pixels", "freeze_vision_tower",
                       "freeze_multi_modal_projector", "freeze_language_model", "image_do_pan_and_scan",
                       "crop_to_patches", "audio_sampling_rate", "video_max_pixels", "video_min_pixels", "video_fps",
                       "video_maxlen")
MULTIMODAL_REASONS = {
    "use_audio_in_video": "use_audio_in_video feeds the audio track of videos to Qwen2.5-Omni (template qwen2_omni), "
                          "whose videos tunesmith does not train yet (its images and audios train); Qwen-VL models "
                          "read the frames only",
}


# Options of what tunesmith does not train: as in LLaMA-Factory they act only with it (use_audio_in_video only on
# Qwen2.5-Omni's videos; LF's Qwen-VL plugins ignore it), so they load at any value; the reason says what is missing.
MULTIMODAL_OPTIONS = ("use_audio_in_video",)


def multimodal_reason(key: str) -> str:
    return MULTIMODAL_REASONS.get(key, MULTIMODAL_REASONS["use_audio_in_video"])


@dataclasses.dataclass(frozen=True)
class Feature:
    keys: tuple[str, ...]
    reason: str
    hardware: bool = False  # needs hardware or a package that cannot be had here (refused-for-hardware)
    options: tuple[str, ...] = ()
    on: Callable[[object], bool] | None = None  # default: the value differs from the key's default
    given: bool = False  # on whenever the config writes the key, whatever its value


FEATURES = [
    # methods and losses
    Feature(
        ("reward_model_type",),
        "a reward model behind an API (reward_model_type: api) is a reward server reached over the network, which "
        "tunesmith does not call at run time; give `reward_model` a folder (a stage rm output, or a one-label "
        "classifier)",
        on=lambda v: v == "api",
    ),
    Feature(("ppo_target",), "TRL 1.12's PPO has no adaptive KL target (its KL coefficient is fixed); remove it"),
    Feature(("ppo_score_norm",), "TRL 1.12's PPO does not normalise reward scores; remove it"),
    # model loading and tokens
    Feature(("shift_attn",), f"LongLoRA shift attention {NOT_YET}"),
    Feature(
        ("mixture_of_depths",),
        "Mixture-of-Depths needs LLaMA-Factory's MoD library, the mixture-of-depth package (1.2.0, 2024), which is "
        "written for transformers 4.x while tunesmith runs transformers 5: `import MoD` fails (cannot import name "
        "'TRANSFORMERS_CACHE' from 'transformers'), and its MoD layer's forward still requires transformers 4's "
        "`past_key_value` and `output_attentions` arguments, which transformers 5's decoder loop no longer passes "
        "(TypeError on the first forward); remove mixture_of_depths to train the model without it",
        hardware=True,
    ),
    Feature(
        ("use_unsloth_gc",), "Unsloth's gradient checkpointing needs a CUDA GPU and the unsloth package", hardware=True
    ),
    Feature(("use_v1_kernels",), "LLaMA-Factory v1's kernels need a CUDA GPU and LLaMA-Factory v1", hardware=True),
    Feature(("adapter_folder",), f"an adapter folder {NOT_YET}; list the adapters in adapter_name_or_path"),
    Feature(("offload_folder",), f"offloading weights to disk {NOT_YET}"),
    Feature(
        ("ms_hub_token", "om_hub_token"),
        "tunesmith downloads from the Hugging Face hub only (hf_hub_token); ModelScope and Modelers are not used",
    ),
    Feature(("quantization_device_map",), "device_map auto for a 4-bit model needs accelerators", hardware=True),
    # data
    Feature(
        ("streaming",),
        f"streaming datasets {NOT_YET}; remove it (datasets are loaded in full)",
        options=("buffer_size",),
    ),
    Feature(("ignore_pad_token_for_loss",), f"counting padding in the loss {NOT_YET}"),
    Feature(("preserve_thinking",), f"keeping earlier turns' thinking {NOT_YET}"),
    Feature(("data_shared_file_system",), f"encoding once for nodes sharing a file system {NOT_YET}"),
    Feature(("download_mode",), "tunesmith reads benchmarks from task_dir only (no downloads)"),
    # reporting
    Feature(
        ("include_effective_tokens_per_second",),
        f"effective tokens per second {NOT_YET}; include_num_input_tokens_seen: true counts tokens",
    ),
    Feature(
        ("swanlab_lark_webhook_url",),
        "SwanLab's Lark notifications post to a Lark webhook over the network, which tunesmith does not do at run "
        "time; remove it (use_swanlab itself runs, in swanlab_mode offline or local)",
        options=("swanlab_lark_secret",),
    ),
    Feature(
        ("enable_torch_profiler",),
        f"the torch profiler {NOT_YET}",
        options=(
            "profiler_output_dir",
            "profiler_wait_steps",
            "profiler_warmup_steps",
            "profiler_active_steps",
            "profiler_repeat",
            "profiler_record_shapes",
            "profiler_profile_memory",
            "profiler_with_stack",
            "profile_modules",
        ),
    ),
    # export
    Feature(
        ("export_quantization_bit", "export_quantization_dataset"),
        "GPTQ export needs gptqmodel (LLaMA-Factory's GPTQ library, through transformers' GPTQConfig), which this "
        "install cannot hold: gptqmodel 7.7 needs torch >= 2.14.1 (tunesmith pins torch 2.13), 7.6 builds C++ "
        "kernels and swaps the numpy (2.4 to 2.2) and protobuf (6 to 7) the rest runs on, auto-gptq 0.7 predates "
        "transformers 5; "
        "export in full precision (leave export_quantization_bit unset) and quantize the folder with gptqmodel",
        hardware=True,
        options=("export_quantization_nsamples", "export_quantization_maxlen"),
    ),
    # inference engines
    Feature(
        ("infer_backend",),
        "infer_backend vllm, sglang and ktransformers need a CUDA GPU and that engine; "
        "tunesmith serves with huggingface",
        hardware=True,
        on=lambda v: v != "huggingface",
        options=(
            "vllm_maxlen",
            "vllm_gpu_util",
            "vllm_enforce_eager",
            "vllm_max_lora_rank",
            "vllm_config",
            "sglang_maxlen",
            "sglang_mem_fraction",
            "sglang_tp_size",
            "sglang_config",
            "sglang_lora_backend",
        ),
    ),
    # scale-out backends
    Feature(
        ("use_mca", "use_megatron_bridge", "megatron_bridge_args"),
        MEGATRON,
        hardware=True,
    ),
    Feature(  # LLaMA-Factory reads these only under USE_MCA=1 / USE_MEGATRON_BRIDGE=1: written at all, they ask for it
        (
            "tensor_model_parallel_size",
            "pipeline_model_parallel_size",
            "expert_model_parallel_size",
            "context_parallel_size",
            "virtual_pipeline_model_parallel_size",
            "sequence_parallel",
            "recompute_granularity",
            "recompute_method",
            "recompute_num_layers",
            "account_for_embedding_in_pipeline_split",
            "account_for_loss_in_pipeline_split",
            "bias_activation_fusion",
            "apply_rope_fusion",
            "masked_softmax_fusion",
            "cross_entropy_loss_fusion",
            "moe_grouped_gemm",
            "moe_token_dispatcher_type",
            "calculate_per_token_loss",
            "use_distributed_optimizer",
            "overlap_param_gather",
            "overlap_grad_reduce",
            "use_packed_sequences",
            "mixed_precision",
            "megatron_pretrained_checkpoint",
            "export_hf_on_finish",
            "extra_config",
        ),
        MEGATRON,
        hardware=True,
        given=True,
    ),
    Feature(
        ("use_hyper_parallel", "hyper_parallel_args", "hyper_parallel_cp_size"),
        "HyperParallel needs Ascend NPUs",
        hardware=True,
    ),
    Feature(
        ("fp8", "fp8_backend", "fp8_enable_fsdp_float8_all_gather"),
        "FP8 training needs GPUs with FP8 (Hopper or newer) and torchao or Transformer Engine",
        hardware=True,
    ),
    Feature(
        (
            "use_kt",
            "kt_cpu_activation",
            "kt_weight_path",
            "kt_non_expert_weight_path",
            "kt_expert_checkpoint_path",
            "kt_use_lora_experts",
            "kt_lora_expert_num",
            "kt_lora_expert_intermediate_size",
            "kt_config",
        ),
        "KTransformers needs a CUDA GPU and the ktransformers package",
        hardware=True,
    ),
]

MULTIMODAL_GROUP = "multimodal"


class FeatureRefused(ConfigError):
    """A config turns on a LLaMA-Factory feature tunesmith cannot run; `hardware` says whether it is for want of
    hardware or a package (rather than not implemented)."""

    def __init__(self, message: str, hardware: bool):
        super().__init__(message)
        self.hardware = hardware


def _value(config, key: str):
    from tunesmith.config.schema import GROUPS

    for name, cls in GROUPS.items():
        if key in cls.model_fields:
            return getattr(getattr(config, name), key), cls.model_fields[key].default
    raise KeyError(key)


def refused(config) -> list[tuple[str, str, bool]]:
    """(key, reason, hardware) for each key of `config` that turns on a feature tunesmith cannot run."""
    import os

    from tunesmith.config.schema import GROUPS

    out = [
        (f"{name}=1", reason, True)
        for name, reason in ENV_SWITCHES.items()
        if os.environ.get(name, "0").lower() in ("true", "y", "1")
    ]  # LLaMA-Factory's reading of its switches
    for feature in FEATURES:
        for key in feature.keys:
            value, default = _value(config, key)
            if (feature.given and key in config.given) or (feature.on(value) if feature.on else value != default):
                out.append((key, feature.reason, feature.hardware))
    group = getattr(config, MULTIMODAL_GROUP)
    for key, field in GROUPS[MULTIMODAL_GROUP].model_fields.items():
        if key not in MULTIMODAL_HONOURED + MULTIMODAL_OPTIONS and getattr(group, key) != field.default:
            out.append((key, multimodal_reason(key), False))
    return out


def check_features(config) -> None:
    """Raises FeatureRefused naming every LLaMA-Factory feature the config turns on that tunesmith cannot run."""
    found = refused(config)
    if found:
        keys: dict[str, list[str]] = {}  # one line per feature, however many of its keys are set
        for key, reason, _ in found:
            keys.setdefault(reason, []).append(f"`{key}`")
        lines = [
            f"LLaMA-Factory's {', '.join(names)} {'is' if len(names) == 1 else 'are'} not supported: {reason}"
            for reason, names in keys.items()
        ]
        raise FeatureRefused(f"{config.source}: " + "\n  ".join(lines), hardware=all(hw for _, _, hw in found))


def reason_of(key: str) -> str | None:
    """Why `key` is refused when set (None for a key tunesmith honours at any value)."""
    from tunesmith.config.schema import GROUPS

    if key in GROUPS[MULTIMODAL_GROUP].model_fields:
        if key in MULTIMODAL_OPTIONS:
            return f"only acts on a model tunesmith does not support: {multimodal_reason(key)}"
        return None if key in MULTIMODAL_HONOURED else multimodal_reason(key)
    for feature in FEATURES:
        if key in feature.keys:
            return f"some values: {feature.reason}" if feature.on else feature.reason
        if key in feature.options:
            return f"only acts with {' / '.join(feature.keys)}, which is refused: {feature.reason}"
    return None
