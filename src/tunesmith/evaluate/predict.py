"""`tunesmith eval` with do_predict + predict_with_generate: generates answers to an sft dataset's prompts and writes
generated_predictions.jsonl and BLEU-4 / ROUGE-1/2/L, as LLaMA-Factory's predict flow does."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tunesmith.errors import ConfigError, DataError

PREDICTIONS = "generated_predictions.jsonl"
RESULTS = "predict_results.json"


def output_folder(config) -> Path:
    """save_dir (a new folder) when set, else output_dir (where an earlier predict's files are kept unless
    overwrite_output_dir)."""
    if config.eval.save_dir:
        folder = Path(config.eval.save_dir)
        if folder.exists():
            raise ConfigError(f"{config.source}: save_dir {folder} already exists; choose a new folder")
        return folder
    if not config.train.output_dir:
        raise ConfigError(f"{config.source}: predict needs `output_dir` (or `save_dir`) for {PREDICTIONS}")
    folder = Path(config.train.output_dir)
    if (folder / PREDICTIONS).exists() and not config.output.overwrite_output_dir:
        raise ConfigError(
            f"{config.source}: {folder / PREDICTIONS} already exists; set overwrite_output_dir: true "
            "to replace it, or choose another output_dir"
        )
    return folder


def encode_prompts(
    config, tokenizer, template, plugin=None, no_images: str = "", audio_plugin=None, no_audios: str = ""
) -> dict:
    """Prompt ids and reference answer ids of every record of eval_dataset (or dataset), cut to cutoff_len. With a
    VL model's image plugin, each <image> becomes the model's vision tokens exactly as training encodes it and each
    example keeps its image paths (ENCODED_IMAGES); with an audio-language model's AudioPlugin, each <audio> its
    audio tokens, with the audio paths (ENCODED_AUDIOS). `no_images`/`no_audios`: why that medium cannot be used
    (its plugin None)."""
    from functools import partial

    from tunesmith.data.audio import AUDIOS
    from tunesmith.data.encode import encode_unsupervised
    from tunesmith.data.loader import load_records
    from tunesmith.data.media import IMAGES
    from tunesmith.data.video import VIDEOS

    data = config.data
    records = load_records(
        data.eval_dataset or data.dataset,
        data.dataset_dir,
        "sft",
        max_samples=data.max_samples,
        seed=config.train.seed,
        num_proc=data.preprocessing_num_workers,
        cache_dir=config.model.cache_dir,
        media_dir=config.multimodal.media_dir,
    )
    if VIDEOS in records.column_names and any(records[VIDEOS]):  # not silently answered from the text alone
        raise DataError(
            f"{config.source}: the predict data holds videos (a `videos` column); predict and chat take images and "
            "audios, videos only train for now (sft, dpo): drop the videos column"
        )
    encode = partial(encode_unsupervised, template=template, tokenizer=tokenizer, cutoff_len=data.cutoff_len)
    media = None  # the plugin of the medium the records hold
    for column, usable, why in ((IMAGES, plugin, no_images), (AUDIOS, audio_plugin, no_audios)):
        if column in records.column_names and any(records[column]):  # not silently answered from the text alone
            if usable is None:
                raise DataError(
                    f"{config.source}: the predict data holds {column} (an `{column}` column) but they "
                    f"cannot be used: {why}"
                )
            if media is not None:  # Qwen2.5-Omni trains on both; predict carries one medium for now
                raise DataError(
                    f"{config.source}: the predict data holds images and audios; predict reads one of them per "
                    "dataset for now (Qwen2.5-Omni trains and chats with both): split the data"
                )
            media = usable
    if media is not None:
        encoded = encode_with_media(records, encode, media, tokenizer, data.cutoff_len)
    else:
        encoded = encode(records.to_dict())
    if not encoded["input_ids"]:
        raise ConfigError(f"{config.source}: none of the {len(records)} records has a prompt to answer")
    return encoded


def media_kind(plugin) -> dict:
    """How predict carries a plugin's medium through training's wrapper and collator (data.vision.with_media,
    MediaCollator): the records' column of media, the encoded examples' column of paths, and the words of the cut
    error."""
    from tunesmith.data.audio import AUDIOS, ENCODED_AUDIOS, is_audio_plugin
    from tunesmith.data.media import IMAGES
    from tunesmith.data.vision import ENCODED_IMAGES

    if is_audio_plugin(plugin):  # no audio cut check in the wrapper: encode_with_media's own check names the record
        return {
            "column": AUDIOS,
            "paths": ENCODED_AUDIOS,
            "noun": "audio",
            "fix": "raise cutoff_len or use shorter audios",
        }
    return {
        "column": IMAGES,
        "paths": ENCODED_IMAGES,
        "noun": "image",
        "fix": "raise cutoff_len or lower image_max_pixels",
    }


def encode_with_media(records, encode, plugin, tokenizer, cutoff_len: int) -> dict:
    """encode() through training's media wrapper (data.vision.with_media), record by record so that a prompt whose
    media tokens cutoff_len cuts (the model would find fewer image or audio tokens than features) is refused by its
    record number."""
    import torch

    from tunesmith.data.vision import with_media

    kind = media_kind(plugin)
    wrapped, whole = with_media(encode, plugin, kind["column"], kind["paths"]), None
    out: dict = {}
    for index in range(len(records)):
        one = records[index : index + 1]
        try:
            encoded = wrapped(one)
        except DataError as exc:  # e.g. an audio too short for the model: which record holds it
            raise DataError(f"predict data record {index}: {exc}") from None
        for ids, labels, paths in zip(encoded["input_ids"], encoded["labels"], encoded[kind["paths"]], strict=True):
            if paths and len(ids) + len(labels) >= cutoff_len:  # shorter: nothing was cut (see infer_seqlen)
                whole = whole or with_media(partial_uncut(encode), plugin, kind["column"], kind["paths"])
                full = whole(one)["input_ids"][0]
                kept, needed = (
                    int(plugin.token_type_ids(tokenizer, torch.tensor(row)).ne(0).sum()) for row in (ids, full)
                )
                if kept != needed:
                    raise DataError(
                        f"predict data record {index}: cutoff_len={cutoff_len} cuts its prompt inside the "
                        f"{kind['noun']} tokens ({kept} of its {needed} kept; the whole prompt is "
                        f"{len(full)} tokens); {kind['fix']}"
                    )
        for key, values in encoded.items():
            out.setdefault(key, []).extend(values)
    return out


def partial_uncut(encode):
    """The same encoder with no cutoff (to count the image or audio tokens of a whole prompt)."""
    from functools import partial

    return partial(encode.func, *encode.args, **{**encode.keywords, "cutoff_len": 10**9})


def generate(
    model,
    tokenizer,
    prompts: list[list[int]],
    batch_size: int,
    kwargs: dict,
    skip_special_tokens: bool,
    media: list[list] | None = None,
    plugin=None,
) -> list[str]:
    """Decoded answers to each prompt, batched with left padding; kwargs: infer.loader.generation_kwargs. With a
    media plugin, `media` (each prompt's image or audio paths) go in through the training collator, left-padded:
    data.vision.MediaCollator: an image plugin's pixel_values, image_grid_thw, mm_token_type_ids (Qwen-VL's M-RoPE
    positions are computed by the model from the attention mask, so padding does not shift them); the audio
    plugin's input_features and feature_attention_mask (Qwen2-Audio puts each row's audio features at its <|AUDIO|> tokens, in order)."""
    import torch
    from tqdm.auto import tqdm

    from tunesmith.evaluate.scoring import left_pad

    pad_id = kwargs["pad_token_id"]
    collate = None
    if plugin is not None:
        from tunesmith.data.vision import MediaCollator

        kind = media_kind(plugin)
        tokenizer.padding_side = "left"  # generation continues each row at its end, as LLaMA-Factory's predict does
        collator = MediaCollator(tokenizer, None, plugin, kind["paths"])

        def collate(start: int, stop: int) -> dict:
            return collator(
                [
                    {"input_ids": ids, "attention_mask": [1] * len(ids), kind["paths"]: paths}
                    for ids, paths in zip(prompts[start:stop], media[start:stop], strict=True)
                ]
            )

    answers = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="predict", unit="batch"):
        if collate is None:
            input_ids, attention_mask, _ = left_pad(prompts[start : start + batch_size], pad_id)
            inputs = {"attention_mask": attention_mask}
        else:
            inputs = collate(start, start + batch_size)
            input_ids = inputs.pop("input_ids")
        inputs = {key: to_model(value, model) for key, value in inputs.items() if value is not None}  # labels: None
        with torch.inference_mode():
            output = model.generate(input_ids.to(model.device), **inputs, **kwargs)
        for row in output[:, input_ids.shape[1] :].tolist():
            while row and row[-1] == pad_id:
                row.pop()  # generation pads finished rows; the stop token itself is dropped by decode
            answers.append(tokenizer.decode(row, skip_special_tokens=skip_special_tokens))
    return answers


def to_model(tensor, model):
    """The tensor on the model's device; floating ones (pixel_values, input_features) in its dtype, as the chat
    engine passes them."""
    if tensor.is_floating_point():
        return tensor.to(model.device, dtype=model.dtype)
    return tensor.to(model.device)


def check_predict(config) -> None:
    """What predict needs from the config, checked before any model loads (and before training, for do_train)."""
    if not config.train.predict_with_generate:
        raise ConfigError(
            f"{config.source}: do_predict needs `predict_with_generate: true` (answers are generated "
            "and scored with BLEU/ROUGE)"
        )
    if not (config.data.eval_dataset or config.data.dataset):
        raise ConfigError(f"{config.source}: predict needs `eval_dataset` (or `dataset`): the prompts to answer")


def check_after_training(config, world_size: int) -> None:
    """do_train with do_predict: predict runs on the trained model in this process once training is done (as
    LLaMA-Factory's sft workflow does), so its checks come before training starts."""
    from tunesmith.evaluate.metrics import require_packages

    check_predict(config)
    if not config.data.eval_dataset:
        raise ConfigError(
            f"{config.source}: do_predict after training answers the prompts of `eval_dataset`; set it "
            "(a val_size split is not used for predict)"
        )
    if world_size > 1:
        raise ConfigError(
            f"{config.source}: do_predict after training runs in one process, not {world_size}; remove "
            "do_predict and run `tunesmith eval OUTPUT_DIR do_predict=true predict_with_generate=true "
            "eval_dataset=...` on the trained run afterwards"
        )
    require_packages()


def run_predict(config) -> int:
    """Loads the model, generates, writes generated_predictions.jsonl (prompt, predict, label) and
    predict_results.json."""
    from tunesmith.config.load import require
    from tunesmith.evaluate.metrics import require_packages
    from tunesmith.infer.loader import load_for_inference

    check_predict(config)
    require(config, "model_name_or_path", job="eval")
    folder = output_folder(config)
    require_packages()  # a missing metrics package fails before the model loads
    tokenizer, template, model = load_for_inference(config, job="eval")
    predict_with(config, tokenizer, template, model, folder)
    return 0


def predict_after_training(config, tokenizer, model, output_dir) -> dict:
    """do_train + do_predict: the trained model (adapters unmerged) answers eval_dataset; the files go in output_dir
    and the predict_* metrics are returned for all_results.json."""
    from tunesmith.data.pipeline import resolve_template

    model.eval()
    model.config.use_cache = True
    return predict_with(config, tokenizer, resolve_template(config.data, tokenizer), model, Path(output_dir))


def predict_with(config, tokenizer, template, model, folder: Path) -> dict:
    """Encodes the prompts (with a VL model's images or an audio model's audios), generates, writes the two files in
    folder; the metrics."""
    import transformers

    from tunesmith.evaluate.metrics import corpus_similarity
    from tunesmith.infer.loader import generation_kwargs, load_audio_plugin, load_image_plugin

    plugin, no_images = load_image_plugin(config, template)  # None for a model without images (no_images says why)
    audio_plugin, no_audios = load_audio_plugin(config, template)  # Qwen2-Audio's, or None (no_audios says why)
    encoded = encode_prompts(config, tokenizer, template, plugin, no_images, audio_plugin, no_audios)
    media = next((p for p in (plugin, audio_plugin) if p is not None and media_kind(p)["paths"] in encoded), None)
    transformers.set_seed(config.train.seed)
    started = time.perf_counter()
    # predictions are compared with references: greedy (reproducible) unless the config sets do_sample
    kwargs = generation_kwargs(config.generation, tokenizer, template, greedy="do_sample" not in config.given)
    paths = encoded[media_kind(media)["paths"]] if media is not None else None
    predictions = generate(
        model,
        tokenizer,
        encoded["input_ids"],
        config.train.per_device_eval_batch_size,
        kwargs,
        config.generation.skip_special_tokens,
        paths,
        media,
    )
    seconds = time.perf_counter() - started
    labels = [tokenizer.decode(ids, skip_special_tokens=True) for ids in encoded["labels"]]
    prompts = [tokenizer.decode(ids, skip_special_tokens=False) for ids in encoded["input_ids"]]
    scores = corpus_similarity(predictions, labels)
    results = {
        **{f"predict_{key}": round(value, 4) for key, value in scores.items()},
        "predict_samples": len(predictions),
        "predict_runtime": round(seconds, 4),
        "predict_samples_per_second": round(len(predictions) / seconds, 3),
    }
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / PREDICTIONS).open("w", encoding="utf-8") as file:
        for prompt, predict, label in zip(prompts, predictions, labels, strict=True):
            file.write(json.dumps({"prompt": prompt, "predict": predict, "label": label}, ensure_ascii=False) + "\n")
    (folder / RESULTS).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    for key, value in results.items():
        print(f"  {key} = {value}")
    print(f"predictions written to {folder / PREDICTIONS}")
    return results
