"""LLaMA-Factory's optimizer switches (GaLore, APOLLO, BAdam, Adam-mini, Muon): one builder per key, as LF builds them.

GaLore and APOLLO go through transformers' own `optim` (galore_adamw*, apollo_adamw*) with LF's targets and options;
BAdam and Adam-mini are their authors' packages; Muon is torch's `torch.optim.Muon` for the 2-D weights inside the
layers with AdamW for the rest, LF's split (its third_party Muon does the same with Moonlight's lr scaling, which is
torch's adjust_lr_fn="match_rms_adamw").
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from collections.abc import Callable

from tunesmith.errors import ConfigError, DependencyError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Custom:
    """One optimizer switch: the module it needs (and its pip name), whether it excludes LoRA, and its builder."""

    module: str | None  # import name of the package it needs (None: torch's own)
    pip: str
    build: Callable  # (model, training_args, optim_args) -> torch.optim.Optimizer
    no_lora: bool = False  # LLaMA-Factory: "Cannot use LoRA with GaLore, APOLLO or BAdam together"


def _low_rank(kind: str, bases: dict[str, str], read: Callable) -> Callable:
    """GaLore/APOLLO through transformers' optim: LF's targets ('all' = every linear layer but the head) and options."""

    def build(model, args, opt):
        import copy

        from transformers import Trainer
        from transformers.training_args import OptimizerNames

        from tunesmith.model.lora import find_all_linear_modules

        base = str(getattr(args.optim, "value", args.optim))
        if base not in bases:
            raise ConfigError(
                f"use_{kind} runs with optim {' or '.join(bases)} (LLaMA-Factory's choice of {kind} variant), "
                f"not {base}"
            )
        targets, layerwise, options = read(opt)
        targets = find_all_linear_modules(model) if list(targets) == ["all"] else list(targets)
        low = copy.copy(args)  # transformers reads the variant and its options from the training arguments
        low.optim = OptimizerNames(bases[base] + ("_layerwise" if layerwise else ""))
        low.optim_target_modules = targets
        low.optim_args = ",".join(f"{key}={value}" for key, value in options.items())
        cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(low, model)
        if kind == "apollo":  # not among transformers' optim_args: an argument of APOLLOAdamW itself
            kwargs["scale_front"] = opt.apollo_scale_front
            for inner in kwargs.get("optimizer_dict", {}).values():
                inner.scale_front = opt.apollo_scale_front
        groups = kwargs.pop("params")
        log.info("%s on %s with %s%s", kind, ",".join(targets), options, " (layer-wise)" if layerwise else "")
        if layerwise:  # the real steps run in per-parameter hooks; transformers' stand-in takes only the dict
            return cls(**kwargs)
        for group in groups:
            group.setdefault("weight_decay", args.weight_decay)
        return cls(groups, **kwargs)

    return build


def _galore_options(opt) -> tuple[list[str], bool, dict]:
    """(targets, layer-wise, transformers' optim_args) of GaLore from LF's keys."""
    return (
        opt.galore_target,
        opt.galore_layerwise,
        {
            "rank": opt.galore_rank,
            "update_proj_gap": opt.galore_update_interval,
            "scale": opt.galore_scale,
            "proj_type": opt.galore_proj_type,
        },
    )


def _apollo_options(opt) -> tuple[list[str], bool, dict]:
    """(targets, layer-wise, transformers' optim_args) of APOLLO from LF's keys (scale_front: see _low_rank)."""
    return (
        opt.apollo_target,
        opt.apollo_layerwise,
        {
            "rank": opt.apollo_rank,
            "proj": opt.apollo_proj,
            "proj_type": opt.apollo_proj_type,
            "update_proj_gap": opt.apollo_update_interval,
            "scale": opt.apollo_scale,
            "scale_type": opt.apollo_scale_type,
        },
    )


def _decay_groups(model, args) -> list[dict]:
    """Trainable parameters in two groups, weight decay on all but biases and norms (transformers' own split)."""
    from transformers import Trainer

    decay = set(Trainer.get_decay_parameter_names(None, model))
    named = [(name, param) for name, param in model.named_parameters() if param.requires_grad]
    return [
        {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
        {"params": [p for n, p in named if n in decay], "weight_decay": args.weight_decay},
    ]


def _badam(model, args, opt):
    from transformers import Trainer

    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args)
    if opt.badam_mode == "layer":
        from badam import BlockOptimizer

        log.info(
            "BAdam layer-wise: %s order, switching every %s steps", opt.badam_switch_mode, opt.badam_switch_interval
        )
        return BlockOptimizer(
            base_optimizer=cls(_decay_groups(model, args), **kwargs),
            named_parameters_list=list(model.named_parameters()),
            block_prefix_list=None,
            switch_block_every=opt.badam_switch_interval,
            start_block=opt.badam_start_block,
            switch_mode=opt.badam_switch_mode,
            verbose=opt.badam_verbose,
        )
    from badam import BlockOptimizerRatio

    if opt.badam_update_ratio <= 1e-6:
        raise ConfigError("badam_update_ratio must be above 0 in badam_mode: ratio")
    log.info("BAdam ratio-wise: updating %s of the parameters (%s masks)", opt.badam_update_ratio, opt.badam_mask_mode)
    return BlockOptimizerRatio(
        param_groups=_decay_groups(model, args),
        named_parameters_list=list(model.named_parameters()),
        update_ratio=opt.badam_update_ratio,
        mask_mode=opt.badam_mask_mode,
        verbose=opt.badam_verbose,
        include_embedding=False,
        **{key: kwargs[key] for key in ("lr", "betas", "eps") if key in kwargs},  # its own Adam: no `fused`
    )


def _adam_mini(model, args, opt):
    from adam_mini import Adam_mini

    config = model.config
    return Adam_mini(
        named_parameters=model.named_parameters(),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
        weight_decay=args.weight_decay,
        model_sharding=False,  # sharded (FSDP / ZeRO-3) is refused in check(): Adam-mini then needs CUDA
        dim=getattr(config, "hidden_size", None),
        n_heads=getattr(config, "num_attention_heads", None),
        n_kv_heads=getattr(config, "num_key_value_heads", None),
    )


def _muon(model, args, opt):
    import torch

    muon, adamw = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:  # LF: Muon for 2-D weights that are not embeddings or the head, AdamW otherwise
            (muon if param.ndim == 2 and "embed" not in name and "lm_head" not in name else adamw).append(param)
    if not muon:
        raise ConfigError("use_muon: no trainable 2-D weight inside the layers for Muon to update")
    log.info("Muon on %d weights, AdamW on %d others", len(muon), len(adamw))
    parts = [
        torch.optim.Muon(muon, lr=args.learning_rate, weight_decay=args.weight_decay, adjust_lr_fn="match_rms_adamw")
    ]
    if adamw:
        parts.append(
            torch.optim.AdamW(
                adamw,
                lr=args.learning_rate,
                weight_decay=args.weight_decay,
                betas=(args.adam_beta1, args.adam_beta2),
                eps=args.adam_epsilon,
            )
        )
    return _joined(parts)


def _joined(parts):
    """One optimizer stepping several: their param-group dicts are shared, so a scheduler's lr reaches them all."""
    import torch

    class Joined(torch.optim.Optimizer):
        def __init__(self, parts):
            self.parts = parts
            super().__init__([group for part in parts for group in part.param_groups], {})

        def step(self, closure=None):
            loss = closure() if closure is not None else None
            for part in self.parts:
                part.step()
            return loss

        def state_dict(self):
            return {"parts": [part.state_dict() for part in self.parts]}

        def load_state_dict(self, state_dict):
            for part, state in zip(self.parts, state_dict["parts"], strict=True):
                part.load_state_dict(state)

    return Joined(parts)


OPTIMIZERS: dict[str, Custom] = {
    "use_galore": Custom(
        "galore_torch",
        "galore-torch",
        _low_rank(
            "galore",
            {
                "adamw_torch": "galore_adamw",
                "adamw_torch_fused": "galore_adamw",
                "adamw_8bit": "galore_adamw_8bit",
                "adafactor": "galore_adafactor",
            },
            _galore_options,
        ),
        no_lora=True,
    ),
    "use_apollo": Custom(
        "apollo_torch",
        "apollo-torch",
        _low_rank("apollo", {"adamw_torch": "apollo_adamw", "adamw_torch_fused": "apollo_adamw"}, _apollo_options),
        no_lora=True,
    ),
    "use_badam": Custom("badam", "badam", _badam, no_lora=True),
    "use_adam_mini": Custom("adam_mini", "adam-mini", _adam_mini),
    "use_muon": Custom(None, "torch>=2.9", _muon),
}


def chosen(config) -> str | None:
    """The optimizer switch the config turns on (None: transformers' `optim` as it is)."""
    on = [key for key in OPTIMIZERS if getattr(config.optim, key)]
    return on[0] if on else None


def check(config) -> None:
    """Refuses what LLaMA-Factory refuses (two switches, LoRA with GaLore/APOLLO/BAdam, layer-wise with accumulation
    or several processes, GaLore/APOLLO under DeepSpeed) and a missing package, before any model loads."""
    on = [key for key in OPTIMIZERS if getattr(config.optim, key)]
    if not on:
        return
    source, key = config.source, on[0]
    if len(on) > 1:
        raise ConfigError(f"{source}: {', '.join(on)} are set together; choose one optimizer switch")
    if config.method.loraplus_lr_ratio:
        raise ConfigError(f"{source}: {key} and loraplus_lr_ratio each build the optimizer; choose one")
    custom = OPTIMIZERS[key]
    if custom.no_lora and config.method.finetuning_type == "lora":
        raise ConfigError(f"{source}: {key} trains the weights themselves; set finetuning_type: full (or freeze)")
    train = config.training_kwargs()
    kind = key.removeprefix("use_")
    if getattr(config.optim, f"{kind}_layerwise", False) and train.get("gradient_accumulation_steps", 1) != 1:
        raise ConfigError(f"{source}: {kind}_layerwise steps in the backward pass; set gradient_accumulation_steps: 1")
    if key in ("use_galore", "use_apollo") and train.get("deepspeed"):
        raise ConfigError(f"{source}: {key} does not run under DeepSpeed (as in LLaMA-Factory); remove `deepspeed`")
    if key == "use_adam_mini" and (train.get("fsdp") or train.get("deepspeed")):
        raise ConfigError(
            f"{source}: use_adam_mini with FSDP or DeepSpeed shards its state and reduces it over CUDA devices "
            "(adam-mini 1.1); train without fsdp/deepspeed or on CUDA GPUs with LLaMA-Factory"
        )
    if custom.module and importlib.util.find_spec(custom.module) is None:
        raise DependencyError(f"{key} needs the {custom.pip} package: pip install 'tunesmith[optim]'")


def build(config, model, args):
    """The optimizer the config's switch asks for, built on the loaded model (None when no switch is on)."""
    key = chosen(config)
    return OPTIMIZERS[key].build(model, args, config.optim) if key else None


def attach(trainer, config) -> None:
    """What an optimizer needs of the trainer: BAdam's callback and its gradient clipping over frozen blocks."""
    if chosen(config) != "use_badam":
        return
    from types import MethodType

    from badam import BAdamCallback, clip_grad_norm_old_version

    trainer.accelerator.clip_grad_norm_ = MethodType(clip_grad_norm_old_version, trainer.accelerator)
    trainer.add_callback(BAdamCallback)
