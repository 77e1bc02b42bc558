"""`tunesmith data check|preview|export`: see exactly what the model will be trained on, before training."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tunesmith.config.load import require
from tunesmith.data.records import IGNORE_INDEX
from tunesmith.errors import DataError

TRAINED_OPEN, TRAINED_CLOSE = "\u27e6", "\u27e7"  # ⟦ trained tokens ⟧


def _encoding(config) -> str:
    from tunesmith.train.stages import STAGES

    return STAGES[config.method.stage].encoding


def _setup(config):
    """The tokenizer, the template and, for a vision-language (audio-language) model, its image (audio) plugin
    (else None)."""
    from tunesmith.data.pipeline import resolve_template
    from tunesmith.model.load import load_image_processor, load_tokenizer

    require(config, "model_name_or_path", "dataset", job="data")
    tokenizer = load_tokenizer(config.model, config.lf_model)
    template = resolve_template(config.data, tokenizer)
    from tunesmith.data.omni import pair
    from tunesmith.data.video import video_processor_for
    from tunesmith.model.audio import load_feature_extractor

    image_processor, feature_extractor = load_image_processor(config.model), load_feature_extractor(config.model)
    video = video_processor_for(config)  # Qwen-VL's, when the data maps videos (it needs torchvision); else None
    image_plugin = audio_plugin = None
    if image_processor is not None:
        from tunesmith.data.vision import make_plugin
        from tunesmith.data.vision_video import with_video_plugin

        image_plugin = with_video_plugin(make_plugin(template, image_processor, config.multimodal), template, video,
                                         config.multimodal)
    if feature_extractor is not None:
        from tunesmith.data.audio import make_plugin as make_audio_plugin

        audio_plugin = make_audio_plugin(template, feature_extractor, config.multimodal)
    return tokenizer, template, pair(image_plugin, audio_plugin)  # both: Qwen2.5-Omni


def sequences(row: dict) -> list[tuple[str, list[int], list[int]]]:
    """The (name, input_ids, labels) sequences of an encoded example: one, or chosen/rejected, or answer/KL."""
    out = []
    for prefix in ("", "chosen_", "rejected_", "kl_"):
        if f"{prefix}input_ids" in row:
            out.append((prefix.rstrip("_") or "example", row[f"{prefix}input_ids"], row[f"{prefix}labels"]))
    return out


def _columns(encoded, column: str):
    """One column of an encoded dataset, as Arrow arrays of up to 10,000 examples: no huge example becomes Python."""
    for table in encoded.with_format("arrow").iter(batch_size=10_000):
        yield table[column].combine_chunks()


def percentile(sorted_values: list[int], q: float) -> int:
    if not sorted_values:
        return 0
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def check(config) -> int:
    """Validates every record of every dataset and prints counts, token lengths, over-long records and truncation."""
    from tunesmith.data.encode import BOUND_FACTOR, MIN_BOUND, over_long, text_bound
    from tunesmith.data.loader import load_records
    from tunesmith.data.pipeline import encode_records, skip_over_long

    tokenizer, template, plugin = _setup(config)
    data_args, stage, encoding = config.data, config.method.stage, _encoding(config)
    media_dir = config.multimodal.media_dir
    seed = config.train.seed
    bound = text_bound(tokenizer, data_args.cutoff_len)
    import pyarrow.compute as pc

    print(f"stage {stage}, template {data_args.template or '(tokenizer chat template)'}, "
          f"cutoff_len {data_args.cutoff_len}")
    total = 0
    for name in [*(data_args.dataset or []), *(data_args.eval_dataset or [])]:
        records = load_records([name], data_args.dataset_dir, stage, max_samples=data_args.max_samples, seed=seed,
                               media_dir=media_dir)
        total += len(records)
        long = over_long(records, bound)
        note = f", {len(long)} over-long (records {', '.join(map(str, long[:5]))}{', ...' if len(long) > 5 else ''})" \
            if long else ""
        print(f"  {name}: {len(records)} records, all valid{note}")
    records = load_records(data_args.dataset, data_args.dataset_dir, stage, max_samples=data_args.max_samples,
                           mix_strategy=data_args.mix_strategy, interleave_probs=data_args.interleave_probs,
                           seed=seed, media_dir=media_dir)
    mixed = len(records)
    records, long = skip_over_long(records, encoding, bound, "data check")
    what = "tokenized in pieces, all text kept" if encoding == "pretrain" else "skipped, not trained"
    print(f"over-long: {len(long)} of {mixed} records hold more than {bound} characters (the larger of "
          f"{BOUND_FACTOR} x cutoff_len x the longest token's characters and {MIN_BOUND}): {what}")
    cut = encode_records(records, encoding, template, tokenizer, data_args, "encoding", bound=bound, plugin=plugin)
    first = ""
    if encoding != "pretrain":
        # untruncated lengths, in small batches: each batch's untruncated examples are held at once
        full_args = data_args.model_copy(update={"cutoff_len": 10**9, "packing": False,
                                                 "preprocessing_batch_size": 16})
        full = encode_records(records, encoding, template, tokenizer, full_args, "measuring lengths", bound=bound,
                              plugin=plugin)
        first = sequences(full[0])[0][0] + "_" if len(full) and sequences(full[0])[0][0] != "example" else ""
        lengths = sorted(n for ids in _columns(full, f"{first}input_ids") for n in pc.list_value_length(ids).to_pylist())
    trained = sum(pc.sum(pc.not_equal(pc.list_flatten(labels), IGNORE_INDEX).cast("int64")).as_py() or 0
                  for labels in _columns(cut, f"{first}labels"))
    if encoding == "pretrain":
        print(f"training mix: {mixed} records -> {len(cut)} packed blocks" if data_args.packing is not False else
              f"training mix: {mixed} records -> {len(cut)} examples")
    else:
        print(f"training mix: {mixed} records -> {len(cut)} examples ({mixed - len(cut)} dropped)")
    if encoding != "pretrain":
        truncated = sum(1 for length in lengths if length > data_args.cutoff_len)
        print(f"token lengths: p50 {percentile(lengths, 50)}, p90 {percentile(lengths, 90)}, "
              f"p99 {percentile(lengths, 99)}, max {lengths[-1] if lengths else 0}")
        print(f"truncated by cutoff_len={data_args.cutoff_len}: {truncated} of {len(lengths)} examples")
    print(f"trained tokens: {trained}")
    if len(cut) == 0:
        raise DataError(f"every example was dropped: nothing to train on with cutoff_len={data_args.cutoff_len}")
    return 0


def _encoded(config):
    from tunesmith.data.pipeline import encode_records, load_split_records

    tokenizer, template, plugin = _setup(config)
    train_records, _ = load_split_records(config.data, config.method.stage, config.train.seed,
                                          config.multimodal.media_dir)
    encoded = encode_records(train_records, _encoding(config), template, tokenizer, config.data, "encoding",
                             plugin=plugin)
    if len(encoded) == 0:
        raise DataError("every example was dropped during encoding: nothing to train on; see `tunesmith data check`")
    return tokenizer, encoded


def render(tokenizer, input_ids: list[int], labels: list[int]) -> str:
    """The example's text with the trained spans wrapped in ⟦ ⟧."""
    pieces, span, span_trained = [], [], None
    for token, label in zip(input_ids, labels):
        trained = label != IGNORE_INDEX
        if span and trained != span_trained:
            pieces.append((span_trained, tokenizer.decode(span)))
            span = []
        span.append(token)
        span_trained = trained
    if span:
        pieces.append((span_trained, tokenizer.decode(span)))
    text = "".join(f"{TRAINED_OPEN}{text}{TRAINED_CLOSE}" if trained else text for trained, text in pieces)
    return collapse_media(text)


