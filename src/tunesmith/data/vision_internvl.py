"""Image inputs for InternVL as LLaMA-Factory 0.9.5's InternVLPlugin makes them: each <image> becomes
<img> + <IMG_CONTEXT> * image_seq_length * (the image's patches) + </img>, the patches being 1 or, with
crop_to_patches, LF's 1-12 tiles plus a thumbnail; pixel_values from the image processor (one row per patch)."""

from __future__ import annotations

import copy
import dataclasses

from tunesmith.data.media import IMAGE_PLACEHOLDER, check_placeholders, regularize_base

# LF's crop-to-patches settings (mm_plugin.py InternVLPlugin._get_mm_inputs): fixed, not config keys.
CROP_TO_PATCHES = {"crop_to_patches": True, "max_patches": 12, "min_patches": 1}


@dataclasses.dataclass
class InternVLPlugin:
    """InternVL's image processor (GOT-OCR2's), LF's resize bounds, crop-to-patches and the image tokens."""

    image_processor: object
    image_seq_length: int = 256  # the model config's image_seq_length: tokens per patch
    max_pixels: int = 768 * 768
    min_pixels: int = 32 * 32
    crop_to_patches: bool = False
    image_token: str = "<IMG_CONTEXT>"
    start_token: str = "<img>"
    end_token: str = "</img>"

    @classmethod
    def make(cls, image_processor, multimodal=None) -> InternVLPlugin:
        """The plugin for this image processor (its image_seq_length: the model config's, which model/load.py's
        load_image_processor sets) and the config's multimodal keys."""
        from tunesmith.data.vision import pixel_bounds, tokens_per_image, wrong_family

        if not hasattr(image_processor, "max_patches"):  # not InternVL's (GOT-OCR2's) image processor
            raise wrong_family("intern_vl", "InternVL", image_processor)
        length = tokens_per_image(image_processor, "an InternVL", "image_seq_length")
        keys = pixel_bounds(multimodal)
        if multimodal is not None:
            keys["crop_to_patches"] = multimodal.crop_to_patches
        return cls(image_processor, image_seq_length=length, **keys)

    def process(self, paths: list) -> dict:
        """The image processor's output: pixel_values (every image's patches in order) and num_patches per image."""
        if not paths:
            return {}
        images = [regularize_base(path, self.max_pixels, self.min_pixels) for path in paths]
        kwargs = CROP_TO_PATCHES if self.crop_to_patches else {}
        return dict(self.image_processor(images=images, return_tensors="pt", **kwargs))

    def inputs(self, paths: list) -> dict:
        """What the model takes for the images: pixel_values (num_patches only shapes the text, LF drops it too)."""
        return {key: value for key, value in self.process(paths).items() if key != "num_patches"}

    def expand(self, messages: list[dict], paths: list) -> list[dict]:
        """The messages with each <image> replaced by its tokens, as LF's InternVLPlugin.process_messages does."""
        check_placeholders(messages, paths)
        return self.expand_patches(messages, self.process(paths).get("num_patches", []))

    def expand_patches(self, messages: list[dict], num_patches) -> list[dict]:
        """expand() for images already processed: num_patches per image, in order."""
        messages, index = copy.deepcopy(messages), 0
        for message in messages:
            content = message["content"]
            while IMAGE_PLACEHOLDER in content:
                tokens = self.image_token * self.image_seq_length * int(num_patches[index])
                content = content.replace(IMAGE_PLACEHOLDER, f"{self.start_token}{tokens}{self.end_token}", 1)
                index += 1
            message["content"] = content
        return messages

    def prepare(self, messages: list[dict], images: list) -> tuple[list[dict], dict]:
        """Inference: the messages expanded for the images and the model's inputs for them, processed once."""
        processed = self.process(images)
        inputs = {key: value for key, value in processed.items() if key != "num_patches"}
        return self.expand_patches(messages, processed.get("num_patches", [])), inputs

    def batch_inputs(self, tokenizer, input_ids) -> dict:
        """InternVL needs nothing per token besides the ids (its image features replace the <IMG_CONTEXT> ids)."""
        return {}

    def token_type_ids(self, tokenizer, input_ids):
        """1 at <IMG_CONTEXT>, 0 elsewhere (not a model input: predict counts the image tokens a cut kept)."""
        return (input_ids == tokenizer.convert_tokens_to_ids(self.image_token)).long()
