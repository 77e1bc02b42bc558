"""Qwen2-Audio on the model side: the tiny random model + Whisper feature extractor, and loading a model's extractor."""

from __future__ import annotations

from typing import Any

AUDIO_TOKENS = ("<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>")
# The tiny feature extractor: 16 mel bins over 2-second windows (200 frames), so the tiny encoder takes 100 positions.
TINY_MEL_BINS, TINY_CHUNK_SECONDS = 16, 2


def tiny_feature_extractor() -> Any:
    """transformers' WhisperFeatureExtractor (numpy; Qwen2-Audio's) sized for the tiny model."""
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(
        feature_size=TINY_MEL_BINS, chunk_length=TINY_CHUNK_SECONDS, return_attention_mask=True
    )


def tiny_qwen2_audio(ids: dict[str, int], vocab_size: int, tokenizer: Any = None) -> Any:
    """A ~0.2M-parameter random Qwen2AudioForConditionalGeneration whose <|AUDIO|> id matches `ids`."""
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    frames = TINY_CHUNK_SECONDS * 100  # Whisper's hop of 160 samples at 16 kHz: 100 frames a second
    audio = {
        "num_mel_bins": TINY_MEL_BINS,
        "encoder_layers": 2,
        "encoder_attention_heads": 2,
        "encoder_ffn_dim": 64,
        "d_model": 32,
        "max_source_positions": frames // 2,  # the encoder's stride-2 convolution halves the frames
    }
    text = {
        "model_type": "qwen2",
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "use_sliding_window": False,
    }
    ends = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id} if tokenizer else {}
    text.update(ends)
    cfg = Qwen2AudioConfig(audio_config=audio, text_config=text, audio_token_index=ids["<|AUDIO|>"], **ends)
    return Qwen2AudioForConditionalGeneration(cfg)


def save_tiny_audio(out: Any, tokenizer: Any, seed: int = 0) -> None:
    """Writes a tiny random Qwen2-Audio, the tokenizer with the audio tokens and the processor (its
    processor_config.json holds the feature extractor's settings) into the folder `out`."""
    from transformers import Qwen2AudioProcessor

    from tunesmith.model.vision import add_media_tokens, save_tiny_multimodal

    ids = add_media_tokens(tokenizer, AUDIO_TOKENS)  # before the processor, which reads the <|AUDIO|> id
    processor = Qwen2AudioProcessor(tiny_feature_extractor(), tokenizer, chat_template=tokenizer.chat_template)
    save_tiny_multimodal(out, tokenizer, ids, tiny_qwen2_audio, processor, seed)


def is_audio_model(model_or_config: Any) -> bool:
    config = getattr(model_or_config, "config", model_or_config)
    return getattr(config, "audio_config", None) is not None


def load_feature_extractor(model_args: Any):
    """An audio-language model's feature extractor (Qwen2-Audio: Whisper's); None for a model without audio."""
    from transformers import AutoConfig, AutoFeatureExtractor

    from tunesmith.errors import ModelError
    from tunesmith.model.load import _load_error, _source_kwargs

    name, kwargs = _source_kwargs(model_args)
    try:
        config = AutoConfig.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as exc:
        raise _load_error(name, exc, "model") from None
    from tunesmith.model.omni_config import is_omni, thinker_config

    config = thinker_config(config)  # a whole Qwen2.5-Omni: its thinker's towers
    if not is_audio_model(config) or (getattr(config, "vision_config", None) is not None and not is_omni(config)):
        return None  # a text or vision-language model (Qwen2.5-Omni's thinker has both towers: it takes audios)
    try:
        return AutoFeatureExtractor.from_pretrained(name, **kwargs)
    except (OSError, ValueError, ImportError) as exc:
        raise ModelError(
            f"{name} is an audio-language model ({config.model_type}) but its feature extractor does "
            f"not load ({exc.__class__.__name__}: {str(exc)[:200]}); it needs preprocessor_config.json"
        ) from None
