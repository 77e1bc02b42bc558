"""GRPO's encoding: the template's prompt ids (answer cue last), their text, and the reference answer as `solution`."""

import copy

from tunesmith.config.load import load_config
from tunesmith.data.encode import encode_prompts
from tunesmith.data.pipeline import resolve_template


def test_prompts_keep_the_template_ids_and_the_reference(tiny_tokenizer):
    tokenizer = copy.deepcopy(tiny_tokenizer)
    template = resolve_template(load_config(None, {"template": "chatml"}).data, tokenizer)
    user, answer = {"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello!"}
    batch = {
        "prompt": [[user], [user, answer, user], [user, answer]],
        "response": [[answer], [], []],
        "system": ["", "", ""],
        "tools": ["", "", ""],
    }
    out = encode_prompts(batch, template, tokenizer, cutoff_len=64)
    assert len(out["prompt_ids"]) == 2  # an even number of prompt turns has no question last: skipped
    expected, _ = template.encode_oneturn(tokenizer, [user, answer], "", "")
    assert out["prompt_ids"][0] == expected and out["prompt"][0].endswith("<|im_start|>assistant\n")
    assert out["solution"] == ["Hello!", ""]  # multi-turn prompt, no reference: the accuracy reward skips it
    assert encode_prompts(batch, template, tokenizer, cutoff_len=4)["prompt_ids"][0] == expected[-4:]
