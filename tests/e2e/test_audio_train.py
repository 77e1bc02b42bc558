"""Audio-language training on a tiny Qwen2-Audio: examples/train_audio_lora.yaml trains through the CLI, the audio
features reach the model, the freeze_* keys decide which parameters train, dpo runs, refusals name the fix, and
`tunesmith tiny --arch qwen2_audio` loads back."""

import json
import math
from pathlib import Path

from tunesmith.cli import main
from tunesmith.config.load import load_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "train_audio_lora.yaml"


def test_example_audio_lora_trains_and_saves_the_adapter(tiny_audio_model_dir, audio_data_dir, tmp_path):
    out = tmp_path / "out"
    args = [
        f"model_name_or_path={tiny_audio_model_dir}",
        f"dataset_dir={audio_data_dir}",
        "dataset=audio_demo",
        f"output_dir={out}",
        "max_steps=8",
        "learning_rate=0.05",
        "warmup_ratio=0",
        "save_steps=1000",
        "lr_scheduler_type=constant",
    ]
    assert main(["train", str(EXAMPLE), *args]) == 0
    rows = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in rows if "loss" in row]
    assert len(losses) == 8 and all(math.isfinite(loss) for loss in losses)
    assert sum(losses[-2:]) < sum(losses[:2])
    assert (out / "adapter_model.safetensors").is_file() and (out / "preprocessor_config.json").is_file()
    targets = json.loads((out / "adapter_config.json").read_text())["target_modules"]
    assert targets and all("language_model" in name for name in targets)


def test_the_audio_features_reach_the_model(tiny_audio_model_dir, audio_data_dir):
    """The loss of a batch depends on its audios: zeroed input_features give another loss."""
    import torch

    from tunesmith.data.audio import audio_collator
    from tunesmith.data.pipeline import build_datasets
    from tunesmith.model.audio import load_feature_extractor
    from tunesmith.model.load import load_model, load_tokenizer

    config = load_config(
        str(EXAMPLE),
        {
            "model_name_or_path": str(tiny_audio_model_dir),
            "dataset_dir": str(audio_data_dir),
            "dataset": "audio_demo",
            "finetuning_type": "full",
        },
    )
    tokenizer = load_tokenizer(config.model)
    data = build_datasets(config, tokenizer, "supervised", feature_extractor=load_feature_extractor(config.model))
    model = load_model(config.model, config.method, tokenizer, is_trainable=False, multimodal=config.multimodal)
    batch = audio_collator(config, tokenizer, model, data.plugin)([data.train[i] for i in range(3)])
    assert list(batch["input_features"].shape) == [4, 16, 200]
    with torch.no_grad():
        loss = model(**batch).loss
        silent = model(**{**batch, "input_features": torch.zeros_like(batch["input_features"])}).loss
    assert math.isfinite(loss.item()) and abs(loss.item() - silent.item()) > 1e-6


def test_dpo_with_audios_trains(tiny_audio_model_dir, audio_data_dir, tmp_path, capsys):
    out = tmp_path / "dpo"
    args = [
        f"model_name_or_path={tiny_audio_model_dir}",
        f"dataset_dir={audio_data_dir}",
        "stage=dpo",
        "dataset=audio_dpo",
        "max_steps=2",
        "save_steps=1000",
        "learning_rate=0.05",
        "per_device_train_batch_size=2",
    ]
    assert main(["train", str(EXAMPLE), *args, f"output_dir={out}"]) == 0
    logs = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    assert [math.isfinite(row["loss"]) for row in logs if "loss" in row] == [True] * 2
    assert (out / "adapter_model.safetensors").is_file()
    assert main(["train", str(EXAMPLE), *args, f"output_dir={tmp_path / 'x'}", "pref_loss=orpo"]) == 2
    assert "dpo on an audio-language model takes pref_loss: sigmoid" in capsys.readouterr().err
    assert main(["train", str(EXAMPLE), *args[:2], "stage=kto", f"output_dir={tmp_path / 'y'}"]) == 2
    assert "stage kto on an audio-language model is not supported yet" in capsys.readouterr().err


def _trainable(model_dir, **keys):
    from tunesmith.model.load import load_model, load_tokenizer

    config = load_config(None, {"model_name_or_path": str(model_dir), **keys})
    tokenizer = load_tokenizer(config.model)
    model = load_model(config.model, config.method, tokenizer, is_trainable=True, multimodal=config.multimodal)
    return [name for name, param in model.named_parameters() if param.requires_grad]


def parts(names):
    def part(name):
        for key in ("audio_tower", "multi_modal_projector", "language_model", "lm_head"):
            if key in name:
                return key
        return "other"

    return {part(name) for name in names}


