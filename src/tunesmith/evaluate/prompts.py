"""The conversation around a benchmark question: LLaMA-Factory's en/zh wording, few-shot examples as earlier turns."""

from __future__ import annotations

import random

from tunesmith.data.records import ASSISTANT, USER
from tunesmith.evaluate.benchmark import CHOICES, Question

# Per language: (header before the first question, one choice line, the answer cue).
WORDING = {
    "en": ("The following are multiple choice questions (with answers) about {subject}.\n\n", "\n{choice}. {content}",
           "\nAnswer:"),
    "zh": ("以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n\n", "\n{choice}. {content}", "\n答案："),
}


def question_text(question: Question, lang: str) -> str:
    """The question, its four choices and the answer cue."""
    _, choice, answer = WORDING[lang]
    lines = [choice.format(choice=letter, content=question.choices[letter]) for letter in CHOICES]
    return "".join([question.question, *lines, answer])


def build_messages(question: Question, shots: list[Question], subject_name: str, lang: str) -> list[dict]:
    """User/assistant turns for each shot, then the question with its answer as the last assistant turn."""
    messages = []
    for example in [*shots, question]:
        messages.append({"role": USER, "content": question_text(example, lang)})
        messages.append({"role": ASSISTANT, "content": example.answer})
    messages[0]["content"] = WORDING[lang][0].format(subject=subject_name) + messages[0]["content"]
    return messages


def pick_shots(dev: list[Question], n_shot: int, rng: random.Random) -> list[Question]:
    """n_shot dev examples in a random order (all of them when dev holds fewer), drawn from a seeded generator."""
    return rng.sample(dev, min(n_shot, len(dev)))
