"""GRPO's built-in reward functions score completions as documented; names resolve or are refused with the list."""

import pytest

from tunesmith.config.load import load_config
from tunesmith.errors import ConfigError
from tunesmith.train.rewards import accuracy, format_reward, length_penalty, reward_functions


def test_accuracy_is_exact_match_spacing_and_case_aside():
    assert accuracy(["Yes", " no ", "yes  sir"], solution=["yes", "No", "yes sir"]) == [1.0, 1.0, 1.0]
    assert accuracy(["yes!", "maybe"], solution=["yes", ""]) == [0.0, None]  # no reference: not scored


def test_format_searches_the_pattern_across_lines():
    default = load_config(None, {"stage": "grpo", "reward_funcs": "format"}).method.reward_pattern
    reward = format_reward(default)
    assert reward(
        ["<think>a\nb</think>\n<answer>4</answer>", "<answer>4</answer>", "x\n<think></think><answer>4</answer>"]
    ) == [1.0, 0.0, 0.0]
    assert format_reward(r"\bblue\b")(["The sky is blue.", "blueish"]) == [1.0, 0.0]


def test_length_penalty_runs_from_zero_to_minus_one():
    assert length_penalty(8)(completion_ids=[[], [1, 2], list(range(8))]) == [0.0, -0.25, -1.0]


def test_reward_funcs_resolve_by_name_or_file(tmp_path):
    (tmp_path / "mine.py").write_text("def score(completions, **kwargs):\n    return [1.0] * len(completions)\n")
    config_path = tmp_path / "grpo.yaml"
    config_path.write_text("stage: grpo\nreward_funcs: accuracy,format,length,mine.py:score\n")
    funcs = reward_functions(load_config(config_path))
    assert [f.__name__ for f in funcs] == ["accuracy", "format", "length", "score"]
    assert funcs[3](["a", "b"]) == [1.0, 1.0]
    config_path.write_text("stage: grpo\nreward_funcs: mine.py:nothing\n")
    with pytest.raises(ConfigError, match="defines no function `nothing` \\(its functions: score\\)"):
        reward_functions(load_config(config_path))
    config_path.write_text("stage: grpo\nreward_funcs: exact\n")
    with pytest.raises(ConfigError, match="the built-in ones are accuracy, format, length, reward_model"):
        reward_functions(load_config(config_path))
