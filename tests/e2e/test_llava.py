"""LLaVA (1.5) and LLaVA-NeXT on tiny random models: `tunesmith tiny --arch llava|llava_next` loads back with its
processor settings, sft (LoRA) and dpo train through the CLI, the freeze_* keys decide which parameters train, chat
encodes an image message exactly as training does and answers as model.generate does on the collator's inputs,
data preview marks the image tokens, and a merged export reloads with its processors and base+adapter's logits."""

import json
import math
from pathlib import Path

import pytest
import torch

from tunesmith.cli import main
from tunesmith.config.load import load_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "train_vl_lora.yaml"
QUESTION = "<image>What colour is this?"
ARCHS = ("llava", "llava_next")
IMAGE_ID = 1024  # <image>, added after the tiny tokenizer's 1,024 ids


@pytest.fixture(scope="module")
def llava_dirs(tmp_path_factory) -> dict:
    """arch -> a tiny model folder built by `tunesmith tiny DIR --arch ARCH` (the CLI itself)."""
    root = tmp_path_factory.mktemp("tiny-llava")
    for arch in ARCHS:
        assert main(["tiny", str(root / arch), "--arch", arch]) == 0
    return {arch: root / arch for arch in ARCHS}


def train_args(model_dir: Path, arch: str, data_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        str(EXAMPLE),
        f"model_name_or_path={model_dir}",
        f"template={arch}",
        f"dataset_dir={data_dir}",
        f"output_dir={out}",
        "save_steps=1000",
        "warmup_ratio=0",
        *extra,
    ]


def losses(out: Path) -> list[float]:
    rows = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if "loss" in row]


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_folder_loads_back_with_its_processor_settings(llava_dirs, arch):
    from transformers import AutoConfig

    from tunesmith.model.load import load_image_processor, load_tokenizer

    folder = llava_dirs[arch]
    for name in ("model.safetensors", "preprocessor_config.json", "processor_config.json", "tokenizer.json"):
        assert (folder / name).is_file()
    config = load_config(None, {"model_name_or_path": str(folder)})
    processor = load_image_processor(config.model)
    assert (
        type(processor).__name__
        == {"llava": "LlavaImageProcessorPil", "llava_next": "LlavaNextImageProcessorPil"}[arch]
    )
    assert processor.processor_settings == {
        "patch_size": 14,
        "num_additional_image_tokens": 1,
        "vision_feature_select_strategy": "default",
    }
    model_config = AutoConfig.from_pretrained(folder)
    assert model_config.model_type == arch and model_config.image_token_id == IMAGE_ID
    assert load_tokenizer(config.model).convert_tokens_to_ids("<image>") == IMAGE_ID


def test_settings_fall_back_to_the_model_config_without_processor_config(llava_dirs, tmp_path):
    import shutil

    from tunesmith.model.load import load_image_processor

    folder = tmp_path / "no-processor-config"
    shutil.copytree(llava_dirs["llava"], folder)
    (folder / "processor_config.json").unlink()
    processor = load_image_processor(load_config(None, {"model_name_or_path": str(folder)}).model)
    assert processor.processor_settings == {  # CLIP's patch size, its CLS feature, the config's strategy
        "patch_size": 14,
        "num_additional_image_tokens": 1,
        "vision_feature_select_strategy": "default",
    }


@pytest.mark.parametrize("arch", ARCHS)
def test_lora_sft_trains_through_the_cli(llava_dirs, vl_data_dir, tmp_path, arch):
    out = tmp_path / "out"
    args = train_args(
        llava_dirs[arch],
        arch,
        vl_data_dir,
        out,
        "max_steps=6",
        "learning_rate=0.02",
        "lr_scheduler_type=constant",
        "per_device_train_batch_size=3",
    )  # the whole data each step
    assert main(args) == 0
    logged = losses(out)
    assert len(logged) == 6 and all(math.isfinite(loss) for loss in logged)
    assert sum(logged[-2:]) < sum(logged[:2])
    assert (out / "adapter_model.safetensors").is_file() and (out / "preprocessor_config.json").is_file()
    saved = json.loads((out / "preprocessor_config.json").read_text())
    assert "processor_settings" not in saved and saved["crop_size"] == {"height": 42, "width": 42}
    targets = json.loads((out / "adapter_config.json").read_text())["target_modules"]
    assert targets and all(name.startswith("model.language_model.layers.") for name in targets)


