"""LoRA through peft: target discovery and validation, adapter loading/merging, LoRA+ optimizer, PiSSA conversion."""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from tunesmith.errors import ConfigError, ModelError
from tunesmith.model.quantize import is_quantized

if TYPE_CHECKING:
    import torch

    from tunesmith.config.schema import MethodArgs, ModelArgs

log = logging.getLogger(__name__)

# Module-name components of multimodal parts that "all" never targets.
VISION_KEYS = (
    "vision_tower",
    "visual",
    "vision_model",
    "vision_encoder",
    "image_encoder",
    "multi_modal_projector",
    "mm_projector",
    "audio_tower",
)
VALUE_HEADS = ("score", "classifier", "v_head")  # value/classification heads: trained in full, never LoRA-wrapped

PISSA_INIT_DIR = "pissa_init"


def _is_linear(module) -> bool:
    # By class name like LLaMA-Factory, so quantized linears (Linear4bit, Linear8bitLt, QLinear...) count too.
    name = type(module).__name__
    return ("Linear" in name and "Embedding" not in name) or name == "Conv1D"


def _is_wrappable(module) -> bool:
    import torch

    return _is_linear(module) or isinstance(module, (torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d))


def _output_module_names(model) -> set[str]:
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return {name for name, module in model.named_modules() if output is not None and module is output}


def find_all_linear_modules(model) -> list[str]:
    """Every linear layer's short name except the output head and vision/audio parts (full names on a clash)."""
    heads = _output_module_names(model) | {"lm_head", *VALUE_HEADS}
    allowed: dict[str, list[str]] = {}
    blocked: set[str] = set()
    for name, module in model.named_modules():
        if not name or not _is_linear(module):
            continue
        short = name.split(".")[-1]
        if name in heads or short in ("lm_head", *VALUE_HEADS) or any(part in VISION_KEYS for part in name.split(".")):
            blocked.add(short)
        else:
            allowed.setdefault(short, []).append(name)
    if not allowed:
        raise ConfigError("lora_target: all found no linear layers in this model; name them in lora_target")
    if blocked & allowed.keys():  # e.g. a vision tower also has q_proj: name each language-model layer in full
        return sorted(full for names in allowed.values() for full in names)
    log.info("LoRA targets (all linear layers): %s", ",".join(sorted(allowed)))
    return sorted(allowed)


def _suffix_match(names, target: str) -> list[str]:
    return [name for name in names if name == target or name.endswith("." + target)]


def _closest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=2, cutoff=0.5)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def validate_targets(model, targets: list[str], key: str = "lora_target") -> list[str]:
    """Checks each lora_target names a linear (or embedding) layer, the way peft matches names (by suffix)."""
    modules = dict(model.named_modules())
    wrappable = {name for name, module in modules.items() if name and _is_wrappable(module)}
    linear_names = sorted({name.split(".")[-1] for name in wrappable if _is_linear(modules[name])})
    problems = []
    for target in targets:
        if _suffix_match(wrappable, target):
            continue
        other = _suffix_match(modules, target)
        kind = f" (it is a {type(modules[other[0]]).__name__}, not a linear layer)" if other else ""
        problems.append(f"'{target}' is not a linear layer of this model{kind}{_closest(target, linear_names)}")
    if problems:
        raise ConfigError(
            f"{key}: " + "; ".join(problems) + f"\n  valid linear modules: all, {', '.join(linear_names)}"
        )
    return list(targets)


def validate_modules_to_save(model, names: list[str]) -> list[str]:
    """Checks each additional_target names a module of the model (peft matches them by suffix)."""
    modules = dict(model.named_modules())
    unknown = [name for name in names if not _suffix_match(modules, name)]
    if unknown:
        owners = sorted({n.split(".")[-1] for n, m in modules.items() if n and any(True for _ in m.parameters(False))})
        hint = _closest(unknown[0], owners)
        raise ConfigError(
            f"additional_target: {', '.join(unknown)} not found in this model{hint}\n  modules with weights: "
            + ", ".join(owners)
        )
    for name in names:
        # peft wraps every module whose name merely ends with the text ("norm" also hits "input_layernorm").
        extra = sorted({n.split(".")[-1] for n in modules if n.endswith(name) and not _suffix_match([n], name)})
        if extra:
            log.warning("additional_target '%s' also matches %s (peft matches name endings)", name, ", ".join(extra))
    return list(names)


def _embedding_module_names(model) -> list[str]:
    wanted = [model.get_input_embeddings(), model.get_output_embeddings()]
    return sorted({name.split(".")[-1] for name, module in model.named_modules() if any(module is w for w in wanted)})