def test_freeze_keys_decide_which_parameters_train(tiny_audio_model_dir):
    lora = _trainable(tiny_audio_model_dir, finetuning_type="lora")
    assert parts(lora) == {"language_model"} and all("lora_" in name for name in lora)
    lora_audio = _trainable(tiny_audio_model_dir, finetuning_type="lora", freeze_vision_tower=False)
    assert parts(lora_audio) == {"language_model", "audio_tower"}
    assert parts(_trainable(tiny_audio_model_dir, finetuning_type="full")) == {"language_model", "lm_head"}
    keys = {"freeze_vision_tower": False, "freeze_multi_modal_projector": False, "freeze_language_model": True}
    assert parts(_trainable(tiny_audio_model_dir, finetuning_type="full", **keys)) == {
        "audio_tower",
        "multi_modal_projector",
    }
    freeze = _trainable(tiny_audio_model_dir, finetuning_type="freeze", freeze_trainable_layers=1)
    assert freeze and all("language_model.layers.1." in name for name in freeze)
    freeze_projector = _trainable(
        tiny_audio_model_dir, finetuning_type="freeze", freeze_trainable_layers=1, freeze_multi_modal_projector=False
    )
    assert parts(freeze_projector) == {"language_model", "multi_modal_projector"}


def test_data_preview_marks_the_audio_tokens(tiny_audio_model_dir, audio_data_dir, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"model_name_or_path: {tiny_audio_model_dir}\nstage: sft\ndataset: audio_demo\n"
        f"dataset_dir: {audio_data_dir}\ntemplate: qwen2_audio\n"
    )
    assert main(["data", "preview", str(cfg), "-n", "3"]) == 0
    out = capsys.readouterr().out
    assert "<|audio_bos|><|AUDIO|>\u00d715<|audio_eos|>" in out
    assert "audio 0 (low.wav): tokens 19-33 (15 <|AUDIO|>)" in out and "audio 1 (high.wav): tokens" in out
    assert main(["data", "check", str(cfg)]) == 0


def test_packing_a_text_template_and_text_models_are_refused(
    tiny_audio_model_dir, tiny_model_dir, audio_data_dir, tmp_path, capsys
):
    base = [f"dataset_dir={audio_data_dir}", "dataset=audio_demo", "max_steps=1"]
    model = f"model_name_or_path={tiny_audio_model_dir}"
    assert main(["train", str(EXAMPLE), model, *base, f"output_dir={tmp_path / 'a'}", "packing=true"]) == 2
    assert "packing: true cannot be used with an audio-language model" in capsys.readouterr().err
    assert main(["train", str(EXAMPLE), model, *base, f"output_dir={tmp_path / 'b'}", "template=qwen"]) == 2
    assert "has no audio support" in capsys.readouterr().err
    assert main(["train", str(EXAMPLE), model, *base, f"output_dir={tmp_path / 'c'}", "audio_sampling_rate=8000"]) == 2
    assert "audio_sampling_rate: 8000, but this model's feature extractor" in capsys.readouterr().err
    text = f"model_name_or_path={tiny_model_dir}"
    assert main(["train", str(EXAMPLE), text, *base, f"output_dir={tmp_path / 'd'}", "template=qwen"]) == 2
    assert "the model has no audio feature extractor" in capsys.readouterr().err


def test_tiny_audio_folder_loads_back(tmp_path):
    from tunesmith.model.audio import load_feature_extractor
    from tunesmith.model.load import load_image_processor

    assert main(["tiny", str(tmp_path / "audio"), "--arch", "qwen2_audio"]) == 0
    for name in ("model.safetensors", "processor_config.json", "tokenizer.json"):
        assert (tmp_path / "audio" / name).is_file()
    config = load_config(None, {"model_name_or_path": str(tmp_path / "audio")})
    extractor = load_feature_extractor(config.model)
    assert type(extractor).__name__ == "WhisperFeatureExtractor" and extractor.feature_size == 16
    assert load_image_processor(config.model) is None
    model_config = json.loads((tmp_path / "audio" / "config.json").read_text())
    assert model_config["model_type"] == "qwen2_audio"
    tokens = json.loads((tmp_path / "audio" / "tokenizer.json").read_text())["added_tokens"]
    assert {"<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"} <= {t["content"] for t in tokens}


def test_estimate_encodes_the_audio_data(tiny_audio_model_dir, audio_data_dir, capsys):
    args = [f"model_name_or_path={tiny_audio_model_dir}", f"dataset_dir={audio_data_dir}", "dataset=audio_demo"]
    assert main(["estimate", str(EXAMPLE), *args]) == 0
    assert "memory estimate" in capsys.readouterr().out
