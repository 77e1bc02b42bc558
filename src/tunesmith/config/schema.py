"""Typed settings grouped by concern; every config key tunesmith knows is declared here, with LLaMA-Factory's names."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator


def _split_commas(value):
    """LLaMA-Factory writes lists as "a,b,c"; YAML lists are accepted too."""
    if value is None:
        return None
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",")]
        return [item for item in items if item]
    if isinstance(value, (list, tuple)):
        return [str(item).strip() for item in value]
    return value


def _split_floats(value):
    items = _split_commas(value) if isinstance(value, str) else value
    return None if items is None else [float(item) for item in items]


NameList = Annotated[list[str] | None, BeforeValidator(_split_commas)]
FloatList = Annotated[list[float] | None, BeforeValidator(_split_floats)]


class Group(BaseModel):
    """Base of every settings group: unknown keys are rejected by the loader, values are validated here."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


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
    low_cpu_mem_usage: bool = Field(True, description="Load weights without a second copy in memory (always, "
                                    "with transformers 5).")

    @field_validator("low_cpu_mem_usage")
    @classmethod
    def _always_low_memory(cls, value):
        if not value:
            raise ValueError("low_cpu_mem_usage: false is not possible: transformers 5 always loads weights without "
                             "a second copy; remove the key")
        return value
    hf_hub_token: str | None = Field(None, description="Token for private hub models.")


class MethodArgs(Group):
    """What to train: stage, fine-tuning type and its options."""

    stage: Literal["pt", "sft", "rm", "dpo", "kto", "ppo"] = Field("sft", description="Training stage.")
    finetuning_type: Literal["lora", "freeze", "full"] = Field("lora", description="Which parameters train.")
    # LoRA
    lora_rank: int = Field(8, ge=1, description="LoRA rank r.")
    lora_alpha: int | None = Field(None, ge=1, description="LoRA alpha; default 2 x lora_rank.")
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    lora_target: NameList = Field(
        ["all"], description="Modules LoRA wraps: 'all' (every linear layer but the output head) or a comma list."
    )
    additional_target: NameList = Field(
        None, description="Modules trained in full and saved with the adapter, e.g. embed_tokens,lm_head."
    )
    loraplus_lr_ratio: float | None = Field(None, gt=0, description="LoRA+: B matrices learn at lr x this ratio.")
    loraplus_lr_embedding: float = Field(1e-6, gt=0, description="LoRA+: learning rate of LoRA embedding layers.")
    use_rslora: bool = Field(False, description="rsLoRA: scale by alpha / sqrt(r) instead of alpha / r.")
    use_dora: bool = Field(False, description="DoRA: weight-decomposed LoRA.")
    pissa_init: bool = Field(False, description="Initialise LoRA with PiSSA (principal singular vectors).")
    pissa_iter: int = Field(16, ge=-1, description="Fast-SVD iterations for PiSSA; -1 = exact SVD.")
    pissa_convert: bool = Field(False, description="Save the PiSSA adapter as a plain LoRA adapter.")
    create_new_adapter: bool = Field(False, description="Merge the given adapters and train a new one on top.")
    # Freeze
    freeze_trainable_layers: int = Field(
        2, description="Freeze tuning: N > 0 trains the last N layers, N < 0 the first |N| layers."
    )
    freeze_trainable_modules: NameList = Field(
        ["all"], description="Freeze tuning: modules trained inside those layers, 'all' or e.g. mlp,self_attn."
    )
    freeze_extra_modules: NameList = Field(
        None, description="Freeze tuning: modules outside the layers that also train, e.g. embed_tokens,norm."
    )
    # Preference and RL stages
    pref_beta: float = Field(0.1, gt=0, description="Beta of the preference loss.")
    pref_ftx: float = Field(0.0, ge=0, description="Weight of the SFT loss mixed into DPO.")
    pref_loss: Literal["sigmoid", "hinge", "ipo", "kto_pair", "orpo", "simpo"] = Field(
        "sigmoid", description="Preference loss."
    )
    dpo_label_smoothing: float = Field(0.0, ge=0, le=0.5, description="Robust DPO label smoothing.")
    kto_chosen_weight: float = Field(1.0, gt=0, description="KTO weight of desirable examples.")
    kto_rejected_weight: float = Field(1.0, gt=0, description="KTO weight of undesirable examples.")
    simpo_gamma: float = Field(0.5, description="SimPO target reward margin.")
    ref_model: str | None = Field(None, description="Reference model for DPO/KTO; default: the initial policy.")
    reward_model: str | None = Field(
        None, description="PPO: reward model folder, the output of stage rm or a one-label sequence classifier."
    )
    ppo_epochs: int = Field(4, ge=1, description="PPO: optimisation epochs over each batch of generated replies.")
    ppo_buffer_size: int = Field(
        1, ge=1, description="PPO: mini-batches (per_device_train_batch_size x gradient_accumulation_steps) per batch "
        "of generated replies."
    )
    ppo_whiten_rewards: bool = Field(False, description="PPO: whiten the rewards before computing the advantages.")
    # Reporting
    compute_accuracy: bool = Field(False, description="Report token accuracy at evaluation.")
    disable_shuffling: bool = Field(False, description="Keep the training data in order.")

    @model_validator(mode="after")
    def _lora_only_options(self):
        if self.finetuning_type != "lora":
            for key in ("loraplus_lr_ratio", "use_rslora", "use_dora", "pissa_init", "create_new_adapter"):
                if getattr(self, key):
                    raise ValueError(f"`{key}` only applies to finetuning_type: lora (got {self.finetuning_type})")
        if self.pissa_convert and not self.pissa_init:
            raise ValueError("`pissa_convert` needs `pissa_init: true`")
        if self.stage == "ppo" and not self.reward_model:
            raise ValueError("stage ppo needs `reward_model`: a reward model folder (the output of a stage rm run, or "
                             "a Hugging Face sequence-classification model with one label)")
        if self.pref_loss == "kto_pair":
            raise ValueError("pref_loss kto_pair is not available with TRL 1.12; use stage: kto with kto_tag data, or "
                             "pref_loss sigmoid, hinge, ipo, orpo or simpo")
        if self.dpo_label_smoothing > 0 and self.pref_loss != "sigmoid":
            raise ValueError("`dpo_label_smoothing` only applies to pref_loss: sigmoid")
        return self


