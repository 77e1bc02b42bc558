"""LLaMA-Factory's add_tokens / add_special_tokens / new_special_tokens_config: tokens added to the tokenizer, and
their new embedding rows initialised as LF does (noise_init: mean + noise; desc_init: the mean of a description)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from tunesmith.errors import ConfigError

log = logging.getLogger(__name__)


def descriptions(lf_model) -> dict[str, str] | None:
    """new_special_tokens_config (a YAML file or a mapping) as {token: description}; None when not set."""
    value = lf_model.new_special_tokens_config
    if value is None:
        return None
    if isinstance(value, str):
        import yaml

        path = Path(value).expanduser()
        if not path.is_file():
            raise ConfigError(f"new_special_tokens_config: file not found: {value} (a YAML mapping token: description)")
        value = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(value, dict) or not value:
        raise ConfigError("new_special_tokens_config must map each new special token to its description")
    return {str(token): str(text) for token, text in value.items()}


def new_tokens(lf_model) -> tuple[list[str], list[str]]:
    """(plain tokens, special tokens) to add; new_special_tokens_config's tokens take precedence over
    add_special_tokens, as in LLaMA-Factory."""
    described = descriptions(lf_model)
    special = list(described) if described else list(lf_model.add_special_tokens or [])
    if described and lf_model.add_special_tokens:
        log.warning("new_special_tokens_config and add_special_tokens are both set: using the config's tokens")
    return list(lf_model.add_tokens or []), special


NEW = "_tunesmith_new_tokens"  # set on the tokenizer: the tokens this load added (load_model initialises their rows)


def add_to_tokenizer(tokenizer, lf_model) -> int:
    """Adds the config's tokens to the tokenizer and notes which were new to it; returns how many."""
    plain, special = new_tokens(lf_model)
    before = set(tokenizer.get_vocab())
    if plain:
        tokenizer.add_tokens(plain, special_tokens=False)
    if special:
        tokenizer.add_tokens(special, special_tokens=True)
    added = [token for token in plain + special if token not in before]
    setattr(tokenizer, NEW, added)
    if added:
        log.info("added %d token(s) to the tokenizer: %s", len(added), ",".join(added))
    return len(added)


def initialise(model, tokenizer, lf_model) -> bool:
    """Initialises the embedding rows of the tokens the tokenizer load added, as LLaMA-Factory does, and says
    whether there were any (then, as LF's resize_vocab, LoRA trains and saves the embeddings). noise_init: the mean
    of the other rows plus noise of std 1/sqrt(dim); desc_init: the mean of the embeddings of the token's
    description (desc_init_w_noise: plus that noise). The output head too when untied. A token that was already in
    the tokenizer (a trained run's) keeps its row."""
    import torch

    added = getattr(tokenizer, NEW, None) or []
    if not added:
        return False
    method = lf_model.init_special_tokens
    described = descriptions(lf_model) or {}
    if method != "noise_init" and not described:
        log.warning("init_special_tokens: %s needs new_special_tokens_config; new tokens use noise_init", method)
    weights = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and not getattr(model.config, "tie_word_embeddings", False):
        weights.append(output.weight)
    rows = tokenizer.convert_tokens_to_ids(added)
    fresh = set(rows)
    with torch.no_grad():
        for weight in weights:
            keep = torch.ones(weight.size(0), dtype=torch.bool)
            keep[rows] = False
            mean = weight[keep].float().mean(dim=0)
            for token, row in zip(added, rows, strict=True):
                base, noise = mean, True
                if method != "noise_init" and token in described:
                    ids = [
                        i for i in tokenizer(described[token], add_special_tokens=False)["input_ids"] if i not in fresh
                    ]
                    base = weight[ids].float().mean(dim=0) if ids else mean
                    noise = method == "desc_init_w_noise"
                if noise:
                    base = base + torch.randn_like(base) / math.sqrt(weight.size(1))
                weight[row] = base.to(weight.dtype)
    log.info("initialised %d new token row(s) (%s)", len(rows), method)
    return True
