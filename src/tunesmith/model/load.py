"""Loads the tokenizer and the model (dtype, attention, vocab resize, checkpointing), then applies the method."""

from __future__ import annotations

import importlib.util
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunesmith.errors import DependencyError, ModelError
from tunesmith.hub import hub_problem, is_cached, is_offline, looks_like_hub_id
from tunesmith.model import quantize

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizer

    from tunesmith.config.schema import MethodArgs, ModelArgs

log = logging.getLogger(__name__)

FA2_HELP = (
    "flash_attn: fa2 needs a CUDA GPU and the flash-attn package (pip install flash-attn --no-build-isolation); "
    "use sdpa"
)


def _source_kwargs(model_args: ModelArgs) -> tuple[str, dict[str, Any]]:
    """Where to load from and the shared from_pretrained kwargs; refuses missing folders and offline hub ids."""
    name = model_args.model_name_or_path
    if not name:
        raise ModelError("`model_name_or_path` is not set: point it at a model folder or a hub id")
    kwargs: dict[str, Any] = {
        "trust_remote_code": model_args.trust_remote_code,
        "cache_dir": model_args.cache_dir,
        "revision": model_args.model_revision,
        "token": model_args.hf_hub_token,
    }
    local = Path(name).expanduser()
    if local.is_dir():
        return str(local), kwargs
    if local.exists():
        raise ModelError(f"model path {name} is a file; point model_name_or_path at the model's folder")
    if not looks_like_hub_id(name) or local.parent.name and local.parent.is_dir():  # models/tiny-lama: a local typo
        raise ModelError(f"model folder not found: {name}{_did_you_mean(local)}")
    if is_offline():
        kwargs["local_files_only"] = True  # a copy already in the hub cache still loads
        return name, kwargs
    problem = hub_problem(name, revision=model_args.model_revision, token=model_args.hf_hub_token)
    if problem and is_cached(name, revision=model_args.model_revision, cache_dir=model_args.cache_dir):
        log.warning("%s; loading '%s' from the local hub cache", problem, name)
        kwargs["local_files_only"] = True
    elif problem:
        raise ModelError(f"cannot load model '{name}': {problem}; set HF_HUB_OFFLINE=1 to use only local files")
    return name, kwargs


def _did_you_mean(path: Path) -> str:
    """ "; did you mean X?" from the folders next to a path that does not exist."""
    import difflib

    parent = path.parent if path.parent.is_dir() else None
    if parent is None:
        return ""
    siblings = [child.name for child in parent.iterdir() if child.is_dir()]
    close = difflib.get_close_matches(path.name, siblings, n=2, cutoff=0.6)
    return f"; did you mean {' or '.join(str(parent / name) for name in close)}?" if close else ""


def _not_found(name: str, exc: Exception) -> ModelError:
    unreachable = "couldn't connect" in str(exc).lower()  # transformers' wording when the hub cannot be reached
    if is_offline() or unreachable:
        why = " (the Hugging Face hub cannot be reached)" if unreachable and not is_offline() else ""
        return ModelError(
            f"model '{name}' is not a local folder and tunesmith is offline{why}: download it first "
            "or point model_name_or_path at a folder"
        )
    return ModelError(
        f"could not load model '{name}' from the Hugging Face hub ({type(exc).__name__}: {exc}); check the id, "
        "your connection and hf_hub_token, or point model_name_or_path at a local folder"
    )


def _load_error(name: str, exc: Exception, what: str) -> Exception:
    """A from_pretrained failure as the error to raise: a broken local folder, a missing hub model, or the original
    ValueError (a real bug or an unsupported option) when the name is not a folder."""
    if Path(name).is_dir():
        return ModelError(f"could not load a {what} from {name}: {exc}")
    if isinstance(exc, ValueError):
        return exc
    return _not_found(name, exc)


