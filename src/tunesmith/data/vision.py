"""Image inputs for Qwen-VL models as LLaMA-Factory 0.9.5's qwen2_vl mm_plugin makes them: <image> expanded to
<|vision_start|><|image_pad|>*n<|vision_end|> (n = grid_t*grid_h*grid_w / merge_size**2), pixel_values and
image_grid_thw from the model's image processor; make_plugin, which picks any family's plugin (the others:
data/vision_*.py, one interface), and the encoder wrapper and collators that carry the media of every family
(images, and data/audio.py's audios)."""

from __future__ import annotations

import copy
import dataclasses

from tunesmith.data.media import IMAGE_PLACEHOLDER, IMAGES, check_placeholders, regularize
from tunesmith.errors import DataError, ModelError

# template mm_plugin -> its tokens (LF's get_mm_plugin(name="qwen2_vl"/"qwen3_vl", image_token="<|image_pad|>"))
PLUGINS = {
    "qwen2_vl": {
        "image_token": "<|image_pad|>",
        "video_token": "<|video_pad|>",
        "vision_bos": "<|vision_start|>",
        "vision_eos": "<|vision_end|>",
    },
}
PLUGINS["qwen3_vl"] = PLUGINS["qwen2_vl"]  # the same image expansion (videos differ: data/vision_video.py)
# template mm_plugin -> "module:class" of the other families' plugins, each with make(image_processor, multimodal)
# and the interface of ImagePlugin: inputs (the image tensors), expand (training: <image> -> tokens), prepare
# (inference: both at once), batch_inputs (per-token model inputs of a padded batch), token_type_ids (nonzero at
# image tokens: predict's cut check), image_processor, image_token
PLUGIN_CLASSES = {
    "gemma3": "tunesmith.data.vision_gemma3:Gemma3Plugin",
    "intern_vl": "tunesmith.data.vision_internvl:InternVLPlugin",
    "llava": "tunesmith.data.vision_llava:LlavaPlugin",
    "llava_next": "tunesmith.data.vision_llava:LlavaNextPlugin",
    "qwen2_omni": "tunesmith.data.omni:OmniImagePlugin",  # its images; data/omni.py pairs it with the audio plugin
}
# multimodal keys only one family reads: key -> (its mm_plugin, what it is)
FAMILY_KEYS = {
    "image_do_pan_and_scan": ("gemma3", "Gemma 3's pan-and-scan"),
    "crop_to_patches": ("intern_vl", "InternVL's crop-to-patches"),
}
IMAGE_ENCODINGS = ("supervised", "pairwise")  # encodings whose examples may carry images (stages: IMAGE_STAGES)
IMAGE_STAGES = ("sft", "dpo")
# The encoded examples' column of image paths. Not "images": TRL's DPOTrainer takes a dataset with an "images" column
# for raw images it would process itself with a ProcessorMixin, which tunesmith does not hand it.
ENCODED_IMAGES = "image_paths"


@dataclasses.dataclass
class ImagePlugin:
    """One model's image processor, LF's resize bounds and its image tokens."""

    image_processor: object
    image_token: str = "<|image_pad|>"
    video_token: str = "<|video_pad|>"
    vision_bos: str = "<|vision_start|>"
    vision_eos: str = "<|vision_end|>"
    max_pixels: int = 768 * 768
    min_pixels: int = 32 * 32
    video: object = None  # Qwen-VL's data/vision_video.py VideoPlugin when the data has videos

    @property
    def merge_length(self) -> int:
        return int(getattr(self.image_processor, "merge_size", 1)) ** 2

    def inputs(self, paths: list) -> dict:
        """pixel_values and image_grid_thw of the images (file paths or PIL images; empty dict when none)."""
        if not paths:
            return {}
        images = [regularize(path, self.max_pixels, self.min_pixels) for path in paths]
        return dict(self.image_processor(images=images, return_tensors="pt"))

    def expand(self, messages: list[dict], paths: list) -> list[dict]:
        """The messages with each <image> replaced by its vision tokens, as LF's process_messages does."""
        check_placeholders(messages, paths)
        return self.expand_grids(messages, self.inputs(paths).get("image_grid_thw", []))

    def expand_grids(self, messages: list[dict], grids) -> list[dict]:
        """expand() for images already processed: one image_grid_thw row per <image>, in order."""
        messages, index = copy.deepcopy(messages), 0
        for message in messages:
            content = message["content"]
            while IMAGE_PLACEHOLDER in content:
                seqlen = int(grids[index].prod()) // self.merge_length
                span = f"{self.vision_bos}{self.image_token * seqlen}{self.vision_eos}"
                content = content.replace(IMAGE_PLACEHOLDER, span, 1)
                index += 1
            message["content"] = content
        return messages

    def prepare(self, messages: list[dict], images: list) -> tuple[list[dict], dict]:
        """Inference: the messages expanded for the images and the model's inputs for them, processed once."""
        vision = self.inputs(images)
        return self.expand_grids(messages, vision["image_grid_thw"]), vision

    def batch_inputs(self, tokenizer, input_ids) -> dict:
        """The per-token model inputs a batch of ids needs besides the image tensors."""
        return {"mm_token_type_ids": self.token_type_ids(tokenizer, input_ids)}

    def token_type_ids(self, tokenizer, input_ids):
        """transformers 5's mm_token_type_ids for M-RoPE: 1 at image tokens, 2 at video tokens, 0 elsewhere."""
        image = tokenizer.convert_tokens_to_ids(self.image_token)
        video = tokenizer.convert_tokens_to_ids(self.video_token)
        return (input_ids == image).long() + 2 * (input_ids == video).long()


