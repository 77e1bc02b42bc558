"""One reply from a loaded model, encoded with the same chat template as training (greedy by default)."""

from __future__ import annotations


def generate_reply(model, tokenizer, template, messages: list[dict], system: str = "", tools: str = "",
                   max_new_tokens: int = 64, **generate_kwargs) -> str:
    """messages: the conversation so far, ending with a user turn; returns the decoded assistant reply."""
    import torch

    from tunesmith.data.records import ASSISTANT

    prompt_ids, _ = template.encode_oneturn(tokenizer, [*messages, {"role": ASSISTANT, "content": ""}], system, tools)
    inputs = torch.tensor([prompt_ids], device=model.device)
    stop_ids = template.stop_token_ids(tokenizer)
    kwargs = {"do_sample": False, "max_new_tokens": max_new_tokens, "eos_token_id": stop_ids,
              "pad_token_id": tokenizer.pad_token_id, **generate_kwargs}
    with torch.no_grad():
        output = model.generate(inputs, attention_mask=torch.ones_like(inputs), **kwargs)
    return tokenizer.decode(output[0, inputs.shape[1]:], skip_special_tokens=True).strip()
