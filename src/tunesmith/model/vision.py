"""Tiny random Qwen2-VL model, its slow (PIL) image processor, and LF-style <|image_pad|> expansion, without torchvision."""

from typing import Any

VL_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")


def add_vl_tokens(tokenizer: Any) -> dict[str, int]:
    """Add Qwen2-VL's vision special tokens to a tokenizer; return token -> id."""
    from tokenizers import AddedToken

    missing = [t for t in VL_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": [AddedToken(t, special=True) for t in missing]})
    return {t: tokenizer.convert_tokens_to_ids(t) for t in VL_TOKENS}


def tiny_image_processor(min_pixels: int = 32 * 32, max_pixels: int = 64 * 64) -> Any:
    """The PIL Qwen2-VL image processor (the default one needs torchvision, which torch 2.13 cannot have here)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)


def tiny_qwen2_vl(ids: dict[str, int], vocab_size: int) -> Any:
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
    cfg = Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
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