@pytest.mark.parametrize("arch", ARCHS)
def test_dpo_with_images_trains(llava_dirs, vl_data_dir, tmp_path, arch):
    out = tmp_path / "dpo"
    args = train_args(
        llava_dirs[arch],
        arch,
        vl_data_dir,
        out,
        "stage=dpo",
        "dataset=vl_dpo",
        "max_steps=3",
        "learning_rate=0.05",
        "per_device_train_batch_size=2",
    )
    assert main(args) == 0
    assert [math.isfinite(loss) for loss in losses(out)] == [True] * 3
    assert (out / "adapter_model.safetensors").is_file()


def _trainable(model_dir, **keys):
    from tunesmith.model.load import load_model, load_tokenizer

    config = load_config(None, {"model_name_or_path": str(model_dir), **keys})
    tokenizer = load_tokenizer(config.model)
    model = load_model(config.model, config.method, tokenizer, is_trainable=True, multimodal=config.multimodal)
    return [name for name, param in model.named_parameters() if param.requires_grad]


def parts(names):
    def part(name):
        for key in ("vision_tower", "multi_modal_projector", "language_model", "lm_head", "image_newline"):
            if key in name:
                return key
        return "other"

    return {part(name) for name in names}


@pytest.mark.parametrize("arch", ARCHS)
def test_freeze_keys_decide_which_parameters_train(llava_dirs, arch):
    folder = llava_dirs[arch]
    newline = {"image_newline"} if arch == "llava_next" else set()  # NeXT's row separator: in no LF key, trains
    lora = _trainable(folder, finetuning_type="lora")
    assert parts(lora) == {"language_model"} and all("lora_" in name for name in lora)
    lora_vision = _trainable(
        folder, finetuning_type="lora", freeze_vision_tower=False, freeze_multi_modal_projector=False
    )
    assert parts(lora_vision) == {"language_model", "vision_tower"}  # LF: lora_target all skips the projector
    lora_projector = _trainable(
        folder, finetuning_type="lora", lora_target="linear_1,linear_2,q_proj", freeze_multi_modal_projector=False
    )
    assert parts(lora_projector) == {"language_model", "multi_modal_projector"}
    assert parts(_trainable(folder, finetuning_type="full")) == {"language_model", "lm_head", *newline}
    only_vision = _trainable(
        folder,
        finetuning_type="full",
        freeze_vision_tower=False,
        freeze_multi_modal_projector=False,
        freeze_language_model=True,
    )
    assert parts(only_vision) == {"vision_tower", "multi_modal_projector", *newline}
    freeze = _trainable(folder, finetuning_type="freeze", freeze_trainable_layers=1)
    assert freeze and all("language_model.layers.1." in name for name in freeze)
    freeze_projector = _trainable(
        folder, finetuning_type="freeze", freeze_trainable_layers=1, freeze_multi_modal_projector=False
    )
    assert parts(freeze_projector) == {"language_model", "multi_modal_projector"}


def chat_config(model_dir, arch, **keys):
    return load_config(
        None, {"model_name_or_path": str(model_dir), "template": arch, "do_sample": False, "max_new_tokens": 6, **keys}
    )


