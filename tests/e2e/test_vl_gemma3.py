"""Gemma 3 images on a tiny random Gemma3ForConditionalGeneration (`tunesmith tiny --arch gemma3`): LoRA sft and dpo
train through the CLI, with and without pan-and-scan; the freeze_* keys decide which parameters train; the chat
engine encodes an image message exactly as training does and answers as model.generate does on the training inputs;
the merged export reloads with its image processor."""

import json
import math
import re
from pathlib import Path

import pytest
import torch

from tunesmith.cli import main
from tunesmith.config.load import load_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "train_vl_lora.yaml"
QUESTION = "<image>What colour is this?"
SOFT = "<image_soft_token>"


@pytest.fixture(scope="module")
def gemma3_dir(tiny_model_dirs) -> Path:
    from tunesmith.model.tiny import ensure_tiny_model

    return ensure_tiny_model(tiny_model_dirs._root / "tiny-gemma3", "gemma3")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """The shared tiny VL dataset plus `vl_wide`: a 1200x400 image that pan-and-scan cuts into 3 crops."""
    from PIL import Image

    from tests.conftest import write_vl_dataset

    folder = write_vl_dataset(tmp_path_factory.mktemp("gemma3-data"))
    Image.new("RGB", (1200, 400), (200, 30, 200)).save(folder / "images" / "wide.png")
    rows = [
        {"instruction": "<image>Read the banner.", "input": "", "output": "Purple.", "images": ["images/wide.png"]},
        {"instruction": "<image>Name the colour.", "input": "", "output": "red", "images": ["images/red.png"]},
    ]
    (folder / "vl_wide.json").write_text(json.dumps(rows))
    info = json.loads((folder / "dataset_info.json").read_text())
    info["vl_wide"] = {
        "file_name": "vl_wide.json",
        "columns": {"prompt": "instruction", "query": "input", "response": "output", "images": "images"},
    }
    (folder / "dataset_info.json").write_text(json.dumps(info))
    return folder


def train(model_dir, data_dir, out, *extra):
    args = [
        f"model_name_or_path={model_dir}",
        f"dataset_dir={data_dir}",
        f"output_dir={out}",
        "template=gemma3",
        "save_steps=1000",
        "warmup_ratio=0",
        "report_to=none",
        *extra,
    ]
    return main(["train", str(EXAMPLE), *args])


def logged_losses(out):
    rows = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if "loss" in row]


@pytest.fixture(scope="module")
def adapter(gemma3_dir, data_dir, tmp_path_factory):
    """LoRA sft on the tiny Gemma 3: 8 steps of the VL example with template gemma3."""
    out = tmp_path_factory.mktemp("gemma3-lora") / "run"
    assert train(gemma3_dir, data_dir, out, "max_steps=8", "learning_rate=0.05", "lr_scheduler_type=constant") == 0
    return out


