"""From config to encoded train/eval datasets: registry -> records -> template encoding -> split, cached on disk."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

from tunesmith.errors import DataError

log = logging.getLogger(__name__)

CACHE_STAMP = "tunesmith_cache.json"


@dataclasses.dataclass
class EncodedData:
    """Encoded datasets ready for a collator, and what encoding dropped."""

    train: object  # datasets.Dataset
    eval: object | None
    dropped: int = 0  # examples with nothing left to train on (e.g. truncated away)
    plugin: object | None = None  # a VL model's image plugin (data/vision.py): the collator makes pixel_values;
    # an audio model's AudioPlugin (data/audio.py): input_features


def resolve_template(data_args, tokenizer):
    """The named template, or the tokenizer's own Jinja chat template when `template` is unset."""
    from tunesmith.data.template import get_template

    return get_template(
        data_args.template,
        tokenizer,
        default_system=data_args.default_system,
        tool_format=data_args.tool_format,
        enable_thinking=data_args.enable_thinking,
        train_on_prompt=data_args.train_on_prompt,
    )


def load_split_records(data_args, stage: str, seed: int, media_dir: str | None = None):
    """Canonical records of the training datasets and of the eval datasets (None when not configured); image paths
    are relative to media_dir (default dataset_dir)."""
    from tunesmith.data.loader import load_records

    def load(names):
        return load_records(
            names,
            data_args.dataset_dir,
            stage,
            max_samples=data_args.max_samples,
            mix_strategy=data_args.mix_strategy,
            interleave_probs=data_args.interleave_probs,
            seed=seed,
            num_proc=data_args.preprocessing_num_workers,
            media_dir=media_dir,
        )

    train = load(data_args.dataset) if data_args.dataset else None
    evaluation = load(data_args.eval_dataset) if data_args.eval_dataset else None
    return train, evaluation


def skip_over_long(records, encoding: str, bound: int, desc: str):
    """Records over the text bound (see encode.BOUND_FACTOR) are skipped with a warning, before any tokenizing;
    pre-training keeps them (its encoder tokenizes them in pieces). Returns (records, positions over the bound)."""
    from tunesmith.data.encode import BOUND_FACTOR, over_long

    positions = over_long(records, bound)
    if not positions:
        return records, positions
    shown = ", ".join(map(str, positions[:5])) + (", ..." if len(positions) > 5 else "")
    if encoding == "pretrain":
        log.warning("%s: %d of %d documents are longer than %d characters; they are tokenized in pieces of at most "
                    "that many, all their text kept (positions %s)", desc, len(positions), len(records), bound, shown)
        return records, positions
    log.warning("%s: skipped %d of %d over-long records (positions %s, 0-based): each holds more than %d characters, "
                "so more than %d x cutoff_len tokens, of which cutoff_len would cut all but the start; shorten or "
                "split them to train on them", desc, len(positions), len(records), shown, bound, BOUND_FACTOR)
    skipped = set(positions)
    return records.select([i for i in range(len(records)) if i not in skipped]), positions


