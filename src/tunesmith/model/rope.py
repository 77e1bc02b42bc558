"""RoPE scaling: sets transformers 5's `rope_parameters` for longer contexts, with LLaMA-Factory's factor rule."""

from __future__ import annotations

import logging
import math

from tunesmith.errors import ConfigError

log = logging.getLogger(__name__)


def configure_rope(model_config, model_args, cutoff_len: int | None) -> None:
    """factor = rope_scaling_factor, or ceil(cutoff_len / max_position_embeddings) when the cutoff is longer."""
    kind = model_args.rope_scaling
    if kind is None:
        return
    params = dict(getattr(model_config, "rope_parameters", None) or {})
    theta = params.get("rope_theta", getattr(model_config, "rope_theta", None))
    if theta is None:
        raise ConfigError(f"rope_scaling: {model_config.model_type} models have no rotary position embeddings")
    max_positions = getattr(model_config, "max_position_embeddings", None)
    factor = model_args.rope_scaling_factor
    if factor is None:
        if not cutoff_len or not max_positions or cutoff_len <= max_positions:
            log.warning("rope_scaling: %s not applied: cutoff_len %s fits the model's %s positions (set "
                        "rope_scaling_factor to force a factor)", kind, cutoff_len, max_positions)
            return
        factor = float(math.ceil(cutoff_len / max_positions))
    new = {"rope_type": kind, "factor": factor, "rope_theta": theta}
    if kind in ("yarn", "llama3"):
        new["original_max_position_embeddings"] = max_positions
    if kind == "llama3":
        new.update(low_freq_factor=1.0, high_freq_factor=4.0)
    model_config.rope_parameters = new
    if kind in ("linear", "yarn", "llama3") and max_positions:
        model_config.max_position_embeddings = int(max_positions * factor)
    log.info("rope_scaling: %s with factor %g (rope_theta %g)", kind, factor, theta)
