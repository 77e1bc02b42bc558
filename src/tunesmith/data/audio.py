"""Audio inputs for Qwen2-Audio as LLaMA-Factory 0.9.5's qwen2_audio mm_plugin makes them: LF's `audios` column and
<audio> placeholders, files decoded with PyAV (mono, resampled to audio_sampling_rate), each <audio> expanded to
<|audio_bos|><|AUDIO|>*n<|audio_eos|> (n from the feature lengths, as LF computes it), input_features and
feature_attention_mask from the model's feature extractor; the encoder wrapper and collators are data/vision.py's."""

from __future__ import annotations

import copy
import dataclasses
import functools
from pathlib import Path

from tunesmith.data.media import count_placeholders, pyav, record_media
from tunesmith.data.vision import MediaCollator, media_collator, with_media
from tunesmith.data.vision import check_stage as check_media_stage
from tunesmith.errors import ConfigError, DataError

AUDIO_PLACEHOLDER = "<audio>"
AUDIOS = "audios"  # the canonical record's column of audio paths (present only when a dataset maps audios)
ENCODED_AUDIOS = "audio_paths"  # the encoded examples' column of audio paths (the collator decodes them)
# template mm_plugin -> its tokens (LF's get_mm_plugin(name="qwen2_audio", audio_token="<|AUDIO|>"); the bos/eos
# tokens are the processor's audio_bos_token/audio_eos_token, Qwen2AudioProcessor's defaults)
PLUGINS = {"qwen2_audio": {"audio_token": "<|AUDIO|>", "audio_bos": "<|audio_bos|>", "audio_eos": "<|audio_eos|>"}}
PLUGINS["qwen2_omni"] = PLUGINS["qwen2_audio"]  # Qwen2.5-Omni's audios: the same tokens and count (data/omni.py)
AUDIO_STAGES = ("sft", "dpo")
MIN_AUDIO_TOKENS = 2  # a 70 ms audio (7 mel frames of 10 ms); shorter ones break the model (AudioPlugin.expand_lengths)
AUDIO_ENCODINGS = ("supervised", "pairwise")


class AudioDecodeError(ValueError):
    """A file PyAV cannot decode as audio."""


def decode_audio(source, sampling_rate: int):
    """The audio of a file (path or binary file object) as a float32 mono numpy array at `sampling_rate`: decoded
    by PyAV, its channels averaged, resampled by PyAV (FFmpeg's libswresample). LF 0.9.5 does the same with
    torchaudio: load, average the channels, resample. (libswresample's own stereo-to-mono mix is not an average.)"""
    import numpy as np

    av = pyav("audios")

    try:
        with av.open(source if hasattr(source, "read") else str(source)) as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise AudioDecodeError("it holds no audio stream")
            planar, rate = None, None
            chunks = []
            for frame in container.decode(stream):
                if planar is None:  # float planes in the file's own layout and rate: one row per channel
                    rate = frame.sample_rate
                    planar = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=rate)
                chunks.extend(out.to_ndarray() for out in planar.resample(frame))
            if planar is not None:
                chunks.extend(out.to_ndarray() for out in planar.resample(None))
        if not chunks:
            raise AudioDecodeError("it holds no audio samples")
        mono = np.concatenate(chunks, axis=1).mean(axis=0, dtype=np.float32)
        if rate == sampling_rate:
            return mono
        frame = av.AudioFrame.from_ndarray(mono[None, :], format="fltp", layout="mono")
        frame.sample_rate = rate
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=sampling_rate)
        out = [part.to_ndarray() for part in (*resampler.resample(frame), *resampler.resample(None))]
        return np.concatenate(out, axis=1)[0].astype(np.float32)
    except AudioDecodeError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise AudioDecodeError(f"PyAV cannot decode it ({exc.__class__.__name__}: {str(exc)[:120]})") from None


def check_audio(path: Path) -> str | None:
    """Why the file cannot be used as audio (None when PyAV opens it and finds an audio stream)."""
    av = pyav("audios")

    try:
        with av.open(str(path)) as container:
            if not any(stream.type == "audio" for stream in container.streams):
                return "it holds no audio stream"
    except (av.FFmpegError, OSError, ValueError) as exc:
        return f"PyAV cannot open it ({exc.__class__.__name__}: {str(exc)[:120]})"
    return None


