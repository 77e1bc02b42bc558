"""Acceleration kernels (Liger Kernel, Unsloth): applied when the hardware and package exist, else a clear stop."""

from __future__ import annotations

import importlib.util
import logging

from tunesmith.errors import DependencyError

log = logging.getLogger(__name__)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def check_unsloth() -> None:
    if importlib.util.find_spec("unsloth") is None:
        raise DependencyError("use_unsloth needs the unsloth package on a CUDA machine (see https://github.com/"
                              "unslothai/unsloth for the install matching your torch/CUDA); set use_unsloth: false")
    if not _cuda():
        raise DependencyError("use_unsloth needs a CUDA GPU; none was found. Set use_unsloth: false")


def load_with_unsloth(model_args, method_args, dtype, max_seq_length: int, is_trainable: bool):
    """Loads through Unsloth's FastLanguageModel and, for LoRA training, its get_peft_model."""
    check_unsloth()
    from unsloth import FastLanguageModel

    model, _ = FastLanguageModel.from_pretrained(
        model_name=model_args.model_name_or_path, max_seq_length=max_seq_length, dtype=dtype,
        load_in_4bit=model_args.quantization_bit == 4, trust_remote_code=model_args.trust_remote_code)
    if is_trainable and method_args.finetuning_type == "lora":
        targets = method_args.lora_target
        if targets == ["all"]:
            targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        model = FastLanguageModel.get_peft_model(
            model, r=method_args.lora_rank, lora_alpha=method_args.lora_alpha or 2 * method_args.lora_rank,
            lora_dropout=method_args.lora_dropout, target_modules=targets, use_rslora=method_args.use_rslora,
            use_gradient_checkpointing="unsloth")
    log.info("model loaded through Unsloth")
    return model


def apply_liger(model_type: str) -> None:
    """Patches the model family's classes with Liger's fused kernels (before the model is built)."""
    if importlib.util.find_spec("liger_kernel") is None:
        raise DependencyError("enable_liger_kernel needs the liger-kernel package and a CUDA GPU: "
                              "pip install 'tunesmith[liger]'; or set enable_liger_kernel: false")
    if not _cuda():
        raise DependencyError("enable_liger_kernel needs a CUDA GPU (Liger's Triton kernels do not run on CPU); "
                              "set enable_liger_kernel: false")
    from liger_kernel.transformers import monkey_patch

    patch = getattr(monkey_patch, f"apply_liger_kernel_to_{model_type}", None)
    if patch is None:
        raise DependencyError(f"liger-kernel has no kernels for model type '{model_type}'; set "
                              "enable_liger_kernel: false")
    patch()
    log.info("Liger Kernel applied to %s", model_type)