def _adapter_source(path: str) -> str:
    from tunesmith.hub import is_offline, looks_like_hub_id

    local = Path(path).expanduser()
    if local.is_dir():
        if not (local / "adapter_config.json").is_file():
            raise ModelError(f"{path} is not a LoRA adapter folder (it has no adapter_config.json)")
        return str(local)
    if local.exists() or is_offline() or not looks_like_hub_id(path):
        raise ModelError(f"adapter folder not found: {path}")
    return path


@contextlib.contextmanager
def _quiet_peft():
    # peft 0.21 reads transformers 5's deprecated is_gradient_checkpointing property: noise, not a user problem.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def _load_adapter(model, path: str, model_args: ModelArgs, **kwargs):
    from peft import PeftModel

    source = _adapter_source(path)
    try:
        with _quiet_peft():
            return PeftModel.from_pretrained(
                model, source, cache_dir=model_args.cache_dir, token=model_args.hf_hub_token, **kwargs
            )
    except (OSError, ValueError) as exc:
        raise ModelError(f"could not load the adapter {path}: {exc}") from None


def resolve_targets(model, targets: list[str], key: str = "lora_target") -> list[str]:
    """'all' -> every linear layer but the head; named modules checked against the model."""
    if "all" in targets:
        if len(targets) > 1:
            raise ConfigError(f"{key}: 'all' cannot be combined with other module names")
        return find_all_linear_modules(model)
    return validate_targets(model, targets, key)


def saved_modules(model, method_args: MethodArgs, embeddings_resized: bool = False) -> list[str] | None:
    """additional_target checked against the model; on a resized vocab, the embeddings and head (their new rows
    must train and be saved with the adapter)."""
    if method_args.additional_target:
        return validate_modules_to_save(model, method_args.additional_target)
    if embeddings_resized:
        names = _embedding_module_names(model)
        log.warning("vocab was resized: training and saving %s with the adapter", ",".join(names))
        return names
    return None


def lora_config(model, model_args: ModelArgs, method_args: MethodArgs, embeddings_resized: bool = False):
    """The peft LoraConfig for a fresh adapter, with targets and modules_to_save checked against the model."""
    from peft import LoraConfig, TaskType

    targets = resolve_targets(model, list(method_args.lora_target or ["all"]))
    modules_to_save = saved_modules(model, method_args, embeddings_resized)

    init: bool | str = True
    if method_args.pissa_init:
        if is_quantized(model):
            raise ConfigError("pissa_init cannot initialise an adapter on a quantized model")
        init = "pissa" if method_args.pissa_iter == -1 else f"pissa_niter_{method_args.pissa_iter}"
    # Tied input/output embeddings must stay tied in the trained copies too (peft warns otherwise).
    tied = bool(modules_to_save) and bool(getattr(model.config, "tie_word_embeddings", False))
    rank = method_args.lora_rank
    # A value model (rm) is SEQ_CLS: peft then trains and saves its new score head in full with the adapter.
    value_model = type(model).__name__.endswith("ForSequenceClassification")
    return LoraConfig(
        task_type=TaskType.SEQ_CLS if value_model else TaskType.CAUSAL_LM,
        inference_mode=False,
        r=rank,
        lora_alpha=method_args.lora_alpha or 2 * rank,
        lora_dropout=method_args.lora_dropout,
        target_modules=targets,
        modules_to_save=modules_to_save or None,
        use_rslora=method_args.use_rslora,
        use_dora=method_args.use_dora,
        init_lora_weights=init,
        ensure_weight_tying=tied and any(name in _embedding_module_names(model) for name in modules_to_save),
    )


