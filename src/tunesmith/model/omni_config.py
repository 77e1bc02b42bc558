"""Which configs are Qwen2.5-Omni's and the config of the part tunesmith trains (its thinker): read by the loader,
the audio model loader, export and the memory estimate, so it imports nothing of tunesmith."""

from __future__ import annotations

from typing import Any

# The model type tunesmith trains: the thinker (text out), as LF trains it; "qwen2_5_omni" is the whole model with
# its talker and token2wav (speech out), which LF loads and then replaces by its thinker.
THINKER = "qwen2_5_omni_thinker"


def is_omni(model_or_config: Any) -> bool:
    """A Qwen2.5-Omni thinker (or a whole Qwen2.5-Omni, which holds one): images and audios in one model."""
    config = thinker_config(getattr(model_or_config, "config", model_or_config))
    return getattr(config, "model_type", None) == THINKER


def thinker_config(config: Any) -> Any:
    """The config tunesmith loads: a whole Qwen2.5-Omni checkpoint's (model_type qwen2_5_omni, Qwen's releases) is
    its thinker's, whose weights load from the same folder (transformers skips the talker's and token2wav's); LF
    loads the whole model and keeps its thinker, the same weights. Any other config as it is."""
    if getattr(config, "model_type", None) == "qwen2_5_omni" and getattr(config, "thinker_config", None) is not None:
        return config.thinker_config
    return config
