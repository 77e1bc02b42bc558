"""Video inputs for Qwen2-VL / Qwen2.5-VL / Qwen3-VL as LLaMA-Factory 0.9.5's qwen2_vl and qwen3_vl mm_plugins make
them: the sampled frames (data/video.py) through the model's own video processor (transformers', which needs
torchvision), each <video> expanded to its video tokens, and the encoder wrapper and collator that carry them."""

from __future__ import annotations

import copy
import dataclasses

from tunesmith.data.media import count_placeholders
from tunesmith.data.video import ENCODED_VIDEOS, VIDEO_PLACEHOLDER, VIDEOS, VideoDecodeError, read_video
from tunesmith.errors import DataError

VIDEO_MM_PLUGINS = ("qwen2_vl", "qwen3_vl")  # templates' mm_plugin values whose models take videos
# model types whose processor passes second_per_grid_ts (Qwen2_5_VLProcessor.model_input_names; LF passes it then)
SECOND_PER_GRID = ("qwen2_5_vl",)


@dataclasses.dataclass
class VideoPlugin:
    """One Qwen-VL model's video processor, LF's sampling and resize settings and the template's video tokens."""

    video_processor: object
    timestamps: bool = False  # Qwen3-VL (mm_plugin qwen3_vl): each frame's tokens after "<t seconds>"
    second_per_grid: bool = False  # Qwen2.5-VL: second_per_grid_ts (temporal_patch_size / fps) go to the model
    video_token: str = "<|video_pad|>"
    vision_bos: str = "<|vision_start|>"
    vision_eos: str = "<|vision_end|>"
    fps: float = 2.0
    maxlen: int = 128
    max_pixels: int = 256 * 256
    min_pixels: int = 16 * 16

    @property
    def merge_length(self) -> int:
        return int(getattr(self.video_processor, "merge_size", 1)) ** 2

    def clips(self, paths: list) -> list:
        out = []
        for path in paths:
            try:
                out.append(read_video(path, self.fps, self.maxlen, self.max_pixels, self.min_pixels))
            except VideoDecodeError as exc:
                raise DataError(f"video {path} is unreadable: {exc}") from None
        return out

    def process(self, paths: list) -> dict:
        """The video processor's output for the videos, called as LF's plugin calls it (Qwen3-VL: with each clip's
        metadata, frames kept as sampled, video_metadata returned)."""
        if not paths:
            return {}
        clips = self.clips(paths)
        frames = [clip.frames for clip in clips]
        if self.timestamps:
            metadata = [
                {
                    "fps": self.fps,
                    "duration": c.duration,
                    "total_num_frames": len(c.frames),
                    "frames_indices": c.indices,
                }
                for c in clips
            ]
            out = dict(
                self.video_processor(
                    videos=frames,
                    video_metadata=metadata,
                    fps=self.fps,
                    return_metadata=True,
                    do_sample_frames=False,
                    return_tensors="pt",
                )
            )
        else:
            out = dict(self.video_processor(videos=frames, return_tensors="pt"))
        if self.second_per_grid:
            import torch

            temporal = getattr(self.video_processor, "temporal_patch_size", 2)
            out["second_per_grid_ts"] = torch.tensor([temporal / clip.fps for clip in clips])
        return out

    def inputs(self, paths: list) -> dict:
        """pixel_values_videos, video_grid_thw (and Qwen2.5-VL's second_per_grid_ts); empty dict when none."""
        out = self.process(paths)
        out.pop("video_metadata", None)  # expansion's, not the model's
        return out

    def expand(self, messages: list[dict], paths: list) -> list[dict]:
        """The messages with each <video> replaced by its video tokens, as LF's process_messages does."""
        if count_placeholders(messages, VIDEO_PLACEHOLDER) != len(paths):
            raise DataError(
                f"{count_placeholders(messages, VIDEO_PLACEHOLDER)} {VIDEO_PLACEHOLDER} placeholders but "
                f"{len(paths)} videos ({', '.join(str(p)[:80] for p in paths[:3])})"
            )
        return self.expand_processed(messages, self.process(paths))

    def span(self, grid, metadata=None) -> str:
        """One video's tokens: Qwen2-VL's <|vision_start|><|video_pad|>*n<|vision_end|>; Qwen3-VL's per frame."""
        if not self.timestamps:
            return f"{self.vision_bos}{self.video_token * (int(grid.prod()) // self.merge_length)}{self.vision_eos}"
        from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

        temporal = getattr(self.video_processor, "temporal_patch_size", 2)
        # the processor's own timestamps (a method that reads nothing of the processor, so no tokenizer is needed)
        times = Qwen3VLProcessor._calculate_timestamps(None, list(metadata.frames_indices), metadata.fps, temporal)
        per_frame = int(grid[1:].prod()) // self.merge_length
        frame = f"{self.vision_bos}{self.video_token * per_frame}{self.vision_eos}"
        return "".join(f"<{times[index]:.1f} seconds>{frame}" for index in range(int(grid[0])))

    def expand_processed(self, messages: list[dict], processed: dict) -> list[dict]:
        grids, metadata = processed.get("video_grid_thw", []), processed.get("video_metadata")
        messages, index = copy.deepcopy(messages), 0
        for message in messages:
            content = message["content"]
            while VIDEO_PLACEHOLDER in content:
                span = self.span(grids[index], metadata[index] if metadata is not None else None)
                content = content.replace(VIDEO_PLACEHOLDER, span, 1)
                index += 1
            message["content"] = content
        return messages

    def batch_inputs(self, tokenizer, input_ids) -> dict:
        """None besides the video tensors: the image plugin's mm_token_type_ids already mark video tokens with 2."""
        return {}

    def token_type_ids(self, tokenizer, input_ids):
        """1 at the video tokens, 0 elsewhere."""
        return (input_ids == tokenizer.convert_tokens_to_ids(self.video_token)).long()


