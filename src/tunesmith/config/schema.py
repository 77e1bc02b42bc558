"""Typed settings grouped by concern (the groups live in schema_*.py); every key tunesmith knows, with
LLaMA-Factory's names, is declared in them; this module ties them together."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tunesmith.config.schema_base import FloatList, Group, NameList
from tunesmith.config.schema_data import DataArgs, EvalArgs, MultimodalArgs, OutputArgs
from tunesmith.config.schema_lf import LFDataArgs, LFMethodArgs, LFModelArgs
from tunesmith.config.schema_method import MethodArgs
from tunesmith.config.schema_model import ExportArgs, ModelArgs
from tunesmith.config.schema_optim import OptimArgs
from tunesmith.config.schema_report import ReportArgs
from tunesmith.config.schema_scale import LaunchArgs, ScaleArgs
from tunesmith.config.schema_serve import GenerationArgs, InferArgs

__all__ = [
    "GROUPS",
    "DataArgs",
    "EvalArgs",
    "ExportArgs",
    "FloatList",
    "GenerationArgs",
    "Group",
    "InferArgs",
    "LFDataArgs",
    "LFMethodArgs",
    "LFModelArgs",
    "LaunchArgs",
    "MethodArgs",
    "ModelArgs",
    "MultimodalArgs",
    "NameList",
    "OptimArgs",
    "OutputArgs",
    "ReportArgs",
    "ScaleArgs",
]


GROUPS: dict[str, type[Group]] = {
    "model": ModelArgs,
    "method": MethodArgs,
    "data": DataArgs,
    "output": OutputArgs,
    "generation": GenerationArgs,
    "infer": InferArgs,
    "export": ExportArgs,
    "launch": LaunchArgs,
    "eval": EvalArgs,
    "optim": OptimArgs,
    "report": ReportArgs,
    "multimodal": MultimodalArgs,
    "scale": ScaleArgs,
    "lf_model": LFModelArgs,
    "lf_method": LFMethodArgs,
    "lf_data": LFDataArgs,
}

# Groups of LLaMA-Factory's keys beyond tunesmith's own: shown and recorded only where set off their defaults.
LF_GROUPS = ("optim", "report", "multimodal", "scale", "lf_model", "lf_method", "lf_data")

# Keys from older LLaMA-Factory / transformers configs that map onto a current key.
RENAMED_KEYS = {"warmup_ratio": "warmup_steps", "evaluation_strategy": "eval_strategy", "torch_dtype": "dtype"}

# Keys transformers 5 moved into a mapping: old key -> (mapping key, its entry); LLaMA-Factory examples still use them.
MOVED_KEYS = {
    "fsdp_transformer_layer_cls_to_wrap": ("fsdp_config", "transformer_layer_cls_to_wrap"),
    "fsdp_min_num_params": ("fsdp_config", "min_num_params"),
}

# Keys that are not tunesmith's nor LLaMA-Factory's but that people bring, with the reason shown instead of "unknown".
UNAVAILABLE_KEYS: dict[str, str] = {}

# LLaMA-Factory v1's config format: nested mappings under these top-level keys (examples/v1/).
LF_V1_KEYS = (
    "model",
    "peft_config",
    "dist_config",
    "kernel_config",
    "quant_config",
    "train_dataset",
    "optim_config",
    "init_config",
)


def _resume_value(value):
    return "true" if value is True else None if value is False else value


# Values people write that are not values, with what they mean instead: (key, value) -> hint.
VALUE_HINTS = {
    ("finetuning_type", "qlora"): "QLoRA is `finetuning_type: lora` with `quantization_bit: 4` (or 8)",
    ("finetuning_type", "qlora_4bit"): "QLoRA is `finetuning_type: lora` with `quantization_bit: 4` (or 8)",
    ("stage", "grpo"): "GRPO is not available yet; the stages are pt, sft, rm, dpo, kto and ppo",
    ("stage", "orpo"): "ORPO is `stage: dpo` with `pref_loss: orpo`",
    ("stage", "simpo"): "SimPO is `stage: dpo` with `pref_loss: simpo`",
}


# TrainingArguments fields typed str that LLaMA-Factory configs also give as booleans.
VALUE_FIXES = {"resume_from_checkpoint": _resume_value}


def training_fields() -> dict:
    """Every Hugging Face (Seq2Seq)TrainingArguments field: name -> (annotation, default, help), from the table
    in training_fields.json (no transformers import; a test checks the table against the installed transformers)."""
    from tunesmith.config.training_table import training_fields as from_table

    return from_table()


# Tighter bounds than transformers' own types, so mistakes fail before any work starts.
TRAINING_BOUNDS = {
    "learning_rate": {"gt": 0},
    "num_train_epochs": {"gt": 0},
    "per_device_train_batch_size": {"ge": 1},
    "per_device_eval_batch_size": {"ge": 1},
    "gradient_accumulation_steps": {"ge": 1},
    "logging_steps": {"gt": 0},
    "save_steps": {"gt": 0},
    "eval_steps": {"gt": 0},
    "warmup_steps": {"ge": 0},
    "weight_decay": {"ge": 0},
    "max_grad_norm": {"ge": 0},
    "save_total_limit": {"ge": 1},
}


# transformers accepts more than its annotations say (e.g. `fsdp: true`, which its own warning recommends).
TRAINING_TYPES = {"fsdp": bool | str | list[str] | None}


def training_model() -> type[BaseModel]:
    """A pydantic model built from transformers' TrainingArguments, so its fields are checked like ours."""
    import pydantic

    fields = {}
    for name, (annotation, default, help_text) in training_fields().items():
        annotation = TRAINING_TYPES.get(name, annotation)
        fields[name] = (annotation, Field(default=default, description=help_text, **TRAINING_BOUNDS.get(name, {})))
    return pydantic.create_model(
        "TrainingArgs",
        __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True),
        **fields,
    )
