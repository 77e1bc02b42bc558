"""InternVL images on a tiny random InternVLForConditionalGeneration (`tunesmith tiny --arch internvl`): LoRA sft and
dpo train through the CLI, with and without crop_to_patches; the freeze_* keys decide which parameters train; the
chat engine encodes an image message exactly as training does and answers as model.generate does."""

import json
import math
from pathlib import Path

import pytest
import torch

from tests.e2e.test_vl_gemma3 import EXAMPLE, QUESTION, logged_losses, parts, trainable, training_prompt
from tunesmith.cli import main
from tunesmith.config.load import load_config

CONTEXT = "<IMG_CONTEXT>"


@pytest.fixture(scope="module")
def internvl_dir(tiny_model_dirs) -> Path:
    from tunesmith.model.tiny import ensure_tiny_model

    return ensure_tiny_model(tiny_model_dirs._root / "tiny-internvl", "internvl")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    from PIL import Image

    from tests.conftest import write_vl_dataset

    folder = write_vl_dataset(tmp_path_factory.mktemp("internvl-data"))
    Image.new("RGB", (1200, 400), (200, 30, 200)).save(folder / "images" / "wide.png")
    return folder


def train(model_dir, data_dir, out, *extra):
    args = [
        f"model_name_or_path={model_dir}",
        f"dataset_dir={data_dir}",
        f"output_dir={out}",
        "template=intern_vl",
        "save_steps=1000",
        "warmup_ratio=0",
        "report_to=none",
        *extra,
    ]
    return main(["train", str(EXAMPLE), *args])


def test_lora_sft_and_dpo_train(internvl_dir, data_dir, tmp_path):
    out = tmp_path / "sft"
    assert train(internvl_dir, data_dir, out, "max_steps=8", "learning_rate=0.05", "lr_scheduler_type=constant") == 0
    losses = logged_losses(out)
    assert len(losses) == 8 and all(math.isfinite(loss) for loss in losses) and sum(losses[-2:]) < sum(losses[:2])
    assert json.loads((out / "preprocessor_config.json").read_text())["image_seq_length"] == 4
    targets = json.loads((out / "adapter_config.json").read_text())["target_modules"]
    assert targets and all("language_model" in name for name in targets)

    dpo = tmp_path / "dpo"
    assert (
        train(
            internvl_dir,
            data_dir,
            dpo,
            "stage=dpo",
            "dataset=vl_dpo",
            "max_steps=2",
            "per_device_train_batch_size=2",
            "crop_to_patches=true",
        )
        == 0
    )
    assert [math.isfinite(loss) for loss in logged_losses(dpo)] == [True, True]

    # the merged export reloads with its image processor and chats with an image as base + adapter does
    from tunesmith.infer.engine import ChatEngine

    merged = tmp_path / "merged"
    export = [f"model_name_or_path={internvl_dir}", "template=intern_vl", f"adapter_name_or_path={out}"]
    assert main(["export", str(EXAMPLE), *export, f"export_dir={merged}", "export_dtype=float32"]) == 0
    engines = [
        ChatEngine(
            load_config(
                None,
                {
                    "model_name_or_path": str(path),
                    "template": "intern_vl",
                    "do_sample": False,
                    "max_new_tokens": 4,
                    **extra,
                },
            )
        )
        for path, extra in ((merged, {}), (internvl_dir, {"adapter_name_or_path": str(out)}))
    ]
    red = str((data_dir / "images" / "red.png").absolute())
    replies = [engine.chat([{"role": "user", "content": QUESTION}], images=[red])[0] for engine in engines]
    assert engines[0].takes_images and replies[0] == replies[1]


def encoded(model_dir, data_dir, **keys):
    from tunesmith.data.pipeline import build_datasets
    from tunesmith.model.load import load_image_processor, load_tokenizer

    config = load_config(
        None,
        {
            "model_name_or_path": str(model_dir),
            "template": "intern_vl",
            "stage": "sft",
            "dataset": "mllm_demo",
            "dataset_dir": str(data_dir),
            **keys,
        },
    )
    tokenizer = load_tokenizer(config.model, config.lf_model)
    return tokenizer, build_datasets(
        config, tokenizer, "supervised", image_processor=load_image_processor(config.model)
    )


