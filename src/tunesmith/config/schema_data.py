"""Which data, how it is encoded, and the benchmark and output-folder settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tunesmith.config.schema_base import FloatList, Group, NameList


class DataArgs(Group):
    """Which data, in which template, cut how."""

    dataset: NameList = Field(None, description="Training dataset names from dataset_info.json, or file paths.")
    eval_dataset: NameList = Field(None, description="Evaluation dataset names or paths.")
    dataset_dir: str = Field("data", description="Folder holding dataset_info.json and the data files.")
    template: str | None = Field(None, description="Chat template; default: the tokenizer's own chat template.")
    cutoff_len: int = Field(2048, ge=1, description="Maximum tokens per example after tokenization.")
    train_on_prompt: bool = Field(False, description="Also train on the prompt tokens.")
    mask_history: bool = Field(False, description="Train only on the last assistant turn.")
    mix_strategy: Literal["concat", "interleave_under", "interleave_over"] = Field(
        "concat", description="How several datasets are mixed."
    )
    interleave_probs: FloatList = Field(None, description="Sampling probability of each dataset when interleaving.")
    max_samples: int | None = Field(None, ge=1, description="Keep at most this many examples per dataset.")
    val_size: float = Field(0.0, ge=0, description="Held-out evaluation split: a fraction < 1 or a count >= 1.")
    eval_on_each_dataset: bool = Field(False, description="Evaluate each eval dataset separately (not supported).")
    overwrite_cache: bool = Field(False, description="Re-encode even when a cache exists.")
    preprocessing_batch_size: int = Field(1000, ge=1, description="Records per encoding batch.")
    preprocessing_num_workers: int | None = Field(None, ge=1, description="Processes used to encode the data.")
    tokenized_path: str | None = Field(None, description="Save the encoded data here, or load it if it exists.")
    packing: bool | None = Field(None, description="pt: concatenate into full cutoff_len blocks; sft: pack each batch "
                                  "padding-free, attention inside each example (default on for both; false pads).")
    tool_format: str | None = Field(None, description="Tool-call format; default: the template's.")
    default_system: str | None = Field(None, description="Replace the template's default system prompt.")
    enable_thinking: bool | None = Field(True, description="Reasoning templates: keep thinking in training data.")
    streaming: bool = Field(False, description="Stream datasets instead of loading them (not supported yet).")

    @model_validator(mode="after")
    def _consistent(self):
        if self.mask_history and self.train_on_prompt:
            raise ValueError("`mask_history` and `train_on_prompt` cannot both be true")
        if self.val_size > 0 and self.eval_dataset:
            raise ValueError("set either `val_size` or `eval_dataset`, not both")
        if self.val_size > 0 and self.val_size >= 1 and self.val_size != int(self.val_size):
            raise ValueError(f"`val_size` must be a fraction below 1 or a whole count, got {self.val_size}")
        if self.interleave_probs is not None:
            if self.mix_strategy == "concat":
                raise ValueError("`interleave_probs` needs mix_strategy interleave_under or interleave_over")
            if self.dataset and len(self.dataset) != len(self.interleave_probs):
                raise ValueError(
                    f"`interleave_probs` has {len(self.interleave_probs)} values for {len(self.dataset)} datasets"
                )
            if abs(sum(self.interleave_probs) - 1.0) > 1e-6:
                raise ValueError(f"`interleave_probs` must sum to 1, got {sum(self.interleave_probs):g}")
        if self.eval_on_each_dataset:
            raise ValueError(
                "`eval_on_each_dataset` is not supported yet: the eval datasets are merged into one eval "
                "set; remove it, or evaluate each with its own `tunesmith train` run"
            )
        return self


class OutputArgs(Group):
    """What happens around the output folder."""

    overwrite_output_dir: bool = Field(False, description="Allow writing into a non-empty output_dir.")
    plot_loss: bool = Field(False, description="Save training_loss.png (and eval_loss.png) in output_dir.")


class EvalArgs(Group):
    """Multiple-choice benchmarks (`tunesmith eval`): MMLU/C-Eval/CMMLU-style folders; LLaMA-Factory's names."""

    task: str | None = Field(None, description="Benchmark and split as <benchmark>_<split>, e.g. mmlu_test.")
    task_dir: str = Field("evaluation", description="Folder holding one sub-folder per benchmark.")
    lang: Literal["en", "zh"] = Field("en", description="Language of the prompt around each question.")
    n_shot: int = Field(5, ge=0, description="Few-shot examples from the dev split before each question (by `seed`).")
    batch_size: int = Field(4, ge=1, description="Questions scored per forward pass.")
    save_dir: str | None = Field(None, description="New folder for results.json and results.log (must not exist).")

    @model_validator(mode="after")
    def _task_shape(self):
        if self.task is not None and ("_" not in self.task.strip("_")):
            raise ValueError(f"`task` is <benchmark>_<split>, e.g. mmlu_test or ceval_validation, not {self.task!r}")
        return self

    download_mode: Literal["reuse_dataset_if_exists", "reuse_cache_if_exists", "force_redownload"] = Field(
        "reuse_dataset_if_exists", description="Benchmark download mode (datasets' DownloadMode)."
    )


class MultimodalArgs(Group):
    """LLaMA-Factory's image/video/audio keys, with its defaults: the image, video, audio and freeze keys are
    honoured (Qwen-VL, LLaVA, Gemma 3, InternVL and Qwen2-Audio models; videos on Qwen-VL; pan-and-scan on Gemma 3,
    crop-to-patches on InternVL); use_audio_in_video (Qwen2.5-Omni's) loads and is refused with the reason."""

    media_dir: str | None = Field(None, description="Folder of the images/videos/audios (default dataset_dir).")
    image_max_pixels: int = Field(768 * 768, ge=1, description="Largest image, in pixels.")
    image_min_pixels: int = Field(32 * 32, ge=1, description="Smallest image, in pixels.")
    image_do_pan_and_scan: bool = Field(False, description="Gemma 3 pan-and-scan: wide or tall images add crops.")
    crop_to_patches: bool = Field(False, description="InternVL: crop images to 1-12 tiles and a thumbnail.")
    video_max_pixels: int = Field(256 * 256, ge=1, description="Largest video frame, in pixels.")
    video_min_pixels: int = Field(16 * 16, ge=1, description="Smallest video frame, in pixels.")
    video_fps: float = Field(2.0, gt=0, description="Video frames sampled per second.")
    video_maxlen: int = Field(128, ge=1, description="Most frames per video.")
    use_audio_in_video: bool = Field(False, description="Also read the audio of videos.")
    audio_sampling_rate: int = Field(16000, ge=1, description="Sampling rate audios are resampled to (the model's "
                                     "feature extractor's).")
    freeze_vision_tower: bool = Field(True, description="Keep the vision tower frozen.")
    freeze_multi_modal_projector: bool = Field(True, description="Keep the multimodal projector frozen.")
    freeze_language_model: bool = Field(False, description="Keep the language model frozen.")
