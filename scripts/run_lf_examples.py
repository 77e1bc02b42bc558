"""Runs every YAML under a LLaMA-Factory checkout's examples/ through tunesmith, changing only the model path (a
tiny local model of the same family), dataset_dir, output_dir and max_steps, and tabulates what happened.

    python scripts/run_lf_examples.py /work/lf-src                 # validate each config (fast): ok / refused
    python scripts/run_lf_examples.py /work/lf-src --run           # also train the configs that validate
    python scripts/run_lf_examples.py /work/lf-src --markdown      # the table for the README

Outcomes: ran (trained, --run only), ok (validates; not run), refused-for-hardware (needs a GPU, NPU, or a package
that cannot be had here: Megatron, KTransformers, vLLM, FP8, bf16 on CPU, ...), refused-other (a feature tunesmith
lacks, multimodal, LLaMA-Factory v1's format, an unknown template ...), needs-earlier-run (reads saves/... that another
example writes, as in LLaMA-Factory). YAML files that are not run configs (accelerate's configs, token tables) are
listed as skipped. chat/export configs are validated, not run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path("/work/shared/lf-demo-data")
# Family of the hub model a config names -> `tunesmith tiny --arch` (first match wins; llama otherwise).
FAMILIES = [
    ("qwen3", "qwen3"),
    ("qwen", "qwen2"),
    ("mistral", "mistral"),
    ("gemma", "gemma"),
    ("phi", "phi3"),
    ("llama", "llama"),
]
# Words in a refusal that mean "this needs hardware or a package this machine cannot have".
HARDWARE_WORDS = (
    "CUDA",
    "GPU",
    "NPU",
    "bf16",
    "Megatron",
    "KTransformers",
    "vLLM",
    "accelerator",
    "bitsandbytes",
    "FP8",
    "flash",
    "Ascend",
)


def yaml_files(checkout: Path) -> list[Path]:
    return sorted((checkout / "examples").rglob("*.yaml"))


def family(model: str | None) -> str:
    name = (model or "").lower()
    return next((arch for word, arch in FAMILIES if word in name), "llama")


def tiny_model(arch: str, models: Path) -> Path:
    out = models / arch
    if not (out / "config.json").is_file():
        from tunesmith.model.tiny import save_tiny_model

        save_tiny_model(str(out), arch=arch, overwrite=True)
    return out


def job_of(values: dict) -> str:
    if values.get("export_dir"):
        return "export"
    if values.get("do_train") or values.get("do_predict"):
        return "train"
    return "chat"


def is_run_config(values) -> bool:
    return isinstance(values, dict) and any(key in values for key in ("model_name_or_path", "stage", "model"))


def prepared(values: dict, models: Path, out: Path) -> dict:
    """The config with only model path, dataset_dir, output_dir and max_steps changed."""
    values = dict(values)
    if "model_name_or_path" in values:
        values["model_name_or_path"] = str(tiny_model(family(values["model_name_or_path"]), models))
    if values.get("dataset") or values.get("eval_dataset"):
        values["dataset_dir"] = str(DATA)
    if job_of(values) == "train":
        values["output_dir"] = str(out)
        values["max_steps"] = 2
    if values.get("export_dir"):
        values["export_dir"] = str(out)
    return values


def classify_error(exc: Exception) -> str:
    from tunesmith.config.refusals import FeatureRefused

    if isinstance(exc, FeatureRefused):
        return "refused-for-hardware" if exc.hardware else "refused-other"
    return "refused-for-hardware" if any(word in str(exc) for word in HARDWARE_WORDS) else "refused-other"


def validate(values: dict) -> tuple[str, str]:
    from tunesmith.config.load import build_config
    from tunesmith.errors import TunesmithError

    try:
        build_config(values, source="<example>")
    except TunesmithError as exc:
        return classify_error(exc), " ".join(str(exc).replace("<example>: ", "").split())
    return "ok", ""


def run(path: Path, job: str, timeout: int) -> tuple[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "src"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tunesmith", job, str(path)],
            check=False,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            cwd=path.parent,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return "refused-other", f"timed out after {timeout} s"
    if done.returncode == 0:
        return "ran", ""
    lines = [line for line in done.stderr.splitlines() if "error" in line.lower()] or done.stderr.splitlines()[-1:]
    message = lines[0] if lines else f"exit code {done.returncode}"
    if "not found: saves/" in message:  # LLaMA-Factory's examples chain: predict/merge read a training example's output
        return "needs-earlier-run", message
    return ("refused-for-hardware" if any(word in message for word in HARDWARE_WORDS) else "refused-other"), message


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="a LLaMA-Factory checkout (its examples/ folder is read)")
    parser.add_argument("--run", action="store_true", help="train the configs that validate (slow)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per run (default 600)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tunesmith.config.load import read_yaml

    work = Path(tempfile.mkdtemp(prefix="lf-examples-"))
    (work / "examples").symlink_to((args.checkout / "examples").resolve())  # LF's relative paths, e.g. deepspeed
    os.chdir(work)
    rows = []
    for index, path in enumerate(yaml_files(args.checkout)):
        name = str(path.relative_to(args.checkout / "examples"))
        values = read_yaml(path)
        if not is_run_config(values):
            rows.append((name, "-", "skipped", "not a run config"))
            continue
        job = job_of(values)
        values = prepared(values, work / "models", work / "out" / str(index))
        outcome, why = validate(values)
        if outcome == "ok" and args.run and job == "train":
            import yaml

            config_path = work / f"{index}.yaml"
            config_path.write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
            outcome, why = run(config_path, job, args.timeout)
        rows.append((name, job, outcome, why))
        print(f"{outcome:22} {job:6} {name}  {why[:160]}", file=sys.stderr, flush=True)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[2]] = counts.get(row[2], 0) + 1
    if args.markdown:
        print("| example | command | outcome | reason |\n|---|---|---|---|")
        for name, job, outcome, why in rows:
            print(f"| {name} | {job} | {outcome} | {why[:200].replace('|', '/')} |")
    print("\n" + ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) + f" (of {len(rows)} YAML files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