def load_tokenizer(model_args: ModelArgs, lf_model=None) -> PreTrainedTokenizer:
    """The model's tokenizer from a local folder or a hub id, padding on the right for training; lf_model
    (config.lf_model) adds LLaMA-Factory's add_tokens / add_special_tokens."""
    from transformers import AutoTokenizer

    name, kwargs = _source_kwargs(model_args)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            name,
            use_fast=model_args.use_fast_tokenizer,
            split_special_tokens=model_args.split_special_tokens,
            padding_side="right",
            **kwargs,
        )
    except (OSError, ValueError) as exc:
        raise _load_error(name, exc, "tokenizer") from None
    tokenizer.padding_side = "right"
    if lf_model is not None:
        from tunesmith.model.tokens import add_to_tokenizer

        add_to_tokenizer(tokenizer, lf_model)
    # No pad token is set here: the chat template sets eos first and then pad = eos, as LLaMA-Factory does.
    return tokenizer


def load_image_processor(model_args: ModelArgs):
    """A vision-language model's image processor (transformers' PIL one where torchvision is absent); None for a
    text model."""
    from transformers import AutoConfig, AutoImageProcessor

    name, kwargs = _source_kwargs(model_args)
    try:
        config = AutoConfig.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as exc:
        raise _load_error(name, exc, "model") from None
    from tunesmith.model.omni_config import thinker_config

    config = thinker_config(config)  # a whole Qwen2.5-Omni: its thinker's towers
    if getattr(config, "vision_config", None) is None:
        return None
    try:
        processor = AutoImageProcessor.from_pretrained(name, **kwargs)
    except (OSError, ValueError, ImportError) as exc:
        raise ModelError(f"{name} is a vision-language model ({config.model_type}) but its image processor does not "
                         f"load ({exc.__class__.__name__}: {str(exc)[:200]}); it needs preprocessor_config.json"
                         ) from None
    from tunesmith.model import vision_llava
    from tunesmith.model.vision import image_seq_length

    length = image_seq_length(config)  # Gemma 3 / InternVL: tokens per image (or crop), as their processors hold it
    if length:
        processor.image_seq_length = length
    if config.model_type in vision_llava.ARCHS:  # LF's llava plugins read these from the model's LlavaProcessor
        processor.processor_settings = vision_llava.processor_settings(name, kwargs, config)
    return processor


def save_image_processor(image_processor, folder) -> None:
    """save_pretrained (preprocessor_config.json) without the processor settings load_image_processor attached."""
    settings = vars(image_processor).pop("processor_settings", None)
    try:
        image_processor.save_pretrained(str(folder))
    finally:
        if settings is not None:
            image_processor.processor_settings = settings


def resolve_dtype(name: str) -> torch.dtype:
    """auto -> float32 on CPU, bfloat16 on an accelerator that supports it, else float16; explicit names as given."""
    import torch

    from tunesmith.device import bf16_supported, detect_device

    cuda = detect_device() != "cpu"
    if name == "auto":
        if not cuda:
            return torch.float32
        return torch.bfloat16 if bf16_supported() else torch.float16
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        raise ModelError(f"unknown dtype '{name}': choose auto, float32, bfloat16 or float16")
    dtype = table[name]
    if dtype != torch.float32 and not cuda:
        log.warning("dtype %s on CPU works but is slow; float32 (dtype: auto) is faster there", name)
    return dtype


def attn_implementation(flash_attn: str) -> str:
    """Maps the flash_attn key to transformers' attn_implementation; fa2 without its package or a GPU is an error."""
    import torch

    fa2_ready = importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available()
    if flash_attn == "auto":
        choice = "flash_attention_2" if fa2_ready else "sdpa"
    elif flash_attn == "fa2":
        if not fa2_ready:
            raise DependencyError(FA2_HELP)
        choice = "flash_attention_2"
    elif flash_attn in ("eager", "disabled"):
        choice = "eager"
    elif flash_attn == "sdpa":
        choice = "sdpa"
    else:
        raise ModelError(f"unknown flash_attn '{flash_attn}': choose auto, sdpa, eager, disabled or fa2")
    log.info("attention implementation: %s (flash_attn: %s)", choice, flash_attn)
    return choice


