"""Vision-language training on a tiny Qwen2-VL: examples/train_vl_lora.yaml trains, the freeze_* keys decide which
parameters train, `data preview` marks the image tokens, and `tunesmith tiny --arch qwen2_vl` loads back."""

import json
import math
from pathlib import Path

import pytest

from tunesmith.cli import main
from tunesmith.config.load import load_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "train_vl_lora.yaml"


def test_example_vl_lora_trains_and_the_loss_falls(tiny_vl_model_dir, vl_data_dir, tmp_path):
    out = tmp_path / "out"
    assert (
        main(
            [
                "train",
                str(EXAMPLE),
                f"model_name_or_path={tiny_vl_model_dir}",
                f"dataset_dir={vl_data_dir}",
                f"output_dir={out}",
                "max_steps=8",
                "learning_rate=0.05",
                "warmup_ratio=0",
                "save_steps=1000",
                "lr_scheduler_type=constant",
            ]
        )
        == 0
    )
    losses = [
        json.loads(line)["loss"]
        for line in (out / "trainer_log.jsonl").read_text().splitlines()
        if "loss" in json.loads(line)
    ]
    assert len(losses) == 8 and all(math.isfinite(loss) for loss in losses)
    assert sum(losses[-2:]) < sum(losses[:2])
    assert (out / "adapter_model.safetensors").is_file() and (out / "preprocessor_config.json").is_file()
    targets = json.loads((out / "adapter_config.json").read_text())["target_modules"]
    assert targets and all("language_model" in name for name in targets)


def test_dpo_with_images_trains(tiny_vl_model_dir, vl_data_dir, tmp_path, capsys):
    out = tmp_path / "dpo"
    args = [
        f"model_name_or_path={tiny_vl_model_dir}",
        f"dataset_dir={vl_data_dir}",
        "stage=dpo",
        "dataset=vl_dpo",
        "max_steps=3",
        "save_steps=1000",
        "learning_rate=0.05",
        "per_device_train_batch_size=2",
    ]
    assert main(["train", str(EXAMPLE), *args, f"output_dir={out}"]) == 0
    logs = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    assert [math.isfinite(row["loss"]) for row in logs if "loss" in row] == [True] * 3
    assert (out / "adapter_model.safetensors").is_file()
    assert main(["train", str(EXAMPLE), *args, f"output_dir={tmp_path / 'x'}", "pref_loss=orpo"]) == 2
    assert "dpo on a vision-language model takes pref_loss: sigmoid" in capsys.readouterr().err
    assert main(["train", str(EXAMPLE), *args[:3], "stage=kto", f"output_dir={tmp_path / 'y'}"]) == 2
    assert "stage kto on a vision-language model is not supported yet" in capsys.readouterr().err


def _trainable(model_dir, **keys):
    from tunesmith.model.load import load_model, load_tokenizer

    config = load_config(None, {"model_name_or_path": str(model_dir), **keys})
    tokenizer = load_tokenizer(config.model)
    model = load_model(config.model, config.method, tokenizer, is_trainable=True, multimodal=config.multimodal)
    return [name for name, param in model.named_parameters() if param.requires_grad]


def parts(names):
    def part(name):
        for key in ("visual.merger", "visual", "language_model", "lm_head"):
            if key in name:
                return key
        return "other"

    return {part(name) for name in names}


def test_freeze_keys_decide_which_parameters_train(tiny_vl_model_dir):
    lora = _trainable(tiny_vl_model_dir, finetuning_type="lora")
    assert parts(lora) == {"language_model"} and all("lora_" in name for name in lora)
    lora_vision = _trainable(tiny_vl_model_dir, finetuning_type="lora", freeze_vision_tower=False)
    assert parts(lora_vision) == {"language_model", "visual"}
    assert not any("patch_embed" in name for name in lora_vision)  # LF's lora_conflict_keys
    assert parts(_trainable(tiny_vl_model_dir, finetuning_type="full")) == {"language_model", "lm_head"}
    assert parts(
        _trainable(
            tiny_vl_model_dir,
            finetuning_type="full",
            freeze_vision_tower=False,
            freeze_multi_modal_projector=False,
            freeze_language_model=True,
        )
    ) == {"visual", "visual.merger"}
    freeze = _trainable(tiny_vl_model_dir, finetuning_type="freeze", freeze_trainable_layers=1)
    assert freeze and all("language_model.layers.1." in name for name in freeze)
    freeze_projector = _trainable(
        tiny_vl_model_dir, finetuning_type="freeze", freeze_trainable_layers=1, freeze_multi_modal_projector=False
    )
    assert parts(freeze_projector) == {"language_model", "visual.merger"}


def test_data_preview_marks_the_image_tokens(tiny_vl_model_dir, vl_data_dir, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"model_name_or_path: {tiny_vl_model_dir}\nstage: sft\ndataset: mllm_demo\n"
        f"dataset_dir: {vl_data_dir}\ntemplate: qwen2_vl\n"
    )
    assert main(["data", "preview", str(cfg), "-n", "3"]) == 0
    out = capsys.readouterr().out
    assert "<|vision_start|><|image_pad|>\u00d7" in out and "image 0 (red.png): tokens" in out
    assert "image 1 (blue.png): tokens" in out
    assert main(["data", "check", str(cfg)]) == 0


def test_packing_and_a_text_template_are_refused(tiny_vl_model_dir, vl_data_dir, tmp_path, capsys):
    base = [f"model_name_or_path={tiny_vl_model_dir}", f"dataset_dir={vl_data_dir}", "max_steps=1"]
    assert main(["train", str(EXAMPLE), *base, f"output_dir={tmp_path / 'a'}", "packing=true"]) == 2
    assert "packing: true cannot be used with a vision-language model" in capsys.readouterr().err
    assert main(["train", str(EXAMPLE), *base, f"output_dir={tmp_path / 'b'}", "template=qwen"]) == 2
    assert "has no image support" in capsys.readouterr().err


def test_tiny_vl_folder_loads_back(tmp_path):
    from tunesmith.model.load import load_image_processor

    assert main(["tiny", str(tmp_path / "vl"), "--arch", "qwen2_vl"]) == 0
    for name in ("model.safetensors", "preprocessor_config.json", "tokenizer.json"):
        assert (tmp_path / "vl" / name).is_file()
    config = load_config(None, {"model_name_or_path": str(tmp_path / "vl")})
    processor = load_image_processor(config.model)
    assert processor.merge_size == 2 and processor.patch_size == 14


LF_DATA = REPO.parent / "shared" / "lf-demo-data"


@pytest.mark.skipif(not (LF_DATA / "mllm_demo.json").is_file(), reason="../shared/lf-demo-data is absent")
def test_example_trains_on_llamafactory_mllm_demo(tiny_vl_model_dir, tmp_path):
    out = tmp_path / "out"
    assert (
        main(
            [
                "train",
                str(EXAMPLE),
                f"model_name_or_path={tiny_vl_model_dir}",
                f"dataset_dir={LF_DATA}",
                f"output_dir={out}",
                "max_steps=2",
                "save_steps=1000",
            ]
        )
        == 0
    )
    assert (out / "adapter_model.safetensors").is_file()
