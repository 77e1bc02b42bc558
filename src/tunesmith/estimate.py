"""`tunesmith estimate`: the memory breakdown as a table, the run's tokens and FLOPs, and its time at a given or
measured throughput."""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.errors import ConfigError, ModelError
from tunesmith.model.memory import Estimate, build, free_memory, size


def _count(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(int(n))


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s"


def table(config, est: Estimate, free: tuple[str, float | None] = ("", None)) -> str:
    """The breakdown as an aligned text table."""
    shape = est.shape
    share = 100 * shape.trainable / max(shape.parameters, 1)
    optim = config.training_kwargs().get("optim", "adamw_torch_fused")
    attn = "eager" if config.model.flash_attn in ("eager", "disabled") else "sdpa"
    bits = f", {config.model.quantization_bit}-bit base" if config.model.quantization_bit else ""
    batch = est.tokens_per_micro_batch // est.seq_len
    rows = [
        ("parameters", _count(shape.parameters), f"trainable {_count(shape.trainable)} ({share:.2f}%)"),
        ("weights", size(est.weights), f"{shape.dtype}{bits}; trainable in float32"),
        ("gradients", size(est.gradients), "float32, trainable parameters only"),
        ("optimizer states", size(est.optimizer), str(optim)),
        ("activations", size(est.activations), f"{attn}, micro-batch {batch} x {est.seq_len} tokens"),
        ("peak per device", size(est.peak), f"{est.strategy}, {est.world} process(es)"),
    ]
    if est.host:
        rows.append(("offloaded to CPU", size(est.host), "per process"))
    if free[1] is not None:
        rows.append((f"free on {free[0]}", size(free[1]), "fits" if est.peak <= free[1] else "DOES NOT FIT"))
    if est.train_tokens is not None:
        rows.append(("training tokens", _count(est.train_tokens), f"{est.steps} optimizer steps"))
        rows.append(("training FLOPs", f"{est.flops:.3g}", "6N per token trained, 4N frozen, +2N checkpointing"))
    if est.seconds is not None:
        rows.append(("time", _duration(est.seconds), f"at {est.tokens_per_second:,.0f} tokens/s"))
    width = max(len(r[0]) for r in rows)
    value = max(len(r[1]) for r in rows)
    what = f"{config.method.finetuning_type}, stage {config.method.stage}"
    lines = [f"memory estimate: {config.model.model_name_or_path} ({what})"]
    lines += [f"  {name:<{width}}  {v:>{value}}  {detail}" for name, v, detail in rows]
    lines += [f"  note: {note}" for note in est.notes]
    return "\n".join(lines)


def measure_throughput(config, steps: int) -> float:
    """Tokens per second of `steps` real optimizer steps of this config (`tunesmith train`, nothing saved)."""
    import tempfile

    from tunesmith.config.load import build_config
    from tunesmith.train.run import run_training

    with tempfile.TemporaryDirectory(prefix="tunesmith-measure-") as tmp:
        values = {
            **config.given,
            "output_dir": tmp,
            "overwrite_output_dir": True,
            "max_steps": steps,
            "save_strategy": "no",
            "report_to": "none",
            "eval_strategy": "no",
            "val_size": 0,
            "logging_steps": steps,
            "include_num_input_tokens_seen": True,
            "plot_loss": False,
        }
        metrics = run_training(build_config(values, source=config.source))
        state = json.loads((Path(tmp) / "trainer_state.json").read_text(encoding="utf-8"))
    tokens = state.get("num_input_tokens_seen") or 0
    if not tokens or not metrics.get("train_runtime"):
        raise ModelError("estimate: the measuring run reported no tokens or runtime")
    return tokens / metrics["train_runtime"]


def run_estimate(config, throughput: str | None = None, measure_steps: str | None = None) -> int:
    """`tunesmith estimate CONFIG`: prints the table; with data, the run's tokens and (given a throughput) time."""
    from tunesmith.config.load import require

    require(config, "model_name_or_path", job="estimate")
    dataset = None
    if config.data.dataset:
        from tunesmith.data.pipeline import build_datasets
        from tunesmith.data.video import video_processor_for
        from tunesmith.model.audio import load_feature_extractor
        from tunesmith.model.load import load_image_processor, load_tokenizer
        from tunesmith.train.stages import STAGES

        tokenizer = load_tokenizer(config.model)
        dataset = build_datasets(  # a VL (audio) model's data is encoded with its image tokens (audio tokens)
            config, tokenizer, encoding=STAGES[config.method.stage].encoding,
            image_processor=load_image_processor(config.model), feature_extractor=load_feature_extractor(config.model),
            video=video_processor_for(config),
        ).train
    try:
        speed = float(throughput) if throughput else None
        steps = int(measure_steps) if measure_steps else None
    except ValueError:
        raise ConfigError("--throughput takes tokens per second, --measure-steps a number of steps") from None
    if steps:
        require(config, "dataset", job="estimate --measure-steps")
        speed = measure_throughput(config, steps)
    print(table(config, build(config, dataset, speed), free_memory()))
    return 0
