"""Benchmark prompts: LLaMA-Factory's en/zh wording, n_shot dev examples as earlier turns, letter tokens."""

import random
from pathlib import Path

import pytest

from tunesmith.config.schema import DataArgs
from tunesmith.evaluate.benchmark import Question, load_benchmark
from tunesmith.evaluate.prompts import build_messages, pick_shots, question_text
from tunesmith.evaluate.run import encode_questions
from tunesmith.evaluate.scoring import left_pad, letter_ids

DEMO = Path(__file__).resolve().parents[2] / "src" / "tunesmith" / "evaluate" / "demo_benchmark"


def question(text="What is 2 + 2?", answer="C"):
    return Question(text, {"A": "1", "B": "2", "C": "4", "D": "8"}, answer, "0", "x.csv:1")


@pytest.fixture()
def chatml():
    from tunesmith.data.pipeline import resolve_template
    from tunesmith.model.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    return tokenizer, resolve_template(DataArgs(template="chatml"), tokenizer)


def test_english_and_chinese_wording():
    assert question_text(question(), "en") == "What is 2 + 2?\nA. 1\nB. 2\nC. 4\nD. 8\nAnswer:"
    assert question_text(question(), "zh") == "What is 2 + 2?\nA. 1\nB. 2\nC. 4\nD. 8\n答案："
    messages = build_messages(question(), [], "math", "en")
    assert messages == [
        {"role": "user", "content": "The following are multiple choice questions (with answers) about math.\n\n"
                                    "What is 2 + 2?\nA. 1\nB. 2\nC. 4\nD. 8\nAnswer:"},
        {"role": "assistant", "content": "C"},
    ]
    zh = build_messages(question(), [], "数学", "zh")
    assert zh[0]["content"] == "以下是中国关于数学考试的单项选择题，请选出其中的正确答案。\n\n" + question_text(question(), "zh")


def test_shots_are_earlier_turns_and_only_the_first_has_the_header():
    shots = [question(f"Shot {i}?", "A") for i in range(2)]
    messages = build_messages(question(), shots, "math", "en")
    assert [m["role"] for m in messages] == ["user", "assistant"] * 3
    assert messages[0]["content"].startswith("The following are") and "Shot 0?" in messages[0]["content"]
    assert messages[1]["content"] == "A" and messages[2]["content"].startswith("Shot 1?")
    assert messages[-1]["content"] == "C"


def test_pick_shots_is_seeded_and_capped():
    dev = [question(f"D{i}") for i in range(5)]
    assert pick_shots(dev, 3, random.Random(1)) == pick_shots(dev, 3, random.Random(1))
    assert len(pick_shots(dev, 9, random.Random(1))) == 5
    assert pick_shots(dev, 0, random.Random(1)) == []


@pytest.mark.parametrize("n_shot", [0, 1, 3, 5])
def test_prompts_hold_n_shot_dev_examples(chatml, n_shot):
    tokenizer, template = chatml
    bench = load_benchmark(DEMO, "demo_en_test", n_shot=n_shot)
    prefix, _ = letter_ids(template, tokenizer)
    items = encode_questions(bench, template, tokenizer, "en", n_shot, seed=42, answer_prefix=prefix)
    assert len(items) == 24
    for key, target, ids in items:
        text = tokenizer.decode(ids)
        subject = next(s for s in bench.subjects if s.key == key)
        shown = [d for d in subject.dev if d.question in text]
        assert len(shown) == n_shot
        assert text.count("<|im_start|>user") == n_shot + 1
        assert text.count("The following are multiple choice questions") == 1
        assert text.endswith(f"{target.question}\nA. {target.choices['A']}\nB. {target.choices['B']}\nC. "
                             f"{target.choices['C']}\nD. {target.choices['D']}\nAnswer:<|im_end|>\n"
                             "<|im_start|>assistant\n")
        for shot in shown:  # each shot is answered with its own letter
            assert f"Answer:<|im_end|>\n<|im_start|>assistant\n{shot.answer}<|im_end|>" in text


def test_chinese_prompts(chatml):
    tokenizer, template = chatml
    bench = load_benchmark(DEMO, "demo_zh_test", n_shot=1)
    items = encode_questions(bench, template, tokenizer, "zh", 1, seed=0, answer_prefix=[])
    text = tokenizer.decode(items[0][2])
    assert "以下是中国关于基础算术考试的单项选择题" in text and text.count("答案：") == 2


def test_letters_are_the_answer_tokens(chatml):
    tokenizer, template = chatml
    prefix, ids = letter_ids(template, tokenizer)
    assert prefix == [] and [tokenizer.decode([i]) for i in ids] == ["A", "B", "C", "D"]


def test_reasoning_templates_put_the_empty_thought_before_the_letter():
    from tunesmith.data.pipeline import resolve_template
    from tunesmith.model.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    template = resolve_template(DataArgs(template="qwen3"), tokenizer)
    prefix, ids = letter_ids(template, tokenizer)
    assert tokenizer.decode(prefix) == "<think>\n\n</think>\n\n"
    assert [tokenizer.decode([i]) for i in ids] == ["A", "B", "C", "D"]


def test_left_padding_counts_positions_from_the_first_real_token():
    input_ids, mask, positions = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert input_ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert positions.tolist() == [[0, 1, 2], [0, 0, 0]]
