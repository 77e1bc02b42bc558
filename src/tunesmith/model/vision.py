"""Qwen2-VL on the model side: tiny random model + PIL image processor, LF's freeze_* table, VL LoRA targets; the
media tokens and the saving every tiny multimodal family shares."""

from collections.abc import Callable
from typing import Any

VL_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")


def add_media_tokens(tokenizer: Any, tokens: tuple[str, ...]) -> dict[str, int]:
    """Add a multimodal family's image/audio tokens to a tokenizer as special tokens; return token -> id. They
    replace its list of additional special tokens (LLaVA's add_image_token keeps that list, so it stays apart)."""
    from tokenizers import AddedToken

    missing = [t for t in tokens if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": [AddedToken(t, special=True) for t in missing]})
    return {t: tokenizer.convert_tokens_to_ids(t) for t in tokens}


def tiny_image_processor(min_pixels: int = 32 * 32, max_pixels: int = 64 * 64) -> Any:
    """The PIL Qwen2-VL image processor (the default one needs torchvision, which torch 2.13 cannot have here)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)


def tiny_qwen2_vl(ids: dict[str, int], vocab_size: int, tokenizer: Any = None) -> Any:
    """A ~0.3M-parameter random Qwen2VLForConditionalGeneration whose vision token ids match `ids`."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    text = {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
        "max_position_embeddings": 512,
    }
    vision = {
        "depth": 2,
        "embed_dim": 32,
        "hidden_size": 64,
        "num_heads": 2,
        "mlp_ratio": 2,
        "patch_size": 14,
        "spatial_merge_size": 2,
    }
    ends = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id} if tokenizer else {}
    text.update(ends)
    cfg = Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        **ends,
    )
    return Qwen2VLForConditionalGeneration(cfg)


def expand_image_tokens(text: str, grid_thw: Any, merge_size: int) -> str:
    """Replace each <image> with <|vision_start|> + grid.prod()//merge**2 <|image_pad|> + <|vision_end|> (LF's plugin)."""
    parts = text.split("<image>")
    if len(parts) - 1 != len(grid_thw):
        from tunesmith.errors import DataError

        raise DataError(f"{len(parts) - 1} <image> placeholders but {len(grid_thw)} images")
    out = [parts[0]]
    for grid, rest in zip(grid_thw, parts[1:]):
        n = int(grid.prod()) // merge_size**2
        out.append("<|vision_start|>" + "<|image_pad|>" * n + "<|vision_end|>" + rest)
    return "".join(out)


def mm_token_type_ids(input_ids: Any, ids: dict[str, int]) -> Any:
    """transformers 5.x M-RoPE input: 1 at image tokens, 2 at video tokens, 0 elsewhere."""
    return (input_ids == ids["<|image_pad|>"]).long() + 2 * (input_ids == ids["<|video_pad|>"]).long()


# LLaMA-Factory 0.9.5's composite models (model_utils/visual.py): which parameter names are the vision tower, the
# projector and the language model, for the freeze_* keys.
COMPOSITE = {
    "qwen2_vl": {
        "vision": ("visual.patch_embed", "visual.blocks"),
        "projector": ("visual.merger",),
        "language": ("language_model", "lm_head"),
        "lora_conflict": ("patch_embed",),
    },
}
COMPOSITE["qwen2_5_vl"] = COMPOSITE["qwen2_vl"]
COMPOSITE["qwen3_vl"] = {**COMPOSITE["qwen2_vl"], "projector": ("visual.merger", "visual.deepstack_merger_list")}
COMPOSITE["gemma3"] = {
    "vision": ("vision_tower",),
    "projector": ("multi_modal_projector",),
    "language": ("language_model", "lm_head"),
    "lora_conflict": (),
}  # LF's registration defaults
COMPOSITE["internvl"] = COMPOSITE["gemma3"]
COMPOSITE["llava"] = COMPOSITE["gemma3"]
COMPOSITE["llava_next"] = COMPOSITE["gemma3"]
# Qwen2-Audio (model/audio.py): freeze_vision_tower stands for its audio tower, as in LF
COMPOSITE["qwen2_audio"] = {**COMPOSITE["gemma3"], "vision": ("audio_tower",)}
# Qwen2.5-Omni's thinker (model/omni.py): LF's entry, but its language-model key "model" names every part in
# transformers 5's layout (model.visual, model.audio_tower, model.language_model), so the text model's own name
COMPOSITE["qwen2_5_omni_thinker"] = {
    "vision": ("visual.patch_embed", "visual.blocks", "audio_tower"),
    "projector": ("visual.merger", "audio_tower.proj"),
    "language": ("language_model", "lm_head"),
    "lora_conflict": ("patch_embed",),
}
# model type -> the config.json key of the image tokens per image (or crop/patch) that its plugin expands <image> to
SEQ_LENGTH_KEYS = {"gemma3": "mm_tokens_per_image", "internvl": "image_seq_length"}