class DataArgs(Group):
    """Which data, in which template, cut how."""

    dataset: NameList = Field(None, description="Training dataset names from dataset_info.json, or file paths.")
    eval_dataset: NameList = Field(None, description="Evaluation dataset names or paths.")
    dataset_dir: str = Field("data", description="Folder holding dataset_info.json and the data files.")
    template: str | None = Field(None, description="Chat template; default: the tokenizer's own chat template.")
    cutoff_len: int = Field(2048, ge=1, description="Maximum tokens per example after tokenization.")
    train_on_prompt: bool = Field(False, description="Also train on the prompt tokens.")
    mask_history: bool = Field(False, description="Train only on the last assistant turn.")
    mix_strategy: Literal["concat", "interleave_under", "interleave_over"] = Field(
        "concat", description="How several datasets are mixed."
    )
    interleave_probs: FloatList = Field(None, description="Sampling probability of each dataset when interleaving.")
    max_samples: int | None = Field(None, ge=1, description="Keep at most this many examples per dataset.")
    val_size: float = Field(0.0, ge=0, description="Held-out evaluation split: a fraction < 1 or a count >= 1.")
    eval_on_each_dataset: bool = Field(False, description="Evaluate each eval dataset separately (not supported).")
    overwrite_cache: bool = Field(False, description="Re-encode even when a cache exists.")
    preprocessing_batch_size: int = Field(1000, ge=1, description="Records per encoding batch.")
    preprocessing_num_workers: int | None = Field(None, ge=1, description="Processes used to encode the data.")
    tokenized_path: str | None = Field(None, description="Save the encoded data here, or load it if it exists.")
    packing: bool | None = Field(None, description="Pack examples into full cutoff_len blocks (default: on for pt).")
    tool_format: str | None = Field(None, description="Tool-call format; default: the template's.")
    default_system: str | None = Field(None, description="Replace the template's default system prompt.")
    enable_thinking: bool | None = Field(True, description="Reasoning templates: keep thinking in training data.")
    streaming: bool = Field(False, description="Stream datasets instead of loading them (not supported yet).")

    @model_validator(mode="after")
    def _consistent(self):
        if self.mask_history and self.train_on_prompt:
            raise ValueError("`mask_history` and `train_on_prompt` cannot both be true")
        if self.val_size > 0 and self.eval_dataset:
            raise ValueError("set either `val_size` or `eval_dataset`, not both")
        if self.val_size > 0 and self.val_size >= 1 and self.val_size != int(self.val_size):
            raise ValueError(f"`val_size` must be a fraction below 1 or a whole count, got {self.val_size}")
        if self.interleave_probs is not None:
            if self.mix_strategy == "concat":
                raise ValueError("`interleave_probs` needs mix_strategy interleave_under or interleave_over")
            if self.dataset and len(self.dataset) != len(self.interleave_probs):
                raise ValueError(
                    f"`interleave_probs` has {len(self.interleave_probs)} values for {len(self.dataset)} datasets"
                )
            if abs(sum(self.interleave_probs) - 1.0) > 1e-6:
                raise ValueError(f"`interleave_probs` must sum to 1, got {sum(self.interleave_probs):g}")
        if self.eval_on_each_dataset:
            raise ValueError("`eval_on_each_dataset` is not supported yet: the eval datasets are merged into one eval "
                             "set; remove it, or evaluate each with its own `tunesmith train` run")
        if self.streaming:
            raise ValueError("`streaming` is not supported yet; remove it (datasets are loaded in full)")
        return self


