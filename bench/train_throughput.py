"""Benchmark training throughput: tunesmith vs LLaMA-Factory on one config, alternating, as subprocesses.

    python bench/train_throughput.py --data /work/shared/lf-demo-data                      # tunesmith only
    python bench/train_throughput.py --data /work/shared/lf-demo-data --lf-venv /work/venvs/lf --repeat 2
    python bench/train_throughput.py ... --method full          # lora (default), full or qlora
    python bench/train_throughput.py ... --ts-extra neat_packing=false --lf-extra neat_packing=true

The configuration is issue 15's: a 39M-parameter llama (hidden 512, 8 layers, vocab 16000, random init, built here
with tunesmith.model.tiny.save_tiny_model), LoRA r8 on all linear layers, identity + alpaca_en_demo, qwen template,
cutoff 512, batch 4, 30 steps, seed 42, held-out 10%.

How each number is measured, the same way for both tools (each run is its own process, in its own venv):
- non-padding tokens: Trainer.training_step is wrapped in the worker and counts the real tokens of every batch it
  trains on: a 2D attention_mask -> its non-zero entries; LF's 4D neat-packing mask -> the query rows whose diagonal
  is attended; no attention_mask (tunesmith's padding-free packed rows) -> all tokens except each row's trailing
  padding segment (the last position_ids segment when all its labels are -100).
- runtime: the Trainer's own train_runtime (trainer.train() wall time, model load and data encoding excluded).
- tokens/s = non-padding tokens / train_runtime; tokens/CPU-s = the same over the CPU seconds (user + system, all
  threads) the worker spent in trainer.train(): steadier than wall time when other jobs share the machine.
- held-out loss: val_size 0.1 is done here, once: the records are shuffled (seed 42) and split 90/10 into two JSON
  files, so packed and unpacked runs hold out the same examples. Each trained output is scored by the same
  evaluator (this process, tunesmith's qwen encoding, unpacked): label-token-weighted mean cross-entropy.
- peak RSS: the worker's own high-water mark at exit (VmHWM in /proc/self/status; not ru_maxrss, which Linux
  carries over from the forking parent, this bench process, whose evaluator has loaded models by then). The JSON
  result also has it as of trainer.train()'s start: peak_before_train_gb, what imports, the model and the data took
  before any training step.
- useful FLOP/s: 6N (full) or 4N + 6 x adapter params (LoRA) per non-padding token, N = parameters without the
  input embedding (the LM head counts: it is a matmul per token), as a share of a measured fp32 matmul peak.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL_SIZES = {
    "hidden_size": 512,
    "num_layers": 8,
    "num_heads": 8,
    "num_kv_heads": 4,
    "intermediate_size": 1376,
    "vocab_size": 16000,
}


def real_tokens(inputs) -> int:
    """Non-padding tokens of one training batch (see the module docstring)."""
    mask = inputs.get("attention_mask")
    if mask is not None and mask.dim() == 4:  # LF neat_packing: float 0 = attend, or bool True = attend
        diagonal = mask.diagonal(dim1=-2, dim2=-1)[:, 0]
        return int((diagonal == 0).sum() if mask.is_floating_point() else diagonal.sum())
    if mask is not None:
        return int((mask != 0).sum())
    positions, labels = inputs["position_ids"], inputs["labels"]
    count = 0
    for row in range(positions.size(0)):
        starts = (positions[row] == 0).nonzero().flatten().tolist()
        last = starts[-1] if starts else 0
        padded = last > 0 and bool((labels[row, last:] == -100).all())
        count += last if padded else positions.size(1)
    return count


def peak_rss_gb() -> float:
    """This process's peak resident memory: VmHWM (its own address space's high-water mark), ru_maxrss elsewhere."""
    import resource

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def worker(tool: str, config_path: str, result_path: str) -> None:
    """Runs one training in this process (tunesmith or LF, whichever venv runs it) and writes its numbers."""
    import resource

    import transformers

    counter = {"tokens": 0, "steps": 0}
    original = transformers.Trainer.training_step

    def training_step(self, model, inputs, *args, **kwargs):
        counter["tokens"] += real_tokens(inputs)
        counter["steps"] += 1
        return original(self, model, inputs, *args, **kwargs)

    transformers.Trainer.training_step = training_step
    original_train = transformers.Trainer.train

    def train(self, *args, **kwargs):  # CPU seconds of trainer.train(): steadier than wall time on a shared box
        before = resource.getrusage(resource.RUSAGE_SELF)
        counter["peak_before_train_gb"] = peak_rss_gb()  # imports, model, data: before any step
        try:
            return original_train(self, *args, **kwargs)
        finally:
            after = resource.getrusage(resource.RUSAGE_SELF)
            counter["cpu_s"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime

    transformers.Trainer.train = train
    config = json.loads(Path(config_path).read_text())
    if config.pop("bench_plain_logits", False):  # bench-only switch: measure the label-only logits lever
        import tunesmith.data.collate

        tunesmith.data.collate.add_label_logits = lambda batch: None
    if config.pop("bench_peft_lora", False):  # bench-only switch: peft's own LoRA forward (no merged-weight matmul)
        import tunesmith.model.fast_lora

        tunesmith.model.fast_lora.use_fast_lora = lambda model: 0
    if config.pop("bench_plain_head", False):  # bench-only switch: lm_head + cross_entropy unfused
        import tunesmith.model.fused_head

        tunesmith.model.fused_head.use_fused_head = lambda model: False
    if tool == "tunesmith":
        from tunesmith.config.load import build_config
        from tunesmith.train.run import run_training

        metrics = run_training(build_config(config))
    else:
        import types

        # LF 0.9.5's mm_plugin imports torchaudio at the top; text-only training never calls it, and the venv has
        # it removed (its CUDA build breaks transformers' import), so an empty stand-in module is enough.
        sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
        from llamafactory.train.tuner import run_exp

        try:
            run_exp(config)
        except AttributeError as exc:  # LF 0.9.5 + transformers 5.6: its model card fails after a full fine-tune,
            if "create_or_update_model_card" not in str(exc):  # when training and saving are done
                raise
        metrics = json.loads((Path(config["output_dir"]) / "train_results.json").read_text())
    result = {
        "tokens": counter["tokens"],
        "steps": counter["steps"],
        "train_runtime": float(metrics["train_runtime"]),
        "cpu_s": counter.get("cpu_s"),
        "peak_rss_gb": peak_rss_gb(),
        "peak_before_train_gb": counter.get("peak_before_train_gb"),
        "train_loss": metrics.get("train_loss"),
    }
    Path(result_path).write_text(json.dumps(result))


def prepare(work: Path, data_dir: Path, seed: int) -> Path:
    """The 39M model (built once) and the 90/10 split of identity + alpaca_en_demo in a dataset folder."""
    from tunesmith.model.tiny import ensure_tiny_model

    model = ensure_tiny_model(work / "llama-39m", "llama", **MODEL_SIZES)
    records = []
    for name in ("identity.json", "alpaca_en_demo.json"):
        records += json.loads((data_dir / name).read_text(encoding="utf-8"))
    random.Random(seed).shuffle(records)
    held = len(records) // 10
    folder = work / "data"
    folder.mkdir(exist_ok=True)
    (folder / "bench_eval.json").write_text(json.dumps(records[:held], ensure_ascii=False))
    (folder / "bench_train.json").write_text(json.dumps(records[held:], ensure_ascii=False))
    info = {name: {"file_name": f"{name}.json"} for name in ("bench_train", "bench_eval")}
    (folder / "dataset_info.json").write_text(json.dumps(info))
    return model


def base_config(method: str, model: Path, data: Path, out: Path, steps: int) -> dict:
    config = {
        "model_name_or_path": str(model),
        "stage": "sft",
        "do_train": True,
        "template": "qwen",
        "dataset": "bench_train",
        "dataset_dir": str(data),
        "cutoff_len": 512,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "max_steps": steps,
        "seed": 42,
        "learning_rate": 1e-4,
        "logging_steps": 10,
        "save_strategy": "no",
        "report_to": "none",
        "output_dir": str(out),
        "overwrite_output_dir": True,
        "finetuning_type": "full" if method == "full" else "lora",
    }
    if method != "full":
        config.update(lora_rank=8, lora_target="all")
    if method == "qlora":
        config.update(quantization_bit=4)
    return config


def parse_extra(items: list[str]) -> dict:
    import yaml

    return {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in items)}


def held_out_loss(model_dir: Path, out: Path, method: str, data: Path) -> float:
    """Label-token-weighted mean cross-entropy of a trained output on bench_eval, unpacked, fp32."""
    import torch
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq

    from tunesmith.config.load import build_config
    from tunesmith.data.pipeline import build_datasets
    from tunesmith.model.load import load_tokenizer

    config = build_config(
        {
            "model_name_or_path": str(model_dir),
            "stage": "sft",
            "template": "qwen",
            "dataset": "bench_eval",
            "dataset_dir": str(data),
            "cutoff_len": 512,
            "output_dir": "x",
        }
    )
    tokenizer = load_tokenizer(config.model)
    encoded = build_datasets(config, tokenizer, encoding="supervised").train
    if method == "full":
        model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    else:
        from peft import PeftModel

        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), out)
    model.eval()
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    collate = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True)
    total = count = 0.0
    rows = [{k: encoded[i][k] for k in ("input_ids", "attention_mask", "labels")} for i in range(len(encoded))]
    rows.sort(key=lambda row: len(row["input_ids"]))  # batches of similar lengths: little padding to score
    with torch.inference_mode():
        for start in range(0, len(rows), 8):
            batch = collate(rows[start : start + 8])
            labels = batch["labels"][:, 1:]
            keep = labels != -100  # the LM head only where a label is: same loss, less work
            hidden = base.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            logits = base.get_output_embeddings()(hidden[:, :-1][keep]).float()
            total += float(torch.nn.functional.cross_entropy(logits, labels[keep], reduction="sum"))
            count += int(keep.sum())
    return total / count


def matmul_peak() -> float:
    """Measured fp32 matmul FLOP/s of this process's threads (best of a few 1024x1024 products)."""
    import time

    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(10):
            a @ b
        best = min(best, time.perf_counter() - started)
    return 10 * 2 * 1024**3 / best


