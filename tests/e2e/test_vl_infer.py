"""Inference with images on a tiny Qwen2-VL: the chat engine encodes an image message exactly as training does and
answers it as model.generate does on the training collator's inputs; `tunesmith chat` attaches images with
`/image PATH`; the merged export reloads with its image processor and gives base+adapter's logits."""

import io
import json
from pathlib import Path

import pytest
import torch

from tunesmith.cli import main
from tunesmith.config.load import load_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "train_vl_lora.yaml"
QUESTION = "<image>What colour is this?"


def vl_config(model_dir, **keys):
    return load_config(
        None,
        {"model_name_or_path": str(model_dir), "template": "qwen2_vl", "do_sample": False, "max_new_tokens": 6, **keys},
    )


@pytest.fixture(scope="module")
def engine(tiny_vl_model_dir):
    from tunesmith.infer.engine import ChatEngine

    return ChatEngine(vl_config(tiny_vl_model_dir))


def training_prompt(model_dir, data_dir, image: Path) -> tuple[list[int], list[str]]:
    """The prompt part (labels ignored) of the mllm_demo example with `image`, as `tunesmith train` encodes it."""
    from tunesmith.data.pipeline import build_datasets
    from tunesmith.data.records import IGNORE_INDEX
    from tunesmith.data.vision import ENCODED_IMAGES
    from tunesmith.model.load import load_image_processor, load_tokenizer

    config = load_config(
        None,
        {
            "model_name_or_path": str(model_dir),
            "template": "qwen2_vl",
            "stage": "sft",
            "dataset": "mllm_demo",
            "dataset_dir": str(data_dir),
        },
    )
    tokenizer = load_tokenizer(config.model, config.lf_model)
    data = build_datasets(config, tokenizer, "supervised", image_processor=load_image_processor(config.model))
    row = next(row for row in data.train if row[ENCODED_IMAGES] == [str(image)])
    first_label = next(i for i, label in enumerate(row["labels"]) if label != IGNORE_INDEX)
    return row["input_ids"][:first_label], row[ENCODED_IMAGES]


def test_an_image_message_is_encoded_as_training_encodes_it(engine, tiny_vl_model_dir, vl_data_dir):
    red = (vl_data_dir / "images" / "red.png").absolute()
    prompt = engine.prepare([{"role": "user", "content": QUESTION}], images=[str(red)])
    expected, _ = training_prompt(tiny_vl_model_dir, vl_data_dir, red)
    assert prompt.ids == expected
    tokens = engine.tokenizer.convert_ids_to_tokens(prompt.ids)
    start = tokens.index("<|vision_start|>")
    grid = prompt.vision["image_grid_thw"][0]
    pads = int(grid.prod()) // 4  # merge_size 2
    assert pads == 4  # the 64x48 image: 2x2 merged patches
    assert tokens[start : start + pads + 2] == ["<|vision_start|>", *["<|image_pad|>"] * pads, "<|vision_end|>"]
    assert tokens.count("<|image_pad|>") == pads
    assert prompt.vision["pixel_values"].shape == (int(grid.prod()), 3 * 2 * 14 * 14)
    # a PIL image (an API upload) encodes like its file
    from PIL import Image

    assert engine.prepare([{"role": "user", "content": QUESTION}], images=[Image.open(red)]).ids == expected


def test_the_engine_answers_as_generate_does_on_the_training_inputs(engine, tiny_vl_model_dir, vl_data_dir):
    from tunesmith.infer.loader import generation_kwargs

    red = str((vl_data_dir / "images" / "red.png").absolute())
    messages = [{"role": "user", "content": QUESTION}]
    reply = engine.chat(messages, images=[red])[0]
    assert reply.completion_tokens >= 1 and reply == engine.chat(messages, images=[red])[0]  # greedy: deterministic
    assert "".join(engine.stream(messages, images=[red])) == reply.text

    # model.generate on what the training collator builds for the same prompt and image
    ids, paths = training_prompt(tiny_vl_model_dir, vl_data_dir, Path(red))
    inputs = torch.tensor([ids])
    vision = engine.plugin.inputs(paths)
    kwargs = generation_kwargs(engine.config.generation, engine.tokenizer, engine.template)
    with torch.no_grad():
        out = engine.model.generate(
            inputs,
            attention_mask=torch.ones_like(inputs),
            **vision,
            mm_token_type_ids=engine.plugin.token_type_ids(engine.tokenizer, inputs),
            **kwargs,
        )
    expected = engine.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)
    assert reply.text == expected and reply.prompt_tokens == len(ids)


def test_image_refusals_name_the_problem(engine, tiny_vl_model_dir, vl_data_dir):
    from tunesmith.infer.images import ImageInputError, load_image

    red = str(vl_data_dir / "images" / "red.png")
    with pytest.raises(ImageInputError, match="1 <image> placeholders but 0 images"):
        engine.prepare([{"role": "user", "content": QUESTION}])
    with pytest.raises(ImageInputError, match="0 <image> placeholders but 1 images"):
        engine.prepare([{"role": "user", "content": "What colour?"}], images=[red])
    with pytest.raises(ImageInputError, match="not fetched"):
        load_image("https://example.com/cat.png")
    with pytest.raises(ImageInputError, match="base64 does not decode"):
        load_image("data:image/png;base64,@@not base64@@")
    with pytest.raises(ImageInputError, match="not an image PIL can read"):
        load_image("data:image/png;base64,aGVsbG8=")
    with pytest.raises(ImageInputError, match="no image file"):
        load_image(str(vl_data_dir / "images" / "missing.png"))
    assert load_image(Path(red).absolute().as_uri()).size == (64, 48)  # file:// URLs


