"""The LLaVA plugins' image token counts on real-size processors: 576 for llava-1.5 (336 px, patch 14), and for
LLaVA-NeXT the count transformers' own LlavaNextProcessor gives for images of many sizes."""

import pytest
import torch


def test_llava_1_5_images_take_576_tokens():
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    from tunesmith.data.vision_llava import LlavaPlugin

    processor = LlavaImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    processor.processor_settings = {
        "patch_size": 14,
        "num_additional_image_tokens": 1,
        "vision_feature_select_strategy": "default",
    }
    plugin = LlavaPlugin.make(processor)
    inputs = {"pixel_values": torch.zeros(2, 3, 336, 336)}
    assert plugin.seqlens(inputs) == [576, 576]
    messages = plugin.expand_seqlens([{"role": "user", "content": "<image>a<image>"}], plugin.seqlens(inputs))
    assert messages[0]["content"] == "<image>" * 576 + "a" + "<image>" * 576
    full = LlavaPlugin(processor, num_additional_image_tokens=1, vision_feature_select_strategy="full")
    assert full.seqlens(inputs) == [577, 577]  # "full" keeps the CLS feature


@pytest.mark.parametrize("size", [(336, 336), (640, 480), (480, 640), (100, 1000), (1000, 90), (1234, 777), (30, 30)])
def test_llava_next_counts_equal_transformers_processor(size):
    from transformers import LlavaNextProcessor
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    from tunesmith.data.vision_llava import LlavaNextPlugin
    from tunesmith.model.tiny import build_tokenizer
    from tunesmith.model.vision_llava import add_image_token

    image_processor = LlavaNextImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    tokenizer = build_tokenizer()
    add_image_token(tokenizer)
    reference = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    plugin = LlavaNextPlugin(image_processor, num_additional_image_tokens=1)
    height, width = size
    expected = reference._get_number_of_features(height, width, 336, 336) - 1
    inputs = {"pixel_values": torch.zeros(1, 5, 3, 336, 336), "image_sizes": torch.tensor([[height, width]])}
    assert plugin.seqlens(inputs) == [expected]
