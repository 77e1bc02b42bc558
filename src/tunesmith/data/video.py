"""Videos of Qwen-VL records as LLaMA-Factory 0.9.5 reads them: the `videos` column, <video> placeholders, checks, and
frames sampled with PyAV and resized as its Qwen2VLPlugin._regularize_videos does (no torchvision needed here)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from tunesmith.data.media import pyav, record_media, regularize

VIDEO_PLACEHOLDER = "<video>"
VIDEOS = "videos"  # the canonical record's column of video paths (present only when a dataset maps videos)
ENCODED_VIDEOS = "video_paths"  # the encoded examples' column of video paths (the collator decodes them)


class VideoDecodeError(ValueError):
    """A file PyAV cannot decode as video."""


@dataclasses.dataclass
class Clip:
    """One video's sampled, resized frames and what LF records with them (fps_per_video, durations, frames_indices)."""

    frames: list  # PIL images, an even number of them
    fps: float  # sampled frames per second of video (video_fps when the stream has no duration)
    duration: float  # seconds
    indices: list  # LF's frames_indices: sampled index / the stream's fps * video_fps (Qwen3-VL's timestamps)


def _stream(container):
    stream = next((s for s in container.streams if s.type == "video"), None)
    if stream is None:
        raise VideoDecodeError("it holds no video stream")
    return stream


def check_video(path: Path) -> str | None:
    """Why the file cannot be used as a video (None when PyAV opens it and decodes a first frame of video)."""
    av = pyav("videos")
    try:
        with av.open(str(path)) as container:
            next(container.decode(_stream(container)))
    except VideoDecodeError as exc:
        return str(exc)
    except StopIteration:
        return "its video stream has no frames"
    except (av.FFmpegError, OSError, ValueError) as exc:
        return f"PyAV cannot decode it ({exc.__class__.__name__}: {str(exc)[:120]})"
    return None


def record_videos(values, messages: list[dict], media_dir: str | None, fail) -> list[str]:
    """A record's videos, checked (data/media.py's record_media): each exists and PyAV decodes a video stream in it,
    one <video> per video."""
    return record_media(
        values, messages, media_dir, fail, "video", VIDEO_PLACEHOLDER, check_video,
        note=" (LF's lists of frame images are not read)",
    )


def sample_indices(stream, fps: float, maxlen: int):
    """LF's _get_video_sample_indices: video_fps frames per second of the stream's duration (at least one), at most
    video_maxlen and the stream's frame count, spread evenly; video_maxlen frames when the stream's count is 0."""
    import numpy as np

    total = stream.frames
    if total == 0:  # LF: "infinite video"
        return np.linspace(0, maxlen - 1, maxlen).astype(np.int32)
    if stream.duration is None:  # LF fails here (None * time_base); say why instead
        raise VideoDecodeError("its video stream has a frame count but no duration, so frames cannot be sampled")
    if stream.duration <= 0:  # LF divides by it (fps_per_video); say why instead
        raise VideoDecodeError(f"its video stream has {stream.frames} frames but a duration of 0 s, so frames cannot "
                               "be sampled (re-encode it, e.g. with ffmpeg -i in.mp4 out.mp4)")
    count = max(1, math.floor(float(stream.duration * stream.time_base) * fps))
    return np.linspace(0, total - 1, min(total, maxlen, count)).astype(np.int32)


def read_video(path, fps: float, maxlen: int, max_pixels: int, min_pixels: int) -> Clip:
    """LF's Qwen2VLPlugin._regularize_videos for one file: the sampled frames (the last one repeated when their
    number is odd), each resized as Qwen-VL's images are (data/media.py's regularize with video_max_pixels and
    video_min_pixels)."""
    av = pyav("videos")
    try:
        with av.open(str(path)) as container:
            stream = _stream(container)
            indices = sample_indices(stream, fps, maxlen)
            wanted = {int(i) for i in indices}
            container.seek(0)
            frames = [frame.to_image() for n, frame in enumerate(container.decode(stream)) if n in wanted]
            if not stream.average_rate:  # Qwen3-VL's timestamps divide by it
                raise VideoDecodeError("its video stream has no frame rate")
            stream_fps = float(stream.average_rate)
            duration = None if stream.duration is None else float(stream.duration * stream.time_base)
    except VideoDecodeError:
        raise
    except (av.FFmpegError, OSError, ValueError, TypeError) as exc:
        raise VideoDecodeError(f"PyAV cannot decode it ({exc.__class__.__name__}: {str(exc)[:120]})") from None
    if not frames:
        raise VideoDecodeError("no frame decoded")
    if duration is None:
        clip_fps, duration = fps, len(frames) / fps
    else:
        clip_fps = len(indices) / duration
    if len(frames) % 2:
        frames.append(frames[-1])
    frames = [regularize(frame, max_pixels, min_pixels) for frame in frames]
    return Clip(frames, clip_fps, duration, [int(i) / stream_fps * fps for i in indices])


def maps_videos(data_args) -> bool:
    """Whether a dataset of `dataset` or `eval_dataset` maps a videos column (known from dataset_info.json before
    any data is read, so a missing video processor stops a run before anything heavy)."""
    from tunesmith.data.registry import resolve_datasets
    from tunesmith.errors import DataError

    names = [*(data_args.dataset or []), *(data_args.eval_dataset or [])]
    try:
        specs = resolve_datasets(names, data_args.dataset_dir)
    except DataError:  # an unknown dataset: reported where the data loads, after the run's other checks
        return False
    return any(spec.column(VIDEOS) for spec in specs)


def video_processor_for(config):
    """model/video.py's (video processor, model type) of the config's model when its datasets map videos, else None:
    the composition roots call it right after the image processor, before any data or weights load."""
    if not config.data.dataset and not config.data.eval_dataset or not maps_videos(config.data):
        return None
    from tunesmith.model.video import load_video_processor

    return load_video_processor(config.model)