class OutputArgs(Group):
    """What happens around the output folder."""

    overwrite_output_dir: bool = Field(False, description="Allow writing into a non-empty output_dir.")
    plot_loss: bool = Field(False, description="Save training_loss.png (and eval_loss.png) in output_dir.")


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

    infer_backend: Literal["huggingface", "vllm"] = Field("huggingface", description="Inference engine.")

    @field_validator("infer_backend")
    @classmethod
    def _only_huggingface(cls, value):
        if value == "vllm":  # refused when the config loads, not after the model is chosen
            raise ValueError("infer_backend: vllm is not supported by this tunesmith version; use huggingface")
        return value
    api_host: str = Field("127.0.0.1", description="API server host (0.0.0.0 listens on every interface).")
    api_port: int | None = Field(None, ge=1, le=65535, description="API server port; default $API_PORT or 8000.")
    api_key: str | None = Field(None, description="Key every API request must send; default $API_KEY (none: open).")
    api_model_name: str | None = Field(None, description="Model name the API reports; default the model folder.")
    api_max_input_tokens: int | None = Field(None, ge=1, description="Most prompt tokens per API request (400 "
                                             "context_length_exceeded beyond); default the model's context length.")
    api_request_timeout: float = Field(300, gt=0, description="Seconds an API request may wait for and use the "
                                       "model; its generation stops there (finish_reason length).")
    api_max_queue: int = Field(8, ge=0, description="API requests that may wait while one generates; more get 429.")
    api_max_body_bytes: int = Field(16 * 2**20, ge=1024, description="Largest API request body; larger get 413.")


