"""Image inputs for Gemma 3 as LLaMA-Factory 0.9.5's Gemma3Plugin makes them: each <image> becomes
"\\n\\n<start_of_image>" + <image_soft_token> * mm_tokens_per_image + "<end_of_image>\\n\\n" (with
image_do_pan_and_scan: the original image and its crops, each such a sequence, in LF's sentence), pixel_values from
the image processor (one row per image and per crop) and token_type_ids (1 at the soft tokens: Gemma 3's
bidirectional attention over each image)."""

from __future__ import annotations

import copy
import dataclasses

from tunesmith.data.media import IMAGE_PLACEHOLDER, check_placeholders, regularize_base

# LF's pan-and-scan settings (mm_plugin.py BasePlugin._get_mm_inputs): fixed, not config keys.
PAN_AND_SCAN = {
    "do_pan_and_scan": True,
    "pan_and_scan_min_crop_size": 256,
    "pan_and_scan_max_num_crops": 4,
    "pan_and_scan_min_ratio_to_activate": 1.2,
}
SLOT = "{{image}}"  # LF's intermediate placeholder: every one becomes the full image sequence


@dataclasses.dataclass
class Gemma3Plugin:
    """Gemma 3's image processor, LF's resize bounds, pan-and-scan and the image tokens."""

    image_processor: object
    image_seq_length: int = 256  # mm_tokens_per_image of the model (soft tokens per image or crop)
    max_pixels: int = 768 * 768
    min_pixels: int = 32 * 32
    pan_and_scan: bool = False
    image_token: str = "<image_soft_token>"
    boi_token: str = "<start_of_image>"
    eoi_token: str = "<end_of_image>"

    @classmethod
    def make(cls, image_processor, multimodal=None) -> Gemma3Plugin:
        """The plugin for this image processor (its image_seq_length: the model's mm_tokens_per_image, which
        model/load.py's load_image_processor sets from config.json) and the config's multimodal keys."""
        from tunesmith.data.vision import pixel_bounds, tokens_per_image, wrong_family

        if not callable(getattr(image_processor, "pan_and_scan", None)):  # not Gemma 3's image processor
            raise wrong_family("gemma3", "Gemma 3", image_processor)
        length = tokens_per_image(image_processor, "a Gemma 3", "mm_tokens_per_image")
        keys = pixel_bounds(multimodal)
        if multimodal is not None:
            keys["pan_and_scan"] = multimodal.image_do_pan_and_scan
        return cls(image_processor, image_seq_length=length, **keys)

    @property
    def full_image_sequence(self) -> str:
        return f"\n\n{self.boi_token}{self.image_token * self.image_seq_length}{self.eoi_token}\n\n"

    def process(self, paths: list) -> dict:
        """The image processor's output for the images (file paths or PIL images): pixel_values (each image, then
        its crops) and num_crops (per image); empty when there are none."""
        if not paths:
            return {}
        images = [regularize_base(path, self.max_pixels, self.min_pixels) for path in paths]
        kwargs = PAN_AND_SCAN if self.pan_and_scan else {}
        return dict(self.image_processor(images, return_tensors="pt", **kwargs))

    def inputs(self, paths: list) -> dict:
        """What the model takes for the images: pixel_values (num_crops only shapes the text, LF drops it too)."""
        return {key: value for key, value in self.process(paths).items() if key != "num_crops"}

    def expand(self, messages: list[dict], paths: list) -> list[dict]:
        """The messages with each <image> replaced by its tokens, as LF's Gemma3Plugin.process_messages does."""
        check_placeholders(messages, paths)
        crops = self.process(paths).get("num_crops") if self.pan_and_scan and paths else None
        return self.expand_crops(messages, crops)

    def expand_crops(self, messages: list[dict], num_crops=None) -> list[dict]:
        """expand() for images already processed: num_crops per image in order (None: no pan-and-scan)."""
        messages, index = copy.deepcopy(messages), 0
        for message in messages:
            content = message["content"]
            while IMAGE_PLACEHOLDER in content:
                if num_crops is not None:
                    # LF's sentence, also for an image pan-and-scan leaves whole (0 crops: a trailing space)
                    text = "Here is the original image {{image}} and here are some crops to help you see better " + (
                        " ".join([SLOT] * int(num_crops[index]))
                    )
                else:
                    text = SLOT
                content = content.replace(IMAGE_PLACEHOLDER, text, 1)
                index += 1
            message["content"] = content.replace(SLOT, self.full_image_sequence)
        return messages

    def prepare(self, messages: list[dict], images: list) -> tuple[list[dict], dict]:
        """Inference: the messages expanded for the images and the model's inputs for them, processed once."""
        processed = self.process(images)
        crops = processed.get("num_crops") if self.pan_and_scan and images else None
        inputs = {key: value for key, value in processed.items() if key != "num_crops"}
        return self.expand_crops(messages, crops), inputs

    def batch_inputs(self, tokenizer, input_ids) -> dict:
        """token_type_ids, which Gemma 3 reads for the bidirectional attention over each image's soft tokens."""
        return {"token_type_ids": self.token_type_ids(tokenizer, input_ids)}

    def token_type_ids(self, tokenizer, input_ids):
        """1 at <image_soft_token>, 0 elsewhere (LF's _get_gemma3_token_type_ids)."""
        return (input_ids == tokenizer.convert_tokens_to_ids(self.image_token)).long()