def training_example(model_dir, arch, data_dir, image: Path) -> tuple[list[int], list[str]]:
    """The prompt part (labels ignored) of the mllm_demo example with `image`, as `tunesmith train` encodes it."""
    from tunesmith.data.pipeline import build_datasets
    from tunesmith.data.records import IGNORE_INDEX
    from tunesmith.data.vision import ENCODED_IMAGES
    from tunesmith.model.load import load_image_processor, load_tokenizer

    config = load_config(
        None,
        {
            "model_name_or_path": str(model_dir),
            "template": arch,
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


@pytest.mark.parametrize("arch", ARCHS)
def test_chat_encodes_as_training_and_answers_as_generate(llava_dirs, vl_data_dir, arch):
    from PIL import Image

    from tunesmith.infer.engine import ChatEngine
    from tunesmith.infer.images import ImageInputError
    from tunesmith.infer.loader import generation_kwargs

    engine = ChatEngine(chat_config(llava_dirs[arch], arch))
    assert engine.takes_images
    red = (vl_data_dir / "images" / "red.png").absolute()
    messages = [{"role": "user", "content": QUESTION}]
    prompt = engine.prepare(messages, images=[str(red)])
    ids, paths = training_example(llava_dirs[arch], arch, vl_data_dir, red)
    assert prompt.ids == ids
    # LLaVA: a 42x42 view of 3x3 patches (+ CLS, dropped by "default"); NeXT on the 64x48 image: the base view (9)
    # + the 84x84 grid's 6x6 features unpadded to 4x6 (24) + a newline per row (4), as transformers counts them
    expected = {"llava": 9, "llava_next": 37}[arch]
    assert ids.count(IMAGE_ID) == expected
    run = ids.index(IMAGE_ID)
    assert ids[run : run + expected] == [IMAGE_ID] * expected
    assert set(prompt.vision) == ({"pixel_values"} if arch == "llava" else {"pixel_values", "image_sizes"})
    assert int(engine.plugin.token_type_ids(engine.tokenizer, torch.tensor(ids)).sum()) == expected
    assert engine.prepare(messages, images=[Image.open(red)]).ids == ids  # a PIL image (an API upload) too

    reply = engine.chat(messages, images=[str(red)])[0]
    assert reply.completion_tokens >= 1 and reply.prompt_tokens == len(ids)
    assert "".join(engine.stream(messages, images=[str(red)])) == reply.text
    inputs = torch.tensor([ids])
    kwargs = generation_kwargs(engine.config.generation, engine.tokenizer, engine.template)
    with torch.no_grad():  # model.generate on the training prompt and what the collator makes of its image
        out = engine.model.generate(
            inputs, attention_mask=torch.ones_like(inputs), **engine.plugin.inputs(paths), **kwargs
        )
    assert reply.text == engine.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)

    # the API: an OpenAI image_url part (a data: URL) is answered as the engine answers the <image> message
    import base64

    from starlette.testclient import TestClient

    from tunesmith.api.app import create_app

    url = f"data:image/png;base64,{base64.b64encode(red.read_bytes()).decode()}"
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What colour is this?"}]
    with TestClient(create_app(engine, api_key="k")) as client:
        response = client.post(
            "/v1/chat/completions",
            headers={"Authorization": "Bearer k"},
            json={"model": "m", "messages": [{"role": "user", "content": content}]},
        )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == reply.text
    assert response.json()["usage"]["prompt_tokens"] == len(ids)

    with pytest.raises(ImageInputError, match="1 <image> placeholders but 0 images"):
        engine.prepare(messages)
    with pytest.raises(ImageInputError, match="0 <image> placeholders but 1 images"):
        engine.prepare([{"role": "user", "content": "What colour?"}], images=[str(red)])


def test_collator_batches_images_of_several_sizes(llava_dirs, vl_data_dir):
    """LLaVA-NeXT: a batch of differently sized images is padded to the most tiles, with each image's size."""
    from tunesmith.data.template import get_template
    from tunesmith.data.vision import ENCODED_IMAGES, VisionCollator, make_plugin
    from tunesmith.model.load import load_image_processor, load_tokenizer

    config = load_config(None, {"model_name_or_path": str(llava_dirs["llava_next"])})
    tokenizer = load_tokenizer(config.model)
    template = get_template("llava_next", tokenizer)
    plugin = make_plugin(template, load_image_processor(config.model), config.multimodal)
    images = [str(vl_data_dir / "images" / name) for name in ("red.png", "blue.png")]
    features = [
        {"input_ids": [1, 2], "attention_mask": [1, 1], "labels": [1, 2], ENCODED_IMAGES: [path]} for path in images
    ]
    batch = VisionCollator(tokenizer, None, plugin)(features)
    assert batch["image_sizes"].tolist() == [[48, 64], [72, 40]]
    assert batch["pixel_values"].shape[:2] == (2, 5) and "mm_token_type_ids" not in batch


def test_text_template_and_placeholder_errors(llava_dirs, vl_data_dir, tmp_path, capsys):
    base = [f"model_name_or_path={llava_dirs['llava']}", f"dataset_dir={vl_data_dir}", "max_steps=1"]
    assert main(["train", str(EXAMPLE), *base, f"output_dir={tmp_path / 'a'}", "template=vicuna"]) == 2
    err = capsys.readouterr().err
    assert "template vicuna has no image support" in err and "llava" in err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "images").symlink_to(vl_data_dir / "images")
    (bad / "one.json").write_text(
        json.dumps(
            [
                {
                    "messages": [
                        {"role": "user", "content": "<image><image>Which?"},
                        {"role": "assistant", "content": "Red."},
                    ],
                    "images": ["images/red.png"],
                }
            ]
        )
    )
    (bad / "dataset_info.json").write_text(
        json.dumps(
            {
                "one": {
                    "file_name": "one.json",
                    "formatting": "sharegpt",
                    "columns": {"messages": "messages", "images": "images"},
                    "tags": {
                        "role_tag": "role",
                        "content_tag": "content",
                        "user_tag": "user",
                        "assistant_tag": "assistant",
                    },
                }
            }
        )
    )
    args = [
        f"model_name_or_path={llava_dirs['llava']}",
        f"dataset_dir={bad}",
        "dataset=one",
        "template=llava",
        "max_steps=1",
        f"output_dir={tmp_path / 'b'}",
    ]
    assert main(["train", str(EXAMPLE), *args]) == 2
    assert "2 <image> placeholders in its messages but 1 images" in capsys.readouterr().err