def setup_lora(model, model_args: ModelArgs, method_args: MethodArgs, is_trainable: bool, embeddings_resized=False,
               make_config=None):
    """Merges/resumes adapter_name_or_path like LLaMA-Factory, then adds a fresh adapter when training needs one
    (make_config(model, model_args, method_args, embeddings_resized) -> its peft config; default LoRA's).

    Training: all adapters but the last are merged and the last one continues training; with create_new_adapter
    all are merged and a new adapter starts. Inference: all are merged. A quantized model keeps its single
    adapter unmerged.
    """
    from peft import get_peft_model

    adapters = list(model_args.adapter_name_or_path or [])
    resume = None
    if adapters:
        mergeable = not is_quantized(model)
        if not mergeable and len(adapters) > 1:
            raise ConfigError("a quantized model takes one adapter in adapter_name_or_path (it cannot merge them)")
        if (is_trainable and not method_args.create_new_adapter) or not mergeable:
            to_merge, resume = adapters[:-1], adapters[-1]
        else:
            to_merge = adapters
        for path in to_merge:
            model = _load_adapter(model, path, model_args).merge_and_unload()
        if to_merge:
            log.info("merged %d adapter(s): %s", len(to_merge), ",".join(to_merge))
        if resume is not None:
            model = _load_adapter(model, resume, model_args, is_trainable=is_trainable)
            log.info("loaded adapter %s (%s)", resume, "training continues" if is_trainable else "unmerged")

    if is_trainable and resume is None and make_config is not None:
        config = make_config(model, model_args, method_args, embeddings_resized)
        with _quiet_peft():
            model = get_peft_model(model, config)
    elif is_trainable and resume is None:
        config = lora_config(model, model_args, method_args, embeddings_resized)
        what = "DoRA" if method_args.use_dora else "LoRA"
        extras = (" rsLoRA" if config.use_rslora else "") + (
            f" init={config.init_lora_weights}" if config.init_lora_weights is not True else ""
        )
        log.info("%s: r=%d alpha=%s dropout=%g%s", what, config.r, config.lora_alpha, config.lora_dropout, extras)
        with _quiet_peft():
            model = get_peft_model(model, config)
    return model


def loraplus_optimizer(
    model, training_args, loraplus_lr_ratio: float, loraplus_lr_embedding: float = 1e-6
) -> torch.optim.Optimizer:
    """LoRA+ optimizer: lora_B (and, like LLaMA-Factory, every 1-D trainable tensor such as DoRA magnitudes) at
    lr x ratio, LoRA embedding B matrices at loraplus_lr_embedding, everything else at lr; weight decay skips
    biases and norms (Trainer.get_decay_parameter_names). Pass it as Trainer(optimizers=(opt, None)).
    """
    from transformers import Trainer

    lr = training_args.learning_rate
    decay = set(Trainer.get_decay_parameter_names(None, model))
    groups: dict[tuple[str, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if "lora_embedding_B" in name:
            kind = "embedding"
        elif "lora_B" in name or param.ndim == 1:
            kind = "lora_b"
        else:
            kind = "lora_a"
        groups.setdefault((kind, name in decay), []).append(param)
    rates = {"lora_a": lr, "lora_b": lr * loraplus_lr_ratio, "embedding": loraplus_lr_embedding}
    param_groups = [
        {"params": params, "lr": rates[kind], "weight_decay": training_args.weight_decay if decays else 0.0}
        for (kind, decays), params in sorted(groups.items())
    ]
    optim_cls, optim_kwargs = Trainer.get_optimizer_cls_and_kwargs(training_args, model)
    log.info("LoRA+ optimizer: lora_B lr %g (x%g), lora_A lr %g", lr * loraplus_lr_ratio, loraplus_lr_ratio, lr)
    return optim_cls(param_groups, **optim_kwargs)


def save_pissa_init(model, output_dir: str | os.PathLike) -> Path:
    """Call before trainer.train() (not when resuming), on the main process, with the PeftModel from load_model:
    saves the untrained PiSSA adapter in output_dir/pissa_init, marked init_lora_weights=True so loading it later
    does not decompose the base a second time.
    """
    path = Path(output_dir) / PISSA_INIT_DIR
    config = model.peft_config["default"]
    init = config.init_lora_weights
    config.init_lora_weights = True
    try:
        model.save_pretrained(str(path))
    finally:
        config.init_lora_weights = init
    log.info("initial PiSSA adapter saved in %s", path)
    return path


def save_pissa_converted(
    model, output_dir: str | os.PathLike, pissa_init_dir: str | os.PathLike | None = None
) -> Path:
    """Call after the final save, on the main process, with the unwrapped PeftModel: rewrites the adapter in
    output_dir as a plain LoRA adapter (rank 2r) that applies to the original, unmodified base model. Needs the
    folder written by save_pissa_init (default output_dir/pissa_init). The live model stays the PiSSA model it was.
    """
    init_dir = Path(pissa_init_dir) if pissa_init_dir is not None else Path(output_dir) / PISSA_INIT_DIR
    if not (init_dir / "adapter_config.json").is_file():
        raise ModelError(f"pissa_convert: no initial PiSSA adapter in {init_dir} (save_pissa_init writes it)")
    with warnings.catch_warnings():  # peft warns that PiSSA should not be mixed with the adapter it loads here
        warnings.filterwarnings("ignore", message="PiSSA changes the base weights")
        model.save_pretrained(str(output_dir), path_initial_model_for_weight_conversion=str(init_dir))
    log.info("PiSSA adapter converted to a plain LoRA adapter in %s", output_dir)
    return Path(output_dir)