class ExportArgs(Group):
    """Merging adapters into the base model and saving it."""

    export_dir: str | None = Field(None, description="Where `tunesmith export` writes the merged model.")
    export_size: int = Field(5, ge=1, description="Largest shard of the exported weights, in GB.")
    export_dtype: Literal["float32", "float16", "bfloat16"] = Field("bfloat16", description="Exported weights dtype.")
    export_hub_model_id: str | None = Field(None, description="Also push the export to this hub repo (online).")
    # GGUF (issue 20): llama.cpp/Ollama file + Modelfile instead of safetensors shards
    export_format: Literal["safetensors", "gguf"] = Field("safetensors", description="safetensors shards, or one GGUF "
                                                          "file (llama.cpp/Ollama) with an Ollama Modelfile.")
    export_quantization: Literal["f16", "q8_0", "f32"] = Field("f16", description="GGUF tensor type (f16, q8_0, f32).")


class EvalArgs(Group):
    """Multiple-choice benchmarks (`tunesmith eval`): MMLU/C-Eval/CMMLU-style folders; LLaMA-Factory's names."""

    task: str | None = Field(None, description="Benchmark and split as <benchmark>_<split>, e.g. mmlu_test.")
    task_dir: str = Field("evaluation", description="Folder holding one sub-folder per benchmark.")
    lang: Literal["en", "zh"] = Field("en", description="Language of the prompt around each question.")
    n_shot: int = Field(5, ge=0, description="Few-shot examples from the dev split before each question (by `seed`).")
    batch_size: int = Field(4, ge=1, description="Questions scored per forward pass.")
    save_dir: str | None = Field(None, description="New folder for results.json and results.log (must not exist).")

    @model_validator(mode="after")
    def _task_shape(self):
        if self.task is not None and ("_" not in self.task.strip("_")):
            raise ValueError(f"`task` is <benchmark>_<split>, e.g. mmlu_test or ceval_validation, not {self.task!r}")
        return self


class LaunchArgs(Group):
    """Scale-out: tunesmith relaunches itself under torchrun (DDP, DeepSpeed) when these ask for it."""

    nproc_per_node: int = Field(1, ge=1, description="Processes (GPUs) per node; > 1 launches torchrun.")
    nnodes: int = Field(1, ge=1, description="Number of nodes.")
    node_rank: int = Field(0, ge=0, description="This node's rank (0 on the master).")
    # LLaMA-Factory writes `master_addr: null` / `master_port: null` for "the default"
    master_addr: Annotated[str, BeforeValidator(lambda v: "127.0.0.1" if v is None else v)] = Field(
        "127.0.0.1", description="Address of the rank-0 node.")
    master_port: Annotated[int, BeforeValidator(lambda v: 29500 if v is None else v)] = Field(
        29500, ge=1, le=65535, description="Port of the rank-0 node.")
    ray_num_workers: int = Field(0, ge=0, description="Train on a Ray cluster with this many workers (0 = no Ray).")
    ray_storage_path: str | None = Field(None, description="Where Ray Train keeps run results (default ./saves).")
    ray_address: str | None = Field(None, description="Ray cluster to join; default: start a local one.")
    resources_per_worker: dict[str, float] | None = Field(
        None, description="Ray resources per worker, e.g. {CPU: 2} or {GPU: 1}; default 1 CPU (or 1 GPU)."
    )


GROUPS: dict[str, type[Group]] = {"model": ModelArgs, "method": MethodArgs, "data": DataArgs, "output": OutputArgs,
                                  "generation": GenerationArgs, "infer": InferArgs, "export": ExportArgs,
                                  "launch": LaunchArgs, "eval": EvalArgs}

# Keys from older LLaMA-Factory / transformers configs that map onto a current key.
RENAMED_KEYS = {"warmup_ratio": "warmup_steps", "evaluation_strategy": "eval_strategy", "torch_dtype": "dtype"}

# LLaMA-Factory keys that tunesmith's trainers cannot honour, with the reason shown instead of "unknown key".
UNAVAILABLE_KEYS = {
    "ppo_target": "TRL 1.12's PPO has no adaptive KL target (its KL coefficient is fixed); remove it",
    "ppo_score_norm": "TRL 1.12's PPO does not normalise reward scores; remove it",
}


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