def test_data_preview_marks_the_image_tokens(llava_dirs, vl_data_dir, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"model_name_or_path: {llava_dirs['llava']}\nstage: sft\ndataset: mllm_demo\n"
        f"dataset_dir: {vl_data_dir}\ntemplate: llava\n"
    )
    assert main(["data", "preview", str(cfg), "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert "<image>\u00d79What colour is this?" in out and "image 0 (red.png): tokens" in out and "(9 <image>)" in out


def test_merged_export_reloads_with_its_processors_and_equal_logits(llava_dirs, vl_data_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from tunesmith.infer.engine import ChatEngine

    base_dir = llava_dirs["llava_next"]
    adapter = tmp_path / "lora"
    assert main(train_args(base_dir, "llava_next", vl_data_dir, adapter, "max_steps=3", "learning_rate=0.05")) == 0
    export_dir = tmp_path / "merged"
    assert (
        main(
            [
                "export",
                str(EXAMPLE),
                f"model_name_or_path={base_dir}",
                f"adapter_name_or_path={adapter}",
                f"export_dir={export_dir}",
                "export_dtype=float32",
                "template=llava_next",
            ]
        )
        == 0
    )
    for name in ("preprocessor_config.json", "processor_config.json"):
        assert json.loads((export_dir / name).read_text()) == json.loads((base_dir / name).read_text())

    merged = ChatEngine(chat_config(export_dir, "llava_next"))
    red = str((vl_data_dir / "images" / "red.png").absolute())
    prompt = merged.prepare([{"role": "user", "content": QUESTION}], images=[red])
    ids = torch.tensor([prompt.ids])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), **prompt.vision}
    reloaded = AutoModelForImageTextToText.from_pretrained(export_dir, dtype=torch.float32).eval()
    base = AutoModelForImageTextToText.from_pretrained(base_dir, dtype=torch.float32)
    unmerged = PeftModel.from_pretrained(base, str(adapter)).eval()
    with torch.no_grad():
        got, want = reloaded(**inputs).logits, unmerged(**inputs).logits
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    with torch.no_grad(), unmerged.disable_adapter():
        assert not torch.allclose(unmerged(**inputs).logits, want, atol=1e-4)
