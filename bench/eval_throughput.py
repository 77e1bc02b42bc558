"""Benchmark scoring throughput: tunesmith's last-position logits vs LLaMA-Factory-style full-sequence logits.

    python bench/eval_throughput.py                  # tiny model (temp folder) with LLaMA-2's 32000-token vocabulary
    python bench/eval_throughput.py --model /path/to/Qwen2.5-0.5B-Instruct --template qwen --batch-size 8

Both ways score the same encoded prompts (the bundled demo benchmark by default, or --task/--task-dir) and must
pick the same letters; the full-sequence way is LLaMA-Factory's Evaluator.batch_inference (right padding, logits of
every position, then the last real one). The gap grows with vocabulary size x prompt length (5-shot prompts).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "src" / "tunesmith" / "evaluate" / "demo_benchmark"


def full_sequence_probs(model, rows, choice_ids, pad_id):
    """LLaMA-Factory's way: right-padded batch, logits for every position, then each row's last real position."""
    import torch

    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    with torch.inference_mode():
        logits = model(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device)).logits
    lengths = mask.sum(-1)
    last = torch.stack([logits[i, lengths[i] - 1] for i in range(len(rows))]).float()
    return torch.softmax(last[:, choice_ids], dim=-1).cpu()


def timed(score, model, prompts, choice_ids, pad_id, batch_size, repeat):
    import torch

    best, picks = float("inf"), []
    for _ in range(repeat):
        started = time.perf_counter()
        picks = []
        for start in range(0, len(prompts), batch_size):
            picks += score(model, prompts[start: start + batch_size], choice_ids, pad_id).argmax(-1).tolist()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return best, picks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder (default: a tiny random model)")
    parser.add_argument("--vocab-size", type=int, default=32000,
                        help="output vocabulary of the default tiny model (the logits' width; Qwen2.5: 151936)")
    parser.add_argument("--template", default="chatml")
    parser.add_argument("--task", default="demo_en_test")
    parser.add_argument("--task-dir", default=str(DEMO))
    parser.add_argument("--n-shot", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from tunesmith.config.load import load_config
    from tunesmith.evaluate.benchmark import load_benchmark
    from tunesmith.evaluate.run import encode_questions
    from tunesmith.evaluate.scoring import choice_probs, letter_ids
    from tunesmith.infer.loader import load_for_inference

    model_dir = args.model
    if model_dir is None:
        from tunesmith.model.tiny import save_tiny_model

        model_dir = str(save_tiny_model(Path(tempfile.mkdtemp()) / "tiny"))
    config = load_config(None, {"model_name_or_path": model_dir, "template": args.template})
    tokenizer, template, model = load_for_inference(config)
    if args.model is None:
        # the prompts use the tiny tokenizer's 1024 ids; the extra rows only widen the output head, as a real vocab does
        model.resize_token_embeddings(args.vocab_size, mean_resizing=False)
    bench = load_benchmark(args.task_dir, args.task, args.n_shot)
    prefix, choice_ids = letter_ids(template, tokenizer)
    items = encode_questions(bench, template, tokenizer, "en", args.n_shot, 42, prefix)
    prompts = sorted((ids for _, _, ids in items), key=len, reverse=True)
    pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
    ours, ours_picks = timed(choice_probs, model, prompts, choice_ids, pad_id, args.batch_size, args.repeat)
    full, full_picks = timed(full_sequence_probs, model, prompts, choice_ids, pad_id, args.batch_size, args.repeat)
    tokens = sum(len(p) for p in prompts)
    vocab = model.get_output_embeddings().weight.shape[0]
    print(f"{len(prompts)} prompts, {tokens / len(prompts):.0f} tokens on average, vocab {vocab}, "
          f"batch {args.batch_size}, device {model.device}")
    print(f"  last-position logits (tunesmith):       {len(prompts) / ours:8.1f} questions/s")
    print(f"  full-sequence logits (LLaMA-Factory):   {len(prompts) / full:8.1f} questions/s  "
          f"({full / ours:.2f}x the time)")
    agree = sum(a == b for a, b in zip(ours_picks, full_picks, strict=True))
    print(f"  same letter picked: {agree}/{len(prompts)}")


if __name__ == "__main__":
    main()