def record_audios(values, messages: list[dict], media_dir: str | None, fail) -> list[str]:
    """A record's audios, checked (data/media.py's record_media): each exists and PyAV finds an audio stream in it,
    one <audio> per audio."""
    return record_media(values, messages, media_dir, fail, "audio", AUDIO_PLACEHOLDER, check_audio)


def audio_seqlen(frames: int) -> int:
    """<|AUDIO|> tokens of an audio of `frames` mel frames: Qwen2-Audio's stride-2 convolution, then its stride-2
    pooling (LF's Qwen2AudioPlugin.process_messages)."""
    return ((frames - 1) // 2 + 1 - 2) // 2 + 1


@dataclasses.dataclass
class AudioPlugin:
    """One model's feature extractor, the sampling rate audios are decoded at and the template's audio tokens."""

    feature_extractor: object
    audio_token: str = "<|AUDIO|>"
    audio_bos: str = "<|audio_bos|>"
    audio_eos: str = "<|audio_eos|>"
    sampling_rate: int = 16000

    def waveforms(self, audios: list) -> list:
        """Decoded audios (file paths, or numpy arrays already at sampling_rate, which are kept)."""
        import numpy as np

        out = []
        for audio in audios:
            if isinstance(audio, np.ndarray):
                out.append(audio)
                continue
            try:
                out.append(decode_audio(audio, self.sampling_rate))
            except AudioDecodeError as exc:
                raise DataError(f"audio {audio} is unreadable: {exc}") from None
        return out

    def inputs(self, audios: list) -> dict:
        """input_features and feature_attention_mask of the audios, as LF's _get_mm_inputs makes them (each padded
        to the extractor's window); empty dict when none."""
        if not audios:
            return {}
        features = self.feature_extractor(
            self.waveforms(audios),
            sampling_rate=self.sampling_rate,
            return_attention_mask=True,
            padding="max_length",
            return_tensors="pt",
        )
        features = dict(features)
        features["feature_attention_mask"] = features.pop("attention_mask")
        return features

    def expand(self, messages: list[dict], audios: list) -> list[dict]:
        """The messages with each <audio> replaced by its audio tokens, as LF's process_messages does."""
        if count_placeholders(messages, AUDIO_PLACEHOLDER) != len(audios):
            raise DataError(
                f"{count_placeholders(messages, AUDIO_PLACEHOLDER)} {AUDIO_PLACEHOLDER} placeholders but "
                f"{len(audios)} audios ({', '.join(str(a)[:80] for a in audios[:3])})"
            )
        mask = self.inputs(audios).get("feature_attention_mask")
        return self.expand_lengths(messages, [] if mask is None else mask.sum(-1).tolist(), audios)

    def expand_lengths(self, messages: list[dict], frames: list[int], names: list | None = None) -> list[dict]:
        """expand() for audios already processed: each audio's frame count (feature_attention_mask's sum), in order.
        An audio of fewer than MIN_AUDIO_TOKENS tokens is an error: transformers' Qwen2-Audio takes a lone
        <|AUDIO|> for an unexpanded prompt (its legacy path, which fails) and cannot place a zero-length one."""
        for index, count in enumerate(frames):
            if audio_seqlen(int(count)) < MIN_AUDIO_TOKENS:
                name = str(names[index])[:120] if names and isinstance(names[index], (str, Path)) else index
                raise DataError(
                    f"audio {name} is too short ({int(count) * 10} ms of mel frames): Qwen2-Audio needs "
                    f"at least 70 ms of sound ({MIN_AUDIO_TOKENS} <|AUDIO|> tokens); drop or lengthen it"
                )
        messages, index = copy.deepcopy(messages), 0
        for message in messages:
            content = message["content"]
            while AUDIO_PLACEHOLDER in content:
                span = f"{self.audio_bos}{self.audio_token * audio_seqlen(int(frames[index]))}{self.audio_eos}"
                content = content.replace(AUDIO_PLACEHOLDER, span, 1)
                index += 1
            message["content"] = content
        return messages

    def batch_inputs(self, tokenizer, input_ids) -> dict:
        """No per-token model inputs besides the audio features (the image plugins' interface)."""
        return {}

    def token_type_ids(self, tokenizer, input_ids):
        """1 at the <|AUDIO|> tokens, 0 elsewhere (as the image plugins' token_type_ids: predict's cut check)."""
        return (input_ids == tokenizer.convert_tokens_to_ids(self.audio_token)).long()


def is_audio_plugin(plugin) -> bool:
    return isinstance(plugin, AudioPlugin)


def audio_template_names() -> list[str]:
    from tunesmith.data.template import template_table

    return [key for key, entry in template_table().items() if entry.get("mm_plugin") in PLUGINS]


def make_plugin(template, feature_extractor, multimodal=None) -> AudioPlugin:
    """The plugin of an audio template (`mm_plugin: qwen2_audio` in templates.yaml) for this feature extractor and
    the config's audio_sampling_rate (which the extractor must take: Whisper's refuses any rate but its own)."""
    name = getattr(template, "mm_plugin", None)
    if name not in PLUGINS:
        raise DataError(
            f"template {getattr(template, 'name', 'from the tokenizer')} has no audio support; for an "
            f"audio-language model set `template:` to one of {', '.join(audio_template_names())}"
        )
    rate = multimodal.audio_sampling_rate if multimodal is not None else 16000
    native = getattr(feature_extractor, "sampling_rate", None)
    if native is not None and rate != native:
        raise ConfigError(
            f"audio_sampling_rate: {rate}, but this model's feature extractor "
            f"({type(feature_extractor).__name__}) takes audio at {native} Hz only; set "
            f"audio_sampling_rate: {native} (audios are resampled to it)"
        )
    return AudioPlugin(feature_extractor, **PLUGINS[name], sampling_rate=rate)


def with_audios(base, plugin: AudioPlugin, tokenizer=None):
    """data.vision.with_media for audios: each row's <audio> placeholders are expanded before encoding, and the
    row's audio paths go along with its ids (ENCODED_AUDIOS; the collator turns them into input_features). With the
    tokenizer, an example whose audio tokens cutoff_len cut is an error (the model would fail on it mid-training:
    tokens != features)."""
    check_kept = None
    if tokenizer is not None:
        token_id = tokenizer.convert_tokens_to_ids(plugin.audio_token)

        def check_kept(encoded: dict, messages: list[dict], paths: list) -> None:
            expected = sum(str(m["content"]).count(plugin.audio_token) for m in messages)
            for key, rows in encoded.items():
                if not expected or not key.endswith("input_ids"):
                    continue
                for ids in rows:
                    if sum(1 for token in ids if token == token_id) != expected:
                        raise DataError(
                            f"cutoff_len cuts into the audio tokens of the example with audios "
                            f"{', '.join(paths[:3])}: {expected} <|AUDIO|> tokens (one per 40 ms of sound, up "
                            "to the feature extractor's window) must stay whole; raise cutoff_len or use shorter "
                            "audios"
                        )

    return with_media(base, plugin, AUDIOS, ENCODED_AUDIOS, check_kept)


def check_audios_fit(records, encoding: str, plugin) -> None:
    """Records with audios need an audio-language model (a feature extractor and an audio template) and a stage
    that can use them."""
    if AUDIOS not in records.column_names or not any(records[AUDIOS]):
        return
    if plugin is None:
        raise DataError(
            "the data holds audios (an `audios` column) but the model has no audio feature extractor: "
            "train an audio-language model (Qwen2-Audio; `tunesmith tiny --arch qwen2_audio` builds a "
            "tiny one) with template: qwen2_audio"
        )
    if encoding not in AUDIO_ENCODINGS:
        raise DataError(
            f"audios are trained with stages {' and '.join(AUDIO_STAGES)} only for now, not with this "
            f"stage ({encoding} encoding); use stage: sft or dpo, or drop the audios column"
        )


def check_stage(config) -> None:
    """An audio-language model trains with sft or dpo (the default sigmoid loss, which TRL computes with the
    audio features) and without packing."""
    check_media_stage(config, "an audio-language model", "audios")
    if config.data.packing:
        raise DataError(
            "packing: true cannot be used with an audio-language model yet (each row's audio features "
            "go with its padded sequence); remove `packing` or set it to false"
        )


# data.vision.MediaCollator for audios: right-padded text batches plus input_features and feature_attention_mask of
# the batch's audios, in order
AudioCollator = functools.partial(MediaCollator, paths=ENCODED_AUDIOS)


def audio_collator(config, tokenizer, model, plugin: AudioPlugin):
    """The sft/dpo collator of an audio-language model (data.vision.media_collator with ENCODED_AUDIOS)."""
    check_stage(config)
    return media_collator(config, tokenizer, model, plugin, ENCODED_AUDIOS)
