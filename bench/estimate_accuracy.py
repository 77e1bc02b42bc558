"""How close `tunesmith estimate`'s peak training memory is to the measured peak RSS growth of real CPU runs.

Each case runs in a fresh process: it encodes the data, records RSS, then runs `tunesmith train`'s own code
(run_training, a few steps) and reads the process's peak RSS (getrusage ru_maxrss). Growth = peak - RSS before the
model loads. Models: the tiny llama (hidden 64, 2 layers) and a ~40M one (hidden 512, 8 layers, vocab 16,000).

    .venv/bin/python bench/estimate_accuracy.py            # every case, ~5-10 min on 2 busy cores
    .venv/bin/python bench/estimate_accuracy.py tiny lora  # one case
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

MODELS = {
    "tiny": {},
    "40m": {
        "hidden_size": 512,
        "num_layers": 8,
        "num_heads": 8,
        "num_kv_heads": 4,
        "intermediate_size": 1376,
        "vocab_size": 16000,
    },
}
METHODS = {
    "lora": {"finetuning_type": "lora"},
    "full": {"finetuning_type": "full"},
    "qlora": {"finetuning_type": "lora", "quantization_bit": 4},
}
BATCH = {"tiny": 16, "40m": 4}  # micro-batches of 512 tokens: activations dominate the tiny model's memory
WORDS = [
    "the",
    "model",
    "reads",
    "one",
    "token",
    "at",
    "a",
    "time",
    "and",
    "learns",
    "to",
    "predict",
    "the",
    "next",
    "one",
    "from",
    "the",
    "data",
    "we",
    "give",
    "it",
]


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(model: str, method: str, root: Path) -> dict:
    import gc

    from tunesmith.config.load import build_config
    from tunesmith.data.pipeline import build_datasets
    from tunesmith.model.load import load_tokenizer
    from tunesmith.model.memory import build
    from tunesmith.model.tiny import ensure_tiny_model
    from tunesmith.train.run import run_training

    path = ensure_tiny_model(root / f"model-{model}", "llama", **MODELS[model])
    data = root / "long.json"
    if not data.exists():  # answers long enough to fill cutoff_len: every micro-batch is 512 tokens
        rows = [
            {
                "instruction": f"Write about item {i}.",
                "output": " ".join(WORDS[(i + j) % len(WORDS)] for j in range(700)),
            }
            for i in range(64)
        ]
        data.write_text(json.dumps(rows))
        (root / "dataset_info.json").write_text(json.dumps({"long": {"file_name": "long.json"}}))
    values = {
        "model_name_or_path": str(path),
        "dataset": "long",
        "dataset_dir": str(root),
        "template": "chatml",
        "cutoff_len": 512,
        "per_device_train_batch_size": BATCH[model],
        "max_steps": 3,
        "learning_rate": 1e-4,
        "output_dir": str(root / f"out-{model}-{method}"),
        "overwrite_output_dir": True,
        "report_to": "none",
        "save_strategy": "no",
        "logging_steps": 1,
        **METHODS[method],
    }
    config = build_config(values)
    dataset = build_datasets(config, load_tokenizer(config.model), encoding="supervised").train  # cached for the run
    est = build(config, dataset)
    # what run_training imports counts as the process, not as the run: import it all before the baseline
    import bitsandbytes  # noqa: F401
    import peft  # noqa: F401
    import trl  # noqa: F401
    from transformers import Seq2SeqTrainer  # noqa: F401

    gc.collect()
    before = _rss()
    run_training(config)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "model": model,
        "method": method,
        "estimate": est.peak,
        "measured": peak - before,
        "weights": est.weights,
        "optimizer": est.optimizer,
        "gradients": est.gradients,
        "activations": est.activations,
        "parameters": est.shape.parameters,
        "trainable": est.shape.trainable,
    }


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--child":
        print("RESULT " + json.dumps(child(argv[1], argv[2], Path(argv[3]))))
        return 0
    cases = [(m, k) for m in MODELS for k in METHODS]
    if argv:
        cases = [(argv[0], argv[1])]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1"}
    # glibc raises its mmap threshold after large frees and then keeps freed tensors in the heap, so RSS would count
    # memory the run no longer holds; a fixed threshold returns large blocks to the OS at once (RSS ~ live memory).
    # ALLOCATOR=default measures with glibc's defaults instead.
    if os.environ.get("ALLOCATOR") != "default":
        env.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, method in cases:
            out = subprocess.run(
                [sys.executable, __file__, "--child", model, method, tmp],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
            if out.returncode or not line:
                print(out.stdout[-2000:], out.stderr[-3000:], file=sys.stderr)
                return 1
            row = json.loads(line[0][7:])
            results.append(row)
            error = 100 * (row["estimate"] - row["measured"]) / row["measured"]
            print(
                f"{model:>5} {method:>5}  estimate {row['estimate'] / 2**20:8.1f} MiB  measured "
                f"{row['measured'] / 2**20:8.1f} MiB  error {error:+6.1f}%  (weights {row['weights'] / 2**20:.1f}, "
                f"optimizer {row['optimizer'] / 2**20:.1f}, activations {row['activations'] / 2**20:.1f} MiB)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