def make_video_plugin(name: str, video, multimodal=None, tokens: dict | None = None) -> VideoPlugin:
    """The video plugin of a Qwen-VL template (mm_plugin `name`) for `video`, model/video.py's (video processor,
    model type), and the config's video_fps, video_maxlen, video_max_pixels and video_min_pixels."""
    if name not in VIDEO_MM_PLUGINS:
        raise DataError(
            f"videos are read for Qwen2-VL, Qwen2.5-VL and Qwen3-VL models only (templates qwen2_vl, qwen3_vl, "
            f"qwen3_vl_nothink), not with this template's {name} plugin; drop the videos column"
        )
    processor, model_type = video
    settings = {}
    if multimodal is not None:
        settings = {
            "fps": multimodal.video_fps,
            "maxlen": multimodal.video_maxlen,
            "max_pixels": multimodal.video_max_pixels,
            "min_pixels": multimodal.video_min_pixels,
        }
    tokens = {key: value for key, value in (tokens or {}).items() if key in ("video_token", "vision_bos", "vision_eos")}
    return VideoPlugin(
        processor, timestamps=name == "qwen3_vl", second_per_grid=model_type in SECOND_PER_GRID, **tokens, **settings
    )


def with_video_plugin(plugin, template, video, multimodal=None):
    """The image plugin with its `video` set for `video`, model/video.py's (video processor, model type), or as it is
    when there are no videos (None)."""
    if video is None:
        return plugin
    import dataclasses

    from tunesmith.data.vision import PLUGINS

    name = getattr(template, "mm_plugin", None)
    return dataclasses.replace(plugin, video=make_video_plugin(name, video, multimodal, PLUGINS.get(name)))


def video_collator(collator, plugin, config):
    """The VL collator, wrapped to add the videos' tensors when the plugin reads videos (Qwen-VL); else as it is."""
    if getattr(plugin, "video", None) is None:
        return collator
    return VideoCollator(collator, plugin.video, pairwise=config.method.stage == "dpo")


def with_videos(base, plugin: VideoPlugin, tokenizer=None):
    """data.vision.with_media for videos (the records' `videos`, the examples' ENCODED_VIDEOS). With the tokenizer,
    an example whose video tokens cutoff_len cut is an error (the model would fail on it: tokens != features)."""
    from tunesmith.data.vision import with_media

    check_kept = None
    if tokenizer is not None:
        token_id = tokenizer.convert_tokens_to_ids(plugin.video_token)

        def check_kept(encoded: dict, messages: list[dict], paths: list) -> None:
            expected = sum(str(m["content"]).count(plugin.video_token) for m in messages)
            for key, rows in encoded.items():
                if expected and key.endswith("input_ids") and any(row.count(token_id) != expected for row in rows):
                    raise DataError(
                        f"cutoff_len cuts into the video tokens of the example with videos {', '.join(paths[:3])}: "
                        f"its {expected} {plugin.video_token} tokens must stay whole; raise cutoff_len, or lower "
                        "video_maxlen, video_fps or video_max_pixels"
                    )

    return with_media(base, plugin, VIDEOS, ENCODED_VIDEOS, check_kept)


def check_videos_fit(records, encoding: str, plugin) -> None:
    """Records with videos need a Qwen-VL model whose video processor is loaded, and stage sft or dpo."""
    from tunesmith.data.vision import IMAGE_ENCODINGS, IMAGE_STAGES

    if VIDEOS not in records.column_names or not any(records[VIDEOS]):
        return
    if getattr(plugin, "video", None) is None:
        raise DataError(
            "the data holds videos (a `videos` column) but the model takes no videos: train a Qwen2-VL, Qwen2.5-VL "
            "or Qwen3-VL model with its template (qwen2_vl, qwen3_vl; `tunesmith tiny --arch qwen2_vl` builds a tiny "
            "one)"
        )
    if encoding not in IMAGE_ENCODINGS:
        raise DataError(
            f"videos are trained with stages {' and '.join(IMAGE_STAGES)} only for now, not with this stage "
            f"({encoding} encoding); use stage: sft or dpo, or drop the videos column"
        )


class VideoCollator:
    """A VL model's collator (data.vision's, for the text and images) plus the video inputs of the batch's
    ENCODED_VIDEOS, in order; dpo's pairwise batch (chosen rows, then rejected rows) takes each example's videos
    twice. mm_token_type_ids (2 at video tokens) come from the image plugin's batch_inputs."""

    def __init__(self, inner, plugin: VideoPlugin, pairwise: bool = False):
        self.inner, self.plugin, self.pairwise = inner, plugin, pairwise

    def __call__(self, features: list[dict]) -> dict:
        paths = [path for feature in features for path in (feature.get(ENCODED_VIDEOS) or [])]
        batch = self.inner([{k: v for k, v in feature.items() if k != ENCODED_VIDEOS} for feature in features])
        batch.update(self.plugin.inputs(paths + paths if self.pairwise else paths))
        return batch
