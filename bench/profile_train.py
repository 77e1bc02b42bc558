"""Profile a few tunesmith training steps of issue 15's config with torch.profiler and print where the time goes.

    python bench/profile_train.py --work /tmp/train-bench [--steps 4] [key=value ...]

key=value items go into the config (packing=false, disable_gradient_checkpointing=false, ...);
bench_plain_logits=true computes logits at every position, as before label-only logits.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_throughput import ROOT, base_config, parse_extra, prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "lf-demo-data"))
    parser.add_argument("--method", choices=("lora", "full", "qlora"), default="lora")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rows", type=int, default=22)
    parser.add_argument("extra", nargs="*")
    args = parser.parse_args()
    import torch
    import transformers

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = prepare(work, Path(args.data), seed=42)
    config = {
        **base_config(args.method, model, work / "data", work / "out-profile", args.steps),
        **parse_extra(args.extra),
    }
    if config.pop("bench_plain_logits", False):
        import tunesmith.data.collate

        tunesmith.data.collate.add_label_logits = lambda batch: None
    from tunesmith.config.load import build_config
    from tunesmith.train.run import run_training

    original = transformers.Trainer.train

    def train(self, *a, **kw):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            result = original(self, *a, **kw)
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows)
        print(table)
        (work / "profile.txt").write_text(table)
        return result

    transformers.Trainer.train = train
    run_training(build_config(config))


if __name__ == "__main__":
    main()