def test_a_text_model_refuses_images(tiny_model_dir, vl_data_dir):
    from tunesmith.infer.engine import ChatEngine
    from tunesmith.infer.images import ImageInputError

    text = ChatEngine(load_config(None, {"model_name_or_path": str(tiny_model_dir), "template": "qwen"}))
    assert not text.takes_images
    with pytest.raises(ImageInputError, match="text-only model: it cannot take images"):
        text.prepare([{"role": "user", "content": QUESTION}], images=[str(vl_data_dir / "images" / "red.png")])
    assert text.prepare([{"role": "user", "content": QUESTION}]).vision == {}  # <image> is plain text there


def test_a_vl_model_with_a_text_template_chats_in_text_only(tiny_vl_model_dir, vl_data_dir):
    from tunesmith.infer.engine import ChatEngine
    from tunesmith.infer.images import ImageInputError

    engine = ChatEngine(vl_config(tiny_vl_model_dir, template="qwen"))
    assert not engine.takes_images and engine.chat([{"role": "user", "content": "hi"}])[0].completion_tokens >= 1
    with pytest.raises(ImageInputError, match="has no image support; for a vision-language model set `template:`"):
        engine.prepare([{"role": "user", "content": QUESTION}], images=[str(vl_data_dir / "images" / "red.png")])


def test_chat_cli_attaches_an_image(engine, tiny_vl_model_dir, vl_data_dir, tmp_path, monkeypatch, capsys):
    red = vl_data_dir / "images" / "red.png"
    cfg = tmp_path / "chat.yaml"
    cfg.write_text(
        f"model_name_or_path: {tiny_vl_model_dir}\ntemplate: qwen2_vl\ndo_sample: false\nmax_new_tokens: 6\n"
    )
    lines = [f"/image {tmp_path / 'nope.png'}", f"/image {red}", "What colour is this?", "<image>again?", "exit"]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    assert main(["chat", str(cfg)]) == 0
    out = capsys.readouterr().out
    expected = engine.chat([{"role": "user", "content": QUESTION}], images=[str(red)])[0].text
    assert "/image PATH` attaches an image" in out and "Image not attached: image: no image file" in out
    assert "Image attached (1)" in out and f"Assistant: {expected}\n" in out
    assert "Not sent: the messages hold 2 <image> placeholders but 1 images" in out


@pytest.fixture(scope="module")
def adapter(tiny_vl_model_dir, vl_data_dir, tmp_path_factory):
    """A LoRA adapter trained 3 steps by examples/train_vl_lora.yaml."""
    out = tmp_path_factory.mktemp("vl-lora") / "run"
    assert (
        main(
            [
                "train",
                str(EXAMPLE),
                f"model_name_or_path={tiny_vl_model_dir}",
                f"dataset_dir={vl_data_dir}",
                f"output_dir={out}",
                "max_steps=3",
                "learning_rate=0.05",
                "warmup_ratio=0",
                "save_steps=1000",
                "report_to=none",
            ]
        )
        == 0
    )
    return out


def test_merged_vl_export_reloads_with_its_processor_and_equal_logits(
    adapter, tiny_vl_model_dir, vl_data_dir, tmp_path
):
    from peft import PeftModel
    from transformers import AutoImageProcessor, AutoModelForImageTextToText

    from tunesmith.infer.engine import ChatEngine

    export_dir = tmp_path / "merged"
    assert (
        main(
            [
                "export",
                str(EXAMPLE),
                f"model_name_or_path={tiny_vl_model_dir}",
                f"adapter_name_or_path={adapter}",
                f"export_dir={export_dir}",
                "export_dtype=float32",
            ]
        )
        == 0
    )
    assert (export_dir / "preprocessor_config.json").is_file()
    base_processor = json.loads((Path(tiny_vl_model_dir) / "preprocessor_config.json").read_text())
    assert json.loads((export_dir / "preprocessor_config.json").read_text()) == base_processor

    merged = ChatEngine(vl_config(export_dir))  # the merged folder alone: model, tokenizer, image processor
    assert merged.takes_images
    red = str((vl_data_dir / "images" / "red.png").absolute())
    prompt = merged.prepare([{"role": "user", "content": QUESTION}], images=[red])
    ids = torch.tensor([prompt.ids])
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        **prompt.vision,
        "mm_token_type_ids": merged.plugin.token_type_ids(merged.tokenizer, ids),
    }
    assert AutoImageProcessor.from_pretrained(export_dir).to_dict() == merged.plugin.image_processor.to_dict()

    reloaded = AutoModelForImageTextToText.from_pretrained(export_dir, dtype=torch.float32).eval()
    base = AutoModelForImageTextToText.from_pretrained(tiny_vl_model_dir, dtype=torch.float32)
    unmerged = PeftModel.from_pretrained(base, str(adapter)).eval()
    with torch.no_grad():
        got, want = reloaded(**inputs).logits, unmerged(**inputs).logits
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    with torch.no_grad(), unmerged.disable_adapter():
        plain = unmerged(**inputs).logits
    assert not torch.allclose(plain, want, atol=1e-4)  # the adapter changed the model: the check means something
