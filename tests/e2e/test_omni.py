"""Qwen2.5-Omni's thinker (images and audios) on a tiny random model: `tunesmith tiny --arch qwen2_5_omni` loads back,
examples/train_omni_lora.yaml trains sft through the CLI on records with images, audios, both or neither, both media
reach the model, dpo trains, the freeze_* keys follow LF's table, preview marks both media, the chat engine encodes
an image + audio message as training does and answers as model.generate does, the merged export reloads with both
processors, and videos are refused with the reason."""

import json
import math
from pathlib import Path

import pytest
import torch

from tunesmith.cli import main
from tunesmith.config.load import load_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "train_omni_lora.yaml"
QUESTION = "<image><audio>What do you see and hear?"


@pytest.fixture(scope="module")
def omni_dir(tiny_model_dirs) -> Path:
    from tunesmith.model.tiny import ensure_tiny_model

    return ensure_tiny_model(tiny_model_dirs._root / "tiny-qwen2_5_omni", "qwen2_5_omni")


@pytest.fixture(scope="module")
def omni_data(tmp_path_factory) -> Path:
    """The suite's image dataset plus WAV tones and `omni_demo` (ShareGPT: image + audio, audio, image, text) and
    `omni_dpo` (ranking, image + audio)."""
    from conftest import write_tone, write_vl_dataset

    folder = write_vl_dataset(tmp_path_factory.mktemp("omni-data"))
    write_tone(folder / "audios" / "low.wav", 0.6, hz=220.0)
    write_tone(folder / "audios" / "high.wav", 1.0, rate=22050, channels=2, hz=880.0)

    def chat(question, answer, images, audios):
        turns = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        return {"messages": turns, "images": images, "audios": audios}

    rows = [
        chat(QUESTION, "Red, and a low tone.", ["images/red.png"], ["audios/low.wav"]),
        chat("<audio>What is this sound?", "A high tone.", [], ["audios/high.wav"]),
        chat("<image>What colour is this?", "It is blue.", ["images/blue.png"], []),
        chat("Hello", "Hi.", [], []),
    ]
    (folder / "omni_demo.json").write_text(json.dumps(rows))
    pairs = [
        {
            "instruction": "<audio><image>Which pitch and colour?",
            "chosen": f"{pitch}, {colour}",
            "rejected": f"{colour}, {pitch}",
            "images": [f"images/{colour}.png"],
            "audios": [f"audios/{pitch}.wav"],
        }
        for pitch, colour in (("low", "red"), ("high", "blue"))
    ]
    (folder / "omni_dpo.json").write_text(json.dumps(pairs))
    videos = [
        {
            **rows[0],
            "messages": [
                {"role": "user", "content": "<video>What happens?"},
                {"role": "assistant", "content": "Nothing."},
            ],
            "videos": ["clip.mp4"],
        }
    ]
    (folder / "omni_video.json").write_text(json.dumps(videos))
    info = json.loads((folder / "dataset_info.json").read_text())
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    media = {"messages": "messages", "images": "images", "audios": "audios"}
    info["omni_demo"] = {"file_name": "omni_demo.json", "formatting": "sharegpt", "columns": media, "tags": tags}
    info["omni_video"] = {
        "file_name": "omni_video.json",
        "formatting": "sharegpt",
        "columns": {**media, "videos": "videos"},
        "tags": tags,
    }
    info["omni_dpo"] = {
        "file_name": "omni_dpo.json",
        "ranking": True,
        "columns": {
            "prompt": "instruction",
            "chosen": "chosen",
            "rejected": "rejected",
            "images": "images",
            "audios": "audios",
        },
    }
    (folder / "dataset_info.json").write_text(json.dumps(info))
    return folder


def train_args(omni_dir, omni_data, out, *extra):
    return [
        str(EXAMPLE),
        f"model_name_or_path={omni_dir}",
        f"dataset_dir={omni_data}",
        f"output_dir={out}",
        "save_steps=1000",
        "warmup_ratio=0",
        "lr_scheduler_type=constant",
        *extra,
    ]