def resize_embeddings(model: PreTrainedModel, tokenizer: PreTrainedTokenizer) -> bool:
    """Grows the embeddings (to a multiple of 64) when the tokenizer has more tokens; new rows = mean + small noise."""
    import torch

    weight = model.get_input_embeddings().weight
    old = getattr(weight, "ds_shape", weight.shape)[0]  # DeepSpeed ZeRO-3 partitions weights: ds_shape is the real one
    if len(tokenizer) <= old:
        return False
    if quantize.is_quantized(model):
        raise ModelError("cannot resize the embeddings of a quantized model; load it without quantization_bit")
    output = model.get_output_embeddings()
    if output is not None and not isinstance(output, torch.nn.Linear):
        raise ModelError(f"cannot resize this model's output layer ({type(output).__name__})")
    model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64, mean_resizing=False)
    new = model.get_input_embeddings().weight.size(0)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    with torch.no_grad():
        _mean_init(model.get_input_embeddings().weight, new - old)
        output = model.get_output_embeddings()
        if output is not None and not tied and output.weight is not model.get_input_embeddings().weight:
            _mean_init(output.weight, new - old)
    model.config.vocab_size = new
    log.info("resized embeddings %d -> %d for %d tokenizer tokens", old, new, len(tokenizer))
    return True


