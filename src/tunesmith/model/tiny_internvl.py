"""A tiny random InternVL (InternViT tower, pixel-shuffle projector, Qwen2 text) and its PIL image processor, for
offline tests: `tunesmith tiny DIR --arch internvl`."""

from typing import Any

# InternVL's image tokens (OpenGVLab/InternVL3-*-hf's tokenizer): start/end of image and the context token each image
# feature replaces.
START, END, CONTEXT = "<img>", "</img>", "<IMG_CONTEXT>"
INTERNVL_TOKENS = (START, END, CONTEXT)
IMAGE_SIZE = 32  # the tower's input side: 4x4 patches of 8 px
PATCH_SIZE = 8
IMAGE_SEQ_LENGTH = 4  # (32 / 8)^2 patches * downsample_ratio 0.5^2


def tiny_internvl_image_processor() -> Any:
    """transformers' PIL GOT-OCR2 image processor (InternVL's; the default one needs torchvision) at the tiny tower's
    size, with image_seq_length (the model config's) as the plugin reads it."""
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    return GotOcr2ImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_seq_length=IMAGE_SEQ_LENGTH)


def tiny_internvl(ids: dict[str, int], vocab_size: int, tokenizer: Any = None) -> Any:
    """A ~0.2M-parameter random InternVLForConditionalGeneration whose image token id matches `ids`."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    ends = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id} if tokenizer else {}
    text = {
        "model_type": "qwen2",
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        "use_sliding_window": False,
        "tie_word_embeddings": False,
        **ends,
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": [IMAGE_SIZE, IMAGE_SIZE],
        "patch_size": [PATCH_SIZE, PATCH_SIZE],
    }
    config = InternVLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids[CONTEXT],
        image_seq_length=IMAGE_SEQ_LENGTH,
        downsample_ratio=0.5,
        tie_word_embeddings=False,
        **ends,
    )
    return InternVLForConditionalGeneration(config)


def save_tiny_internvl(out: Any, tokenizer: Any, seed: int = 0) -> None:
    """Writes a tiny random InternVL, the tokenizer with the image tokens and the PIL image processor's
    preprocessor_config.json into the folder `out`."""
    from tunesmith.model.vision import add_media_tokens, save_tiny_multimodal

    ids = add_media_tokens(tokenizer, INTERNVL_TOKENS)
    save_tiny_multimodal(out, tokenizer, ids, tiny_internvl, tiny_internvl_image_processor(), seed)