def test_tiny_omni_folder_loads_back(omni_dir):
    from transformers import AutoModelForImageTextToText

    from tunesmith.model.audio import load_feature_extractor
    from tunesmith.model.load import load_image_processor

    config = load_config(None, {"model_name_or_path": str(omni_dir)})
    assert type(load_image_processor(config.model)).__name__ == "Qwen2VLImageProcessorPil"
    extractor = load_feature_extractor(config.model)
    assert type(extractor).__name__ == "WhisperFeatureExtractor" and extractor.feature_size == 16
    settings = json.loads((omni_dir / "preprocessor_config.json").read_text())
    assert settings["image_processor_type"] == "Qwen2VLImageProcessor"
    assert settings["feature_extractor_type"] == "WhisperFeatureExtractor"
    model = AutoModelForImageTextToText.from_pretrained(omni_dir)
    assert type(model).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    assert sum(p.numel() for p in model.parameters()) < 400_000
    tokens = {t["content"] for t in json.loads((omni_dir / "tokenizer.json").read_text())["added_tokens"]}
    assert {"<|IMAGE|>", "<|AUDIO|>", "<|vision_bos|>", "<|audio_eos|>"} <= tokens


def test_example_omni_lora_trains_on_images_and_audios(omni_dir, omni_data, tmp_path):
    out = tmp_path / "out"
    args = train_args(omni_dir, omni_data, out, "dataset=omni_demo", "max_steps=8", "learning_rate=0.05")
    assert main(["train", *args]) == 0
    rows = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in rows if "loss" in row]
    assert len(losses) == 8 and all(math.isfinite(loss) for loss in losses)
    assert sum(losses[-2:]) < sum(losses[:2])
    targets = json.loads((out / "adapter_config.json").read_text())["target_modules"]
    assert targets and all("language_model" in name for name in targets)
    settings = json.loads((out / "preprocessor_config.json").read_text())  # both processors, as the base has them
    assert settings["image_processor_type"] and settings["feature_extractor_type"] == "WhisperFeatureExtractor"


def test_both_media_reach_the_model(omni_dir, omni_data):
    from tunesmith.data.omni import omni_collator
    from tunesmith.data.pipeline import build_datasets
    from tunesmith.model.audio import load_feature_extractor
    from tunesmith.model.load import load_image_processor, load_model, load_tokenizer

    config = load_config(
        str(EXAMPLE),
        {
            "model_name_or_path": str(omni_dir),
            "dataset_dir": str(omni_data),
            "dataset": "omni_demo",
            "finetuning_type": "full",
        },
    )
    tokenizer = load_tokenizer(config.model)
    data = build_datasets(
        config,
        tokenizer,
        "supervised",
        image_processor=load_image_processor(config.model),
        feature_extractor=load_feature_extractor(config.model),
    )
    model = load_model(config.model, config.method, tokenizer, is_trainable=False, multimodal=config.multimodal)
    batch = omni_collator(config, tokenizer, model, data.plugin)([data.train[i] for i in range(4)])
    assert batch["image_grid_thw"].tolist() == [[1, 4, 4], [1, 6, 2]]  # red (64x48) and blue (40x72)
    assert list(batch["input_features"].shape) == [2, 16, 200] and "mm_token_type_ids" not in batch
    with torch.no_grad():
        loss = model(**batch).loss.item()
        silent = model(**{**batch, "input_features": torch.zeros_like(batch["input_features"])}).loss.item()
        dark = model(**{**batch, "pixel_values": torch.zeros_like(batch["pixel_values"])}).loss.item()
    assert math.isfinite(loss) and abs(loss - silent) > 1e-6 and abs(loss - dark) > 1e-6


def test_dpo_with_images_and_audios_trains(omni_dir, omni_data, tmp_path, capsys):
    out = tmp_path / "dpo"
    args = train_args(
        omni_dir,
        omni_data,
        out,
        "stage=dpo",
        "dataset=omni_dpo",
        "max_steps=2",
        "learning_rate=0.05",
        "per_device_train_batch_size=2",
    )
    assert main(["train", *args]) == 0
    logs = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    assert [math.isfinite(row["loss"]) for row in logs if "loss" in row] == [True] * 2
    assert (out / "adapter_model.safetensors").is_file()


def _trainable(model_dir, **keys):
    from tunesmith.model.load import load_model, load_tokenizer

    config = load_config(None, {"model_name_or_path": str(model_dir), **keys})
    tokenizer = load_tokenizer(config.model)
    model = load_model(config.model, config.method, tokenizer, is_trainable=True, multimodal=config.multimodal)
    return [name for name, param in model.named_parameters() if param.requires_grad]