def image_seq_length(config: Any) -> int | None:
    """Gemma 3's / InternVL's tokens per image from the model config (None for the other families)."""
    key = SEQ_LENGTH_KEYS.get(getattr(config, "model_type", None))
    return getattr(config, key, None) if key else None


def is_vision_model(model_or_config: Any) -> bool:
    """A composite multimodal model: vision-language, or audio-language (Qwen2-Audio), whose parts the freeze_*
    keys choose."""
    config = getattr(model_or_config, "config", model_or_config)
    return getattr(config, "vision_config", None) is not None or getattr(config, "audio_config", None) is not None


def forbidden_parts(model: Any, multimodal: Any) -> set[str]:
    """Name fragments of the parts the freeze_* keys keep frozen (LF's get_forbidden_modules)."""
    parts = COMPOSITE.get(getattr(model.config, "model_type", None))
    if parts is None or multimodal is None:
        return set()
    out = set()
    if multimodal.freeze_vision_tower:
        out.update(parts["vision"])
    if multimodal.freeze_multi_modal_projector:
        out.update(parts["projector"])
    if multimodal.freeze_language_model:
        out.update(parts["language"])
    return out


def check_composite(model: Any) -> None:
    from tunesmith.errors import ModelError

    if is_vision_model(model) and getattr(model.config, "model_type", None) not in COMPOSITE:
        raise ModelError(
            f"vision-language model type {model.config.model_type!r} is not supported for training yet; "
            f"supported: {', '.join(COMPOSITE)}"
        )


def freeze_parts(model: Any, multimodal: Any, method: str) -> None:
    """full/freeze: parameters of the frozen parts stop training; freeze with freeze_multi_modal_projector: false
    also trains the projector (as LF's _setup_freeze_tuning adds it to the trainable layers)."""
    import logging

    check_composite(model)
    parts = COMPOSITE.get(getattr(model.config, "model_type", None))
    if parts is None:
        return
    forbidden = forbidden_parts(model, multimodal)
    for name, param in model.named_parameters():
        if (
            method == "freeze"
            and not multimodal.freeze_multi_modal_projector
            and any(p in name for p in parts["projector"])
        ):
            param.requires_grad_(True)
        if any(part in name for part in forbidden):
            param.requires_grad_(False)
    logging.getLogger(__name__).info("vision-language model: kept frozen %s", ", ".join(sorted(forbidden)) or "none")


def lora_targets(model: Any, targets: list[str], multimodal: Any) -> list[str]:
    """LoRA on a VL model: the full names of the linear layers matching `targets` (short names, or "all" = every
    linear layer) outside the frozen parts, lm_head and LF's lora_conflict_keys (LF's patch_target_modules)."""
    from tunesmith.errors import ConfigError

    check_composite(model)
    parts = COMPOSITE[model.config.model_type]
    forbidden = forbidden_parts(model, multimodal) | set(parts["lora_conflict"]) | {"lm_head"}
    everything = "all" in targets
    names = []
    for name, module in model.named_modules():
        kind = type(module).__name__
        if not name or "Linear" not in kind or any(part in name for part in forbidden):
            continue
        if everything and any(part in name for part in parts["projector"]):
            continue  # LF's find_all_linear_modules: "all" never names the projector's layers (name them to adapt it)
        if everything or name.split(".")[-1] in targets:
            names.append(name)
    if not names:
        raise ConfigError(
            f"lora_target {','.join(targets)} matches no linear layer outside the frozen parts "
            f"({', '.join(sorted(forbidden))}); check lora_target and the freeze_* keys"
        )
    return sorted(names)


def save_tiny_multimodal(out: Any, tokenizer: Any, ids: Any, build: Callable, processor: Any, seed: int = 0) -> None:
    """Writes a tiny random multimodal model (float32), `build(ids, vocab_size, tokenizer)` seeded with the vocabulary
    rounded up to a multiple of 8, the tokenizer (its media tokens `ids` added already) and `processor` (an image
    processor, or a whole processor) into the folder `out` (the caller publishes it)."""
    import torch
    from transformers import GenerationConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build(ids, -(-len(tokenizer) // 8) * 8, tokenizer)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    processor.save_pretrained(out)


def save_tiny_vl(out: Any, tokenizer: Any, seed: int = 0) -> None:
    """Writes a tiny random Qwen2-VL, the tokenizer with the vision tokens and the PIL image processor's
    preprocessor_config.json into the folder `out`."""
    ids = add_media_tokens(tokenizer, VL_TOKENS)
    save_tiny_multimodal(out, tokenizer, ids, tiny_qwen2_vl, tiny_image_processor(), seed)