def flops_per_token(model_dir: Path, method: str) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    n = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    if method == "full":
        return 6.0 * n
    cfg = model.config
    h, i, kv = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads),
    )
    # r8 adapters on q,k,v,o,gate,up,down: r * (in + out) each
    adapters = cfg.num_hidden_layers * 8 * ((h + h) + 2 * (h + kv) + (h + h) + 2 * (h + i) + (i + h))
    return 4.0 * n + 6.0 * adapters


def run_one(tool: str, python: str, config: dict, work: Path, env: dict) -> dict:
    config_path, result_path = work / f"{tool}-config.json", work / f"{tool}-result.json"
    config_path.write_text(json.dumps(config))
    result_path.unlink(missing_ok=True)
    log = work / f"{tool}.log"
    with log.open("w") as handle:
        code = subprocess.call(
            [python, __file__, "--worker", tool, str(config_path), str(result_path)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
        )
    if code != 0:
        sys.exit(f"{tool} run failed (exit {code}); see {log}:\n" + log.read_text()[-3000:])
    return json.loads(result_path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        default=str(ROOT.parent / "shared" / "lf-demo-data"),
        help="folder with identity.json and alpaca_en_demo.json",
    )
    parser.add_argument("--lf-venv", help="a LLaMA-Factory venv (its bin/python runs the LF side)")
    parser.add_argument("--method", choices=("lora", "full", "qlora"), default="lora")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=1, help="alternating rounds; medians are printed")
    parser.add_argument("--work", help="folder for the model, data and outputs (default: a temp folder)")
    parser.add_argument(
        "--ts-extra",
        nargs="*",
        default=[],
        help="key=value added to tunesmith's config (bench_plain_logits=true: logits everywhere; bench_peft_lora=true: peft LoRA forward; bench_plain_head=true: head and loss unfused)",
    )
    parser.add_argument("--lf-extra", nargs="*", default=[], help="key=value added to LF's config")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(*args.worker)

    work = Path(args.work or tempfile.mkdtemp(prefix="train-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    model = prepare(work, Path(args.data), seed=42)
    data = work / "data"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "DISABLE_VERSION_CHECK": "1",
        "PYTHONPATH": str(ROOT / "src"),
    }
    tools = [("tunesmith", sys.executable, args.ts_extra)]
    if args.lf_venv:
        lf_env_python = str(Path(args.lf_venv) / "bin" / "python")
        tools.append(("lf", lf_env_python, args.lf_extra))
    results: dict[str, list[dict]] = {tool: [] for tool, _, _ in tools}
    for round_ in range(args.repeat):
        for tool, python, extra in tools if round_ % 2 == 0 else tools[::-1]:
            out = work / f"out-{tool}"
            config = {**base_config(args.method, model, data, out, args.steps), **parse_extra(extra)}
            tool_env = env if tool == "tunesmith" else {k: v for k, v in env.items() if k != "PYTHONPATH"}
            result = run_one(tool, python, config, work, tool_env)
            result["eval_loss"] = held_out_loss(model, out, args.method, data)
            result["tokens_per_s"] = result["tokens"] / result["train_runtime"]
            result["tokens_per_cpu_s"] = result["tokens"] / result["cpu_s"]
            results[tool].append(result)
            print(f"round {round_ + 1} {tool}: {json.dumps(result)}", flush=True)

    peak, per_token = matmul_peak(), flops_per_token(model, args.method)
    print(
        f"\nmethod {args.method}, {args.steps} steps, medians of {args.repeat} run(s); fp32 matmul peak "
        f"{peak / 1e9:.1f} GFLOP/s; {per_token / 1e6:.1f} MFLOP per token"
    )
    print(
        f"{'tool':<10} {'tokens':>8} {'runtime s':>10} {'tokens/s':>9} {'eval loss':>10} {'peak RSS GB':>12} "
        f"{'% of peak':>9} {'tokens/CPU-s':>12}"
    )
    medians = {}
    for tool, runs in results.items():
        med = {
            key: statistics.median(run[key] for run in runs)
            for key in ("tokens", "train_runtime", "tokens_per_s", "tokens_per_cpu_s", "eval_loss", "peak_rss_gb")
        }
        medians[tool] = med
        share = 100 * med["tokens_per_s"] * per_token / peak
        print(
            f"{tool:<10} {med['tokens']:>8.0f} {med['train_runtime']:>10.1f} {med['tokens_per_s']:>9.0f} "
            f"{med['eval_loss']:>10.4f} {med['peak_rss_gb']:>12.2f} {share:>8.1f}% {med['tokens_per_cpu_s']:>12.0f}"
        )
    if "lf" in medians:
        ts, lf = medians["tunesmith"], medians["lf"]
        print(
            f"ratio tunesmith/LF: tokens/s {ts['tokens_per_s'] / lf['tokens_per_s']:.2f}x, tokens/CPU-s "
            f"{ts['tokens_per_cpu_s'] / lf['tokens_per_cpu_s']:.2f}x, eval loss "
            f"{ts['eval_loss'] / lf['eval_loss']:.3f}, peak RSS {ts['peak_rss_gb'] / lf['peak_rss_gb']:.2f}"
        )


if __name__ == "__main__":
    main()