def parts(names):
    """LF's parts of qwen2_5_omni_thinker: the vision/audio towers, the projectors (vision merger, audio proj)."""

    def part(name):
        for key in ("visual.merger", "audio_tower.proj", "visual", "audio_tower", "language_model", "lm_head"):
            if key in name:
                return key
        return "other"

    return {part(name) for name in names}


def test_freeze_keys_follow_lfs_table(omni_dir):
    lora = _trainable(omni_dir, finetuning_type="lora")
    assert parts(lora) == {"language_model"} and all("lora_" in name for name in lora)
    towers = _trainable(omni_dir, finetuning_type="lora", freeze_vision_tower=False)
    assert parts(towers) == {"language_model", "visual", "audio_tower"}
    assert not any("patch_embed" in name for name in towers)  # LF's lora_conflict_keys
    assert parts(_trainable(omni_dir, finetuning_type="full")) == {"language_model", "lm_head"}
    keys = {"freeze_vision_tower": False, "freeze_multi_modal_projector": False, "freeze_language_model": True}
    assert parts(_trainable(omni_dir, finetuning_type="full", **keys)) == {
        "visual",
        "visual.merger",
        "audio_tower",
        "audio_tower.proj",
    }
    freeze = _trainable(omni_dir, finetuning_type="freeze", freeze_trainable_layers=1)
    assert freeze and all("language_model.layers.1." in name for name in freeze)
    # the audio tower's proj stays frozen with the audio tower (freeze_vision_tower), as in LF
    projector = _trainable(
        omni_dir, finetuning_type="freeze", freeze_trainable_layers=1, freeze_multi_modal_projector=False
    )
    assert parts(projector) == {"language_model", "visual.merger"}


