"""Videos through transformers' real Qwen-VL video processors (they need torchvision, so this file skips where it is
absent): <video> expands to as many video tokens as the processor's grid says, the collator carries
pixel_values_videos and video_grid_thw, a tiny Qwen2-VL trains on them (sft and dpo), Qwen3-VL's timestamped form and
Qwen2.5-VL's second_per_grid_ts."""

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("torchvision")

from tunesmith.cli import main
from tunesmith.data.vision_video import VideoPlugin

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train_vl_lora.yaml"
MESSAGES = [{"role": "user", "content": "<video>What happens?"}, {"role": "assistant", "content": "It turns red."}]


def _train(model, data, out, *more) -> list[float]:
    args = [
        "train",
        str(EXAMPLE),
        f"model_name_or_path={model}",
        f"dataset_dir={data}",
        f"output_dir={out}",
        "max_steps=3",
        "save_steps=1000",
        "learning_rate=0.05",
        "video_max_pixels=4096",
        *more,
    ]
    assert main(args) == 0
    lines = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    return [line["loss"] for line in lines if "loss" in line]


def test_video_tokens_match_the_processors_grid(tiny_vl_model_dir, video_data_dir):
    from tunesmith.config.load import load_config
    from tunesmith.data.vision_video import make_video_plugin
    from tunesmith.model.video import load_video_processor

    config = load_config(None, {"model_name_or_path": str(tiny_vl_model_dir), "video_max_pixels": 4096})
    processor, model_type = load_video_processor(config.model)
    assert model_type == "qwen2_vl" and type(processor).__name__ == "Qwen2VLVideoProcessor"
    plugin = make_video_plugin("qwen2_vl", (processor, model_type), config.multimodal)
    path = str(video_data_dir / "videos" / "short.mp4")
    inputs = plugin.inputs([path])
    grid = inputs["video_grid_thw"][0]
    assert int(grid[0]) == 2  # 4 sampled frames, temporal patches of 2
    assert inputs["pixel_values_videos"].shape[0] == int(grid.prod())
    text = plugin.expand(MESSAGES, [path])[0]["content"]
    assert text.count("<|video_pad|>") == int(grid.prod()) // processor.merge_size**2
    assert text.startswith("<|vision_start|><|video_pad|>") and "<|vision_end|>What happens?" in text


def test_sft_and_dpo_with_videos_train(tiny_vl_model_dir, video_data_dir, tmp_path):
    losses = _train(tiny_vl_model_dir, video_data_dir, tmp_path / "sft", "dataset=video_demo")
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
    losses = _train(
        tiny_vl_model_dir,
        video_data_dir,
        tmp_path / "dpo",
        "dataset=video_dpo",
        "stage=dpo",
        "per_device_train_batch_size=2",
    )
    assert losses and all(math.isfinite(loss) for loss in losses)


def test_the_collator_carries_the_video_tensors(tiny_vl_model_dir, video_data_dir, tmp_path):
    from tunesmith.config.load import load_config
    from tunesmith.data.pipeline import build_datasets
    from tunesmith.data.video import video_processor_for
    from tunesmith.data.vision import vision_collator
    from tunesmith.data.vision_video import video_collator
    from tunesmith.model.load import load_image_processor, load_tokenizer

    config = load_config(
        None,
        {
            "model_name_or_path": str(tiny_vl_model_dir),
            "dataset": "video_demo",
            "dataset_dir": str(video_data_dir),
            "template": "qwen2_vl",
            "video_max_pixels": 4096,
            "output_dir": str(tmp_path),
        },
    )
    tokenizer = load_tokenizer(config.model)
    data = build_datasets(
        config,
        tokenizer,
        "supervised",
        image_processor=load_image_processor(config.model),
        video=video_processor_for(config),
    )
    collator = video_collator(vision_collator(config, tokenizer, None, data.plugin), data.plugin, config)
    batch = collator([data.train[i] for i in range(len(data.train))])
    video = tokenizer.convert_tokens_to_ids("<|video_pad|>")
    merge = data.plugin.video.merge_length
    assert int((batch["input_ids"] == video).sum()) == int(batch["video_grid_thw"].prod(-1).sum()) // merge
    assert int((batch["mm_token_type_ids"] == 2).sum()) == int((batch["input_ids"] == video).sum())
    assert batch["video_grid_thw"].shape[0] == 4  # 1 + 1 + 2 videos, in order


def test_qwen3_vl_writes_each_frames_timestamp(video_data_dir):
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    plugin = VideoPlugin(Qwen3VLVideoProcessor(), timestamps=True, max_pixels=4096)
    path = str(video_data_dir / "videos" / "short.mp4")  # 4 frames at 0, 0.6, 1.2, 1.8 s: 2 temporal patches
    text = plugin.expand(MESSAGES, [path])[0]["content"]
    assert text.startswith("<0.3 seconds><|vision_start|><|video_pad|>") and "<1.5 seconds><|vision_start|>" in text
    assert text.count("<|vision_start|>") == 2 and "video_metadata" not in plugin.inputs([path])


def test_qwen2_5_vl_passes_second_per_grid_ts(video_data_dir):
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    plugin = VideoPlugin(Qwen2VLVideoProcessor(), second_per_grid=True, max_pixels=4096)
    inputs = plugin.inputs([str(video_data_dir / "videos" / "short.mp4")])  # 4 frames over 2 s: 2 fps
    assert inputs["second_per_grid_ts"].tolist() == pytest.approx([1.0])  # temporal_patch_size 2 / 2 fps


def test_preview_marks_the_video_tokens(tiny_vl_model_dir, video_data_dir, capsys):
    args = [f"model_name_or_path={tiny_vl_model_dir}", f"dataset_dir={video_data_dir}", "dataset=video_demo"]
    assert main(["data", "preview", "-n", "1", str(EXAMPLE), *args, "video_max_pixels=4096"]) == 0
    out = capsys.readouterr().out
    assert "<|vision_start|><|video_pad|>×8<|vision_end|>What happens?" in out  # 2 x 4 x 4 patches / 2²
    assert "video 0 (short.mp4): tokens" in out
