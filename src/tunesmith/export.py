"""`tunesmith export`: merge LoRA adapters into the base model and save it, sharded, with its tokenizer (and a
vision-language model's image processor)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from tunesmith.config.load import require
from tunesmith.errors import ConfigError, ModelError
from tunesmith.staging import new_staging, publish

log = logging.getLogger(__name__)


def _model_config(config):
    from transformers import AutoConfig

    from tunesmith.model.omni_config import thinker_config

    try:
        return thinker_config(AutoConfig.from_pretrained(  # a whole Qwen2.5-Omni exports its thinker
            config.model.model_name_or_path, trust_remote_code=config.model.trust_remote_code,
            cache_dir=config.model.cache_dir))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the config of {config.model.model_name_or_path}: {exc}") from None


def run_export(config) -> int:
    import torch

    from tunesmith.infer.loader import load_for_inference
    from tunesmith.model.quantize import is_quantized

    require(config, "model_name_or_path", "export_dir", job="export")
    if config.model.quantization_bit is not None:
        raise ConfigError(f"{config.source}: cannot merge adapters into a quantized base (quantization_bit: "
                          f"{config.model.quantization_bit}); export from the full-precision model")
    export_dir = Path(config.export.export_dir)
    if export_dir.exists() and any(export_dir.iterdir()) and not config.output.overwrite_output_dir:
        raise ConfigError(f"export_dir {export_dir} is not empty; set overwrite_output_dir: true or pick another")

    # the saved tokenizer carries the template's eos, pad and chat template; adapter_name_or_path is merged
    if config.export.export_format == "gguf":
        from tunesmith.export_gguf import check_arch

        check_arch(_model_config(config))  # before any weights load
        if config.export.export_hub_model_id:
            raise ConfigError("export_hub_model_id pushes safetensors exports only; remove it for export_format: gguf")
    # export_device auto (LLaMA-Factory's device_map auto): the merged model goes to the detected accelerator to be cast
    # and saved; cpu (the default) keeps it where it loaded. Either way the weights written are the same.
    tokenizer, template, model = load_for_inference(config, place=config.export.export_device == "auto", job="export")
    if is_quantized(model):
        raise ModelError(f"{config.model.model_name_or_path} is a quantized checkpoint; merged export needs the "
                         "full-precision base model")
    gguf = config.export.export_format == "gguf"
    if not gguf:  # GGUF converts from the loaded precision itself (export_quantization)
        model = model.to(getattr(torch, config.export.export_dtype))
    model.config.use_cache = True

    staging = new_staging(export_dir)
    try:
        if gguf:
            from tunesmith.export_gguf import export_gguf

            export_gguf(model, tokenizer, template, staging, config.export.export_quantization)
        else:
            model.save_pretrained(str(staging), max_shard_size=f"{config.export.export_size}GB")
            if config.export.export_legacy_format:
                to_legacy_format(staging)
            tokenizer.padding_side = "left"  # for generation with the exported model
            tokenizer.save_pretrained(str(staging))
            save_processor_files(config, staging)
        publish(staging, export_dir, replace=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already after a successful rename
    log.info("merged model saved to %s (%s)", export_dir,
             config.export.export_quantization if gguf else config.export.export_dtype)
    print(f"exported to {export_dir}")
    if config.export.export_hub_model_id:
        try:
            model.push_to_hub(config.export.export_hub_model_id, token=config.model.hf_hub_token)
            tokenizer.push_to_hub(config.export.export_hub_model_id, token=config.model.hf_hub_token)
        except Exception as exc:
            raise ModelError(f"export saved locally, but pushing to {config.export.export_hub_model_id} failed: "
                             f"{exc}") from None
    return 0


# A VL model's processor files besides preprocessor_config.json, copied as they are when the base folder has them.
PROCESSOR_FILES = ("processor_config.json", "video_preprocessor_config.json", "chat_template.json")


def save_processor_files(config, folder: Path) -> None:
    """A multimodal model's image processor or audio feature extractor (preprocessor_config.json, with the base's
    settings) and its other processor files, so the merged folder reloads with its processor; nothing for a text
    model."""
    from tunesmith.model.audio import load_feature_extractor
    from tunesmith.model.load import load_image_processor, save_image_processor

    image_processor, feature_extractor = load_image_processor(config.model), load_feature_extractor(config.model)
    processor = image_processor or feature_extractor  # Qwen2.5-Omni has both: they share one file
    if processor is None:
        return
    if image_processor is not None and feature_extractor is not None:
        from tunesmith.model.omni import save_omni_processors

        save_omni_processors(image_processor, feature_extractor, folder)
    else:
        save_image_processor(processor, folder)  # a feature extractor saves the same way (nothing attached)
    base = Path(config.model.model_name_or_path)
    for name in PROCESSOR_FILES:
        if (base / name).is_file() and not (folder / name).exists():
            shutil.copy2(base / name, folder / name)
    log.info("saved the processor (%s) with the merged model", type(processor).__name__)


def to_legacy_format(folder: Path) -> None:
    """Rewrites the saved safetensors shards as PyTorch .bin (pickle) shards with their index, as
    save_pretrained(safe_serialization=False) did before transformers 5 (LLaMA-Factory's export_legacy_format)."""
    import json

    import torch
    from safetensors.torch import load_file

    names = {}
    for shard in sorted(folder.glob("*.safetensors")):
        legacy = shard.name.replace("model", "pytorch_model", 1).replace(".safetensors", ".bin")
        torch.save(load_file(shard), folder / legacy)
        names[shard.name] = legacy
        shard.unlink()
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        data = json.loads(index.read_text(encoding="utf-8"))
        data["weight_map"] = {key: names.get(value, value) for key, value in data["weight_map"].items()}
        (folder / "pytorch_model.bin.index.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
        index.unlink()
    log.info("weights saved as .bin (export_legacy_format): %s", ", ".join(names.values()))
