"""LLaMA-Factory configs load as they are: every key of its hparams is known, features tunesmith lacks are refused
with the reason, Ray starts only when asked for, v1 configs get one message, and the flag-only form works."""

from pathlib import Path

import pytest

from tunesmith.config.load import load_config
from tunesmith.config.refusals import FeatureRefused, reason_of
from tunesmith.errors import ConfigError

LF_SRC = Path("/work/lf-src")


def test_every_llamafactory_key_is_known():
    if not (LF_SRC / "src" / "llamafactory" / "hparams").is_dir():
        pytest.skip("needs a LLaMA-Factory checkout at /work/lf-src")
    import importlib.util

    spec = importlib.util.spec_from_file_location("lf_keys", Path(__file__).parents[2] / "scripts" / "lf_keys.py")
    lf_keys = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lf_keys)
    rows = lf_keys.classify(lf_keys.lf_keys(LF_SRC))
    assert len(rows) > 240
    assert [row["key"] for row in rows if row["status"] == "unknown"] == []


def test_llamafactory_defaults_load():
    defaults = {
        "ray_num_workers": 1,
        "master_addr": None,
        "master_port": None,
        "use_galore": False,
        "galore_rank": 16,
        "image_max_pixels": 768 * 768,
        "freeze_vision_tower": True,
        "vllm_maxlen": 4096,
        "infer_backend": "huggingface",
        "ppo_target": 6.0,
        "use_reentrant_gc": True,
        "export_device": "cpu",
    }
    config = load_config(None, defaults)
    assert config.launch.ray_num_workers == 1 and config.optim.galore_rank == 16


@pytest.mark.parametrize(
    ("key", "value", "hardware"),
    [
        ("shift_attn", True, False),
        ("mixture_of_depths", "convert", True),
        ("mixture_of_depths", "load", True),
        ("use_kt", True, True),
        ("fp8", True, True),
        ("infer_backend", "vllm", True),
        ("tensor_model_parallel_size", 2, True),
        ("use_mca", True, True),
        ("export_quantization_bit", 4, True),
        ("use_unsloth_gc", True, True),
    ],
)
def test_features_tunesmith_lacks_are_refused_with_the_reason(key, value, hardware):
    with pytest.raises(FeatureRefused, match=f"LLaMA-Factory's `{key}` is not supported: ") as info:
        load_config(None, {key: value})
    assert info.value.hardware is hardware
    assert "did you mean" not in str(info.value) and "unknown" not in str(info.value)


@pytest.mark.parametrize(
    "values",
    [
        {"use_galore": True, "finetuning_type": "full", "galore_rank": 8},
        {"use_apollo": True, "finetuning_type": "full"},
        {"use_badam": True, "finetuning_type": "full", "badam_mode": "ratio"},
        {"use_adam_mini": True},
        {"use_muon": True},
        {"finetuning_type": "oft", "oft_block_size": 16},
        {"use_llama_pro": True, "finetuning_type": "freeze"},
        {"train_from_scratch": True},
        {"add_tokens": "<a>,<b>", "add_special_tokens": "<c>", "init_special_tokens": "desc_init"},
    ],
)
def test_features_tunesmith_runs_load(values):
    load_config(None, values)  # no FeatureRefused: tests/e2e/test_lf_features.py trains each


def test_options_of_a_switched_off_feature_load_as_in_llamafactory():
    assert load_config(None, {"galore_rank": 64, "vllm_gpu_util": 0.9}).optim.galore_rank == 64


def test_image_and_video_audio_keys_load_and_other_families_keys_are_refused_with_the_reason():
    config = load_config(None, {"image_max_pixels": 262144, "media_dir": "x", "freeze_vision_tower": False})
    assert (config.multimodal.image_max_pixels, config.multimodal.image_min_pixels) == (262144, 32 * 32)
    assert (config.multimodal.freeze_multi_modal_projector, config.multimodal.freeze_language_model) == (True, False)
    # LF's Qwen3-VL examples set video_max_pixels for image-only data: video/audio settings load at any value and
    # act only on videos/audios in the data (tests/unit/test_video_data.py)
    config = load_config(None, {"image_max_pixels": 262144, "video_max_pixels": 16384, "audio_sampling_rate": 8000})
    assert (config.multimodal.video_max_pixels, config.multimodal.audio_sampling_rate) == (16384, 8000)
    assert reason_of("video_fps") is None  # honoured: frames are sampled at it (data/video.py)
    assert "only acts on a model tunesmith does not support" in reason_of("use_audio_in_video")
    assert "Qwen2.5-Omni" in reason_of("use_audio_in_video")
    assert reason_of("audio_sampling_rate") is None  # honoured: audios are resampled to it (data/audio.py)
    assert load_config(None, {"image_do_pan_and_scan": True}).multimodal.image_do_pan_and_scan  # Gemma 3's
    assert load_config(None, {"crop_to_patches": True}).multimodal.crop_to_patches  # InternVL's


