"""Videos in training data without torchvision: LF's `videos` column with <video> placeholders, paths and checks,
frames sampled and resized as LF 0.9.5's Qwen2VLPlugin does (pinned to LF's own code on its demo videos), the video
keys honoured, and the message that says torchvision is needed (here, where it is absent)."""

import json
import shutil
from pathlib import Path

import pytest
from conftest import write_video

from tunesmith.cli import main
from tunesmith.data.loader import load_records
from tunesmith.data.video import read_video, sample_indices
from tunesmith.errors import DataError
from tunesmith.model.video import torchvision_missing

GOLDEN = Path(__file__).resolve().parents[1] / "assets" / "golden_video.json"
DEMO = Path(__file__).resolve().parents[2].parent / "shared" / "lf-demo-data"
NO_TORCHVISION = torchvision_missing() is not None
MEAN_TOLERANCE = 1.0  # a frame's mean pixel value (0-255): PyAV/FFmpeg builds convert YUV to RGB a little differently


def test_sharegpt_and_alpaca_videos_resolve_against_the_dataset_dir(video_data_dir):
    records = load_records(["video_demo", "video_alpaca"], str(video_data_dir), "sft")
    assert records.column_names == ["prompt", "response", "system", "tools", "kto_tag", "videos"]
    rows = records.to_list()
    assert [len(r["videos"]) for r in rows] == [1, 1, 2, 1]
    assert rows[1]["videos"] == [str(video_data_dir / "videos" / "tiny.avi")]
    assert rows[3]["prompt"][0]["content"] == "<video>Name the colour."
    dpo = load_records(["video_dpo"], str(video_data_dir), "dpo").to_list()
    assert [r["videos"] for r in dpo] == [[str(video_data_dir / "videos" / n)] for n in ("short.mp4", "tiny.avi")]


def test_text_and_video_datasets_mix(video_data_dir, tmp_path):
    (tmp_path / "text.json").write_text(json.dumps([{"instruction": "hi", "output": "hello"}]))
    records = load_records(["video_alpaca", str(tmp_path / "text.json")], str(video_data_dir), "sft")
    assert records["videos"] == [[str(video_data_dir / "videos" / "short.mp4")], []]


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"videos": ["videos/none.mp4"]}, "video 0 (videos/none.mp4) not found"),
        ({"videos": ["videos/bad.mp4"]}, "is unreadable: PyAV cannot decode it (InvalidDataError"),
        ({"videos": ["videos/sound.wav"]}, "is unreadable: it holds no video stream"),
        ({"videos": ["videos/short.mp4", "videos/short.mp4"]}, "1 <video> placeholders in its messages but 2 videos"),
        ({"videos": []}, "1 <video> placeholders in its messages but 0 videos"),
        ({"videos": [{"path": "videos/short.mp4"}]}, "video 0 must be a file path (text), got dict"),
    ],
)
def test_bad_videos_name_the_file_record_and_medium(video_data_dir, tmp_path, row, expected):
    from conftest import write_tone

    data = tmp_path / "data"
    shutil.copytree(video_data_dir, data)
    (data / "videos" / "bad.mp4").write_text("not a video")
    write_tone(data / "videos" / "sound.wav", 0.2)
    good = {"instruction": "<video>Name it.", "input": "", "output": "red", "videos": ["videos/short.mp4"]}
    (data / "video_alpaca.json").write_text(json.dumps([good, {**good, **row}]))
    with pytest.raises(DataError) as err:
        load_records(["video_alpaca"], str(data), "sft")
    message = str(err.value)
    assert "video_alpaca.json) record 1 (0-based" in message and "(medium: video)" in message and expected in message


