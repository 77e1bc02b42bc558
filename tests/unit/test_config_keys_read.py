"""A config never accepts a key it ignores: every key of our groups is read by the code, passed through whole, or
refused with the reason; LLaMA-Factory's null launch defaults load; train_on_prompt reaches the template."""

import re
from pathlib import Path

import pytest

from tunesmith.config.load import load_config, training_arguments
from tunesmith.config.refusals import MULTIMODAL_GROUP, MULTIMODAL_HONOURED
from tunesmith.config.schema import GROUPS, GenerationArgs
from tunesmith.errors import ConfigError, TemplateError

SRC = Path(__file__).resolve().parents[2] / "src" / "tunesmith"
# Keys handed on whole: GenerationArgs is model.generate()'s kwargs (infer.loader.generation_kwargs dumps the group).
# TrainingArguments keys are not in GROUPS: they all pass through to transformers (Config.training_kwargs).
PASS_THROUGH = set(GenerationArgs.model_fields)
# LLaMA-Factory keys that act there only in a case that cannot arise here, so loading them is what LF does: its
# generate() max_length is dropped whenever max_new_tokens > 0, and tunesmith's max_new_tokens is always >= 1.
# use_reentrant_gc picks how checkpointed activations are recomputed, not what the gradients are; tunesmith always
# recomputes non-reentrantly (model/load.py), as torch recommends.
INERT = {"max_length", "use_reentrant_gc"}
# Keys accepted only at the value that is true of tunesmith; any other value is refused when the config loads.
# LLaMA-Factory features turned on are refused by config/refusals.py, which reads their keys (tests/unit/test_lf_compat).
REFUSED = {"low_cpu_mem_usage": False, "eval_on_each_dataset": True, "streaming": True, "infer_backend": "vllm"}


def _code_outside_the_schema() -> str:
    skipped = {*(SRC / "config").glob("schema*.py"), SRC / "config" / "describe.py"}  # where keys are declared
    return "\n".join(path.read_text(encoding="utf-8") for path in SRC.rglob("*.py")
                     if path not in skipped and "webui" not in path.parts)  # the form shows keys, it reads none


def test_every_schema_key_is_read_passed_through_or_refused():
    code = _code_outside_the_schema()
    unread = [f"{group}.{key}" for group, cls in GROUPS.items() for key in cls.model_fields  # the keys of today
              if group != MULTIMODAL_GROUP or key in MULTIMODAL_HONOURED  # the others: refused off their defaults
              if key not in PASS_THROUGH | INERT and key not in REFUSED
              and not re.search(rf"\.{key}\b|[\"']{key}[\"']", code)]
    assert unread == [], f"keys validated but never read: {unread}; read them, or refuse them with the reason"


@pytest.mark.parametrize(("key", "value"), sorted(REFUSED.items()))
def test_ignored_values_are_refused_with_the_reason(key, value):
    with pytest.raises(ConfigError, match=key):
        load_config(None, {key: value})


def test_refused_keys_still_load_at_their_honest_value():
    config = load_config(None, {"low_cpu_mem_usage": True, "eval_on_each_dataset": False,
                                "infer_backend": "huggingface"})
    assert config.model.low_cpu_mem_usage and not config.data.eval_on_each_dataset


def test_disable_shuffling_makes_the_sampler_sequential():
    assert training_arguments(load_config(None, {"disable_shuffling": True})).train_sampling_strategy == "sequential"
    assert training_arguments(load_config(None, {})).train_sampling_strategy != "sequential"


def test_llamafactory_null_master_addr_and_port_load():
    launch = load_config(None, {"master_addr": None, "master_port": None}).launch
    assert (launch.master_addr, launch.master_port) == ("127.0.0.1", 29500)


def test_train_on_prompt_reaches_the_efficient_eos_refusal(tiny_tokenizer):
    from tunesmith.data.pipeline import resolve_template

    config = load_config(None, {"template": "glm4", "train_on_prompt": True})
    with pytest.raises(TemplateError, match="train_on_prompt"):
        resolve_template(config.data, tiny_tokenizer)