def _mean_init(weight: torch.Tensor, count: int) -> None:
    # Identical rows would make every new token the same; LLaMA-Factory adds noise of std 1/sqrt(dim).
    import torch

    mean = weight[:-count].float().mean(dim=0, keepdim=True)
    noise = torch.randn(count, weight.size(1), dtype=torch.float32, device=weight.device) / math.sqrt(weight.size(1))
    weight[-count:] = (mean + noise).to(weight.dtype)


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts, each shared tensor counted once (4-bit packed weights unpacked)."""
    trainable = total = 0
    for param in model.parameters():
        n = param.numel()
        if type(param).__name__ == "Params4bit":  # bitsandbytes packs two 4-bit values per storage byte
            storage = getattr(param, "quant_storage", None)
            n *= 2 * (getattr(storage, "itemsize", None) or 1)
        total += n
        if param.requires_grad:
            trainable += n
    return trainable, total


def load_model(
    model_args: ModelArgs,
    method_args: MethodArgs,
    tokenizer: PreTrainedTokenizer,
    *,
    is_trainable: bool = True,
    cutoff_len: int | None = None,
    head: str = "causal_lm",
    lf_model=None,
    lf_method=None,
    batch_tokens: int | None = None,
    multimodal=None,
) -> PreTrainedModel:
    """Loads the causal LM (quantized, RoPE-scaled, with kernels as configured; head="value": one score per
    sequence, for reward models), prepares it for training (or inference) and applies LoRA/freeze/full.
    batch_tokens (tokens per training batch and device) lets gradient checkpointing stay off when activations fit."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    from tunesmith.model import kernels, lf_options
    from tunesmith.model.adapters import apply_method
    from tunesmith.model.rope import configure_rope

    name, kwargs = _source_kwargs(model_args)
    heads = {"causal_lm": (AutoModelForCausalLM, {}), "value": (AutoModelForSequenceClassification, {"num_labels": 1})}
    if head not in heads:
        raise ModelError(f"unknown model head '{head}': choose {', '.join(heads)}")
    model_class, head_kwargs = heads[head]
    attn = attn_implementation(model_args.flash_attn)
    dtype = resolve_dtype(model_args.dtype)
    pure_bf16 = lf_method is not None and lf_method.pure_bf16
    if pure_bf16 and is_trainable:  # LLaMA-Factory: compute dtype bfloat16, trainable weights stay bfloat16
        import torch

        dtype = torch.bfloat16
    try:
        model_config = AutoConfig.from_pretrained(name, **kwargs, **head_kwargs)
    except (OSError, ValueError) as exc:
        raise _load_error(name, exc, "model") from None
    from tunesmith.model.omni_config import thinker_config

    model_config = thinker_config(model_config)  # a whole Qwen2.5-Omni trains its thinker, as in LF
    if getattr(model_config, "vision_config", None) is not None and head == "causal_lm":
        from transformers import AutoModelForImageTextToText  # a vision-language model: image-text-to-text class

        model_class = AutoModelForImageTextToText
    elif getattr(model_config, "audio_config", None) is not None and head == "causal_lm":
        from transformers import AutoModelForSeq2SeqLM  # an audio-language model (Qwen2-Audio): LF's class for it

        model_class = AutoModelForSeq2SeqLM
    configure_rope(model_config, model_args, cutoff_len)
    if lf_model is not None:
        lf_options.configure_moe(model_config, lf_model.moe_aux_loss_coef, is_trainable)
    if model_args.enable_liger_kernel:
        kernels.apply_liger(model_config.model_type)
    if model_args.use_unsloth:
        from tunesmith.config.schema import DataArgs

        max_length = cutoff_len or DataArgs.model_fields["cutoff_len"].default
        return kernels.load_with_unsloth(model_args, method_args, dtype, max_length, is_trainable)
    quant_kwargs = quantize.from_pretrained_kwargs(model_args, model_config, dtype)
    load = {"config": model_config, "dtype": dtype, **quant_kwargs, **kwargs}
    if lf_model is not None and lf_model.train_from_scratch:  # LLaMA-Factory's: the config's architecture, random
        if quant_kwargs:
            raise ModelError("train_from_scratch builds random weights, which cannot be loaded quantized; "
                             "remove quantization_bit")
        model = model_class.from_config(model_config, dtype=dtype, attn_implementation=attn,
                                        trust_remote_code=model_args.trust_remote_code)
        log.info("train_from_scratch: %s with random weights from the config of %s", type(model).__name__, name)
    else:
        model = _from_pretrained(model_class, name, attn, load, model_args.flash_attn)
    if quantize.method_of(model_args) == "hqq" and not quantize.existing_quantization(model_config):
        quantize.quantize_hqq(model, model_args, dtype)

    if head == "value" and tokenizer is not None:
        model.config.pad_token_id = pad_id(tokenizer)  # the score is read at the last non-padding token
    resized = tokenizer is not None and resize_embeddings(model, tokenizer)
    if tokenizer is not None and lf_model is not None:
        from tunesmith.model.tokens import initialise

        resized = initialise(model, tokenizer, lf_model) or resized  # new token rows, as LLaMA-Factory sets them
    if resized and method_args.finetuning_type == "freeze" and is_trainable:
        log.warning("embeddings were resized: add embed_tokens,lm_head to freeze_extra_modules to train the new rows")
    if is_trainable and getattr(model, "hf_quantizer", None) is not None:
        model = quantize.prepare_for_kbit_training(model, model_args, checkpointing(model, model_args, batch_tokens))
        model.config.use_cache = False
    elif is_trainable:
        _prepare_for_training(model, model_args, method_args, batch_tokens)
    if is_trainable and lf_model is not None and lf_model.upcast_layernorm:
        lf_options.upcast_layernorm(model)
    if is_trainable and lf_model is not None and lf_model.upcast_lmhead_output:
        lf_options.upcast_lmhead_output(model)

    model = apply_method(
        model, model_args, method_args, is_trainable, embeddings_resized=resized or model_args.resize_vocab,
        lf_method=lf_method, multimodal=multimodal,
    )
    if is_trainable:
        if head == "value" and method_args.finetuning_type == "freeze":
            model.score.requires_grad_(True)  # the new value head always trains
        model.train()
    else:
        model.requires_grad_(False)
        model.eval()

    trainable, total = count_parameters(model)
    if is_trainable:
        log.info(
            "trainable params: %s || all params: %s || trainable%%: %.4f",
            f"{trainable:,}",
            f"{total:,}",
            100 * trainable / max(total, 1),
        )
    else:
        log.info("all params: %s", f"{total:,}")
    return model