def test_frames_are_sampled_at_video_fps_and_an_odd_count_repeats_the_last(video_data_dir):
    import av

    short, tiny = video_data_dir / "videos" / "short.mp4", video_data_dir / "videos" / "tiny.avi"
    with av.open(str(short)) as container:  # 10 frames at 5 fps: 2 s, so 2 s x 2 fps = 4 frames, spread evenly
        assert sample_indices(container.streams.video[0], 2.0, 128).tolist() == [0, 3, 6, 9]
        assert sample_indices(container.streams.video[0], 2.0, 3).tolist() == [0, 4, 9]  # video_maxlen
        assert sample_indices(container.streams.video[0], 0.1, 128).tolist() == [0]  # at least one frame
    clip = read_video(short, 2.0, 128, 256 * 256, 16 * 16)
    assert (len(clip.frames), clip.fps, clip.duration) == (4, 2.0, 2.0)
    assert clip.indices == pytest.approx([0.0, 1.2, 2.4, 3.6])  # index / 5 fps * 2 fps: Qwen3-VL's timestamps
    assert [frame.getpixel((0, 0))[0] for frame in clip.frames] == pytest.approx([0, 120, 240, 104], abs=8)
    clip = read_video(tiny, 2.0, 128, 256 * 256, 16 * 16)  # 7 frames at 4 fps: 1.75 s -> 3 frames, then 4
    assert len(clip.frames) == 4 and clip.frames[3].tobytes() == clip.frames[2].tobytes()
    assert clip.fps == pytest.approx(3 / 1.75) and clip.frames[0].size == (40, 30)


def test_frames_are_resized_as_qwen_vl_images(video_data_dir):
    tiny = video_data_dir / "videos" / "tiny.avi"  # 40 x 30
    assert read_video(tiny, 2.0, 128, 600, 16 * 16).frames[0].size == (28, 28)  # 28 x 21, then sides >= 28
    assert read_video(tiny, 2.0, 128, 256 * 256, 4800).frames[0].size == (80, 60)  # up to video_min_pixels
    assert read_video(tiny, 2.0, 128, 256 * 256, 16 * 16).frames[0].mode == "RGB"


def test_a_stream_without_a_frame_count_samples_video_maxlen(tmp_path):
    import av

    path = write_video(tmp_path / "v.webm", 6, 3, codec="libvpx-vp9") if _has_encoder("libvpx-vp9") else None
    if path is None:
        pytest.skip("no VP9 encoder in this FFmpeg")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.frames:
            pytest.skip("this FFmpeg writes a frame count into webm")
        assert sample_indices(stream, 2.0, 4).tolist() == [0, 1, 2, 3]  # LF's "infinite video" rule


def test_a_stream_with_frames_but_no_duration_is_refused_with_the_reason():
    from fractions import Fraction
    from types import SimpleNamespace

    from tunesmith.data.video import VideoDecodeError

    for duration, reason in ((None, "but no duration"), (0, "but a duration of 0 s")):
        stream = SimpleNamespace(frames=10, duration=duration, time_base=Fraction(1, 1000))  # what PyAV reports
        with pytest.raises(VideoDecodeError, match=reason):
            sample_indices(stream, 2.0, 4)


def _has_encoder(name: str) -> bool:
    import av

    return name in av.codecs_available


@pytest.mark.skipif(not (DEMO / "mllm_demo_data").is_dir(), reason=f"{DEMO} is absent")
def test_frame_sampling_equals_llamafactorys_on_its_demo_videos():
    import numpy as np

    golden = json.loads(GOLDEN.read_text())
    for case in golden["cases"]:
        settings = golden["settings"][case["settings"]]
        clip = read_video(
            DEMO / "mllm_demo_data" / case["video"],
            settings["video_fps"],
            settings["video_maxlen"],
            settings["image_max_pixels"],
            settings["image_min_pixels"],
        )
        where = f"{case['video']} {case['settings']}"
        assert len(clip.frames) == case["frames"], where
        assert sorted({frame.size for frame in clip.frames}) == [tuple(size) for size in case["sizes"]], where
        assert clip.fps == pytest.approx(case["fps_per_video"]) and clip.duration == pytest.approx(case["duration"])
        assert clip.indices == pytest.approx(case["frames_indices"]), where
        means = [float(np.asarray(frame, dtype=np.float64).mean()) for frame in clip.frames]
        assert means == pytest.approx(case["means"], abs=MEAN_TOLERANCE), where  # which frames: frames_indices above


