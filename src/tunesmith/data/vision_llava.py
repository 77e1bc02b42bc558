"""Image inputs for LLaVA (1.5) and LLaVA-NeXT as LLaMA-Factory 0.9.5's llava / llava_next mm_plugins make them:
each <image> becomes the image token repeated once per image feature the model computes (a fixed count for LLaVA,
one that depends on the image's size and the anyres grid for LLaVA-NeXT), with pixel_values (and image_sizes for
NeXT) from the model's image processor."""

from __future__ import annotations

import dataclasses

from tunesmith.data.media import IMAGE_PLACEHOLDER, check_placeholders, regularize_base
from tunesmith.model.vision_llava import SETTINGS  # what model/load.py attaches as `processor_settings`


@dataclasses.dataclass
class LlavaPlugin:
    """LLaVA 1.5: every image is resized and cropped to one square, so each <image> becomes the same number of image
    tokens: (height // patch_size) * (width // patch_size) + num_additional_image_tokens, less one (the CLS feature)
    with vision_feature_select_strategy "default"."""

    image_processor: object
    patch_size: int = 14
    num_additional_image_tokens: int = 0
    vision_feature_select_strategy: str = "default"
    max_pixels: int = 768 * 768
    min_pixels: int = 32 * 32
    image_token: str = "<image>"

    @classmethod
    def make(cls, image_processor, multimodal=None) -> LlavaPlugin:
        """The plugin for this image processor (its processor_settings, which model/load.py's load_image_processor
        attaches; LF's defaults where absent) and the config's image_max_pixels/image_min_pixels."""
        from tunesmith.data.vision import pixel_bounds, wrong_family

        if not cls.fits(image_processor):
            name, family = ("llava_next", "LLaVA-NeXT") if cls is LlavaNextPlugin else ("llava", "LLaVA 1.5")
            raise wrong_family(name, family, image_processor)
        settings = getattr(image_processor, "processor_settings", None) or {}
        keys = {key: settings[key] for key in SETTINGS if key in settings}
        return cls(image_processor, **keys, **pixel_bounds(multimodal))

    @staticmethod
    def fits(image_processor) -> bool:
        """LLaVA 1.5's (CLIP's) image processor: one center crop, none of the other families' settings."""
        others = ("merge_size", "pan_and_scan", "max_patches", "image_grid_pinpoints")
        return hasattr(image_processor, "crop_size") and not any(hasattr(image_processor, key) for key in others)

    def inputs(self, paths: list) -> dict:
        """What the model takes for the images (file paths or PIL images): pixel_values (and NeXT's image_sizes)."""
        if not paths:
            return {}
        images = [regularize_base(path, self.max_pixels, self.min_pixels) for path in paths]
        return dict(self.image_processor(images=images, return_tensors="pt"))

    def seqlens(self, inputs: dict) -> list[int]:
        """The number of image tokens of each processed image, in order."""
        pixel_values = inputs.get("pixel_values")
        if pixel_values is None:
            return []
        height, width = pixel_values.shape[-2:]
        seqlen = (height // self.patch_size) * (width // self.patch_size) + self.num_additional_image_tokens
        seqlen -= self.vision_feature_select_strategy == "default"
        return [int(seqlen)] * len(pixel_values)

    def expand(self, messages: list[dict], paths: list) -> list[dict]:
        """The messages with each <image> replaced by its image tokens, as LF's llava plugins' process_messages."""
        check_placeholders(messages, paths)
        return self.expand_seqlens(messages, self.seqlens(self.inputs(paths)))

    def expand_seqlens(self, messages: list[dict], seqlens: list[int]) -> list[dict]:
        """expand() for images already processed: each <image> replaced by its run of image tokens (the image token
        is "<image>" itself, so each message is split at the placeholders first, as LF goes through "{{image}}")."""
        index = 0
        messages = [dict(message) for message in messages]
        for message in messages:
            if not isinstance(message["content"], str) or IMAGE_PLACEHOLDER not in message["content"]:
                continue
            parts = message["content"].split(IMAGE_PLACEHOLDER)
            runs = [self.image_token * seqlen for seqlen in seqlens[index : index + len(parts) - 1]]
            index += len(parts) - 1
            message["content"] = parts[0] + "".join(run + part for run, part in zip(runs, parts[1:]))
        return messages

    def prepare(self, messages: list[dict], images: list) -> tuple[list[dict], dict]:
        """Inference: the messages expanded for the images and the model's inputs for them, processed once."""
        inputs = self.inputs(images)
        return self.expand_seqlens(messages, self.seqlens(inputs)), inputs

    def batch_inputs(self, tokenizer, input_ids) -> dict:
        """LLaVA takes only input_ids, attention_mask and the image processor's tensors."""
        return {}

    def token_type_ids(self, tokenizer, input_ids):
        """1 at image tokens, 0 elsewhere (not a model input: predict counts the image tokens a cut kept)."""
        return (input_ids == tokenizer.convert_tokens_to_ids(self.image_token)).long()


@dataclasses.dataclass
class LlavaNextPlugin(LlavaPlugin):
    """LLaVA-NeXT (anyres): an image is a base view plus the tiles of the grid pinpoint closest to its size, so its
    token count follows its size (image_sizes): base patches + the unpadded grid features + one newline per row."""

    @staticmethod
    def fits(image_processor) -> bool:
        """LLaVA-NeXT's image processor: the anyres grid pinpoints."""
        return hasattr(image_processor, "image_grid_pinpoints")

    def seqlens(self, inputs: dict) -> list[int]:
        pixel_values = inputs.get("pixel_values")
        if pixel_values is None:
            return []
        height, width = (int(side) for side in pixel_values.shape[-2:])
        out = []
        for orig_height, orig_width in inputs["image_sizes"].tolist():
            seqlen = self.number_of_features(orig_height, orig_width, height, width)
            out.append(seqlen - (self.vision_feature_select_strategy == "default"))
        return out

    def number_of_features(self, orig_height: int, orig_width: int, height: int, width: int) -> int:
        """transformers' LlavaNextProcessor._get_number_of_features, which LF's plugin calls."""
        from transformers.image_processing_utils import select_best_resolution

        best_height, best_width = select_best_resolution(
            [orig_height, orig_width], self.image_processor.image_grid_pinpoints
        )
        scale_height, scale_width = best_height // height, best_width // width
        patches_height, patches_width = height // self.patch_size, width // self.patch_size
        current_height, current_width = patches_height * scale_height, patches_width * scale_width
        if orig_width / orig_height > current_width / current_height:
            new_height = int(round(orig_height * (current_width / orig_width), 7))
            current_height -= (current_height - new_height) // 2 * 2
        else:
            new_width = int(round(orig_width * (current_height / orig_height), 7))
            current_width -= (current_width - new_width) // 2 * 2
        unpadded, newlines = current_height * current_width, current_height
        return unpadded + newlines + patches_height * patches_width + self.num_additional_image_tokens
