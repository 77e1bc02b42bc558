"""Qwen2.5-Omni's thinker on the model side: the tiny random model, its two processors in one preprocessor_config.json
(the PIL Qwen2-VL image processor and the Whisper feature extractor, as Qwen's checkpoints ship them), and saving them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# LF's qwen2_omni template: get_mm_plugin(name="qwen2_omni", image_token="<|IMAGE|>", video_token="<|VIDEO|>",
# audio_token="<|AUDIO|>", vision_bos_token="<|vision_bos|>", ...); the tokens Qwen2.5-Omni's tokenizer has
OMNI_TOKENS = (
    "<|vision_bos|>",
    "<|vision_eos|>",
    "<|IMAGE|>",
    "<|VIDEO|>",
    "<|AUDIO|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
)


def tiny_qwen2_5_omni(ids: dict[str, int], vocab_size: int, tokenizer: Any = None) -> Any:
    """A ~0.3M-parameter random Qwen2_5OmniThinkerForConditionalGeneration: a 2-block Qwen2.5-VL vision tower (14 px
    patches merged 2x2, as the tiny Qwen2-VL's), a 2-layer Whisper-style audio tower over model/audio.py's tiny
    extractor (16 mel bins, 2-second windows) and a 2-layer Qwen2 text model, whose media token ids match `ids`."""
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    from tunesmith.model.audio import TINY_CHUNK_SECONDS, TINY_MEL_BINS

    hidden = 64
    frames = TINY_CHUNK_SECONDS * 100  # 100 mel frames a second
    audio = {
        "num_mel_bins": TINY_MEL_BINS,
        "encoder_layers": 2,
        "encoder_attention_heads": 2,
        "encoder_ffn_dim": 64,
        "d_model": 32,
        "output_dim": hidden,
        "max_source_positions": frames // 2,  # the stride-2 convolution halves the frames
        "n_window": frames // 4,  # attention windows of n_window*2 frames, as the 7B's 100 of 1500 positions
    }
    vision = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": hidden,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 56,
        "fullatt_block_indexes": [1],
    }
    text = {
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "rope_scaling": {"type": "default", "mrope_section": [2, 3, 3]},
        "use_sliding_window": False,
    }
    ends = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id} if tokenizer else {}
    text.update(ends)
    cfg = Qwen2_5OmniThinkerConfig(
        audio_config=audio,
        vision_config=vision,
        text_config=text,
        audio_token_index=ids["<|AUDIO|>"],
        image_token_index=ids["<|IMAGE|>"],
        video_token_index=ids["<|VIDEO|>"],
        vision_start_token_id=ids["<|vision_bos|>"],
        vision_end_token_id=ids["<|vision_eos|>"],
        audio_start_token_id=ids["<|audio_bos|>"],
        audio_end_token_id=ids["<|audio_eos|>"],
        **ends,
    )
    return Qwen2_5OmniThinkerForConditionalGeneration(cfg)


class OmniProcessors:
    """The image processor and the feature extractor of an omni model, saved as one preprocessor_config.json (the
    layout of Qwen's checkpoints, from which AutoImageProcessor and AutoFeatureExtractor each read their own keys).
    Qwen2_5OmniProcessor itself cannot be built here: its video processor needs torchvision."""

    def __init__(self, image_processor: Any, feature_extractor: Any):
        self.image_processor, self.feature_extractor = image_processor, feature_extractor

    def save_pretrained(self, folder: Any) -> None:
        save_omni_processors(self.image_processor, self.feature_extractor, folder)


def save_omni_processors(image_processor: Any, feature_extractor: Any, folder: Any) -> None:
    """Writes both processors' settings into the folder's preprocessor_config.json, each type named."""
    settings = {**feature_extractor.to_dict(), **image_processor.to_dict()}
    settings.pop("processor_settings", None)
    settings["feature_extractor_type"] = type(feature_extractor).__name__
    settings["image_processor_type"] = type(image_processor).__name__.removesuffix("Pil")  # PIL where no torchvision
    path = Path(folder) / "preprocessor_config.json"
    path.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def save_tiny_omni(out: Any, tokenizer: Any, seed: int = 0) -> None:
    """Writes a tiny random Qwen2.5-Omni thinker, the tokenizer with the omni tokens and the two processors'
    preprocessor_config.json into the folder `out`."""
    from tunesmith.model.audio import tiny_feature_extractor
    from tunesmith.model.vision import add_media_tokens, save_tiny_multimodal, tiny_image_processor

    ids = add_media_tokens(tokenizer, OMNI_TOKENS)
    processors = OmniProcessors(tiny_image_processor(), tiny_feature_extractor())
    save_tiny_multimodal(out, tokenizer, ids, tiny_qwen2_5_omni, processors, seed)