def test_crop_to_patches_expands_each_tile(internvl_dir, data_dir):
    from tunesmith.data.vision import ENCODED_IMAGES

    tokenizer, plain = encoded(internvl_dir, data_dir)
    _, cropped = encoded(internvl_dir, data_dir, crop_to_patches=True)
    context = tokenizer.convert_tokens_to_ids(CONTEXT)
    row, crop_row = plain.train[0], cropped.train[0]
    assert row["input_ids"].count(context) == 4  # one image, image_seq_length 4
    patches = cropped.plugin.inputs(crop_row[ENCODED_IMAGES])["pixel_values"].shape[0]
    assert patches > 1 and crop_row["input_ids"].count(context) == 4 * patches


def test_freeze_keys_decide_which_parameters_train(internvl_dir):
    lora = trainable(internvl_dir, finetuning_type="lora")
    assert parts(lora) == {"language_model"} and all("lora_" in name for name in lora)
    # LF's find_all_linear_modules: lora_target all leaves the projector out even when it is not frozen
    assert parts(trainable(internvl_dir, finetuning_type="lora", freeze_multi_modal_projector=False)) == {
        "language_model"
    }
    named = {"lora_target": "linear_1,linear_2,q_proj"}  # its layers named: adapted once it is not frozen
    assert parts(trainable(internvl_dir, finetuning_type="lora", **named)) == {"language_model"}
    assert parts(trainable(internvl_dir, finetuning_type="lora", freeze_multi_modal_projector=False, **named)) == {
        "language_model",
        "multi_modal_projector",
    }
    assert parts(trainable(internvl_dir, finetuning_type="full")) == {"language_model", "lm_head"}
    assert parts(
        trainable(internvl_dir, finetuning_type="full", freeze_vision_tower=False, freeze_language_model=True)
    ) == {"vision_tower"}


def test_the_engine_encodes_and_answers_as_training_and_generate_do(internvl_dir, data_dir):
    from tunesmith.infer.engine import ChatEngine
    from tunesmith.infer.loader import generation_kwargs

    engine = ChatEngine(
        load_config(
            None,
            {"model_name_or_path": str(internvl_dir), "template": "intern_vl", "do_sample": False, "max_new_tokens": 6},
        )
    )
    red = (data_dir / "images" / "red.png").absolute()
    prompt = engine.prepare([{"role": "user", "content": QUESTION}], images=[str(red)])
    ids, paths = training_prompt(*encoded(internvl_dir, data_dir), red)
    assert prompt.ids == ids and set(prompt.vision) == {"pixel_values"}
    tokens = engine.tokenizer.convert_ids_to_tokens(prompt.ids)
    start = tokens.index("<img>")
    assert tokens[start : start + 6] == ["<img>", *[CONTEXT] * 4, "</img>"]
    reply = engine.chat([{"role": "user", "content": QUESTION}], images=[str(red)])[0]
    inputs = torch.tensor([ids])
    with torch.no_grad():
        out = engine.model.generate(
            inputs,
            attention_mask=torch.ones_like(inputs),
            **engine.plugin.inputs(paths),
            **generation_kwargs(engine.config.generation, engine.tokenizer, engine.template),
        )
    assert reply.completion_tokens >= 1
    assert reply.text == engine.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)


def test_data_preview_marks_the_image_tokens(internvl_dir, data_dir, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"model_name_or_path: {internvl_dir}\nstage: sft\ndataset: mllm_demo\n"
        f"dataset_dir: {data_dir}\ntemplate: intern_vl\n"
    )
    assert main(["data", "preview", str(cfg), "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert f"<img>{CONTEXT}\u00d74</img>" in out and f"(4 {CONTEXT})" in out and "image 0 (red.png)" in out


def test_tiny_internvl_folder_loads_back(tmp_path):
    from tunesmith.model.load import load_image_processor

    assert main(["tiny", str(tmp_path / "ivl"), "--arch", "internvl"]) == 0
    config = load_config(None, {"model_name_or_path": str(tmp_path / "ivl")})
    assert load_image_processor(config.model).image_seq_length == 4
    assert json.loads((tmp_path / "ivl" / "config.json").read_text())["model_type"] == "internvl"
