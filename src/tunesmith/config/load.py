"""Reads a YAML config plus key=value overrides into a validated Config, with precise errors."""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from tunesmith.config.refusals import check_features
from tunesmith.config.schema import (
    GROUPS,
    LF_GROUPS,
    LF_V1_KEYS,
    MOVED_KEYS,
    RENAMED_KEYS,
    UNAVAILABLE_KEYS,
    VALUE_FIXES,
    VALUE_HINTS,
    DataArgs,
    EvalArgs,
    ExportArgs,
    GenerationArgs,
    InferArgs,
    LaunchArgs,
    LFDataArgs,
    LFMethodArgs,
    LFModelArgs,
    MethodArgs,
    ModelArgs,
    MultimodalArgs,
    OptimArgs,
    OutputArgs,
    ReportArgs,
    ScaleArgs,
    training_model,
)
from tunesmith.errors import ConfigError


@dataclasses.dataclass
class Config:
    """The validated settings of one run, grouped by concern."""

    model: ModelArgs
    method: MethodArgs
    data: DataArgs
    output: OutputArgs
    train: BaseModel  # transformers' TrainingArguments fields, validated
    generation: GenerationArgs = dataclasses.field(default_factory=GenerationArgs)
    infer: InferArgs = dataclasses.field(default_factory=InferArgs)
    export: ExportArgs = dataclasses.field(default_factory=ExportArgs)
    launch: LaunchArgs = dataclasses.field(default_factory=LaunchArgs)
    eval: EvalArgs = dataclasses.field(default_factory=EvalArgs)
    optim: OptimArgs = dataclasses.field(default_factory=OptimArgs)
    report: ReportArgs = dataclasses.field(default_factory=ReportArgs)
    multimodal: MultimodalArgs = dataclasses.field(default_factory=MultimodalArgs)
    scale: ScaleArgs = dataclasses.field(default_factory=ScaleArgs)
    lf_model: LFModelArgs = dataclasses.field(default_factory=LFModelArgs)
    lf_method: LFMethodArgs = dataclasses.field(default_factory=LFMethodArgs)
    lf_data: LFDataArgs = dataclasses.field(default_factory=LFDataArgs)
    source: str = "<overrides>"
    given: dict[str, Any] = dataclasses.field(default_factory=dict)  # keys as the user wrote them (after renames)

    def training_kwargs(self) -> dict[str, Any]:
        """The TrainingArguments keys the user set, ready for Seq2SeqTrainingArguments(**kwargs)."""
        return self.train.model_dump(exclude_unset=True)

    def flat(self) -> dict[str, Any]:
        """Every key of our own groups with its resolved value (LLaMA-Factory's extra groups: only the keys set off
        their defaults), plus the training keys that were set."""
        out: dict[str, Any] = {}
        for name in GROUPS:
            group = getattr(self, name)
            out.update(group.model_dump(mode="json", exclude_defaults=name in LF_GROUPS))
        out.update(self.train.model_dump(mode="json", exclude_unset=True))
        return out