@pytest.mark.skipif(not (DEMO / "mllm_video_demo.json").is_file(), reason=f"{DEMO} is absent")
def test_llamafactorys_video_demo_loads():
    records = load_records(["mllm_video_demo"], str(DEMO), "sft").to_list()
    assert records and all(len(r["videos"]) == 1 and Path(r["videos"][0]).is_file() for r in records)
    assert all(r["prompt"][0]["content"].startswith("<video>") for r in records)


def test_video_keys_are_honoured_and_use_audio_in_video_says_it_needs_qwen_omni():
    from tunesmith.config.load import load_config
    from tunesmith.config.refusals import reason_of

    config = load_config(
        None,
        {
            "video_fps": 1.0,
            "video_maxlen": 8,
            "video_max_pixels": 4096,
            "video_min_pixels": 1024,
            "use_audio_in_video": True,
        },
    )
    assert (config.multimodal.video_fps, config.multimodal.video_maxlen) == (1.0, 8)
    assert all(reason_of(key) is None for key in ("video_fps", "video_maxlen", "video_max_pixels", "video_min_pixels"))
    assert "Qwen2.5-Omni" in reason_of("use_audio_in_video")


def test_video_settings_reach_the_plugin():
    from tunesmith.config.load import load_config
    from tunesmith.data.vision_video import make_video_plugin

    config = load_config(
        None, {"video_fps": 1.0, "video_maxlen": 8, "video_max_pixels": 4096, "video_min_pixels": 1024}
    )
    processor = None  # the video processor (torchvision's) is not called here; the settings are what is checked
    plugin = make_video_plugin("qwen3_vl", (processor, "qwen3_vl"), config.multimodal)
    assert (plugin.fps, plugin.maxlen, plugin.max_pixels, plugin.min_pixels) == (1.0, 8, 4096, 1024)
    assert plugin.timestamps and not plugin.second_per_grid
    assert make_video_plugin("qwen2_vl", (processor, "qwen2_5_vl")).second_per_grid
    with pytest.raises(DataError, match="videos are read for Qwen2-VL, Qwen2.5-VL and Qwen3-VL models only"):
        make_video_plugin("gemma3", (processor, "gemma3"))


def _config(tmp_path, model, data, **more) -> str:
    import yaml

    path = tmp_path / "cfg.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model_name_or_path": str(model),
                "dataset": "video_demo",
                "dataset_dir": str(data),
                "template": "qwen2_vl",
                "stage": "sft",
                "output_dir": str(tmp_path / "out"),
                **more,
            }
        )
    )
    return str(path)


@pytest.mark.skipif(not NO_TORCHVISION, reason="torchvision imports here: the video processor path runs instead")
def test_videos_without_torchvision_stop_early_with_what_to_install(
    tiny_vl_model_dir, video_data_dir, tmp_path, capsys
):
    cfg = _config(tmp_path, tiny_vl_model_dir, video_data_dir)
    for job in (["data", "check", cfg], ["train", cfg]):
        assert main(job) == 2
        err = capsys.readouterr().err
        assert "videos need torchvision" in err and "pip install torchvision" in err, err
        assert "matches your torch build" in err and "Images and audios train without it" in err
    assert not (tmp_path / "out").exists()  # stopped before the output folder, the data and the weights


def test_images_still_train_without_torchvision(tiny_vl_model_dir, vl_data_dir, tmp_path):
    """The video processor is loaded only for data that maps videos: image data checks as before."""
    assert main(["data", "check", _config(tmp_path, tiny_vl_model_dir, vl_data_dir, dataset="mllm_demo")]) == 0


def test_videos_on_a_model_without_them_are_refused(tiny_model_dir, video_data_dir, tmp_path, capsys):
    assert main(["data", "check", _config(tmp_path, tiny_model_dir, video_data_dir, template="default")]) == 2
    assert "videos train on Qwen2-VL, Qwen2.5-VL and Qwen3-VL models" in capsys.readouterr().err


def test_the_api_refuses_video_parts_with_the_reason():
    from tunesmith.api.messages import ApiError, _text

    with pytest.raises(ApiError, match="videos are not taken by chat or the API yet"):
        _text([{"type": "video_url", "video_url": {"url": "file:///v.mp4"}}], "messages[0].content", images=[])
