"""The canonical record every dataset format is converted into, shared by templates and encoders.

A record is a plain dict:

    {
        "prompt":   [{"role": ROLE, "content": str}, ...],  # the conversation before the trained answer(s);
                                                            # alternates user/observation and assistant/function,
                                                            # always ends with a user or observation turn (sft),
                                                            # or is one user turn holding the text (pt)
        "response": [{"role": "assistant"|"function", "content": str}, ...],
                                                            # sft/kto: 1 message; rm/dpo/orpo: 2 (chosen, rejected);
                                                            # pt / unsupervised: []
        "system":   str,                                    # "" when absent
        "tools":    str,                                    # JSON text of the tool list, "" when absent
        "kto_tag":  bool | None,                            # KTO only: desirable (True) or not (False)
    }

The roles follow LLaMA-Factory's: user, assistant, system (only as the separate "system" field),
function (an assistant turn that calls tools; content is JSON of the calls) and observation (a tool result).
"""

USER = "user"
ASSISTANT = "assistant"
SYSTEM = "system"
FUNCTION = "function"
OBSERVATION = "observation"

ROLES = (USER, ASSISTANT, SYSTEM, FUNCTION, OBSERVATION)
PROMPT_ROLES = (USER, OBSERVATION)  # turns at even positions of prompt + response
ANSWER_ROLES = (ASSISTANT, FUNCTION)  # turns at odd positions

IGNORE_INDEX = -100


def make_record(prompt, response, system="", tools="", kto_tag=None) -> dict:
    """Builds a canonical record; the one place its keys are spelled."""
    return {"prompt": prompt, "response": response, "system": system or "", "tools": tools or "", "kto_tag": kto_tag}
