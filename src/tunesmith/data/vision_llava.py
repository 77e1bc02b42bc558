"""Image inputs for LLaVA (1.5) and LLaVA-NeXT as LLaMA-Factory 0.9.5's llava / llava_next mm_plugins make them:
each <image> becomes the image token repeated once per image feature the model computes (a fixed count for LLaVA,
one that depends on the image's size and the anyres grid for LLaVA-NeXT), and the collator adds pixel_values (and
image_sizes for NeXT) from the model's image processor."""

from __future__ import annotations

import dataclasses
import math

from tunesmith.data.media import IMAGE_PLACEHOLDER
from tunesmith.data.vision import ImagePlugin

# The processor settings LF reads from the model's LlavaProcessor (processor_config.json); model/vision_llava.py
# attaches them to the image processor as `processor_settings` when it loads one.
SETTINGS = ("patch_size", "num_additional_image_tokens", "vision_feature_select_strategy")


def base_regularize(path, max_pixels: int, min_pixels: int):
    """LLaMA-Factory 0.9.5's BasePlugin._preprocess_image (the llava plugins do not override it): scale down to
    max_pixels, up to min_pixels, then RGB. `path`: a file path or an already opened PIL image."""
    from PIL import Image

    image = path if isinstance(path, Image.Image) else Image.open(path)
    if image.width * image.height > max_pixels:
        factor = math.sqrt(max_pixels / (image.width * image.height))
        image = image.resize((int(image.width * factor), int(image.height * factor)))
    if image.width * image.height < min_pixels:
        factor = math.sqrt(min_pixels / (image.width * image.height))
        image = image.resize((int(image.width * factor), int(image.height * factor)))
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


@dataclasses.dataclass
class LlavaPlugin(ImagePlugin):
    """LLaVA 1.5: every image is resized and cropped to one square, so each <image> becomes the same number of image
    tokens: (height // patch_size) * (width // patch_size) + num_additional_image_tokens, less one (the CLS feature)
    with vision_feature_select_strategy "default"."""

    image_token: str = "<image>"
    patch_size: int = 14
    num_additional_image_tokens: int = 0
    vision_feature_select_strategy: str = "default"

    @classmethod
    def from_processor(cls, image_processor, **bounds) -> LlavaPlugin:
        settings = getattr(image_processor, "processor_settings", None) or {}
        return cls(image_processor, **{key: settings[key] for key in SETTINGS if key in settings}, **bounds)

    def regularize(self, path):
        return base_regularize(path, self.max_pixels, self.min_pixels)

    def seqlens(self, inputs: dict) -> list[int]:
        """The number of image tokens of each processed image, in order."""
        pixel_values = inputs.get("pixel_values")
        if pixel_values is None:
            return []
        height, width = pixel_values.shape[-2:]
        seqlen = (height // self.patch_size) * (width // self.patch_size) + self.num_additional_image_tokens
        seqlen -= self.vision_feature_select_strategy == "default"
        return [int(seqlen)] * len(pixel_values)

    def expand_inputs(self, messages: list[dict], inputs: dict) -> list[dict]:
        """Each <image> replaced by its run of image tokens (the image token is "<image>" itself, so each message is
        split at the placeholders first, as LF goes through "{{image}}")."""
        seqlens, index = self.seqlens(inputs), 0
        messages = [dict(message) for message in messages]
        for message in messages:
            if not isinstance(message["content"], str) or IMAGE_PLACEHOLDER not in message["content"]:
                continue
            parts = message["content"].split(IMAGE_PLACEHOLDER)
            runs = [self.image_token * seqlen for seqlen in seqlens[index : index + len(parts) - 1]]
            index += len(parts) - 1
            message["content"] = parts[0] + "".join(run + part for run, part in zip(runs, parts[1:]))
        return messages

    def token_type_ids(self, tokenizer, input_ids):
        """1 at image tokens, 0 elsewhere (LLaVA has no video token; the model itself does not take these)."""
        return (input_ids == tokenizer.convert_tokens_to_ids(self.image_token)).long()

    def model_inputs(self, tokenizer, input_ids) -> dict:
        return {}  # LLaVA takes only input_ids, attention_mask and the image processor's tensors


@dataclasses.dataclass
class LlavaNextPlugin(LlavaPlugin):
    """LLaVA-NeXT (anyres): an image is a base view plus the tiles of the grid pinpoint closest to its size, so its
    token count follows its size (image_sizes): base patches + the unpadded grid features + one newline per row."""

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
