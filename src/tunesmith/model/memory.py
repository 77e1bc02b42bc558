"""Training memory per device (weights, gradients, optimizer states, activations; DDP/ZeRO shares) from a model's
config on the meta device, with the formulas' sources."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from tunesmith.errors import ConfigError, ModelError
from tunesmith.model.shape import Shape, activation_bytes, text_shape

GIB = 2**30
# Optimizer state bytes per trainable parameter. AdamW keeps two fp32 moments (Loshchilov & Hutter 2019; the
# "K = 12" of ZeRO, Rajbhandari et al. 2020 sec. 3.1, is these 8 plus a 4-byte fp32 master copy of half-precision
# weights); bitsandbytes' 8-bit optimizers keep both moments in one byte each (Dettmers et al. 2022, "8-bit
# Optimizers via Block-wise Quantization"); Adafactor factors the second moment into row and column vectors (Shazeer &
# Stern 2018): about 0 per parameter of a matrix, counted here as 4 / min(rows, cols) ~ 0. Lion keeps one moment.
OPTIMIZER_BYTES = {
    "adamw_torch": 8,
    "adamw_torch_fused": 8,
    "adamw_hf": 8,
    "adamw_torch_xla": 8,
    "adamw_apex_fused": 8,
    "adamw_anyprecision": 8,
    "adamw_bnb_8bit": 2,
    "adamw_8bit": 2,
    "paged_adamw_8bit": 2,
    "paged_adamw_32bit": 8,
    "lion_32bit": 4,
    "lion_8bit": 1,
    "paged_lion_32bit": 4,
    "paged_lion_8bit": 1,
    "adafactor": 0.05,
    "sgd": 0,
    "adagrad": 4,
    "rmsprop": 4,
    "rmsprop_bnb_8bit": 1,
}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# bitsandbytes storage per quantized weight: NF4 packs two values a byte plus one fp32 absmax per block of 64; double
# quantization stores those absmax in 8 bits with an fp32 scale per 256 blocks (Dettmers et al. 2023, QLoRA sec. 3:
# 32/64 = 0.5 bits -> 8/64 + 32/(64*256) = 0.127 bits of overhead per parameter). LLM.int8 keeps one byte per weight
# and an fp32 scale per row (Dettmers et al. 2022), negligible per weight.
QUANT_BYTES = {(4, True): 0.5 + 0.127 / 8, (4, False): 0.5 + 0.5 / 8, (8, True): 1.0, (8, False): 1.0}
PAIRED_STAGES = {"rm": 2, "dpo": 2, "kto": 2}  # sequences per example: chosen + rejected (KTO: + its KL batch)


@dataclasses.dataclass
class DataStats:
    """The encoded training set: examples, tokens (every sequence of an example) and the longest sequence."""

    examples: int
    tokens: int
    longest: int


def data_stats(dataset) -> DataStats:
    columns = [c for c in dataset.column_names if c.endswith("input_ids")]
    lengths = [len(ids) for column in columns for ids in dataset[column]]
    if not lengths:
        raise ConfigError("estimate: the encoded training data has no input_ids")
    return DataStats(len(dataset), sum(lengths), max(lengths))


@dataclasses.dataclass
class Estimate:
    """Bytes per device (weights, gradients, optimizer states, activations) and the run's tokens and time."""

    shape: Shape
    weights: float
    gradients: float
    optimizer: float
    activations: float
    peak: float
    host: float  # bytes offloaded to CPU memory per process (ZeRO offload)
    tokens_per_micro_batch: int
    seq_len: int
    world: int
    strategy: str
    train_tokens: int | None = None
    steps: int | None = None
    tokens_per_second: float | None = None
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def seconds(self) -> float | None:
        if self.train_tokens is None or not self.tokens_per_second:
            return None
        return self.train_tokens / self.tokens_per_second

    @property
    def flops(self) -> float | None:
        """Training FLOPs: 6 per parameter per token for full training (Kaplan et al. 2020, sec. 2.1: 2 forward, 4
        backward), 4 when no weight gradient is formed for frozen weights (2 forward + 2 for input gradients), +2
        with checkpointing's second forward (Chen et al. 2016)."""
        if self.train_tokens is None:
            return None
        frozen = self.shape.parameters - self.shape.trainable
        per_token = 6 * self.shape.trainable + 4 * frozen
        if "checkpointing" in self.strategy:
            per_token += 2 * self.shape.parameters
        return per_token * self.train_tokens


