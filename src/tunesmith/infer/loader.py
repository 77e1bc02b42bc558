"""The one way a model is loaded for inference (chat, api, web chat, eval, predict, export, demo), with a
vision-language model's image plugin, and the one place model.generate's keyword arguments are built from the
generation keys."""

from __future__ import annotations

import logging

from tunesmith.device import detect_device

log = logging.getLogger(__name__)


def load_for_inference(config, *, place: bool = True, job: str = "chat"):
    """(tokenizer, template, model): the tokenizer fixed by the chat template, the model (dtype, quantization,
    adapters merged) loaded exactly as training loads it, frozen, and (place=True) on the detected device."""
    from tunesmith.config.load import require
    from tunesmith.data.pipeline import resolve_template
    from tunesmith.model.load import load_model, load_tokenizer

    require(config, "model_name_or_path", job=job)  # job: the command named in the error
    tokenizer = load_tokenizer(config.model, config.lf_model)
    template = resolve_template(config.data, tokenizer)
    model_args = config.model
    if config.lf_model.infer_dtype != "auto":  # LLaMA-Factory's dtype for inference jobs, in place of `dtype`
        model_args = model_args.model_copy(update={"dtype": config.lf_model.infer_dtype})
    model = load_model(model_args, config.method, tokenizer, is_trainable=False, cutoff_len=config.data.cutoff_len,
                       lf_model=config.lf_model, lf_method=config.lf_method, multimodal=config.multimodal)
    if not config.lf_model.use_kv_cache:  # LLaMA-Factory's switch: generate without the key/value cache
        model.generation_config.use_cache = model.config.use_cache = False
    if place:
        model = place_on_device(model)
    return tokenizer, template, model


def load_image_plugin(config, template):
    """(plugin, why_not): a vision-language model's image plugin (its image processor, the template's image tokens
    and the config's image_max_pixels/image_min_pixels, exactly as training encodes images) and None; for a text
    model, or a VL model with a text template, None and the reason images cannot be used."""
    from tunesmith.data.vision import make_plugin
    from tunesmith.errors import DataError
    from tunesmith.model.load import load_image_processor

    image_processor = load_image_processor(config.model)
    if image_processor is None:
        return None, (f"{config.model.model_name_or_path} is a text-only model: it cannot take images; use a "
                      "vision-language model (e.g. Qwen2-VL) for images")
    try:
        return make_plugin(template, image_processor, config.multimodal), None
    except DataError as exc:  # a VL model with a text template still chats in text
        log.warning("images are off: %s", exc)
        return None, str(exc)


def load_audio_plugin(config, template):
    """(plugin, why_not) for audios, as load_image_plugin for images: an audio-language model's AudioPlugin (its
    feature extractor, the template's audio tokens, audio_sampling_rate) and None; else None and the reason."""
    from tunesmith.data.audio import make_plugin
    from tunesmith.errors import DataError
    from tunesmith.model.audio import load_feature_extractor

    feature_extractor = load_feature_extractor(config.model)
    if feature_extractor is None:
        return None, (f"{config.model.model_name_or_path} takes no audio: chat with an audio-language model "
                      "(Qwen2-Audio) to send audios")
    try:
        return make_plugin(template, feature_extractor, config.multimodal), None
    except DataError as exc:  # an audio model with a text template still chats in text
        log.warning("audios are off for this chat: %s", exc)
        return None, str(exc)


def place_on_device(model):
    """Moves the model to the device training would use (cuda, npu, xpu, mps or cpu). Models placed by their loader
    stay where they are: quantized ones and those loaded with a device map (several GPUs)."""
    from tunesmith.model.quantize import is_quantized

    device = detect_device()
    if model.device.type == device or is_quantized(model) or getattr(model, "hf_device_map", None) is not None:
        return model
    log.info("inference on %s", device)
    return model.to(device)


def generation_kwargs(generation, tokenizer, template, overrides: dict | None = None, *, greedy: bool = False) -> dict:
    """model.generate's keyword arguments: the generation keys (a GenerationArgs), then the non-None `overrides`
    (a request's own values); greedy=True turns sampling off. Sampling keys are dropped when decoding is greedy
    (temperature 0, as OpenAI clients send it, means greedy). Stops at the template's stop tokens."""
    from tunesmith.model.load import pad_id

    values = {**generation.model_dump(), **{k: v for k, v in (overrides or {}).items() if v is not None}}
    values.pop("skip_special_tokens", None)  # a decoding setting, not a generate() one
    if greedy or values.get("temperature") == 0:
        values["do_sample"] = False
    if not values["do_sample"]:
        for key in ("temperature", "top_p", "top_k"):
            values.pop(key, None)
    return {**values, "eos_token_id": template.stop_token_ids(tokenizer), "pad_token_id": pad_id(tokenizer)}