def make_plugin(template, image_processor, multimodal=None) -> ImagePlugin:
    """The plugin of a VL template (`mm_plugin` in templates.yaml) for this image processor and the config's
    image_max_pixels/image_min_pixels (and the family's own keys, FAMILY_KEYS). Videos: data/vision_video.py's
    with_video_plugin adds theirs."""
    name = getattr(template, "mm_plugin", None)
    if name not in PLUGINS and name not in PLUGIN_CLASSES:
        from tunesmith.data.template import template_table

        vl = [key for key, entry in template_table().items() if entry.get("mm_plugin")]
        raise DataError(
            f"template {getattr(template, 'name', 'from the tokenizer')} has no image support; for a "
            f"vision-language model set `template:` to one of {', '.join(vl)}"
        )
    check_family_keys(template, name, multimodal)
    if name in PLUGIN_CLASSES:
        import importlib

        module, cls = PLUGIN_CLASSES[name].split(":")
        return getattr(importlib.import_module(module), cls).make(image_processor, multimodal)
    if not hasattr(image_processor, "merge_size"):
        raise wrong_family(name, "Qwen-VL", image_processor)
    return ImagePlugin(image_processor, **PLUGINS[name], **pixel_bounds(multimodal))


def pixel_bounds(multimodal) -> dict:
    """The config's image_max_pixels/image_min_pixels as a plugin's max_pixels/min_pixels (none without a config)."""
    if multimodal is None:
        return {}
    return {"max_pixels": multimodal.image_max_pixels, "min_pixels": multimodal.image_min_pixels}


def tokens_per_image(image_processor, model: str, config_key: str) -> int:
    """The image_seq_length that model/load.py's load_image_processor sets on the image processor from config.json's
    `config_key`; `model` names the folder to load instead ("a Gemma 3") when it is missing."""
    length = getattr(image_processor, "image_seq_length", None)
    if not length:
        raise ModelError(
            f"the image processor ({type(image_processor).__name__}) does not say how many tokens an image takes "
            f"(image_seq_length); load {model} model folder whose config.json has {config_key}"
        )
    return int(length)


def wrong_family(name: str, family: str, image_processor) -> DataError:
    """The error for a VL template whose plugin cannot use this model's image processor (another family's)."""
    return DataError(
        f"template {name} expands images for {family} models, but this model's image processor is "
        f"{type(image_processor).__name__} (another family's): set `template:` to the model's own VL template "
        "(e.g. qwen2_vl for Qwen2-VL, gemma3 for Gemma 3, intern_vl for InternVL, llava for LLaVA 1.5, llava_next "
        "for LLaVA-NeXT)"
    )


def check_family_keys(template, name: str, multimodal) -> None:
    """A family's own image key (Gemma 3's pan-and-scan, InternVL's crop-to-patches) set for another family is an
    error rather than ignored."""
    from tunesmith.errors import ConfigError

    for key, (family, what) in FAMILY_KEYS.items():
        if multimodal is not None and getattr(multimodal, key) and name != family:
            raise ConfigError(
                f"{key} is {what} (template {family}); template {getattr(template, 'name', None)} ({name} images) "
                f"does not have it: remove {key} or set it to false"
            )


def with_media(base, plugin, column: str = IMAGES, paths_column: str = ENCODED_IMAGES, check_kept=None):
    """Wraps a batch encoder for any medium's plugin (images, data/audio.py's audios): each row's placeholders are
    expanded before encoding, and the row's paths from `column` go along with its ids in `paths_column` (the
    collator turns them into the model's inputs). `check_kept(encoded, messages, paths)`, when given, sees each
    encoded row with media and its expanded messages up to the first response (e.g. audio's cutoff check)."""

    def encode(batch: dict) -> dict:
        keys = [key for key in batch if key != column]
        out: dict = {}
        for row in range(len(batch["prompt"])):
            paths = list(batch[column][row] or [])
            one = {key: [batch[key][row]] for key in keys}
            messages, cut = [], 0
            if paths:
                messages = plugin.expand(one["prompt"][0] + one["response"][0], paths)
                cut = len(one["prompt"][0])
                one["prompt"], one["response"] = [messages[:cut]], [messages[cut:]]
            encoded = base(one)
            if paths and check_kept is not None:
                check_kept(encoded, messages[: cut + 1], paths)
            kept = len(next(iter(encoded.values()), []))
            for key, values in encoded.items():
                out.setdefault(key, []).extend(values)
            out.setdefault(paths_column, []).extend([paths] * kept)
        return out

    return encode