def test_data_preview_marks_both_media(omni_dir, omni_data, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"model_name_or_path: {omni_dir}\nstage: sft\ndataset: omni_demo\n"
        f"dataset_dir: {omni_data}\ntemplate: qwen2_omni\n"
    )
    assert main(["data", "preview", str(cfg), "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert "<|vision_bos|><|IMAGE|>\u00d74<|vision_eos|><|audio_bos|><|AUDIO|>\u00d715<|audio_eos|>" in out
    assert "image 0 (red.png): tokens" in out and "audio 0 (low.wav): tokens" in out
    assert main(["data", "check", str(cfg)]) == 0


def test_videos_packing_and_a_vl_template_are_refused(omni_dir, omni_data, tiny_vl_model_dir, tmp_path, capsys):
    args = train_args(omni_dir, omni_data, tmp_path / "a", "dataset=omni_video", "max_steps=1")
    assert main(["train", *args]) == 2
    assert "video" in capsys.readouterr().err
    args = train_args(omni_dir, omni_data, tmp_path / "b", "dataset=omni_demo", "max_steps=1", "packing=true")
    assert main(["train", *args]) == 2
    assert "packing: true cannot be used" in capsys.readouterr().err
    args = train_args(omni_dir, omni_data, tmp_path / "c", "dataset=omni_demo", "max_steps=1", "template=qwen2_vl")
    assert main(["train", *args]) == 2
    assert "has no audio support" in capsys.readouterr().err
    args = train_args(tiny_vl_model_dir, omni_data, tmp_path / "d", "dataset=mllm_demo", "max_steps=1")
    assert main(["train", *args]) == 2
    assert "template qwen2_omni is Qwen2.5-Omni's" in capsys.readouterr().err


def chat_config(model_dir, **keys):
    return load_config(
        None,
        {
            "model_name_or_path": str(model_dir),
            "template": "qwen2_omni",
            "do_sample": False,
            "max_new_tokens": 6,
            **keys,
        },
    )


def training_prompt(model_dir, data_dir):
    """The prompt part of omni_demo's image + audio example as `tunesmith train` encodes it, with its media."""
    from tunesmith.data.audio import ENCODED_AUDIOS
    from tunesmith.data.pipeline import build_datasets
    from tunesmith.data.records import IGNORE_INDEX
    from tunesmith.data.vision import ENCODED_IMAGES
    from tunesmith.model.audio import load_feature_extractor
    from tunesmith.model.load import load_image_processor, load_tokenizer

    config = load_config(
        None,
        {
            "model_name_or_path": str(model_dir),
            "template": "qwen2_omni",
            "stage": "sft",
            "dataset": "omni_demo",
            "dataset_dir": str(data_dir),
        },
    )
    tokenizer = load_tokenizer(config.model, config.lf_model)
    data = build_datasets(
        config,
        tokenizer,
        "supervised",
        image_processor=load_image_processor(config.model),
        feature_extractor=load_feature_extractor(config.model),
    )
    row = data.train[0]
    first_label = next(i for i, label in enumerate(row["labels"]) if label != IGNORE_INDEX)
    return row["input_ids"][:first_label], row[ENCODED_IMAGES], row[ENCODED_AUDIOS], data.plugin


def test_chat_encodes_an_image_and_audio_as_training_and_answers_as_generate(omni_dir, omni_data):
    from tunesmith.infer.engine import ChatEngine
    from tunesmith.infer.loader import generation_kwargs

    engine = ChatEngine(chat_config(omni_dir))
    assert engine.takes_audios and engine.plugin is not None
    ids, images, audios, plugin = training_prompt(omni_dir, omni_data)
    messages = [{"role": "user", "content": QUESTION}]
    prompt = engine.prepare(messages, images=images, audios=audios)
    assert prompt.ids == ids
    reply = engine.chat(messages, images=images, audios=audios)[0]
    assert reply.completion_tokens >= 1 and reply.prompt_tokens == len(ids)
    inputs = torch.tensor([ids])
    kwargs = generation_kwargs(engine.config.generation, engine.tokenizer, engine.template)
    with torch.no_grad():
        out = engine.model.generate(
            inputs,
            attention_mask=torch.ones_like(inputs),
            **plugin.image.inputs(images),
            **plugin.audio.inputs(audios),
            **kwargs,
        )
    assert reply.text == engine.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)


def test_merged_omni_export_reloads_with_both_processors_and_equal_logits(omni_dir, omni_data, tmp_path):
    from peft import PeftModel
    from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoModelForImageTextToText

    from tunesmith.infer.engine import ChatEngine

    adapter = tmp_path / "adapter"
    args = train_args(omni_dir, omni_data, adapter, "dataset=omni_demo", "max_steps=2", "learning_rate=0.05")
    assert main(["train", *args]) == 0
    export_dir = tmp_path / "merged"
    assert (
        main(
            [
                "export",
                str(EXAMPLE),
                f"model_name_or_path={omni_dir}",
                f"adapter_name_or_path={adapter}",
                f"export_dir={export_dir}",
                "export_dtype=float32",
            ]
        )
        == 0
    )
    assert json.loads((export_dir / "config.json").read_text())["model_type"] == "qwen2_5_omni_thinker"
    assert AutoFeatureExtractor.from_pretrained(export_dir).feature_size == 16
    assert AutoImageProcessor.from_pretrained(export_dir).merge_size == 2
    merged = ChatEngine(chat_config(export_dir))  # the merged folder alone: model, tokenizer, both processors
    red, low = (str((omni_data / sub).absolute()) for sub in ("images/red.png", "audios/low.wav"))
    prompt = merged.prepare([{"role": "user", "content": QUESTION}], images=[red], audios=[low])
    ids = torch.tensor([prompt.ids])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), **prompt.vision}
    reloaded = AutoModelForImageTextToText.from_pretrained(export_dir, dtype=torch.float32).eval()
    base = AutoModelForImageTextToText.from_pretrained(omni_dir, dtype=torch.float32)
    unmerged = PeftModel.from_pretrained(base, str(adapter)).eval()
    with torch.no_grad():
        got, want = reloaded(**inputs).logits, unmerged(**inputs).logits
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    with torch.no_grad(), unmerged.disable_adapter():
        assert not torch.allclose(unmerged(**inputs).logits, want, atol=1e-4)


