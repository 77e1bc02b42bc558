"""Images and audios together for Qwen2.5-Omni's thinker, as LLaMA-Factory 0.9.5's qwen2_omni mm_plugin makes them:
each <image> becomes <|vision_bos|><|IMAGE|>*n<|vision_eos|> (Qwen-VL's count and resizing, data/vision.py) and each
<audio> <|audio_bos|><|AUDIO|>*n<|audio_eos|> (Qwen2-Audio's count, data/audio.py); the two plugins of one model
side by side, and the collators that carry both media. Videos (and so use_audio_in_video) are refused."""

from __future__ import annotations

import dataclasses

from tunesmith.data.audio import ENCODED_AUDIOS, AudioPlugin
from tunesmith.data.vision import (
    ENCODED_IMAGES,
    ImagePlugin,
    MediaCollator,
    PairwiseMediaCollator,
    pixel_bounds,
    wrong_family,
)
from tunesmith.errors import DataError

# LF's get_mm_plugin(name="qwen2_omni", image_token="<|IMAGE|>", video_token="<|VIDEO|>",
# vision_bos_token="<|vision_bos|>", vision_eos_token="<|vision_eos|>", ...)
IMAGE_TOKENS = {
    "image_token": "<|IMAGE|>",
    "video_token": "<|VIDEO|>",
    "vision_bos": "<|vision_bos|>",
    "vision_eos": "<|vision_eos|>",
}
VIDEOS_REFUSED = (
    "videos on Qwen2.5-Omni are not supported: its video processor needs torchvision, which cannot be installed "
    "beside torch 2.13 (and use_audio_in_video reads the audio of those videos); train on images and audios"
)


class OmniImagePlugin(ImagePlugin):
    """Qwen-VL's image expansion with the omni tokens. The thinker computes its M-RoPE positions from the image
    tokens itself: no per-token inputs (LF's collator passes none either)."""

    @classmethod
    def make(cls, image_processor, multimodal=None) -> OmniImagePlugin:
        if not hasattr(image_processor, "merge_size"):
            raise wrong_family("qwen2_omni", "Qwen2.5-Omni", image_processor)
        return cls(image_processor, **IMAGE_TOKENS, **pixel_bounds(multimodal))

    def batch_inputs(self, tokenizer, input_ids) -> dict:
        return {}


@dataclasses.dataclass
class OmniPlugin:
    """An omni model's two plugins: training's encoder expands both placeholders and its collators add both
    media's inputs (pixel_values, image_grid_thw; input_features, feature_attention_mask)."""

    image: OmniImagePlugin
    audio: AudioPlugin

    @property
    def image_processor(self):
        return self.image.image_processor

    def batch_inputs(self, tokenizer, input_ids) -> dict:
        return {}

    def token_type_ids(self, tokenizer, input_ids):
        """1 at image and audio tokens (predict's cut check)."""
        return self.image.token_type_ids(tokenizer, input_ids) | self.audio.token_type_ids(tokenizer, input_ids)


def is_omni_plugin(plugin) -> bool:
    return isinstance(plugin, OmniPlugin)


def pair(image_plugin, audio_plugin):
    """The plugin of a model with these plugins (either may be None): both for an omni model, else the one there.
    The qwen2_omni template on a model without audio (e.g. Qwen2-VL) is an error: its tokens are not the model's."""
    if isinstance(image_plugin, OmniImagePlugin) and audio_plugin is None:
        raise DataError(
            "template qwen2_omni is Qwen2.5-Omni's (images and audios), but this model has no audio feature "
            "extractor: set `template:` to the model's own template (e.g. qwen2_vl for Qwen2-VL)"
        )
    if image_plugin is not None and audio_plugin is not None:
        return OmniPlugin(image_plugin, audio_plugin)
    return image_plugin or audio_plugin


def check_no_videos(records) -> None:
    """Records with videos are refused on an omni model, with the reason (data/media.py may read them for others)."""
    if "videos" in records.column_names and any(records["videos"]):
        raise DataError(VIDEOS_REFUSED)


class OmniCollator:
    """data/vision.py's collator for the images, plus the audio features of the batch's audios (twice for dpo's
    chosen and rejected rows, as the images)."""

    def __init__(self, tokenizer, model, plugin: OmniPlugin, pairwise: bool = False):
        collator = PairwiseMediaCollator if pairwise else MediaCollator
        self.images = collator(tokenizer, model, plugin.image, ENCODED_IMAGES)
        self.plugin, self.repeat = plugin, 2 if pairwise else 1

    def __call__(self, features: list[dict]) -> dict:
        audios = [path for feature in features for path in (feature.get(ENCODED_AUDIOS) or [])]
        batch = self.images([{k: v for k, v in feature.items() if k != ENCODED_AUDIOS} for feature in features])
        batch.update(self.plugin.audio.inputs(audios * self.repeat))
        return batch


def omni_collator(config, tokenizer, model, plugin: OmniPlugin):
    """The sft/dpo collator of an omni model (stage and packing checked as for image and audio models)."""
    from tunesmith.data.audio import check_stage

    check_stage(config)
    return OmniCollator(tokenizer, model, plugin, pairwise=config.method.stage == "dpo")