def yaml_loader():
    """A safe YAML loader with YAML 1.2 scalars: only true/false are booleans (so `save_strategy: no` stays "no")
    and 1e-4 is a float, as users of LLaMA-Factory's configs expect."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    resolvers = {}
    for first, entries in yaml.SafeLoader.yaml_implicit_resolvers.items():
        resolvers[first] = [(tag, regexp) for tag, regexp in entries
                            if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:float")]
    Loader.yaml_implicit_resolvers = resolvers
    Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|"
                   r"\.(?:nan|NaN|NAN))$"),
        list("-+0123456789."))
    return Loader


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """Turns ["key=value", "--key", "value", "--key=value"] into a dict; values are read as YAML scalars."""
    import yaml

    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            body = arg[2:].replace("-", "_") if "=" not in arg else arg[2:]
            if "=" in body:
                key, text = body.split("=", 1)
            elif i + 1 < len(args) and not args[i + 1].startswith("--"):
                key, text = body, args[i + 1]
                i += 1
            else:
                key, text = body, "true"
        elif "=" in arg:
            key, text = arg.split("=", 1)
        else:
            raise ConfigError(f"cannot read override '{arg}': write it as key=value (e.g. learning_rate=1e-4)")
        key = key.strip().replace("-", "_") if key.startswith("-") else key.strip()
        try:
            out[key] = yaml.load(text, Loader=yaml_loader()) if text != "" else None
        except yaml.YAMLError:
            out[key] = text
        i += 1
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Loads a YAML mapping, naming the file and line of any syntax error."""
    import yaml

    path = Path(path)
    if not path.is_file():
        hint = " (it is a folder)" if path.is_dir() else ""
        raise ConfigError(f"config file not found: {path}{hint}")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.load(text, Loader=yaml_loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        line = text.splitlines()[mark.line] if mark and mark.line < len(text.splitlines()) else ""
        shown = f"\n    {line}\n    {' ' * mark.column}^" if line else ""
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}{shown}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping of key: value lines, got {type(data).__name__}")
    return data


def known_keys(train_fields: dict) -> dict[str, str]:
    """Maps every accepted key to the group that owns it ("train" for TrainingArguments)."""
    owner = {key: "train" for key in train_fields}
    for group_name, group in GROUPS.items():
        for key in group.model_fields:
            owner[key] = group_name
    return owner