def _from_pretrained(model_class, name: str, attn: str, load: dict, flash_attn: str):
    try:
        try:
            return model_class.from_pretrained(name, attn_implementation=attn, **load)
        except ValueError as exc:
            if flash_attn != "auto" or "sdpa" not in str(exc).lower():
                raise
            log.info("this model does not support sdpa attention; using eager")
            return model_class.from_pretrained(name, attn_implementation="eager", **load)
    except (OSError, ValueError) as exc:
        raise _load_error(name, exc, "model") from None


def pad_id(tokenizer) -> int:
    """The id that pads batches (and marks where a value head reads its score): pad, else eos. The chat template
    sets pad = eos when a tokenizer has neither, so a tokenizer without both was never given a template."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return token_id
    raise ModelError("the tokenizer has neither a pad nor an eos token; set `template` so that one is added")


def activation_bytes(model, batch_tokens: int) -> float:
    """What one training batch's activations hold without checkpointing: model/memory.py's estimate (the one
    `tunesmith estimate` prints, checked against measured memory in bench/README.md) for the loaded model's shape,
    dtype and attention (eager attention keeps its probabilities; the batch taken as one row, generously)."""
    import torch

    from tunesmith.model.shape import activation_bytes as estimate
    from tunesmith.model.shape import text_shape

    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    itemsize = torch.finfo(model.dtype).bits // 8 if model.dtype.is_floating_point else 4
    eager = getattr(model.config, "_attn_implementation", None) == "eager"
    return estimate(text_shape(config), 1, batch_tokens, itemsize, checkpointing=False, eager=eager)


def free_memory(model) -> int:
    """Bytes still free where the model trains: the accelerator's free memory, else available RAM per process."""
    import os

    import torch

    device = getattr(model, "device", None)
    if device is not None and device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil  # a dependency of accelerate

    return psutil.virtual_memory().available // max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)


def checkpointing(model, model_args: ModelArgs, batch_tokens: int | None) -> bool:
    """Whether to checkpoint activations: `disable_gradient_checkpointing` decides when set (false forces it on);
    unset, it is off when the estimated activations fit in half the free memory (recomputing the forward pass costs
    about a third of the step), and on when they may not or the batch size is unknown."""
    if "disable_gradient_checkpointing" in model_args.model_fields_set:
        return not model_args.disable_gradient_checkpointing
    if not batch_tokens:
        return True
    need, free = activation_bytes(model, batch_tokens), free_memory(model)
    fits = need < free // 2
    log.info("gradient checkpointing %s: activations of about %.2f GB for %d tokens per batch, %.1f GB free "
             "(set disable_gradient_checkpointing: %s)", "off" if fits else "on", need / 1e9, batch_tokens,
             free / 1e9, "false to force it on" if fits else "true to turn it off")
    return not fits


def _prepare_for_training(model: PreTrainedModel, model_args: ModelArgs, method_args: MethodArgs,
                          batch_tokens: int | None = None) -> None:
    """No KV cache; non-reentrant gradient checkpointing unless disabled or not needed; input grads for frozen
    embeddings."""
    model.config.use_cache = False  # the KV cache is useless in training and conflicts with checkpointing
    if not checkpointing(model, model_args, batch_tokens):
        return
    if not getattr(model, "supports_gradient_checkpointing", False):
        log.warning("%s does not support gradient checkpointing; training without it", type(model).__name__)
        return
    # transformers 5: activation_checkpointing_enable replaces the deprecated gradient_checkpointing_enable.
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if method_args.finetuning_type in ("lora", "oft", "freeze") and not getattr(model, "_require_grads_hooks", None):
        model.enable_input_require_grads()  # frozen embeddings would otherwise cut the graph at the input
    log.info("gradient checkpointing enabled (non-reentrant)")
