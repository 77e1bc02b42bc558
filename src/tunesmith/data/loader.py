"""`load_records`: dataset names -> one mixed `datasets.Dataset` of canonical records."""

from __future__ import annotations

from tunesmith.errors import DataError


def mix(datasets: list, strategy: str, probs: list[float] | None, seed: int):
    """concat, interleave_under (stop at the first exhausted) or interleave_over (until all are exhausted)."""
    from datasets import concatenate_datasets, interleave_datasets

    if len(datasets) == 1:
        return datasets[0]
    if strategy == "concat":
        return concatenate_datasets(datasets)
    if probs is not None and len(probs) != len(datasets):
        raise DataError(f"interleave_probs has {len(probs)} values for {len(datasets)} datasets")
    stopping = "first_exhausted" if strategy == "interleave_under" else "all_exhausted"
    return interleave_datasets(datasets, probabilities=probs, seed=seed, stopping_strategy=stopping)


def load_records(names, dataset_dir, stage: str, *, max_samples=None, mix_strategy="concat", interleave_probs=None,
                 seed: int = 42, num_proc=None, cache_dir=None):
    """Resolves, loads, converts and mixes datasets; the result has the canonical record columns."""
    from tunesmith.data.files import load_spec
    from tunesmith.data.formats import convert
    from tunesmith.data.registry import resolve_datasets

    specs = resolve_datasets(names, dataset_dir)
    if not specs:
        raise DataError("no dataset given: set `dataset` to names from dataset_info.json or file paths")
    converted = []
    for spec in specs:
        rows = load_spec(spec, max_samples=max_samples, seed=seed, cache_dir=cache_dir)
        records = convert(rows, spec, stage, num_proc=num_proc)
        if len(records) == 0:
            raise DataError(f"dataset '{spec.name}' ({spec.location}): no usable records for stage {stage}")
        converted.append(records)
    return mix(converted, mix_strategy, interleave_probs, seed)