# Qwen-VL's image and video pads, Gemma 3's soft token, InternVL's context token, LLaVA's image token, Qwen2-Audio's
# (and Qwen2.5-Omni's) audio token, Qwen2.5-Omni's image token
MEDIA_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<image_soft_token>", "<IMG_CONTEXT>", "<image>", "<|AUDIO|>",
                "<|IMAGE|>")
IMAGE_TOKENS = ("<|image_pad|>", "<image_soft_token>", "<IMG_CONTEXT>", "<image>", "<|IMAGE|>")


def collapse_media(text: str) -> str:
    """Runs of a medium's pad token shown as one marked span: <|image_pad|>×N."""
    import re

    for token in MEDIA_TOKENS:
        text = re.sub(f"(?:{re.escape(token)})+", lambda m, t=token: f"{t}\u00d7{len(m.group()) // len(t)}", text)
    return text


def media_spans(tokenizer, input_ids: list[int], paths: list[str], token: str | None = None,
                kind: str = "image") -> list[str]:
    """Where each image's (audio's) tokens sit: "image 0 (path): tokens 3-18 (16 <|image_pad|>)"; `token`: the
    medium's token (default: the image token of whichever family the ids hold). With Gemma 3's pan-and-scan an image
    and its crops are several runs, listed as "image run k"."""
    vocab = tokenizer.get_vocab()  # not convert_tokens_to_ids: another family's token would be the unk id
    token = token or next((t for t in IMAGE_TOKENS if vocab.get(t) in input_ids), IMAGE_TOKENS[0])
    pad = vocab.get(token)
    spans, start = [], None
    for position, token_id in enumerate([*input_ids, None]):
        if token_id == pad and start is None:
            start = position
        elif token_id != pad and start is not None:
            spans.append((start, position - 1))
            start = None
    if len(spans) > len(paths):  # crops: runs are not one per image
        return [f"{kind} run {i}: tokens {a}-{b} ({b - a + 1} {token})" for i, (a, b) in enumerate(spans)]
    return [f"{kind} {i} ({Path(paths[i]).name if i < len(paths) else '?'}): tokens {a}-{b} "
            f"({b - a + 1} {token})" for i, (a, b) in enumerate(spans)]


