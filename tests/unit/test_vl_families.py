"""The Gemma 3, InternVL and LLaVA(-NeXT) image plugins: a template's mm_plugin picks its plugin class, each family's own key is
refused with another family's template, another family's image processor is refused, and a placeholder count that
differs from the image count is a DataError."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from tunesmith.errors import ConfigError, DataError

IMAGES = Path(__file__).resolve().parents[1] / "assets" / "golden_vl" / "images"


def keys(**values):
    defaults = {
        "image_max_pixels": 768 * 768,
        "image_min_pixels": 32 * 32,
        "image_do_pan_and_scan": False,
        "crop_to_patches": False,
    }
    return SimpleNamespace(**{**defaults, **values})


def template(name):
    return SimpleNamespace(name=name, mm_plugin=name)


@pytest.fixture(scope="module")
def processors():
    from tunesmith.model.tiny_gemma3 import tiny_gemma3_image_processor
    from tunesmith.model.tiny_internvl import tiny_internvl_image_processor
    from tunesmith.model.vision import tiny_image_processor
    from tunesmith.model.vision_llava import tiny_image_processor as tiny_llava_image_processor

    return {
        "gemma3": tiny_gemma3_image_processor(),
        "intern_vl": tiny_internvl_image_processor(),
        "qwen2_vl": tiny_image_processor(),
        "llava": tiny_llava_image_processor("llava"),
        "llava_next": tiny_llava_image_processor("llava_next"),
    }


def test_mm_plugin_picks_the_plugin_class(processors):
    from tunesmith.data.vision import ImagePlugin, make_plugin
    from tunesmith.data.vision_gemma3 import Gemma3Plugin
    from tunesmith.data.vision_internvl import InternVLPlugin

    gemma3 = make_plugin(template("gemma3"), processors["gemma3"], keys(image_do_pan_and_scan=True))
    assert isinstance(gemma3, Gemma3Plugin) and gemma3.pan_and_scan and gemma3.image_seq_length == 4
    internvl = make_plugin(template("intern_vl"), processors["intern_vl"], keys(crop_to_patches=True))
    assert isinstance(internvl, InternVLPlugin) and internvl.crop_to_patches
    assert isinstance(make_plugin(template("qwen2_vl"), processors["qwen2_vl"], keys()), ImagePlugin)
    from tunesmith.data.vision_llava import LlavaNextPlugin, LlavaPlugin

    llava = make_plugin(template("llava"), processors["llava"], keys(image_max_pixels=4096))
    assert type(llava) is LlavaPlugin and llava.max_pixels == 4096
    assert type(make_plugin(template("llava_next"), processors["llava_next"], keys())) is LlavaNextPlugin


@pytest.mark.parametrize(
    ("name", "key", "message"),
    [
        ("qwen2_vl", "image_do_pan_and_scan", "image_do_pan_and_scan is Gemma 3's pan-and-scan (template gemma3)"),
        ("intern_vl", "image_do_pan_and_scan", "template intern_vl (intern_vl images) does not have it"),
        ("gemma3", "crop_to_patches", "crop_to_patches is InternVL's crop-to-patches (template intern_vl)"),
        ("qwen2_vl", "crop_to_patches", "remove crop_to_patches or set it to false"),
        ("llava", "image_do_pan_and_scan", "template llava (llava images) does not have it"),
    ],
)
def test_a_familys_key_is_refused_with_another_template(processors, name, key, message):
    from tunesmith.data.vision import make_plugin

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_plugin(template(name), processors[name], keys(**{key: True}))


@pytest.mark.parametrize(
    ("name", "other"),
    [
        ("gemma3", "intern_vl"),
        ("intern_vl", "gemma3"),
        ("qwen2_vl", "gemma3"),
        ("qwen2_vl", "llava"),
        ("llava", "llava_next"),
        ("llava_next", "llava"),
        ("llava", "qwen2_vl"),
    ],
)
def test_another_familys_image_processor_is_refused(processors, name, other):
    from tunesmith.data.vision import make_plugin

    with pytest.raises(DataError, match=f"template {name} expands images for .* set `template:` to the model's own"):
        make_plugin(template(name), processors[other], keys())


@pytest.mark.parametrize("name", ["gemma3", "intern_vl", "llava", "llava_next"])
def test_a_placeholder_count_that_differs_is_a_data_error(processors, name):
    from tunesmith.data.vision import make_plugin

    plugin = make_plugin(template(name), processors[name], keys())
    messages = [{"role": "user", "content": "<image><image>Which?"}]
    with pytest.raises(DataError, match="2 <image> placeholders but 1 images"):
        plugin.expand(messages, [str(IMAGES / "red.png")])
    assert plugin.expand(messages[:0], []) == []


def test_a_gemma3_image_processor_without_the_token_count_is_refused():
    from tunesmith.data.vision_gemma3 import Gemma3Plugin
    from tunesmith.errors import ModelError
    from tunesmith.model.tiny_gemma3 import tiny_gemma3_image_processor

    processor = tiny_gemma3_image_processor()
    del processor.image_seq_length
    with pytest.raises(ModelError, match="does not say how many tokens an image takes"):
        Gemma3Plugin.make(processor, keys())
