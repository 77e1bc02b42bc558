"""`tunesmith eval` with do_predict + predict_with_generate: generates answers to an sft dataset's prompts and writes
generated_predictions.jsonl and BLEU-4 / ROUGE-1/2/L, as LLaMA-Factory's predict flow does."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tunesmith.errors import ConfigError

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
        raise ConfigError(f"{config.source}: {folder / PREDICTIONS} already exists; set overwrite_output_dir: true "
                          "to replace it, or choose another output_dir")
    return folder


def encode_prompts(config, tokenizer, template) -> dict:
    """Prompt ids and reference answer ids of every record of eval_dataset (or dataset), cut to cutoff_len."""
    from tunesmith.data.encode import encode_unsupervised
    from tunesmith.data.loader import load_records

    data = config.data
    records = load_records(data.eval_dataset or data.dataset, data.dataset_dir, "sft", max_samples=data.max_samples,
                           seed=config.train.seed, num_proc=data.preprocessing_num_workers,
                           cache_dir=config.model.cache_dir)
    if "audios" in records.column_names and any(records["audios"]):  # not silently answered from the text alone
        raise ConfigError(f"{config.source}: predict with audios in the data is not supported yet (the answers would "
                          "come from the text alone); chat with the model (`tunesmith chat`, `/audio PATH`) instead")
    encoded = encode_unsupervised(records.to_dict(), template, tokenizer, data.cutoff_len)
    if not encoded["input_ids"]:
        raise ConfigError(f"{config.source}: none of the {len(records)} records has a prompt to answer")
    return encoded


def generate(model, tokenizer, prompts: list[list[int]], batch_size: int, kwargs: dict,
             skip_special_tokens: bool) -> list[str]:
    """Decoded answers to each prompt, batched with left padding; kwargs: infer.loader.generation_kwargs."""
    import torch
    from tqdm.auto import tqdm

    from tunesmith.evaluate.scoring import left_pad

    pad_id = kwargs["pad_token_id"]
    answers = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="predict", unit="batch"):
        input_ids, attention_mask, _ = left_pad(prompts[start: start + batch_size], pad_id)
        with torch.inference_mode():
            output = model.generate(input_ids.to(model.device), attention_mask=attention_mask.to(model.device),
                                    **kwargs)
        for row in output[:, input_ids.shape[1]:].tolist():
            while row and row[-1] == pad_id:
                row.pop()  # generation pads finished rows; the stop token itself is dropped by decode
            answers.append(tokenizer.decode(row, skip_special_tokens=skip_special_tokens))
    return answers


def run_predict(config) -> int:
    """Generates, writes generated_predictions.jsonl (prompt, predict, label) and predict_results.json."""
    import transformers

    from tunesmith.config.load import require
    from tunesmith.evaluate.metrics import corpus_similarity, require_packages
    from tunesmith.infer.loader import generation_kwargs, load_for_inference

    if not config.train.predict_with_generate:
        raise ConfigError(f"{config.source}: do_predict needs `predict_with_generate: true` (answers are generated "
                          "and scored with BLEU/ROUGE)")
    require(config, "model_name_or_path", job="eval")
    if not (config.data.eval_dataset or config.data.dataset):
        raise ConfigError(f"{config.source}: predict needs `eval_dataset` (or `dataset`): the prompts to answer")
    folder = output_folder(config)
    require_packages()  # a missing metrics package fails before the model loads
    tokenizer, template, model = load_for_inference(config, job="eval")
    encoded = encode_prompts(config, tokenizer, template)
    transformers.set_seed(config.train.seed)
    started = time.perf_counter()
    # predictions are compared with references: greedy (reproducible) unless the config sets do_sample
    kwargs = generation_kwargs(config.generation, tokenizer, template, greedy="do_sample" not in config.given)
    predictions = generate(model, tokenizer, encoded["input_ids"], config.train.per_device_eval_batch_size, kwargs,
                           config.generation.skip_special_tokens)
    seconds = time.perf_counter() - started
    labels = [tokenizer.decode(ids, skip_special_tokens=True) for ids in encoded["labels"]]
    prompts = [tokenizer.decode(ids, skip_special_tokens=False) for ids in encoded["input_ids"]]
    scores = corpus_similarity(predictions, labels)
    results = {**{f"predict_{key}": round(value, 4) for key, value in scores.items()},
               "predict_samples": len(predictions),
               "predict_runtime": round(seconds, 4), "predict_samples_per_second": round(len(predictions) / seconds, 3)}
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / PREDICTIONS).open("w", encoding="utf-8") as file:
        for prompt, predict, label in zip(prompts, predictions, labels, strict=True):
            file.write(json.dumps({"prompt": prompt, "predict": predict, "label": label}, ensure_ascii=False) + "\n")
    (folder / RESULTS).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    for key, value in results.items():
        print(f"  {key} = {value}")
    print(f"predictions written to {folder / PREDICTIONS}")
    return 0