def with_images(base, plugin: ImagePlugin):
    """with_media for images: the records' `images` column, the encoded examples' ENCODED_IMAGES."""
    return with_media(base, plugin, IMAGES, ENCODED_IMAGES)


def check_images_fit(records, encoding: str, plugin) -> None:
    """Records with images need a VL model (an image processor and a VL template) and a stage that can use them."""
    if IMAGES not in records.column_names or not any(records[IMAGES]):
        return
    if plugin is None:
        raise DataError(
            "the data holds images (an `images` column) but the model has no image processor: train a "
            "vision-language model (e.g. Qwen2-VL; `tunesmith tiny --arch qwen2_vl` builds a tiny one)"
        )
    if encoding not in IMAGE_ENCODINGS:
        raise DataError(
            f"images are trained with stages {' and '.join(IMAGE_STAGES)} only for now, not with this stage "
            f"({encoding} encoding); use stage: sft or dpo, or drop the images column"
        )


class MediaCollator:
    """Right-padded text batches (no packing: Qwen-VL's M-RoPE positions come from the attention mask and the
    vision tokens, which packed position_ids would break) plus the plugin's inputs for the batch's media paths (in
    `paths`: ENCODED_IMAGES, or data/audio.py's ENCODED_AUDIOS), in order, and its per-token batch_inputs (e.g.
    pixel_values, image_grid_thw and mm_token_type_ids; input_features and feature_attention_mask)."""

    def __init__(self, tokenizer, model, plugin, paths: str = ENCODED_IMAGES):
        from transformers import DataCollatorForSeq2Seq

        from tunesmith.data.records import IGNORE_INDEX

        self.tokenizer, self.plugin, self.paths = tokenizer, plugin, paths
        self.padded = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=IGNORE_INDEX, padding=True)

    def __call__(self, features: list[dict]) -> dict:
        paths = [path for feature in features for path in (feature.get(self.paths) or [])]
        text = [{key: value for key, value in feature.items() if key != self.paths} for feature in features]
        batch = self.padded(text)
        batch.update(self.plugin.inputs(paths))
        batch.update(self.plugin.batch_inputs(self.tokenizer, batch["input_ids"]))
        return batch


class PairwiseMediaCollator:
    """dpo with media: the pairwise batch (chosen rows, then rejected rows) with each example's media twice, in the
    same order, so every row's media tokens (<|image_pad|>, <|AUDIO|>, ...) have their features."""

    def __init__(self, tokenizer, model, plugin, paths: str = ENCODED_IMAGES):
        from tunesmith.train.preference import pairwise_collator

        self.tokenizer, self.plugin, self.paths = tokenizer, plugin, paths
        self.text = pairwise_collator(tokenizer, model)

    def __call__(self, features: list[dict]) -> dict:
        paths = [path for feature in features for path in (feature.get(self.paths) or [])]
        batch = self.text([{k: v for k, v in feature.items() if k != self.paths} for feature in features])
        batch.update(self.plugin.inputs(paths + paths))
        batch.update(self.plugin.batch_inputs(self.tokenizer, batch["input_ids"]))
        return batch


VisionCollator = MediaCollator  # the image collators (paths: ENCODED_IMAGES, the default)
PairwiseVisionCollator = PairwiseMediaCollator


def media_collator(config, tokenizer, model, plugin, paths: str = ENCODED_IMAGES):
    """The sft/dpo collator of a model with media (its stage and packing checked by the caller)."""
    if config.method.stage == "dpo":
        return PairwiseMediaCollator(tokenizer, model, plugin, paths)
    return MediaCollator(tokenizer, model, plugin, paths)


def check_stage(config, model: str = "a vision-language model", media: str = "images") -> None:
    """A VL model (or data/audio.py's audio-language model: `model`, `media`) trains with sft or dpo (the default
    sigmoid loss, which TRL computes with the media)."""
    stage = config.method.stage
    if stage not in IMAGE_STAGES:
        raise DataError(f"stage {stage} on {model} is not supported yet; use stage: sft or dpo")
    lf = config.lf_method
    own = (
        config.method.pref_loss != "sigmoid"
        or config.method.dpo_label_smoothing > 0
        or lf.pref_bco_weight > 1e-6
        or lf.ld_alpha is not None
    )
    if stage == "dpo" and own:
        raise DataError(
            f"dpo on {model} takes pref_loss: sigmoid without dpo_label_smoothing, "
            f"pref_bco_weight or ld_alpha for now (those losses run without the {media})"
        )


def vision_collator(config, tokenizer, model, plugin: ImagePlugin):
    """The sft/dpo collator of a VL model; `packing: true` is refused (packed position_ids break Qwen-VL's M-RoPE)."""
    if config.data.packing:
        raise DataError(
            "packing: true cannot be used with a vision-language model (Qwen-VL's M-RoPE positions and "
            "Gemma 3's image attention come from the padded sequence and the image tokens); remove `packing` or "
            "set it to false"
        )
    return media_collator(config, tokenizer, model, plugin)
