"""GRPO reward functions: a built-in set by name, or `module.py:function` from a file next to the config.

Each is called by TRL's GRPOTrainer as f(prompts=..., completions=..., completion_ids=..., solution=..., **columns)
and returns one float per completion (None skips that completion for this function)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from tunesmith.errors import ConfigError

BUILT_IN = ("accuracy", "format", "length", "reward_model")
CUSTOM_HINT = "or module.py:function, a Python file next to the config defining f(completions, **kwargs) -> list[float]"


def _normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


def accuracy(completions, solution=None, **kwargs) -> list[float | None]:
    """1.0 when the completion equals the reference answer (`solution`), spacing and case aside, else 0.0; None
    (not scored) for prompts that have no reference."""
    solutions = solution or [""] * len(completions)
    return [
        None if not _normalise(ref) else float(_normalise(text) == _normalise(ref))
        for text, ref in zip(completions, solutions)
    ]


def format_reward(pattern: str) -> Callable:
    """1.0 when `pattern` (a regex, `.` matching newlines too) is found in the completion, else 0.0."""
    compiled = re.compile(pattern, re.DOTALL)  # ^ and $: the whole reply

    def format(completions, **kwargs) -> list[float]:  # TRL logs the reward under its __name__
        return [float(compiled.search(text) is not None) for text in completions]

    return format


def length_penalty(max_completion_length: int) -> Callable:
    """-(completion tokens / max_completion_length): 0 for an empty reply down to -1 for one cut at the limit."""

    def length(completion_ids, **kwargs) -> list[float]:
        return [-len(ids) / max_completion_length for ids in completion_ids]

    return length


def _custom(spec: str, base: Path) -> Callable:
    import importlib.util

    file_name, _, function = spec.rpartition(":")
    path = Path(file_name).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise ConfigError(f"reward_funcs `{spec}`: file not found: {path} (a path is read next to the config)")
    module_spec = importlib.util.spec_from_file_location(f"tunesmith_reward_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # the user's file: any error it raises is theirs to see
        raise ConfigError(f"reward_funcs `{spec}`: importing {path} failed: {type(exc).__name__}: {exc}") from exc
    func = getattr(module, function, None)
    if not callable(func):
        defined = sorted(name for name, value in vars(module).items() if callable(value) and not name.startswith("_"))
        raise ConfigError(
            f"reward_funcs `{spec}`: {path} defines no function `{function}` "
            f"(its functions: {', '.join(defined) or 'none'})"
        )
    return func


def config_folder(config) -> Path:
    """Where relative reward files are read: the config file's folder (the current one for overrides only)."""
    source = Path(config.source)
    return source.parent if source.suffix in (".yaml", ".yml", ".json") else Path.cwd()


def reward_functions(config, reward_model: Callable | None = None) -> list:
    """The config's reward_funcs as callables (and the reward model, already loaded, in its place)."""
    method = config.method
    funcs = []
    for name in method.reward_funcs:
        if name == "accuracy":
            funcs.append(accuracy)
        elif name == "format":
            try:
                funcs.append(format_reward(method.reward_pattern))
            except re.error as exc:
                raise ConfigError(f"{config.source}: `reward_pattern` is not a valid regex: {exc}") from None
        elif name == "length":
            funcs.append(length_penalty(method.max_completion_length))
        elif name == "reward_model":
            funcs.append(reward_model)
        elif ":" in name and name.rpartition(":")[0].endswith(".py"):
            funcs.append(_custom(name, config_folder(config)))
        else:
            raise ConfigError(
                f"{config.source}: unknown reward function `{name}` in `reward_funcs`; the built-in ones "
                f"are {', '.join(BUILT_IN)}, {CUSTOM_HINT}"
            )
    return funcs