def encode_records(records, encoding: str, template, tokenizer, data_args, desc: str, bound: int | None = None,
                   plugin=None):
    """Maps canonical records to input_ids/attention_mask/labels and drops examples with nothing to train.
    Over-long records are skipped first (see skip_over_long); `bound` defaults to the one of data_args.cutoff_len.
    With an image plugin (data/vision.py), <image> placeholders become vision tokens and each example keeps its
    image paths; with an audio plugin (data/audio.py), the same for <audio> and audio tokens; with a Qwen-VL plugin
    that reads videos (its `video`, data/vision_video.py), the same for <video> and video tokens."""
    from tunesmith.data.audio import AUDIOS, check_audios_fit, is_audio_plugin, with_audios
    from tunesmith.data.encode import encoder_for, text_bound
    from tunesmith.data.omni import check_no_videos, is_omni_plugin
    from tunesmith.data.video import VIDEOS
    from tunesmith.data.vision import IMAGES, check_images_fit, with_images
    from tunesmith.data.vision_video import check_videos_fit, with_videos

    audio_plugin = plugin if is_audio_plugin(plugin) else None
    plugin = None if audio_plugin is not None else plugin
    if is_omni_plugin(plugin):  # Qwen2.5-Omni: the image wrapper, then the audio one around it
        check_no_videos(records)
        plugin, audio_plugin = plugin.image, plugin.audio
    check_images_fit(records, encoding, plugin)
    check_audios_fit(records, encoding, audio_plugin)
    check_videos_fit(records, encoding, plugin)
    bound = bound or text_bound(tokenizer, data_args.cutoff_len)
    records, _ = skip_over_long(records, encoding, bound, desc)
    encode = encoder_for(encoding, template=template, tokenizer=tokenizer, data_args=data_args, max_chars=bound)
    if plugin is not None and IMAGES in records.column_names:
        encode = with_images(encode, plugin)
    if audio_plugin is not None and AUDIOS in records.column_names:
        encode = with_audios(encode, audio_plugin, tokenizer)
    if getattr(plugin, "video", None) is not None and VIDEOS in records.column_names:
        encode = with_videos(encode, plugin.video, tokenizer)
    encoded = records.map(
        encode,
        batched=True,
        batch_size=data_args.preprocessing_batch_size,
        num_proc=data_args.preprocessing_num_workers,
        remove_columns=records.column_names,
        load_from_cache_file=not data_args.overwrite_cache,
        desc=desc,
    )
    return encoded


def cache_key(data_args, stage: str, encoding: str, tokenizer, seed: int, media: dict | None = None) -> str:
    """Fingerprint of everything the encoded data depends on, so a stale tokenized_path is never reused silently;
    `media`: a VL model's image settings (media_dir, pixel bounds, image processor), which change the encoding."""
    from tunesmith.data.registry import resolve_datasets

    parts = {"data": data_args.model_dump(mode="json", exclude={"overwrite_cache", "tokenized_path"}),
             "stage": stage, "encoding": encoding, "seed": seed, "vocab": len(tokenizer),
             "tokenizer": tokenizer.__class__.__name__, "files": [], "media": media}
    names = [*(data_args.dataset or []), *(data_args.eval_dataset or [])]
    for spec in resolve_datasets(names, data_args.dataset_dir):
        for path in spec.local_paths():
            stat = Path(path).stat()
            parts["files"].append([str(path), stat.st_size, stat.st_mtime_ns])
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    parts["vocab_hash"] = hashlib.sha256(vocab.encode()).hexdigest()
    parts["chat_template"] = getattr(tokenizer, "chat_template", None)
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _load_cached(path: Path, key: str):
    from datasets import load_from_disk

    stamp = path / CACHE_STAMP
    if not stamp.is_file():
        raise DataError(f"tokenized_path {path} exists but was not written by tunesmith; delete it or pick another")
    saved = json.loads(stamp.read_text())
    if saved.get("key") != key:
        log.warning("tokenized_path %s was made from other data or settings: re-encoding", path)
        return None
    log.info("loading encoded data from tokenized_path %s", path)
    train = load_from_disk(str(path / "train"))
    evaluation = load_from_disk(str(path / "eval")) if (path / "eval").is_dir() else None
    return EncodedData(train=train, eval=evaluation, dropped=saved.get("dropped", 0))


