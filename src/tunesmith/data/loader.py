"""`load_records`: dataset names -> one mixed `datasets.Dataset` of canonical records for a stage."""

from __future__ import annotations

from tunesmith.errors import DataError

MIX_STRATEGIES = {"concat": None, "interleave_under": "first_exhausted", "interleave_over": "all_exhausted"}


def check_mix(strategy: str, probs: list[float] | None, count: int) -> None:
    """The mix strategy is known and the probabilities fit it: one per dataset, none negative, summing to 1."""
    if strategy not in MIX_STRATEGIES:
        raise DataError(f"mix_strategy '{strategy}' is unknown; allowed: {', '.join(MIX_STRATEGIES)}")
    if probs is None:
        return
    if strategy == "concat":
        raise DataError("interleave_probs only applies to mix_strategy interleave_under or interleave_over; "
                        "set one of those, or remove interleave_probs")
    if len(probs) != count:
        raise DataError(f"interleave_probs has {len(probs)} values for {count} datasets; give one per dataset, "
                        "in the order of `dataset`")
    if any(p < 0 for p in probs) or abs(sum(probs) - 1.0) > 1e-6:
        raise DataError(f"interleave_probs {list(probs)} must be non-negative and sum to 1 (they sum to "
                        f"{sum(probs):g})")
    if strategy == "interleave_over" and 0 in probs:
        raise DataError("interleave_over samples until every dataset is used up, so no interleave_probs value may "
                        f"be 0 (got {list(probs)}); use interleave_under or drop that dataset")


def mix(datasets: list, strategy: str = "concat", probs: list[float] | None = None, seed: int = 42):
    """concat, interleave_under (stop when the first dataset runs out) or interleave_over (until all have)."""
    from datasets import concatenate_datasets, interleave_datasets

    check_mix(strategy, probs, len(datasets))
    if len(datasets) == 1:
        return datasets[0]
    if strategy == "concat":
        return concatenate_datasets(datasets)
    return interleave_datasets(datasets, probabilities=probs, seed=seed, stopping_strategy=MIX_STRATEGIES[strategy])


def with_images_column(parts: list) -> list:
    """Text datasets mixed with image (audio, video) datasets get an empty `images` (`audios`, `videos`) column, so
    their schemas match."""
    from tunesmith.data.audio import AUDIOS
    from tunesmith.data.formats import record_features
    from tunesmith.data.media import IMAGES
    from tunesmith.data.video import VIDEOS

    media = [column for column in (IMAGES, AUDIOS, VIDEOS) if any(column in part.column_names for part in parts)]
    if all(column in part.column_names for part in parts for column in media):
        return parts
    features = record_features(images=IMAGES in media, audios=AUDIOS in media, videos=VIDEOS in media)
    out = []
    for part in parts:
        for column in media:
            if column not in part.column_names:
                part = part.add_column(column, [[] for _ in range(len(part))])
        out.append(part.cast(features) if part.features != features else part)
    return out


def load_records(names: list[str] | str, dataset_dir: str, stage: str, *, max_samples: int | None = None,
                 mix_strategy: str = "concat", interleave_probs: list[float] | None = None, seed: int = 42,
                 num_proc: int | None = None, cache_dir: str | None = None, media_dir: str | None = None):
    """Resolves, loads, samples (num_samples, then max_samples per dataset), converts and mixes the named datasets;
    returns a `datasets.Dataset` whose columns are the canonical record's (plus `images` when a dataset maps
    images: paths relative to media_dir, which defaults to dataset_dir as in LLaMA-Factory)."""
    from tunesmith.data.files import check_available, load_rows, sample
    from tunesmith.data.formats import check_stage, convert
    from tunesmith.data.registry import resolve_datasets

    specs = resolve_datasets(names, dataset_dir)
    if not specs:
        raise DataError("no dataset given: set `dataset` to names from dataset_info.json or to file paths")
    check_mix(mix_strategy, interleave_probs, len(specs))
    for spec in specs:  # fail on a dataset that cannot feed this stage before reading any file
        check_stage(spec, stage)
    for spec in specs:  # then on one that is missing or offline
        check_available(spec)
    parts = []
    for spec in specs:
        rows, row_ids = sample(load_rows(spec, cache_dir), spec, max_samples, seed)
        parts.append(convert(rows, spec, stage, row_ids=row_ids, num_proc=num_proc,
                             media_dir=media_dir if media_dir is not None else dataset_dir))
    records = mix(with_images_column(parts), mix_strategy, interleave_probs, seed)
    if len(records) == 0:
        raise DataError(f"the mix of {', '.join(s.name for s in specs)} ({mix_strategy}) holds no records")
    return records