def preview(config, n: int = 3) -> int:
    tokenizer, encoded = _encoded(config)
    for index in range(min(n, len(encoded))):
        row = encoded[index]
        for name, input_ids, labels in sequences(row):
            trained = sum(1 for label in labels if label != IGNORE_INDEX)
            tag = f" (kto_tag {row['kto_tags']})" if name == "example" and "kto_tags" in row else ""
            label = "" if name == "example" else f" ({name})"
            print(f"--- example {index}{label}: {len(input_ids)} tokens, {trained} "
                  f"trained (marked {TRAINED_OPEN} {TRAINED_CLOSE}){tag}")
            print(render(tokenizer, input_ids, labels))
            paths = row.get("image_paths") or []
            for line in media_spans(tokenizer, input_ids, paths) if paths else []:
                print(line)
            audios = row.get("audio_paths") or []
            for line in media_spans(tokenizer, input_ids, audios, "<|AUDIO|>", "audio") if audios else []:
                print(line)
            videos = row.get("video_paths") or []
            for line in media_spans(tokenizer, input_ids, videos, "<|video_pad|>", "video") if videos else []:
                print(line)
            print(f"input_ids: {input_ids}")
            print(f"labels:    {labels}")
    return 0


def export(config, out: str) -> int:
    """Writes every encoded training example, in dataset order, as {"input_ids": [...], "labels": [...]} lines."""
    _, encoded = _encoded(config)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for row in encoded:
            record = {}
            for name, input_ids, labels in sequences(row):
                prefix = "" if name == "example" else f"{name}_"
                record[f"{prefix}input_ids"], record[f"{prefix}labels"] = input_ids, labels
            if "kto_tags" in row:
                record["kto_tag"] = row["kto_tags"]
            handle.write(json.dumps(record) + "\n")
    tmp.replace(path)
    print(f"{len(encoded)} examples written to {path}", file=sys.stderr)
    return 0