def count_shape(config) -> Shape:
    """Parameters, trainable parameters and weight bytes of the model the config trains, built on the meta device
    (no weights read) with tunesmith's own LoRA/Freeze/Full setup."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tunesmith.model.adapters import apply_method
    from tunesmith.model.load import resolve_dtype

    model_args = config.model.model_copy(update={"adapter_name_or_path": None})
    try:
        model_config = AutoConfig.from_pretrained(
            model_args.model_name_or_path,
            trust_remote_code=model_args.trust_remote_code,
            cache_dir=model_args.cache_dir,
        )
    except (OSError, ValueError) as exc:
        raise ModelError(f"estimate: cannot read the config of {model_args.model_name_or_path}: {exc}") from None
    from tunesmith.model.omni_config import thinker_config

    model_config = thinker_config(model_config)  # a whole Qwen2.5-Omni trains its thinker
    text = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    dtype = resolve_dtype(model_args.dtype)
    try:  # under ZeRO-3, from_config would partition the model with collectives (deepspeed.zero.Init), and only
        # rank 0 estimates: the other ranks would then mismatch; a meta model needs no partitioning
        from transformers.modeling_utils import set_zero3_state as no_zero3_init
    except ImportError:
        from contextlib import nullcontext as no_zero3_init
    model_class = AutoModelForCausalLM
    if getattr(model_config, "vision_config", None) is not None:  # a vision-language model, as model/load.py builds it
        from transformers import AutoModelForImageTextToText as model_class
    elif getattr(model_config, "audio_config", None) is not None:  # an audio-language model (model/load.py)
        from transformers import AutoModelForSeq2SeqLM as model_class
    with torch.device("meta"), no_zero3_init():
        model = model_class.from_config(
            model_config, dtype=dtype, trust_remote_code=model_args.trust_remote_code
        )
    model = apply_method(model, model_args, config.method, True)
    bits, double = config.model.quantization_bit, config.model.double_quantization
    output = model.get_output_embeddings()
    quantized = set()
    if bits:  # bitsandbytes/HQQ quantize every linear layer but the output head
        quantized = {
            id(m.weight)
            for m in model.modules()
            if isinstance(m, torch.nn.Linear)
            and m is not output
            and not m.weight.requires_grad
            and "lora_" not in type(m).__name__
        }
    seen, total, trainable, weight_bytes, lora_modules = set(), 0, 0, 0.0, 0
    for name, param in model.named_parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
            weight_bytes += param.numel() * 4  # upcast_trainable keeps trainable weights in float32
        elif id(param) in quantized:
            weight_bytes += param.numel() * QUANT_BYTES[(bits, double)]
        else:  # peft's prepare_model_for_kbit_training casts the rest of a quantized model to float32
            weight_bytes += param.numel() * (4 if bits else param.element_size())
        lora_modules += name.endswith("lora_A.default.weight")
    return text_shape(
        text,
        parameters=total,
        trainable=trainable,
        weight_bytes=weight_bytes,
        dtype=str(dtype).removeprefix("torch."),
        lora_rank=config.method.lora_rank if lora_modules else 0,
        lora_modules_per_layer=lora_modules // max(text.num_hidden_layers, 1),
    )


def _deepspeed(config) -> dict:
    value = config.training_kwargs().get("deepspeed")
    if not value:
        return {}
    if isinstance(value, dict):
        return value
    try:
        return json.loads(Path(value).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"deepspeed: cannot read {value}: {exc}") from None


def _offloaded(zero: dict, key: str) -> bool:
    return (zero.get(key) or {}).get("device", "none") in ("cpu", "nvme")


def world_size(config) -> int:
    launch = config.launch
    return max(launch.ray_num_workers, launch.nproc_per_node * launch.nnodes, 1)


def estimate(
    config, shape: Shape, seq_len: int, data: DataStats | None = None, tokens_per_second: float | None = None
) -> Estimate:
    """The per-device memory of training `shape` as `config` says, on micro-batches of `seq_len` tokens; with `data`
    (the encoded training set) also the run's tokens, steps and, given a throughput, its time."""
    from transformers import TrainingArguments

    given = config.training_kwargs()
    optim = str(given.get("optim", TrainingArguments.__dataclass_fields__["optim"].default))
    optim = optim.split(".")[-1].lower().removeprefix("optimizernames.")
    notes = []
    if optim not in OPTIMIZER_BYTES:
        notes.append(f"optimizer {optim}: states counted as AdamW's (8 bytes per trainable parameter)")
    batch = int(given.get("per_device_train_batch_size", 8)) * PAIRED_STAGES.get(config.method.stage, 1)
    checkpointing = not config.model.disable_gradient_checkpointing
    eager = config.model.flash_attn in ("eager", "disabled")
    elem = DTYPE_BYTES[shape.dtype]  # activations are in the compute dtype
    if given.get("bf16") or given.get("fp16"):
        elem = 2  # autocast: matmul outputs (most activations) in half precision
    weights, gradients = shape.weight_bytes, shape.trainable * 4.0
    optimizer = shape.trainable * OPTIMIZER_BYTES.get(optim, 8)
    if (
        config.method.stage in ("dpo", "kto")
        and config.method.finetuning_type != "lora"
        and not config.method.ref_model
    ):
        weights += shape.parameters * elem  # a frozen copy of the policy as the reference model
        notes.append("reference model: a frozen copy of the policy")
    if config.method.stage == "ppo":
        notes.append("stage ppo: value, reward and reference models are not counted")
    activations = activation_bytes(shape, batch, seq_len, elem, checkpointing=checkpointing, eager=eager)
    world = world_size(config)
    ds = _deepspeed(config)
    zero = ds.get("zero_optimization") or {}
    stage = int(zero.get("stage", 0)) if ds else 0
    host = 0.0
    if stage:
        # ZeRO partitions optimizer states (stage 1), + gradients (2), + parameters (3) over the data-parallel world
        # (Rajbhandari et al. 2020, fig. 1); under bf16/fp16 it adds an fp32 master copy to the optimizer states.
        if given.get("bf16") or given.get("fp16") or shape.dtype != "float32":
            optimizer += shape.trainable * 4
        optimizer /= world
        if stage >= 2:
            gradients /= world
        if stage >= 3:
            weights /= world
        if _offloaded(zero, "offload_optimizer"):
            host += optimizer
            optimizer = 0.0
        if stage >= 3 and _offloaded(zero, "offload_param"):
            host += weights
            weights = 0.0
        strategy = f"ZeRO-{stage}" + (" + offload" if host else "")
    elif world > 1:
        # DDP keeps a flat bucket copy of every gradient for its all-reduce (PyTorch DDP design notes: "gradient
        # buckets"; gradient_as_bucket_view=False, the default)
        gradients *= 2
        strategy = "DDP"
    else:
        strategy = "1 device"
    strategy += " + checkpointing" if checkpointing else ""
    # Peak: at the end of the first forward (weights + activations), or at the optimizer step, where gradients are
    # whole and torch's foreach AdamW holds one temporary per trainable tensor (torch/optim/adamw.py _multi_tensor).
    step_temp = shape.trainable * 4.0 / (world if stage >= 2 else 1)
    peak = weights + optimizer + max(activations, gradients + step_temp)
    accumulation = int(given.get("gradient_accumulation_steps", 1))
    per_device = int(given.get("per_device_train_batch_size", 8))
    train_tokens = steps = None
    if data is not None:
        epochs = float(given.get("num_train_epochs", 3.0))
        steps_per_epoch = math.ceil(data.examples / (per_device * accumulation * world))
        max_steps = int(given.get("max_steps", -1))
        steps = max_steps if max_steps > 0 else math.ceil(steps_per_epoch * epochs)
        train_tokens = int(data.tokens * steps / steps_per_epoch)
    return Estimate(
        shape,
        weights,
        gradients,
        optimizer,
        activations,
        peak,
        host,
        batch * seq_len,
        seq_len,
        world,
        strategy,
        train_tokens,
        steps,
        tokens_per_second,
        notes,
    )


def free_memory() -> tuple[str, float | None]:
    """(device, free bytes): the accelerator's free memory (CUDA), else the host's available memory."""
    from tunesmith.device import detect_device

    device = detect_device()
    if device == "cuda":
        import torch

        return "cuda", float(torch.cuda.mem_get_info()[0])
    try:
        import psutil

        return "cpu", float(psutil.virtual_memory().available)
    except ImportError:
        return device, None


def size(n: float) -> str:
    """Bytes as GiB (or MiB below 0.1 GiB)."""
    return f"{n / GIB:.2f} GiB" if n >= GIB / 10 else f"{n / 2**20:.1f} MiB"


def build(config, dataset=None, tokens_per_second: float | None = None) -> Estimate:
    """The estimate for `config`; `dataset` (encoded training data) gives the sequence length and the token count,
    else micro-batches are taken as cutoff_len long."""
    shape = count_shape(config)
    stats = data_stats(dataset) if dataset is not None else None
    packing = config.data.packing if config.data.packing is not None else config.method.stage == "pt"
    seq_len = config.data.cutoff_len if stats is None or packing else min(stats.longest, config.data.cutoff_len)
    return estimate(config, shape, seq_len, stats, tokens_per_second)
