"""Writes tests/assets/golden_video.json: LLaMA-Factory 0.9.5's own frame sampling of LF's demo videos
(Qwen2VLPlugin._regularize_videos: which frames, how many, their sizes after its resize, fps_per_video, durations,
frames_indices and each frame's mean pixel value, which says which frame it is; FFmpeg builds differ slightly in
their YUV-to-RGB conversion, so pixels are not compared byte for byte) for a few video_fps / video_maxlen / video_max_pixels /
video_min_pixels settings, so tests/unit/test_video_data.py pins data/video.py's read_video to it.

Dev tool only; it runs in the LF venv like scripts/make_golden.py (which stubs torchaudio for LF's import; the
real PyAV is put back, LF decodes the videos with it):
    PYTHONPATH=src /work/venvs/lf/bin/python scripts/make_video_golden.py
The videos are ../shared/lf-demo-data/mllm_demo_data/*.mp4|*.avi (LF's data/mllm_demo_data)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_golden  # noqa: F401  stubs torchaudio/av for LF's import

del sys.modules["av"]
import av
from llamafactory import __version__ as lf_version
from llamafactory.data import mm_plugin

mm_plugin.av = av
ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT.parent / "shared" / "lf-demo-data" / "mllm_demo_data"
OUT = ROOT / "tests" / "assets" / "golden_video.json"
# name -> LF's settings (its defaults: 2 fps, 128 frames, 256*256 / 16*16 pixels)
SETTINGS = {
    "defaults": {"video_fps": 2.0, "video_maxlen": 128, "image_max_pixels": 256 * 256, "image_min_pixels": 16 * 16},
    "maxlen_5": {"video_fps": 2.0, "video_maxlen": 5, "image_max_pixels": 256 * 256, "image_min_pixels": 16 * 16},
    "fps_0.5_small": {"video_fps": 0.5, "video_maxlen": 128, "image_max_pixels": 64 * 64, "image_min_pixels": 16 * 16},
    "fps_3_min_pixels": {
        "video_fps": 3.0,
        "video_maxlen": 128,
        "image_max_pixels": 1024 * 1024,
        "image_min_pixels": 512 * 512,
    },
}


def frame_mean(image) -> float:
    import numpy as np

    return round(float(np.asarray(image, dtype=np.float64).mean()), 3)


def main() -> None:
    plugin = mm_plugin.get_mm_plugin("qwen2_vl", image_token="<|image_pad|>", video_token="<|video_pad|>")
    cases = []
    for video in sorted([*DEMO.glob("*.mp4"), *DEMO.glob("*.avi")]):
        for name, settings in SETTINGS.items():
            out = plugin._regularize_videos([str(video)], **settings)
            frames = out["videos"][0]
            cases.append(
                {
                    "video": video.name,
                    "settings": name,
                    "frames": len(frames),
                    "sizes": sorted({frame.size for frame in frames}),
                    "fps_per_video": out["fps_per_video"][0],
                    "duration": out["durations"][0],
                    "frames_indices": out["frames_indices"][0],
                    "means": [frame_mean(frame) for frame in frames],
                }
            )
    OUT.write_text(json.dumps({"llamafactory": lf_version, "settings": SETTINGS, "cases": cases}, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
