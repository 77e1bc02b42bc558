"""Quantized loading: bitsandbytes 4/8-bit through transformers, HQQ by swapping linear layers for HQQLinear."""

from __future__ import annotations

import importlib.util
import logging

from tunesmith.errors import ConfigError, DependencyError

log = logging.getLogger(__name__)

METHODS = {"bitsandbytes": "bitsandbytes", "bnb": "bitsandbytes", "hqq": "hqq"}
BITS = {"bitsandbytes": (4, 8), "hqq": (4, 8)}
INSTALL = {"bitsandbytes": "pip install 'tunesmith[quant]' (bitsandbytes)", "hqq": "pip install 'tunesmith[quant]' (hqq)"}


def method_of(model_args) -> str | None:
    """The quantization backend to use, or None; checks the package and the bit width first."""
    if model_args.quantization_bit is None:
        return None
    method = METHODS[model_args.quantization_method]
    if model_args.quantization_bit not in BITS[method]:
        raise ConfigError(f"quantization_method {method} supports {BITS[method]} bits, not "
                          f"{model_args.quantization_bit}")
    if importlib.util.find_spec(method) is None:
        raise DependencyError(f"quantization_method {method} needs the {method} package: {INSTALL[method]}")
    return method


def is_quantized(model) -> bool:
    """Whether a loaded model holds quantized weights (loaded with quantization_bit, HQQ-swapped, or a quantized
    checkpoint such as GPTQ/AWQ): the one check every caller uses."""
    return bool(getattr(model, "quantization_method", None) or getattr(model, "hf_quantizer", None)
                or existing_quantization(model.config))


def existing_quantization(config) -> str | None:
    """The quant method of a checkpoint that is already quantized (GPTQ, AWQ, bnb...), else None."""
    quant = getattr(config, "quantization_config", None)
    if quant is None:
        return None
    return quant.get("quant_method") if isinstance(quant, dict) else getattr(quant, "quant_method", "unknown")


def bnb_config(model_args, compute_dtype):
    from transformers import BitsAndBytesConfig

    if model_args.quantization_bit == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=model_args.quantization_type,
                              bnb_4bit_use_double_quant=model_args.double_quantization,
                              bnb_4bit_compute_dtype=compute_dtype)


def from_pretrained_kwargs(model_args, model_config, compute_dtype) -> dict:
    """Extra from_pretrained kwargs for bitsandbytes; HQQ is applied after loading (see quantize_hqq)."""
    present = existing_quantization(model_config)
    if present:
        if model_args.quantization_bit is not None:
            log.warning("%s is already quantized (%s): its own quantization config is used and quantization_bit "
                        "is ignored", model_args.model_name_or_path, present)
        else:
            log.info("loading a %s-quantized checkpoint with its own quantization config", present)
        return {}
    method = method_of(model_args)
    if method != "bitsandbytes":
        return {}
    import torch

    log.info("quantizing to %d-bit with bitsandbytes%s", model_args.quantization_bit,
             f" ({model_args.quantization_type}, double quant {model_args.double_quantization})"
             if model_args.quantization_bit == 4 else "")
    device_map = {"": torch.cuda.current_device()} if torch.cuda.is_available() else {"": "cpu"}
    return {"quantization_config": bnb_config(model_args, compute_dtype), "device_map": device_map}


def quantize_hqq(model, model_args, compute_dtype) -> None:
    """Replaces every linear layer but the output head with an HQQ-quantized one (transformers 5 has no HqqConfig)."""
    import torch
    from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

    config = BaseQuantizeConfig(nbits=model_args.quantization_bit, group_size=model_args.hqq_group_size)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    output = model.get_output_embeddings()
    count = 0
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear) and child is not output:
                setattr(module, child_name, HQQLinear(child, quant_config=config, compute_dtype=compute_dtype,
                                                      device=device, del_orig=True))
                count += 1
    model.hqq_quantized = True
    log.info("quantized %d linear layers to %d-bit with HQQ (group size %d)", count, model_args.quantization_bit,
             model_args.hqq_group_size)


def prepare_for_kbit_training(model, model_args, gradient_checkpointing: bool):
    """peft's preparation for training adapters on a quantized model (bitsandbytes)."""
    from peft import prepare_model_for_kbit_training

    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                            gradient_checkpointing_kwargs={"use_reentrant": False})
    _own_cpu_weights(model)
    return model


def _own_cpu_weights(model) -> None:
    """Copies the unquantized CPU weights into the process's own memory. transformers leaves the weights bitsandbytes
    does not quantize (embeddings, head, norms) as views into the memory-mapped checkpoint, and that mapping keeps
    every page read while quantizing resident for the whole run (issue 15's 39M llama: 89 MB of its 158 MB file, for
    66 MB of such weights). Tied weights stay tied: they are one Parameter."""
    import torch

    floats = (torch.float32, torch.float16, torch.bfloat16)
    for param in model.parameters():
        if param.device.type == "cpu" and param.dtype in floats and not param.requires_grad:
            param.data = param.data.clone()