def test_lora_sft_trains_the_language_model_and_the_loss_falls(adapter):
    losses = logged_losses(adapter)
    assert len(losses) == 8 and all(math.isfinite(loss) for loss in losses)
    assert sum(losses[-2:]) < sum(losses[:2])
    assert (adapter / "adapter_model.safetensors").is_file()
    saved = json.loads((adapter / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "Gemma3ImageProcessor" and saved["image_seq_length"] == 4
    targets = json.loads((adapter / "adapter_config.json").read_text())["target_modules"]
    assert targets and all("language_model" in name for name in targets)


def encoded(model_dir, data_dir, dataset, **keys):
    from tunesmith.data.pipeline import build_datasets
    from tunesmith.model.load import load_image_processor, load_tokenizer

    config = load_config(
        None,
        {
            "model_name_or_path": str(model_dir),
            "template": "gemma3",
            "stage": "sft",
            "dataset": dataset,
            "dataset_dir": str(data_dir),
            **keys,
        },
    )
    tokenizer = load_tokenizer(config.model, config.lf_model)
    data = build_datasets(config, tokenizer, "supervised", image_processor=load_image_processor(config.model))
    return tokenizer, data


def test_pan_and_scan_adds_the_crops_and_trains(gemma3_dir, data_dir, tmp_path):
    from tunesmith.data.vision import ENCODED_IMAGES

    tokenizer, plain = encoded(gemma3_dir, data_dir, "vl_wide")
    _, scanned = encoded(gemma3_dir, data_dir, "vl_wide", image_do_pan_and_scan=True)
    soft = tokenizer.convert_tokens_to_ids(SOFT)
    wide = next(i for i, row in enumerate(plain.train) if row[ENCODED_IMAGES][0].endswith("wide.png"))
    assert plain.train[wide]["input_ids"].count(soft) == 4  # one image, mm_tokens_per_image 4
    assert scanned.train[wide]["input_ids"].count(soft) == 4 * 4  # the image and its 3 crops
    text = tokenizer.decode(scanned.train[wide]["input_ids"])
    assert "Here is the original image" in text and "and here are some crops to help you see better" in text
    assert scanned.plugin.inputs(scanned.train[wide][ENCODED_IMAGES])["pixel_values"].shape == (4, 3, 32, 32)

    out = tmp_path / "pas"
    assert train(gemma3_dir, data_dir, out, "dataset=vl_wide", "max_steps=2", "image_do_pan_and_scan=true") == 0
    assert [math.isfinite(loss) for loss in logged_losses(out)] == [True, True]


def test_dpo_with_images_trains(gemma3_dir, data_dir, tmp_path):
    out = tmp_path / "dpo"
    assert (
        train(
            gemma3_dir,
            data_dir,
            out,
            "stage=dpo",
            "dataset=vl_dpo",
            "max_steps=3",
            "learning_rate=0.05",
            "per_device_train_batch_size=2",
        )
        == 0
    )
    assert [math.isfinite(loss) for loss in logged_losses(out)] == [True] * 3
    assert (out / "adapter_model.safetensors").is_file()


def test_other_families_keys_and_wrong_counts_are_refused(gemma3_dir, data_dir, tiny_vl_model_dir, tmp_path, capsys):
    from tunesmith.data.media import record_images
    from tunesmith.errors import DataError

    base = [f"dataset_dir={data_dir}", "max_steps=1", "save_steps=1000"]
    qwen = [f"model_name_or_path={tiny_vl_model_dir}", *base, f"output_dir={tmp_path / 'q'}"]
    assert main(["train", str(EXAMPLE), *qwen, "image_do_pan_and_scan=true"]) == 2
    assert (
        "image_do_pan_and_scan is Gemma 3's pan-and-scan (template gemma3); template qwen2_vl"
        in capsys.readouterr().err
    )
    gemma = [f"model_name_or_path={gemma3_dir}", *base, f"output_dir={tmp_path / 'g'}"]
    assert main(["train", str(EXAMPLE), *gemma, "template=gemma3", "crop_to_patches=true"]) == 2
    assert "crop-to-patches" in capsys.readouterr().err
    assert main(["train", str(EXAMPLE), *gemma, "template=gemma"]) == 2
    err = capsys.readouterr().err
    assert "has no image support" in err and "gemma3" in err
    assert main(["train", str(EXAMPLE), *gemma, "template=qwen2_vl"]) == 2  # another family's VL template
    assert "template qwen2_vl expands images for Qwen-VL models, but this model's image processor is Gemma3" in (
        capsys.readouterr().err
    )
    red = str(data_dir / "images" / "red.png")
    with pytest.raises(DataError, match="2 <image> placeholders in its messages but 1 images"):
        record_images([red], [{"role": "user", "content": "<image><image>"}], None, DataError)


def trainable(model_dir, **keys):
    from tunesmith.model.load import load_model, load_tokenizer

    config = load_config(None, {"model_name_or_path": str(model_dir), **keys})
    tokenizer = load_tokenizer(config.model)
    model = load_model(config.model, config.method, tokenizer, is_trainable=True, multimodal=config.multimodal)
    return [name for name, param in model.named_parameters() if param.requires_grad]


def parts(names):
    keys = ("vision_tower", "multi_modal_projector", "language_model", "lm_head")
    return {next((key for key in keys if key in name), "other") for name in names}


def test_freeze_keys_decide_which_parameters_train(gemma3_dir):
    lora = trainable(gemma3_dir, finetuning_type="lora")
    assert parts(lora) == {"language_model"} and all("lora_" in name for name in lora)
    lora_vision = trainable(gemma3_dir, finetuning_type="lora", freeze_vision_tower=False)
    assert parts(lora_vision) == {"language_model", "vision_tower"}
    # Gemma 3 ties lm_head to the embeddings: the language model is every trained parameter
    assert parts(trainable(gemma3_dir, finetuning_type="full")) == {"language_model"}
    assert parts(
        trainable(
            gemma3_dir,
            finetuning_type="full",
            freeze_vision_tower=False,
            freeze_multi_modal_projector=False,
            freeze_language_model=True,
        )
    ) == {"vision_tower", "multi_modal_projector"}
    freeze = trainable(gemma3_dir, finetuning_type="freeze", freeze_trainable_layers=1)
    assert freeze and all("language_model.layers.1." in name for name in freeze)
    projector = trainable(
        gemma3_dir, finetuning_type="freeze", freeze_trainable_layers=1, freeze_multi_modal_projector=False
    )
    assert parts(projector) == {"language_model", "multi_modal_projector"}


@pytest.fixture(scope="module")
def engine(gemma3_dir):
    from tunesmith.infer.engine import ChatEngine

    return ChatEngine(
        load_config(
            None, {"model_name_or_path": str(gemma3_dir), "template": "gemma3", "do_sample": False, "max_new_tokens": 6}
        )
    )


def training_prompt(tokenizer, data, image: Path) -> tuple[list[int], list[str]]:
    from tunesmith.data.records import IGNORE_INDEX
    from tunesmith.data.vision import ENCODED_IMAGES

    row = next(row for row in data.train if row[ENCODED_IMAGES] == [str(image)])
    first_label = next(i for i, label in enumerate(row["labels"]) if label != IGNORE_INDEX)
    return row["input_ids"][:first_label], row[ENCODED_IMAGES]


def test_the_engine_encodes_and_answers_as_training_and_generate_do(engine, gemma3_dir, data_dir):
    from tunesmith.infer.loader import generation_kwargs

    red = (data_dir / "images" / "red.png").absolute()
    prompt = engine.prepare([{"role": "user", "content": QUESTION}], images=[str(red)])
    ids, paths = training_prompt(*encoded(gemma3_dir, data_dir, "mllm_demo"), red)
    assert prompt.ids == ids
    tokens = engine.tokenizer.convert_ids_to_tokens(prompt.ids)
    start = tokens.index("<start_of_image>")
    assert tokens[start : start + 6] == ["<start_of_image>", *[SOFT] * 4, "<end_of_image>"]
    assert set(prompt.vision) == {"pixel_values"} and prompt.vision["pixel_values"].shape == (1, 3, 32, 32)

    messages = [{"role": "user", "content": QUESTION}]
    reply = engine.chat(messages, images=[str(red)])[0]
    assert reply.completion_tokens >= 1 and "".join(engine.stream(messages, images=[str(red)])) == reply.text
    inputs = torch.tensor([ids])
    with torch.no_grad():
        out = engine.model.generate(
            inputs,
            attention_mask=torch.ones_like(inputs),
            **engine.plugin.inputs(paths),
            token_type_ids=(inputs == engine.tokenizer.convert_tokens_to_ids(SOFT)).long(),
            **generation_kwargs(engine.config.generation, engine.tokenizer, engine.template),
        )
    assert reply.text == engine.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)
    # the image reaches the model: another image, another first-token distribution
    blue = str((data_dir / "images" / "blue.png").absolute())
    with torch.no_grad():
        logits = [
            engine.model(input_ids=torch.tensor([p.ids]), **p.vision).logits[0, -1]
            for p in (prompt, engine.prepare(messages, images=[blue]))
        ]
    assert not torch.allclose(*logits)


def test_the_api_answers_an_image_as_the_engine_does(engine, data_dir):
    from tests.e2e.test_vl_api import ask, data_url, serving

    red = (data_dir / "images" / "red.png").absolute()
    expected = engine.chat([{"role": "user", "content": QUESTION}], images=[str(red)])[0]
    with serving(engine) as url:
        response = ask(url, data_url(red))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == expected.text
    assert response.json()["usage"]["prompt_tokens"] == expected.prompt_tokens


def test_the_engine_does_pan_and_scan_as_training(gemma3_dir, data_dir):
    from tunesmith.infer.engine import ChatEngine

    engine = ChatEngine(
        load_config(
            None,
            {
                "model_name_or_path": str(gemma3_dir),
                "template": "gemma3",
                "image_do_pan_and_scan": True,
                "max_new_tokens": 2,
            },
        )
    )
    wide = (data_dir / "images" / "wide.png").absolute()
    prompt = engine.prepare([{"role": "user", "content": "<image>Read the banner."}], images=[str(wide)])
    tokenizer, data = encoded(gemma3_dir, data_dir, "vl_wide", image_do_pan_and_scan=True)
    assert prompt.ids == training_prompt(tokenizer, data, wide)[0]
    assert prompt.vision["pixel_values"].shape == (4, 3, 32, 32) and "num_crops" not in prompt.vision
    assert engine.chat([{"role": "user", "content": "<image>Read the banner."}], images=[str(wide)])[0]


def test_merged_export_reloads_with_its_processor_and_equal_logits(adapter, gemma3_dir, data_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoImageProcessor, AutoModelForImageTextToText

    from tunesmith.infer.engine import ChatEngine

    export_dir = tmp_path / "merged"
    assert (
        main(
            [
                "export",
                str(EXAMPLE),
                f"model_name_or_path={gemma3_dir}",
                "template=gemma3",
                f"adapter_name_or_path={adapter}",
                f"export_dir={export_dir}",
                "export_dtype=float32",
            ]
        )
        == 0
    )
    base_processor = json.loads((Path(gemma3_dir) / "preprocessor_config.json").read_text())
    assert json.loads((export_dir / "preprocessor_config.json").read_text()) == base_processor

    merged = ChatEngine(load_config(None, {"model_name_or_path": str(export_dir), "template": "gemma3"}))
    red = str((data_dir / "images" / "red.png").absolute())
    prompt = merged.prepare([{"role": "user", "content": QUESTION}], images=[red])
    ids = torch.tensor([prompt.ids])
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        **prompt.vision,
        **merged.plugin.batch_inputs(merged.tokenizer, ids),
    }
    assert AutoImageProcessor.from_pretrained(export_dir).to_dict() == merged.plugin.image_processor.to_dict()
    reloaded = AutoModelForImageTextToText.from_pretrained(export_dir, dtype=torch.float32).eval()
    base = AutoModelForImageTextToText.from_pretrained(gemma3_dir, dtype=torch.float32)
    unmerged = PeftModel.from_pretrained(base, str(adapter)).eval()
    with torch.no_grad():
        got, want = reloaded(**inputs).logits, unmerged(**inputs).logits
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    with torch.no_grad(), unmerged.disable_adapter():
        assert not torch.allclose(unmerged(**inputs).logits, want, atol=1e-4)


def test_data_preview_marks_the_image_tokens(gemma3_dir, data_dir, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"model_name_or_path: {gemma3_dir}\nstage: sft\ndataset: mllm_demo\ndataset_dir: {data_dir}\ntemplate: gemma3\n"
    )
    assert main(["data", "preview", str(cfg), "-n", "3"]) == 0
    out = capsys.readouterr().out
    assert f"<start_of_image>{SOFT}\u00d74<end_of_image>" in out
    assert re.search(rf"image 0 \(red.png\): tokens \d+-\d+ \(4 {SOFT}\)", out)
    # pan-and-scan: the wide image and its 3 crops are 4 runs
    cfg.write_text(
        f"model_name_or_path: {gemma3_dir}\nstage: sft\ndataset: vl_wide\ndataset_dir: {data_dir}\n"
        "template: gemma3\nimage_do_pan_and_scan: true\n"
    )
    assert main(["data", "preview", str(cfg), "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert "Here is the original image" in out and "image run 3: tokens" in out and "image run 4" not in out


def test_tiny_gemma3_folder_loads_back(tmp_path):
    from tunesmith.model.load import load_image_processor

    assert main(["tiny", str(tmp_path / "g3"), "--arch", "gemma3"]) == 0
    for name in ("model.safetensors", "preprocessor_config.json", "tokenizer.json"):
        assert (tmp_path / "g3" / name).is_file()
    config = load_config(None, {"model_name_or_path": str(tmp_path / "g3")})
    processor = load_image_processor(config.model)
    assert processor.image_seq_length == 4 and processor.size == {"height": 32, "width": 32}
    model_config = json.loads((tmp_path / "g3" / "config.json").read_text())
    assert model_config["model_type"] == "gemma3" and model_config["mm_tokens_per_image"] == 4