def whole_omni(thinker_dir: Path, out: Path) -> Path:
    """A whole Qwen2.5-Omni folder (model_type qwen2_5_omni, as Qwen releases it) around the tiny thinker: a tiny
    random talker and token2wav (speech out) beside the thinker's weights, its tokenizer and processors."""
    import shutil

    from transformers import (
        AutoModelForImageTextToText,
        Qwen2_5OmniConfig,
        Qwen2_5OmniForConditionalGeneration,
    )

    thinker = json.loads((thinker_dir / "config.json").read_text())
    talker = {
        "vocab_size": 64,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "embedding_size": 64,
        "rope_scaling": {"type": "default", "mrope_section": [2, 3, 3]},
        "audio_config": thinker["audio_config"],
        "vision_config": thinker["vision_config"],
    }
    dit = {
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "ff_mult": 1,
        "emb_dim": 16,
        "head_dim": 16,
        "repeats": 1,
        "num_embeds": 64,
        "mel_dim": 16,
        "enc_emb_dim": 16,
        "enc_dim": 16,
        "enc_channels": [16, 16, 16, 16, 32],
        "enc_kernel_sizes": [5, 3, 3, 3, 1],
        "enc_dilations": [1, 2, 3, 4, 1],
        "enc_attention_channels": 8,
        "enc_res2net_scale": 2,
        "enc_se_channels": 8,
    }
    vocoder = {
        "mel_dim": 16,
        "upsample_initial_channel": 16,
        "resblock_kernel_sizes": [3],
        "resblock_dilation_sizes": [[1, 3, 5]],
        "upsample_rates": [2],
        "upsample_kernel_sizes": [4],
    }
    config = Qwen2_5OmniConfig(
        thinker_config=thinker, talker_config=talker, token2wav_config={"dit_config": dit, "bigvgan_config": vocoder}
    )
    model = Qwen2_5OmniForConditionalGeneration(config)
    model.thinker.load_state_dict(AutoModelForImageTextToText.from_pretrained(thinker_dir).state_dict())
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "preprocessor_config.json"):
        shutil.copy2(thinker_dir / name, out / name)
    return out


def test_a_whole_omni_checkpoint_trains_its_thinker(omni_dir, omni_data, tmp_path):
    """Qwen's releases are the whole model (thinker, talker, token2wav): tunesmith loads the thinker from it, as
    LF keeps model.thinker, and trains and exports that."""
    from tunesmith.model.load import load_model, load_tokenizer

    whole = whole_omni(omni_dir, tmp_path / "whole")
    assert json.loads((whole / "config.json").read_text())["model_type"] == "qwen2_5_omni"
    config = load_config(None, {"model_name_or_path": str(whole), "finetuning_type": "full"})
    model = load_model(
        config.model, config.method, load_tokenizer(config.model), is_trainable=False, multimodal=config.multimodal
    )
    thinker = load_model(
        load_config(None, {"model_name_or_path": str(omni_dir)}).model,
        config.method,
        load_tokenizer(config.model),
        is_trainable=False,
        multimodal=config.multimodal,
    )
    assert type(model).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    want = thinker.state_dict()
    assert all(torch.equal(value, want[key]) for key, value in model.state_dict().items())
    out = tmp_path / "out"
    assert main(["train", *train_args(whole, omni_data, out, "dataset=omni_demo", "max_steps=2")]) == 0
    assert (out / "adapter_model.safetensors").is_file()
    export_dir = tmp_path / "merged"
    assert (
        main(
            [
                "export",
                str(EXAMPLE),
                f"model_name_or_path={whole}",
                f"adapter_name_or_path={out}",
                f"export_dir={export_dir}",
                "export_dtype=float32",
            ]
        )
        == 0
    )
    assert json.loads((export_dir / "config.json").read_text())["model_type"] == "qwen2_5_omni_thinker"


def test_predict_reads_images_or_audios(omni_dir, omni_data, tmp_path, capsys):
    base = [
        f"model_name_or_path={omni_dir}",
        "template=qwen2_omni",
        "do_predict=true",
        "predict_with_generate=true",
        f"dataset_dir={omni_data}",
        "max_new_tokens=3",
    ]
    assert main(["eval", *base, "eval_dataset=mllm_demo", f"output_dir={tmp_path / 'images'}"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "images" / "generated_predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and "<|vision_bos|><|IMAGE|>" in rows[0]["prompt"]
    assert main(["eval", *base, "eval_dataset=omni_demo", f"output_dir={tmp_path / 'both'}"]) == 2
    assert "predict reads one of them per dataset for now" in capsys.readouterr().err
