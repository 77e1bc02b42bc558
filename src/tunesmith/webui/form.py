"""The training form as data: which keys it shows, and form values -> the YAML and command line the CLI runs."""

from __future__ import annotations

import dataclasses
import typing
from functools import cache
from pathlib import Path

# Sections of the Train tab, in order; every key of our own groups appears in exactly one. The first three (the most
# used options) are always shown; the rest are closed sections in LLaMA-Factory's board order.
SECTIONS: dict[str, list[str]] = {
    "model": ["model_name_or_path", "finetuning_type", "template", "quantization_bit", "adapter_name_or_path"],
    "train": ["stage", "dataset_dir", "dataset", "learning_rate", "num_train_epochs", "cutoff_len",
              "per_device_train_batch_size", "gradient_accumulation_steps"],
    "lora": ["lora_rank", "lora_alpha", "lora_dropout", "lora_target"],
    "quantization": ["quantization_method", "quantization_type", "double_quantization", "hqq_group_size"],
    "rope": ["rope_scaling", "rope_scaling_factor"],
    "booster": ["flash_attn", "use_unsloth", "enable_liger_kernel", "dtype", "bf16", "fp16",
                "disable_gradient_checkpointing"],
    "lora_more": ["loraplus_lr_ratio", "loraplus_lr_embedding", "create_new_adapter", "use_rslora", "use_dora",
                  "pissa_init", "pissa_iter", "pissa_convert", "additional_target"],
    "train_more": ["max_steps", "max_samples", "max_grad_norm", "val_size", "eval_dataset", "lr_scheduler_type",
                   "warmup_steps", "optim", "neftune_noise_alpha", "seed", "resume_from_checkpoint"],
    "data_more": ["packing", "train_on_prompt", "mask_history", "mix_strategy", "interleave_probs",
                  "eval_on_each_dataset", "disable_shuffling", "streaming", "overwrite_cache",
                  "preprocessing_batch_size", "preprocessing_num_workers", "tokenized_path", "tool_format",
                  "default_system", "enable_thinking"],
    "logging": ["logging_steps", "save_steps", "save_total_limit", "eval_strategy", "eval_steps", "compute_accuracy",
                "report_to", "plot_loss", "include_num_input_tokens_seen"],
    "loading": ["trust_remote_code", "cache_dir", "model_revision", "hf_hub_token", "use_fast_tokenizer",
                "split_special_tokens", "resize_vocab", "low_cpu_mem_usage"],
    "freeze": ["freeze_trainable_layers", "freeze_trainable_modules", "freeze_extra_modules"],
    "multimodal": ["media_dir", "image_max_pixels", "image_min_pixels", "image_do_pan_and_scan", "crop_to_patches",
                   "audio_sampling_rate", "video_fps", "video_maxlen", "video_max_pixels", "video_min_pixels",
                   "freeze_vision_tower", "freeze_multi_modal_projector", "freeze_language_model"],
    "rlhf": ["pref_beta", "pref_ftx", "pref_loss", "dpo_label_smoothing", "kto_chosen_weight", "kto_rejected_weight",
             "simpo_gamma", "ref_model", "reward_model", "ppo_epochs", "ppo_buffer_size", "ppo_whiten_rewards",
             "reward_funcs", "reward_pattern", "num_generations", "max_completion_length", "beta", "epsilon",
             "loss_type"],
    "output": ["output_dir", "overwrite_output_dir", "nproc_per_node", "nnodes", "node_rank", "master_addr",
               "master_port", "use_ray", "ray_num_workers", "ray_storage_path", "ray_address", "ray_init_kwargs",
               "resources_per_worker"],
}
ALWAYS_SHOWN = ("model", "train", "lora")
# The Evaluate & Predict tab: benchmark keys (`tunesmith eval` with `task`), predict keys (do_predict with BLEU/ROUGE),
# and save_dir shared by both. The model keys come from the Train tab's Model section.
EVAL_SECTIONS: dict[str, list[str]] = {
    "benchmark": ["task_dir", "task", "lang", "n_shot", "batch_size"],
    "predict": ["eval_dataset", "max_samples", "max_new_tokens", "per_device_eval_batch_size"],
    "common": ["save_dir"],
}
# Train-tab keys an eval or predict run also reads.
EVAL_CARRIED = [*SECTIONS["model"], *SECTIONS["quantization"], *SECTIONS["rope"], *SECTIONS["loading"], "flash_attn",
                "use_unsloth", "enable_liger_kernel", "dtype", "disable_gradient_checkpointing", "dataset_dir",
                "cutoff_len", "seed", *SECTIONS["multimodal"][:6]]  # predict reads images/audios as training did
DEMO_BENCHMARK = Path(__file__).resolve().parents[1] / "evaluate" / "demo_benchmark"
EVAL_DEFAULTS = {"task_dir": str(DEMO_BENCHMARK), "task": "demo_en_test", "max_new_tokens": 64, "max_samples": 20}
# Keys whose form default differs from the schema's (the form starts from a sensible run).
FORM_DEFAULTS = {"learning_rate": 5e-5, "num_train_epochs": 3.0, "per_device_train_batch_size": 2,
                 "gradient_accumulation_steps": 8, "logging_steps": 5, "save_steps": 100, "report_to": "none",
                 "plot_loss": True, "cutoff_len": 2048, "dataset_dir": "data", "output_dir": "saves/run",
                 "include_num_input_tokens_seen": "non_padding"}  # counted: the page shows tokens/s


# TrainingArguments keys typed loosely (str) whose useful values are few: dropdowns.
TRAINING_CHOICES = {
    "lr_scheduler_type": ("choice", ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                                     "constant_with_warmup", "inverse_sqrt")),
    "include_num_input_tokens_seen": ("choice", ("no", "non_padding", "all")),
}


