"""How long the front door takes: `tunesmith --help`, `config keys`, and a config mistake reported (no torch import).

    .venv/bin/python bench/startup.py [--repeat 5]

Prints the median wall time of each command over --repeat runs (a fresh interpreter each time, as a user gets).
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, capture_output=True, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        cwd = Path(folder)
        (cwd / "typo.yaml").write_text("model_name_or_path: models/tiny-llama\nlearning_rat: 1e-4\n")
        (cwd / "qlora.yaml").write_text("model_name_or_path: models/tiny-llama\nfinetuning_type: qlora\n")
        tunesmith = [sys.executable, "-m", "tunesmith"]
        cases = {
            "tunesmith --help": [*tunesmith, "--help"],
            "tunesmith train --help": [*tunesmith, "train", "--help"],
            "tunesmith config keys": [*tunesmith, "config", "keys"],
            "train with a typo'd key": [*tunesmith, "train", "typo.yaml"],
            "train with finetuning_type: qlora": [*tunesmith, "train", "qlora.yaml"],
        }
        print(f"{'command':40} median s (of {args.repeat})")
        for name, command in cases.items():
            times = [timed(command, cwd) for _ in range(args.repeat)]
            print(f"{name:40} {statistics.median(times):.2f}")


if __name__ == "__main__":
    main()
