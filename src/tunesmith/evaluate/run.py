"""`tunesmith eval`: scores a model on a multiple-choice benchmark (or runs predict); the composition root."""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

from tunesmith.errors import ConfigError

log = logging.getLogger(__name__)


def run_eval(config) -> int:
    """Benchmark when `task` is set; generation metrics when `do_predict` is; prints the scores."""
    from tunesmith.config.load import require

    if config.eval.task and config.train.do_predict:
        raise ConfigError(f"{config.source}: set either `task` (benchmark) or `do_predict` (generation metrics), "
                          "not both; run `tunesmith eval` once for each")
    if config.train.do_predict:
        from tunesmith.evaluate.predict import run_predict

        return run_predict(config)
    if not config.eval.task:
        raise ConfigError(f"{config.source}: `tunesmith eval` needs `task` (a benchmark split such as mmlu_test, "
                          "read from `task_dir`), or `do_predict: true` with `predict_with_generate: true` for "
                          "BLEU/ROUGE on `eval_dataset`")
    require(config, "model_name_or_path", job="eval")
    save_dir = Path(config.eval.save_dir) if config.eval.save_dir else None
    if save_dir is not None and save_dir.exists():
        raise ConfigError(f"{config.source}: save_dir {save_dir} already exists; choose a new folder (results are "
                          "never overwritten)")
    evaluate_benchmark(config, save_dir)
    return 0


def encode_questions(benchmark, template, tokenizer, lang: str, n_shot: int, seed: int, answer_prefix: list[int]):
    """[(subject key, question, prompt ids)] for every question; few-shot examples are drawn per question from a
    generator seeded per subject, so the prompts do not depend on the batch size or on other subjects."""
    from tunesmith.evaluate.prompts import build_messages, pick_shots

    items = []
    for subject in benchmark.subjects:
        rng = random.Random(f"{seed}:{subject.key}")
        for question in subject.questions:
            messages = build_messages(question, pick_shots(subject.dev, n_shot, rng), subject.name, lang)
            prompt_ids, _ = template.encode_oneturn(tokenizer, messages)
            items.append((subject.key, question, prompt_ids + answer_prefix))
    return items


def predict_letters(model, items, choice_ids: list[int], pad_id: int, batch_size: int, desc: str) -> list[list[float]]:
    """The four letter probabilities of every item, in item order; batches hold prompts of similar length."""
    from tqdm.auto import tqdm

    from tunesmith.evaluate.scoring import choice_probs

    order = sorted(range(len(items)), key=lambda i: -len(items[i][2]))
    probs: list[list[float] | None] = [None] * len(items)
    with tqdm(total=len(items), desc=desc, unit="q") as bar:
        for start in range(0, len(order), batch_size):
            chunk = order[start: start + batch_size]
            result = choice_probs(model, [items[i][2] for i in chunk], choice_ids, pad_id)
            for i, row in zip(chunk, result.tolist(), strict=True):
                probs[i] = row
            bar.update(len(chunk))
    return probs


def evaluate_benchmark(config, save_dir: Path | None) -> dict:
    """Loads the benchmark (first, so data errors come before the model loads), scores it and reports."""
    from tunesmith.evaluate import report
    from tunesmith.evaluate.benchmark import CHOICES, load_benchmark
    from tunesmith.evaluate.scoring import letter_ids
    from tunesmith.infer.loader import load_for_inference
    from tunesmith.model.load import pad_id

    args = config.eval
    benchmark = load_benchmark(args.task_dir, args.task, args.n_shot)
    tokenizer, template, model = load_for_inference(config, job="eval")
    answer_prefix, choice_ids = letter_ids(template, tokenizer)
    seed = config.train.seed
    items = encode_questions(benchmark, template, tokenizer, args.lang, args.n_shot, seed, answer_prefix)
    started = time.perf_counter()
    probs = predict_letters(model, items, choice_ids, pad_id(tokenizer), args.batch_size, desc=args.task)
    seconds = time.perf_counter() - started

    predictions: dict[str, list[dict]] = {subject.key: [] for subject in benchmark.subjects}
    for (key, question, prompt_ids), row in zip(items, probs, strict=True):
        best = max(range(len(CHOICES)), key=lambda k: row[k])
        predictions[key].append({"id": question.id, "prediction": CHOICES[best], "answer": question.answer,
                                 "probs": {ch: round(p, 6) for ch, p in zip(CHOICES, row, strict=True)},
                                 "prompt_tokens": len(prompt_ids)})
    scores = report.accuracies(benchmark, predictions)
    heading = (f"{args.task} ({benchmark.folder}), {args.lang}, {args.n_shot}-shot: {len(items)} questions in "
               f"{seconds:.1f} s")
    text = report.table(benchmark, predictions, scores, heading)
    print(text, end="")
    if save_dir is not None:
        settings = {"task": args.task, "task_dir": str(args.task_dir), "lang": args.lang, "n_shot": args.n_shot,
                    "seed": seed, "model_name_or_path": config.model.model_name_or_path,
                    "adapter_name_or_path": config.model.adapter_name_or_path, "template": config.data.template}
        report.write_results(save_dir, benchmark, predictions, scores, text, settings)
        print(f"results written to {save_dir}")
    return {"scores": scores, "predictions": predictions, "prompts": [ids for _, _, ids in items]}