@dataclasses.dataclass(frozen=True)
class Field:
    """One form input: its key, widget kind, choices (for dropdowns), default and English help."""

    key: str
    kind: str  # "choice", "bool", "int", "float", "text", "list"
    choices: tuple = ()
    default: object = None
    help: str = ""


def _kind(annotation) -> tuple[str, tuple]:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return "choice", typing.get_args(annotation)
    for arg in args:  # Optional[Literal[...]] and friends
        if typing.get_origin(arg) is typing.Literal:
            return "choice", (None, *typing.get_args(arg))
        if typing.get_origin(arg) is typing.Annotated:
            return _kind(arg)
    base = args[0] if args else annotation
    if typing.get_origin(base) is list or typing.get_origin(annotation) is typing.Annotated:
        return "list", ()
    if base is dict or typing.get_origin(base) is dict:
        return "yaml", ()
    if base is bool:
        return "bool", ()
    if base is int:
        return "int", ()
    if base is float:
        return "float", ()
    return "text", ()


@cache
def fields() -> dict[str, Field]:
    """Every key the form shows, typed from the config schema (and transformers' TrainingArguments)."""
    from tunesmith.config.schema import GROUPS, training_fields

    out = {}
    for group in GROUPS.values():
        for key, info in group.model_fields.items():
            kind, choices = _kind(info.annotation)
            default = FORM_DEFAULTS.get(key, info.default)
            if kind == "bool" and default is None:  # unset/true/false: a checkbox would write false when left alone
                kind, choices = "choice", (None, True, False)
            out[key] = Field(key, kind, tuple(choices), default, info.description or "")
    train = training_fields()
    shown = [k for sections in (SECTIONS, EVAL_SECTIONS) for keys in sections.values() for k in keys]
    for key in (k for k in shown if k not in out):
        annotation, default, help_text = train[key]
        kind, choices = _kind(annotation)
        kind, choices = TRAINING_CHOICES.get(key, (kind, choices))
        out[key] = Field(key, kind, tuple(choices), FORM_DEFAULTS.get(key, getattr(default, "value", default)),
                         " ".join(help_text.split())[:200])
    return out


def component(gr, field: Field, lang: str = "en", elem_id: str | None = None):
    """The input widget of one config key, labelled in lang; its elem_id is the key unless given (the page shows the
    key beside the label, see webui/style.py)."""
    from tunesmith.webui.texts import label

    text, help_text = label(lang, field.key, field.help)
    common = {"label": text, "info": help_text, "value": field.default, "elem_id": elem_id or field.key,
              "elem_classes": ["ts-field"]}
    if field.kind == "choice":
        return gr.Dropdown(choices=list(field.choices), **common)
    if field.kind == "bool":
        return gr.Checkbox(**common)
    if field.kind in ("int", "float") and field.default is not None:  # a browser sends an empty Number as 0
        return gr.Number(precision=0 if field.kind == "int" else None, **common)
    if field.kind == "list":
        value = ",".join(field.default) if isinstance(field.default, list) else field.default
        return gr.Textbox(**{**common, "value": value})
    return gr.Textbox(**{**common, "value": None if field.default is None else str(field.default)})


def named_keys(message: str, keys) -> list[str]:
    """The form keys an error message names (as whole words): the fields the page marks as holding a bad value."""
    import re

    return [key for key in keys if re.search(rf"(?<![\w]){re.escape(key)}(?![\w])", message or "")]


def _clean(field: Field, value):
    if value is None or value == "" or value == []:
        return None
    try:  # optional numbers are text boxes; what does not parse is left for the config checks to name
        if field.kind == "int":
            return int(float(value)) if float(value).is_integer() else value
        if field.kind == "float":
            return float(value)
    except ValueError:
        return value
    if field.kind == "yaml" and isinstance(value, str):
        import yaml

        return yaml.safe_load(value)
    if field.kind == "list" and isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return value


def to_config(values: dict) -> dict:
    """Form values -> the config dict: empty inputs and values equal to the schema's defaults are left out."""
    from tunesmith.config.schema import GROUPS

    schema_defaults = {key: info.default for group in GROUPS.values() for key, info in group.model_fields.items()}
    config = {}
    for key, value in values.items():
        field = fields()[key]
        value = _clean(field, value)
        if value is None:
            continue
        default = schema_defaults.get(key, "__none__")
        if isinstance(default, list):
            default = ",".join(default)
        if value == default and key not in FORM_DEFAULTS:
            continue
        config[key] = value
    return config


def to_yaml(config: dict) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


def command_line(config_path: str | Path, job: str = "train") -> str:
    return f"tunesmith {job} {config_path}"


def eval_config(train_config: dict, values: dict, mode: str) -> dict:
    """The YAML `tunesmith eval` reads: the Train tab's model keys plus the benchmark or the predict keys."""
    config = {key: value for key, value in train_config.items() if key in EVAL_CARRIED}
    if mode == "predict":
        config.update(do_predict=True, predict_with_generate=True)
    chosen = [*EVAL_SECTIONS["benchmark" if mode == "benchmark" else "predict"], *EVAL_SECTIONS["common"]]
    for key, value in to_config({key: values.get(key) for key in chosen}).items():
        config[key] = value
    return config


@cache
def families() -> dict[str, dict]:
    """Model family -> {template, path}: the web UI's model-name table (families.yaml)."""
    import yaml

    return yaml.safe_load((Path(__file__).parent / "families.yaml").read_text(encoding="utf-8"))


def validate(config: dict) -> str | None:
    """The CLI's own validation of the form's config: None when valid, else the error message."""
    from tunesmith.config.load import load_config
    from tunesmith.errors import TunesmithError

    try:
        load_config(None, config)
    except TunesmithError as exc:
        return str(exc)
    return None