def _save_cached(path: Path, key: str, data: EncodedData) -> None:
    import shutil

    from tunesmith.staging import new_staging, publish

    staging = new_staging(path)
    try:
        data.train.save_to_disk(str(staging / "train"))
        if data.eval is not None:
            data.eval.save_to_disk(str(staging / "eval"))
        (staging / CACHE_STAMP).write_text(json.dumps({"key": key, "dropped": data.dropped}))
        publish(staging, path, replace=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already after a successful rename
    log.info("encoded data saved to tokenized_path %s", path)


def build_datasets(config, tokenizer, encoding: str, template=None, image_processor=None,
                   feature_extractor=None, video=None) -> EncodedData:
    """Loads, converts, encodes and splits the config's datasets; reuses `tokenized_path` when it matches.
    image_processor: a vision-language model's, so records with images are encoded for it; feature_extractor: an
    audio-language model's, for records with audios; video: a Qwen-VL model's (video processor, model type) from
    data/video.py's video_processor_for, for records with videos."""
    data_args, stage = config.data, config.method.stage
    seed = config.train.seed
    # The template first, even when the encoded data is reused: it sets the tokenizer's eos/pad tokens, which the
    # collator and the saved tokenizer need (a rank that loads rank 0's tokenized_path trains with them too).
    template = template or resolve_template(data_args, tokenizer)
    from tunesmith.data.omni import pair

    image_plugin = audio_plugin = media = None
    if image_processor is not None:
        from tunesmith.data.vision import make_plugin
        from tunesmith.data.vision_video import with_video_plugin

        image_plugin = with_video_plugin(make_plugin(template, image_processor, config.multimodal), template, video,
                                         config.multimodal)
        media = {"image_processor": image_plugin.image_processor.to_dict()}
        if video is not None:
            media["video_processor"] = video[0].to_dict()
    if feature_extractor is not None:
        from tunesmith.data.audio import make_plugin as make_audio_plugin

        audio_plugin = make_audio_plugin(template, feature_extractor, config.multimodal)
        media = {**(media or {}), "feature_extractor": feature_extractor.to_dict()}
    plugin = pair(image_plugin, audio_plugin)  # both: Qwen2.5-Omni (data/omni.py)
    if media is not None:
        media["multimodal"] = config.multimodal.model_dump(mode="json")
    cache_path = Path(data_args.tokenized_path) if data_args.tokenized_path else None
    key = cache_key(data_args, stage, encoding, tokenizer, seed, media) if cache_path else ""
    if cache_path and cache_path.exists() and not data_args.overwrite_cache:
        cached = _load_cached(cache_path, key)
        if cached is not None:
            cached.plugin = plugin
            return cached

    train_records, eval_records = load_split_records(data_args, stage, seed, config.multimodal.media_dir)
    if train_records is None:
        raise DataError("no training data: set `dataset` to names from dataset_info.json or file paths")
    train = encode_records(train_records, encoding, template, tokenizer, data_args, "encoding training data",
                           plugin=plugin)
    dropped = 0 if encoding == "pretrain" else len(train_records) - len(train)
    evaluation = None
    if eval_records is not None:
        evaluation = encode_records(eval_records, encoding, template, tokenizer, data_args, "encoding eval data",
                                    plugin=plugin)
    if len(train) == 0 and encoding == "pretrain":
        raise DataError(f"the pre-training text is shorter than one block of cutoff_len={data_args.cutoff_len} "
                        "tokens: lower cutoff_len or add text")
    if len(train) == 0:
        raise DataError(
            f"every training example was dropped during encoding ({len(train_records)} records): nothing is left "
            f"to train on — each was over-long, truncated away by cutoff_len={data_args.cutoff_len} or had an empty "
            "answer; raise cutoff_len or check the data with `tunesmith data check`"
        )
    if dropped:
        log.warning("%d of %d examples dropped: over-long (see above) or nothing left to train on after truncation",
                    dropped, len(train_records))
    if data_args.val_size > 0:
        size = int(data_args.val_size) if data_args.val_size >= 1 else data_args.val_size
        if isinstance(size, int) and size >= len(train):
            raise DataError(f"val_size={size} leaves no training examples (only {len(train)} encoded examples)")
        split = train.train_test_split(test_size=size, seed=seed)
        train, evaluation = split["train"], split["test"]
    data = EncodedData(train=train, eval=evaluation, dropped=dropped)
    if cache_path:
        _save_cached(cache_path, key, data)
    data.plugin = plugin
    return data
