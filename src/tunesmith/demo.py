"""`tunesmith demo`: builds a tiny model, LoRA-tunes it on the bundled demo data, and shows answers before/after."""

from __future__ import annotations

import json
import time
from pathlib import Path

DEMO_DATA = Path(__file__).parent / "demo_data"
# The base model is bigger than the test models so that it memorises the demo answers quickly.
BASE_SIZE = {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 256}
PROMPTS = ["Who are you?", "Who made you?", "What is your name?", "What colour is grass?", "你是谁？"]


def demo_config(base_dir: Path, out_dir: Path, steps: int | None) -> dict:
    """The training config of the demo, as a user would write it in YAML."""
    config = {
        "model_name_or_path": str(base_dir),
        "stage": "sft",
        "finetuning_type": "lora",
        "lora_rank": 16,
        "lora_target": "all",
        "dataset": "tunesmith_identity,tunesmith_skills",
        "dataset_dir": str(DEMO_DATA),
        "template": "chatml",
        "cutoff_len": 128,
        "output_dir": str(out_dir),
        "overwrite_output_dir": True,
        "plot_loss": True,
        "per_device_train_batch_size": 4,
        "learning_rate": 5e-3,
        "num_train_epochs": 90,
        "lr_scheduler_type": "constant_with_warmup",
        "warmup_steps": 10,
        "logging_steps": 20,
        "save_strategy": "no",
        "report_to": "none",
        "seed": 42,
        "do_sample": False,  # recorded with the run, so `tunesmith chat outputs/demo` answers greedily, as the demo
    }
    if steps:
        config["max_steps"] = steps
    return config


def expected_answers() -> dict[str, str]:
    """The trained answer of every single-turn demo prompt."""
    answers = {}
    for row in json.loads((DEMO_DATA / "identity.json").read_text(encoding="utf-8")):
        if not row.get("input"):
            answers[row["instruction"]] = row["output"]
    for line in (DEMO_DATA / "skills.jsonl").read_text(encoding="utf-8").splitlines():
        messages = json.loads(line)["messages"]
        if len(messages) == 2:
            answers[messages[0]["content"]] = messages[1]["content"]
    return answers


def answers_of(config, prompts: list[str]) -> list[str]:
    """Loads the model as `tunesmith chat` does (base + adapter when given) and answers each prompt greedily."""
    from tunesmith.infer.engine import ChatEngine

    engine = ChatEngine(config, job="demo")
    return [engine.chat([{"role": "user", "content": p}], do_sample=False, max_new_tokens=32)[0].text.strip()
            for p in prompts]


def _shown(path: Path) -> str:
    """A path as short as it can be written from the current folder."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def next_commands(out_dir: Path) -> list[str]:
    """What to try after the demo, each runnable as printed from the current folder."""
    run, benchmark = _shown(out_dir), _shown(Path(__file__).parent / "evaluate" / "demo_benchmark")
    return [
        f"  tunesmith chat {run}                  # ask it \"Who are you?\" (greedy, as above; `exit` quits)",
        f"  tunesmith data preview {run} -n 2     # the training examples, trained tokens marked",
        f"  tunesmith eval {run} task=demo_en_test task_dir={benchmark} save_dir={run}-eval",
    ]


def run_demo(out: str | Path, steps: int | None = None) -> int:
    from tunesmith.config.load import load_config
    from tunesmith.model.tiny import ensure_tiny_model
    from tunesmith.train.run import run_training

    out_dir = Path(out)
    base_dir = ensure_tiny_model(out_dir.parent / f"{out_dir.name}-base-model", **BASE_SIZE)
    train_config = load_config(None, demo_config(base_dir, out_dir, steps))
    before = answers_of(train_config, PROMPTS)
    start = time.monotonic()
    metrics = run_training(train_config)
    seconds = time.monotonic() - start
    tuned_config = load_config(None, {**demo_config(base_dir, out_dir, steps), "adapter_name_or_path": str(out_dir)})
    after = answers_of(tuned_config, PROMPTS)

    expected = expected_answers()
    learned = 0
    print(f"\nLoRA fine-tune of a tiny model: {seconds:.0f} s, final train loss {metrics.get('train_loss', 0):.3f}")
    for prompt, old, new in zip(PROMPTS, before, after):
        target = expected.get(prompt)
        ok = new == target and old != target
        learned += ok
        print(f"\nQ: {prompt}\n  trained answer: {target}\n  before: {old!r}\n  after:  {new!r}  {'OK' if ok else 'MISS'}")
    print(f"\n{learned}/{len(PROMPTS)} prompts now get their trained answer (none did before).")
    print(f"adapter: {out_dir}   loss plot: {out_dir / 'training_loss.png'}   log: {out_dir / 'trainer_log.jsonl'}")
    print("\n".join(["", "Next (after `source .venv/bin/activate`):", *next_commands(out_dir)]))
    return 0 if learned >= len(PROMPTS) - 1 else 1
