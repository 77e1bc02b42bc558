"""LLaVA (1.5) and LLaVA-NeXT on the model side: tiny random models with their PIL image processors and
processor_config.json, and the processor settings (patch size, extra tokens, feature strategy) LF's plugins read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

IMAGE_TOKEN = "<image>"
ARCHS = ("llava", "llava_next")
PATCH, SIDE = 14, 42  # the tiny CLIP tower: 42x42 views of 3x3 patches
# LLaVA-NeXT's anyres grids (its default pinpoints, 336-pixel base, scaled to the tiny 42-pixel base)
PINPOINTS = [[SIDE, 2 * SIDE], [2 * SIDE, SIDE], [2 * SIDE, 2 * SIDE], [3 * SIDE, SIDE], [SIDE, 3 * SIDE]]
PROCESSOR_CLASS = {"llava": "LlavaProcessor", "llava_next": "LlavaNextProcessor"}
# What a LlavaProcessor / LlavaNextProcessor holds besides its image processor and tokenizer (LF reads these).
SETTINGS = ("patch_size", "num_additional_image_tokens", "vision_feature_select_strategy")


def add_image_token(tokenizer: Any) -> int:
    """Add LLaVA's <image> special token to a tokenizer; return its id."""
    from tokenizers import AddedToken

    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    return tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)


def tiny_image_processor(arch: str = "llava") -> Any:
    """The PIL image processor of a tiny LLaVA / LLaVA-NeXT (42-pixel views; the default ones need torchvision)."""
    sizes = {"size": {"shortest_edge": SIDE}, "crop_size": {"height": SIDE, "width": SIDE}}
    if arch == "llava_next":
        from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

        return LlavaNextImageProcessorPil(image_grid_pinpoints=PINPOINTS, **sizes)
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    return LlavaImageProcessorPil(**sizes)


def tiny_settings() -> dict:
    """The tiny models' processor settings: CLIP's patch size, its CLS feature, dropped by the "default" strategy."""
    return {"patch_size": PATCH, "num_additional_image_tokens": 1, "vision_feature_select_strategy": "default"}


def tiny_llava(arch: str, image_token_id: int, vocab_size: int, tokenizer: Any = None) -> Any:
    """A ~0.25M-parameter random LlavaForConditionalGeneration / LlavaNextForConditionalGeneration: a 2-layer CLIP
    vision tower (hidden 32), the 2-layer MLP projector and a 2-layer llama (hidden 64)."""
    import transformers

    vision = {
        "model_type": "clip_vision_model",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": SIDE,
        "patch_size": PATCH,
        "projection_dim": 32,
    }
    text = {
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 2048,
    }
    ends = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id} if tokenizer else {}
    text.update(ends)
    kwargs = {
        "vision_config": vision,
        "text_config": text,
        "image_token_index": image_token_id,
        "vision_feature_select_strategy": "default",
        "vision_feature_layer": -2,
    }
    if arch == "llava_next":
        cfg = transformers.LlavaNextConfig(image_grid_pinpoints=PINPOINTS, **kwargs)
        return transformers.LlavaNextForConditionalGeneration(cfg)
    cfg = transformers.LlavaConfig(image_seq_length=(SIDE // PATCH) ** 2, **kwargs)
    return transformers.LlavaForConditionalGeneration(cfg)


def save_tiny_llava(out: Any, tokenizer: Any, arch: str = "llava", seed: int = 0) -> None:
    """Writes a tiny random LLaVA / LLaVA-NeXT, the tokenizer with <image>, the PIL image processor's
    preprocessor_config.json and processor_config.json (the processor settings) into the folder `out`."""
    import functools

    from tunesmith.model.vision import save_tiny_multimodal

    image_token_id = add_image_token(tokenizer)
    build = functools.partial(tiny_llava, arch)
    save_tiny_multimodal(out, tokenizer, image_token_id, build, tiny_image_processor(arch), seed)
    processor = {"image_token": IMAGE_TOKEN, **tiny_settings(), "processor_class": PROCESSOR_CLASS[arch]}
    (Path(out) / "processor_config.json").write_text(json.dumps(processor, indent=2) + "\n", encoding="utf-8")


def processor_settings(name: str, kwargs: dict, config: Any) -> dict:
    """The settings LF's llava plugins read from the model's processor: processor_config.json's patch_size,
    num_additional_image_tokens and vision_feature_select_strategy; where the file (or a key) is missing, the model
    config's patch size and strategy and one extra token for a CLIP tower's CLS feature (what the model computes)."""
    from transformers.utils import cached_file

    options = {key: kwargs[key] for key in ("cache_dir", "revision", "token", "local_files_only") if key in kwargs}
    path = cached_file(
        name,
        "processor_config.json",
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
        **options,
    )
    saved = json.loads(Path(path).read_text(encoding="utf-8")) if path else {}
    vision = getattr(config, "vision_config", None)
    fallback = {
        "patch_size": getattr(vision, "patch_size", PATCH),
        "num_additional_image_tokens": int(getattr(vision, "model_type", "") == "clip_vision_model"),
        "vision_feature_select_strategy": getattr(config, "vision_feature_select_strategy", "default"),
    }
    return {key: saved[key] if saved.get(key) is not None else fallback[key] for key in SETTINGS}