def test_eval_num_beams_sets_the_generation_beams():
    from tunesmith.config.load import training_arguments

    assert training_arguments(load_config(None, {"eval_num_beams": 3})).generation_num_beams == 3


def test_ray_starts_only_when_asked_for(monkeypatch):
    from tunesmith.train.ray_launch import wants_ray

    monkeypatch.delenv("USE_RAY", raising=False)
    assert not wants_ray(load_config(None, {"ray_num_workers": 4}))  # LF ignores it without USE_RAY=1 too
    assert wants_ray(load_config(None, {"use_ray": True, "ray_num_workers": 2}))
    monkeypatch.setenv("USE_RAY", "1")
    assert wants_ray(load_config(None, {}))


def test_ray_init_kwargs_reach_ray_init():
    from tunesmith.train.ray_launch import _ray_init_kwargs

    launch = load_config(None, {"ray_init_kwargs": '{"num_cpus": 2}', "ray_address": "auto"}).launch
    assert _ray_init_kwargs(launch) == {
        "include_dashboard": False,
        "log_to_driver": True,
        "num_cpus": 2,
        "address": "auto",
    }


def test_v1_config_gets_one_message(tmp_path):
    path = tmp_path / "v1.yaml"
    path.write_text(
        "model: Qwen/Qwen3-0.6B\nmodel_class: llm\npeft_config:\n  name: lora\n  r: 16\n"
        "train_dataset: data/v1_sft_demo.yaml\ndist_config:\n  name: fsdp2\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "LLaMA-Factory v1's config format" in message and message.count("\n") == 0
    assert "did you mean" not in message


def test_fsdp_layer_class_moves_into_fsdp_config():
    config = load_config(None, {"fsdp_transformer_layer_cls_to_wrap": "LlamaDecoderLayer"})
    assert config.training_kwargs()["fsdp_config"] == {"transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]}


def test_megatron_keys_written_at_all_ask_for_megatron(monkeypatch):
    with pytest.raises(
        FeatureRefused, match="`tensor_model_parallel_size`, `sequence_parallel` are not supported: Megatron"
    ) as info:
        load_config(None, {"tensor_model_parallel_size": 1, "sequence_parallel": False})
    assert info.value.hardware and str(info.value).count("\n") == 0
    monkeypatch.setenv("USE_MCA", "1")
    with pytest.raises(FeatureRefused, match="USE_MCA=1"):
        load_config(None, {})


def test_a_recorded_run_config_reloads(tmp_path):
    """flat() (what a run records) leaves LLaMA-Factory's extra keys out at their defaults, so it loads again."""
    flat = load_config(None, {"print_param_status": True}).flat()
    assert flat["print_param_status"] is True and "tensor_model_parallel_size" not in flat and "galore_rank" not in flat
    assert load_config(None, flat).lf_model.print_param_status


def test_infer_dtype_and_use_kv_cache_reach_the_inference_model(tiny_model_dir):
    import torch

    from tunesmith.infer.loader import load_for_inference

    config = load_config(
        None,
        {
            "model_name_or_path": str(tiny_model_dir),
            "template": "chatml",
            "infer_dtype": "bfloat16",
            "use_kv_cache": False,
        },
    )
    _, _, model = load_for_inference(config, place=False)
    assert model.dtype == torch.bfloat16 and model.generation_config.use_cache is False


def test_sft_packing_and_lf_neat_packing_load_and_mean_tunesmith_s_packed_batches():
    base = {"model_name_or_path": "m", "dataset": "d", "output_dir": "o", "stage": "sft"}
    assert load_config(None, {**base, "packing": True}).data.packing is True
    assert load_config(None, {**base, "neat_packing": True}).lf_data.neat_packing is True
    with pytest.raises(ConfigError, match="`neat_packing` applies to stage sft with packing on .* with `packing: false`"):
        load_config(None, {**base, "neat_packing": True, "packing": False})
    with pytest.raises(ConfigError, match="`packing` applies to stages pt and sft, not dpo"):
        load_config(None, {**base, "stage": "dpo", "packing": True})