def suggest(key: str, candidates) -> str:
    close = difflib.get_close_matches(key, list(candidates), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _describe(error: dict, source: str) -> str:
    loc = ".".join(str(part) for part in error["loc"])
    msg = error["msg"].removeprefix("Value error, ")
    if loc:
        hint = VALUE_HINTS.get((loc, str(error.get("input"))), "")
        if not hint and error.get("type") == "literal_error" and isinstance(error.get("input"), str):
            import re

            allowed = re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected", "")))
            hint = suggest(error["input"], allowed).removeprefix("; ")
        return f"{source}: key '{loc}': {msg} (got {error.get('input')!r}){'; ' + hint if hint else ''}"
    return f"{source}: {msg}"


def check_not_v1(values: dict[str, Any], source: str) -> None:
    """LLaMA-Factory v1's nested format (`model:`, `peft_config:` ... mappings) gets one message, not one per key."""
    nested = [key for key in LF_V1_KEYS if isinstance(values.get(key), dict) or (key == "model" and key in values)]
    if nested:
        raise ConfigError(
            f"{source}: this is LLaMA-Factory v1's config format (top-level {', '.join(f'`{k}:`' for k in nested)}); "
            "tunesmith reads LLaMA-Factory's flat format, one key per line as in its examples/train_lora/*.yaml "
            "(model_name_or_path:, finetuning_type:, lora_rank:, dataset:, ...); `tunesmith config keys` lists them")


def move_into_mappings(values: dict[str, Any], owner: dict[str, str]) -> dict[str, Any]:
    """Old keys that transformers 5 reads inside a mapping (fsdp_transformer_layer_cls_to_wrap -> fsdp_config)."""
    values = dict(values)
    for old, (mapping, entry) in MOVED_KEYS.items():
        if old in values and old not in owner:
            inner = values.get(mapping) or {}
            if not isinstance(inner, dict):
                raise ConfigError(f"`{old}` goes into `{mapping}`, which must then be a mapping, not {inner!r}")
            value = values.pop(old)
            values[mapping] = {entry: [value] if isinstance(value, str) else value, **inner}
    return values


def build_config(values: dict[str, Any], source: str = "<overrides>") -> Config:
    """Validates a flat dict of keys into a Config; raises ConfigError naming the key and the fix."""
    train_cls = training_model()
    owner = known_keys(train_cls.model_fields)
    check_not_v1(values, source)
    values = move_into_mappings(values, owner)
    renamed = {}
    for key, value in values.items():
        if key not in owner and key in RENAMED_KEYS:
            key = RENAMED_KEYS[key]
        if key in renamed:
            raise ConfigError(f"{source}: key '{key}' is given twice (under an old and a new name)")
        renamed[key] = value
    unknown = [key for key in renamed if key not in owner]
    if unknown:
        lines = [f"key '{key}' is not available: {UNAVAILABLE_KEYS[key]}" if key in UNAVAILABLE_KEYS else
                 f"unknown key '{key}'{suggest(key, owner)}" for key in unknown]
        raise ConfigError(f"{source}: " + "\n  ".join(lines) + "\n  (`tunesmith config keys` lists every key)")
    split: dict[str, dict[str, Any]] = {name: {} for name in (*GROUPS, "train")}
    for key, value in renamed.items():
        split[owner[key]][key] = VALUE_FIXES[key](value) if key in VALUE_FIXES else value
    if split["report"].get("early_stopping_steps"):  # LLaMA-Factory leaves the metric to transformers' default
        split["train"].setdefault("metric_for_best_model", "eval_loss")
    if split["lf_data"].get("eval_num_beams") is not None:  # LLaMA-Factory's name for predict's beam count
        split["train"].setdefault("generation_num_beams", split["lf_data"]["eval_num_beams"])
    built = {}
    for name, cls in (*GROUPS.items(), ("train", train_cls)):
        try:
            built[name] = cls(**split[name])
        except ValidationError as exc:
            raise ConfigError("\n".join(_describe(err, source) for err in exc.errors())) from None
    config = Config(**built, source=source, given=renamed)
    check_features(config)
    check_across_groups(config)
    # transformers' own checks (enum values, bf16 support, ...). The DeepSpeed config is left to the real run: reading
    # it here would register it globally before the distributed world is known.
    training_arguments(config, deepspeed=None)
    return config


def training_arguments(config: Config, **extra):
    """Builds transformers' Seq2SeqTrainingArguments from the config; its refusals become ConfigErrors."""
    import transformers

    kwargs = {"output_dir": "tunesmith_output", **config.training_kwargs(), **extra}
    if config.method.disable_shuffling:  # transformers' own switch for an unshuffled training sampler
        kwargs.setdefault("train_sampling_strategy", "sequential")
    try:
        return transformers.Seq2SeqTrainingArguments(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{config.source}: training arguments rejected by transformers: {exc}") from None


def check_across_groups(config: Config) -> None:
    """Rejects settings that contradict each other across groups, before any model or data is loaded."""
    model, method, data, source = config.model, config.method, config.data, config.source
    problems = []
    if model.adapter_name_or_path and method.finetuning_type not in ("lora", "oft"):
        problems.append("`adapter_name_or_path` needs finetuning_type: lora (or oft)")
    if model.quantization_bit is not None and method.finetuning_type not in ("lora", "oft"):
        problems.append(
            f"a quantized model (quantization_bit: {model.quantization_bit}) can only be trained with "
            f"finetuning_type: lora or oft, not {method.finetuning_type}"
        )
    if model.use_unsloth and method.finetuning_type == "oft":
        problems.append("Unsloth does not support OFT (as in LLaMA-Factory); remove use_unsloth or use lora")
    if config.lf_method.use_llama_pro and method.finetuning_type == "full":
        problems.append("`use_llama_pro` trains only the expanded blocks: finetuning_type freeze, lora or oft "
                        "(as in LLaMA-Factory), not full")
    if config.lf_model.train_from_scratch and model.quantization_bit is not None:
        problems.append("`train_from_scratch` builds random weights, which cannot be loaded quantized; "
                        "remove quantization_bit")
    if model.quantization_bit is not None and method.create_new_adapter:
        problems.append("`create_new_adapter` cannot be used on a quantized model")
    if (data.train_on_prompt or data.mask_history) and method.stage != "sft":
        problems.append("`train_on_prompt` and `mask_history` only apply to stage: sft")
    if data.packing and method.stage not in ("pt", "sft"):
        problems.append(f"`packing` applies to stages pt and sft, not {method.stage}")
    # sft batches are packed padding-free with attention kept inside each example (LF's neat_packing) by default
    if config.lf_data.neat_packing and (method.stage != "sft" or data.packing is False):
        problems.append("`neat_packing` applies to stage sft with packing on (tunesmith packs sft batches this way by "
                        f"default), not stage {method.stage}" + (" with `packing: false`" if data.packing is False else ""))
    train = config.train  # stage limits (e.g. ppo's) are the stage spec's check, run by `tunesmith train`
    if train.predict_with_generate and method.stage != "sft":
        problems.append("`predict_with_generate` only applies to stage: sft")
    if train.eval_strategy != "no" and not (data.eval_dataset or data.val_size > 0):
        problems.append("`eval_strategy` is set but there is no eval data: set `eval_dataset` or `val_size`")
    no_eval = str(getattr(train, "eval_strategy", "no")) in ("no", "IntervalStrategy.NO")
    if config.report.early_stopping_steps and no_eval:
        problems.append("`early_stopping_steps` counts evaluations: set `eval_strategy: steps` (or epoch) and eval data")
    deepspeed = config.training_kwargs().get("deepspeed")
    if isinstance(deepspeed, str) and not Path(deepspeed).is_file():  # else it fails inside torchrun's workers
        problems.append(f"deepspeed config file not found: {deepspeed} (ZeRO configs ship in examples/deepspeed/)")
    if problems:
        raise ConfigError(f"{source}: " + "\n  ".join(problems))


RUN_CONFIG = "tunesmith_config.yaml"


def run_values(run_dir: Path) -> dict[str, Any]:
    """The config of a finished training run, pointed at what it produced (its adapter or its full model)."""
    values = read_yaml(run_dir / RUN_CONFIG)
    if values.get("finetuning_type", "lora") in ("lora", "oft"):  # the run saved an adapter
        earlier = list(values.get("adapter_name_or_path") or [])
        if earlier and not values.get("create_new_adapter"):
            earlier = earlier[:-1]  # training continued the last adapter: the run's adapter replaces it
        values["adapter_name_or_path"] = [*earlier, str(run_dir)]
    else:
        values["model_name_or_path"], values["adapter_name_or_path"] = str(run_dir), None
    for key in ("resume_from_checkpoint", "output_dir", "overwrite_output_dir"):
        values.pop(key, None)
    return values


def load_config(path: str | Path | None, overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """Reads CONFIG.yaml (optional) and applies overrides, which win. A training run's output folder is accepted
    as CONFIG too: its recorded config is used, with the run's adapter or model. A CONFIG that is not a file but a
    flag or key=value (LLaMA-Factory's flag-only form, `--model_name_or_path X --stage sft`) is the first override."""
    if isinstance(path, str) and (path.startswith("-") or "=" in path) and not Path(path).is_file():
        if isinstance(overrides, dict):
            overrides = {**parse_overrides([path]), **overrides}
        else:
            overrides = [path, *(overrides or [])]
        path = None
    if path is not None and Path(path).is_dir() and (Path(path) / RUN_CONFIG).is_file():
        values: dict[str, Any] = run_values(Path(path))
    else:
        values = read_yaml(path) if path is not None else {}
    extra = overrides if isinstance(overrides, dict) else parse_overrides(list(overrides or []))
    values.update(extra)
    return build_config(values, source=str(path) if path is not None else "<overrides>")


def require(config: Config, *keys: str, job: str) -> None:
    """Fails when a key a job needs is missing, e.g. require(cfg, "model_name_or_path", job="train")."""
    flat = config.flat()
    missing = [key for key in keys if flat.get(key) in (None, [], "")]
    if missing:
        names = ", ".join(f"`{key}`" for key in missing)
        raise ConfigError(f"{config.source}: `tunesmith {job}` needs {names}; add it to the YAML or as key=value")
