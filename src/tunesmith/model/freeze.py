"""Freeze tuning: train the first or last N decoder layers (or some modules inside them) and chosen extra modules."""

from __future__ import annotations

import logging
import re
from collections import Counter

from tunesmith.errors import ConfigError

log = logging.getLogger(__name__)

# "<prefix>.<index>.<rest>" where the index is the first all-digit component of a parameter name.
_INDEXED = re.compile(r"^(?P<prefix>.+?)\.(?P<index>\d+)\.(?P<rest>.+)$")


VISION_PARTS = ("visual", "vision_tower", "vision_model", "vision_encoder", "audio_tower")


def num_layers(config) -> int:
    """The decoder layer count from the (text) config, as LLaMA-Factory reads it."""
    config = getattr(config, "text_config", None) or config
    for key in ("num_hidden_layers", "num_layers", "n_layer"):
        value = getattr(config, key, None)
        if value:
            return int(value)
    raise ConfigError(f"freeze tuning: cannot tell how many layers {type(config).__name__} has; use lora or full")


def layer_structure(model, count: int) -> tuple[str, dict[str, set[int]], set[str]]:
    """(layers prefix, {module inside a layer: layer indices}, {modules outside the layers}) from parameter names."""
    prefixes: dict[str, set[int]] = {}
    for name, _ in model.named_parameters():
        match = _INDEXED.match(name)
        if match:
            prefixes.setdefault(match["prefix"], set()).add(int(match["index"]))
    # The decoder stack is the indexed container with exactly num_hidden_layers entries (the longest if several).
    candidates = [p for p, ids in prefixes.items() if len(ids) == count] or list(prefixes)
    # A vision-language model's vision blocks are numbered too: the decoder stack is the text one.
    text = [p for p in candidates if not any(part in VISION_PARTS for part in p.split("."))]
    candidates = text or candidates
    if not candidates:
        raise ConfigError("freeze tuning: this model has no numbered layers; use lora or full")
    prefix = max(candidates, key=lambda p: (len(prefixes[p]) == count, len(prefixes[p]), -len(p)))
    inner: dict[str, set[int]] = {}
    outer: Counter[str] = Counter()
    for name, _ in model.named_parameters():
        match = _INDEXED.match(name)
        if match and match["prefix"] == prefix:
            inner.setdefault(match["rest"].split(".")[0], set()).add(int(match["index"]))
        elif not _INDEXED.match(name):
            parts = name.split(".")
            outer[parts[-2] if len(parts) > 1 else parts[0]] += 1
    return prefix, inner, set(outer)


def expanded_layer_ids(count: int, n: int) -> list[int]:
    """LLaMA Pro: the n blocks its expansion inserted, the last of every count/n layers (LLaMA-Factory's reading)."""
    if n <= 0 or count % n:
        raise ConfigError(
            f"use_llama_pro: freeze_trainable_layers must be the number of expanded blocks, a divisor of the "
            f"model's {count} layers (got {n})"
        )
    stride = count // n
    return list(range(stride - 1, count, stride))


def expanded_modules(model, targets: list[str], n: int) -> list[str]:
    """LLaMA Pro with LoRA: the full names of the target modules inside the expanded blocks only."""
    ids = expanded_layer_ids(num_layers(model.config), n)
    marks = [f".{index}." for index in ids]
    names = [name for name, _ in model.named_modules()
             if any(name == t or name.endswith("." + t) for t in targets) and any(mark in name for mark in marks)]
    log.info("LLaMA Pro: adapters on the expanded blocks %s only", ",".join(map(str, ids)))
    return names


def setup_freeze(model, method_args, llama_pro: bool = False) -> None:
    """Leaves requires_grad on only for the chosen layers/modules (llama_pro: the expanded blocks); raises
    ConfigError naming valid choices."""
    count = num_layers(model.config)
    n = method_args.freeze_trainable_layers
    if abs(n) > count and not llama_pro:
        raise ConfigError(
            f"freeze_trainable_layers: {n} but the model has {count} layers; use a value between -{count} and {count}"
        )
    extras = list(method_args.freeze_extra_modules or [])
    if n == 0 and not extras:
        raise ConfigError("freeze_trainable_layers: 0 trains nothing; set N > 0 (last N layers) or N < 0 (first |N|)")
    if llama_pro:
        layer_ids = set(expanded_layer_ids(count, n))
    else:
        layer_ids = set(range(count - n, count)) if n > 0 else set(range(-n))

    prefix, inner, outer = layer_structure(model, count)
    modules = list(method_args.freeze_trainable_modules or ["all"])
    train_all = "all" in modules
    if not train_all:
        unknown = [m for m in modules if m not in inner]
        if unknown:
            raise ConfigError(
                f"freeze_trainable_modules: {', '.join(unknown)} not found in a layer of this model; "
                f"choose 'all' or from: {', '.join(sorted(inner))}"
            )
    unknown = [m for m in extras if m not in outer]
    if unknown:
        raise ConfigError(
            f"freeze_extra_modules: {', '.join(unknown)} not found outside the layers of this model; "
            f"choose from: {', '.join(sorted(outer))}"
        )

    for name, param in model.named_parameters():
        match = _INDEXED.match(name)
        if match and match["prefix"] == prefix:
            module = match["rest"].split(".")[0]
            keep = int(match["index"]) in layer_ids and (train_all or module in modules)
        else:
            keep = any(part in extras for part in name.split(".")[:-1])
        param.requires_grad_(keep)

    which = f"expanded blocks {sorted(layer_ids)}" if llama_pro else f"last {n}" if n > 0 else f"first {-n}"
    inside = "all modules" if train_all else ",".join(modules)
    log.info(
        "freeze tuning: training the %s of %d layers (%s)%s",
        which,
        count,
        inside,
        f" plus {','.join(extras)}" if extras else "",
    )
