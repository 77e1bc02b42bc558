"""A tiny random Gemma 3 vision-language model (SigLIP tower, pooled projector, Gemma 3 text) and its PIL image
processor, for offline tests: `tunesmith tiny DIR --arch gemma3`."""

from typing import Any

# Gemma 3's image tokens (google/gemma-3-*-it's tokenizer): begin/end of image and the soft token each image
# feature replaces.
BOI, EOI, IMAGE = "<start_of_image>", "<end_of_image>", "<image_soft_token>"
GEMMA3_TOKENS = (BOI, EOI, IMAGE)
IMAGE_SIZE = 32  # the vision tower's input side: 4x4 patches of 8 px
PATCH_SIZE = 8
MM_TOKENS_PER_IMAGE = 4  # the projector pools the 4x4 patches to 2x2 soft tokens


def tiny_gemma3_image_processor() -> Any:
    """transformers' PIL Gemma 3 image processor (the default one needs torchvision) at the tiny tower's size; it
    carries image_seq_length as real Gemma 3 checkpoints' preprocessor_config.json does."""
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    return Gemma3ImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_seq_length=MM_TOKENS_PER_IMAGE
    )


def tiny_gemma3(ids: dict[str, int], vocab_size: int, tokenizer: Any = None) -> Any:
    """A ~0.2M-parameter random Gemma3ForConditionalGeneration whose image token ids match `ids`. The projector's
    weight (zeros at init in transformers) is drawn at random so the images change the logits."""
    import torch
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    ends = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id} if tokenizer else {}
    text = {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "query_pre_attn_scalar": 16,
        "max_position_embeddings": 2048,
        "sliding_window": 512,
        "pad_token_id": None,
        **ends,
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": IMAGE_SIZE,
        "patch_size": PATCH_SIZE,
        "vision_use_head": False,  # as Gemma 3: the projector reads every patch, not a pooled head
    }
    config = Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=MM_TOKENS_PER_IMAGE,
        boi_token_index=ids[BOI],
        eoi_token_index=ids[EOI],
        image_token_index=ids[IMAGE],
        **ends,
    )
    model = Gemma3ForConditionalGeneration(config)
    with torch.no_grad():
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0.0, 0.2)
    return model


def save_tiny_gemma3(out: Any, tokenizer: Any, seed: int = 0) -> None:
    """Writes a tiny random Gemma 3, the tokenizer with the image tokens and the PIL image processor's
    preprocessor_config.json into the folder `out`."""
    from tunesmith.model.vision import add_media_tokens, save_tiny_multimodal

    ids = add_media_tokens(tokenizer, GEMMA3_TOKENS)
    save_tiny_multimodal(out, tokenizer, ids, tiny_gemma3, tiny_gemma3_image_processor(), seed)
