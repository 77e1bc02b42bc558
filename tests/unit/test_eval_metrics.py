"""BLEU-4 / ROUGE-1/2/L as LLaMA-Factory computes them, pinned on hand-computed cases; token accuracy; eval keys."""

import math

import pytest

from tunesmith.config.load import load_config
from tunesmith.errors import ConfigError
from tunesmith.evaluate.metrics import corpus_similarity, similarity, token_accuracy


def test_identical_strings_score_100():
    for text in ("the cat sat on the mat", "我爱北京天安门", "Tuney is a small assistant."):
        assert similarity(text, text) == {"bleu-4": 100.0, "rouge-1": 100.0, "rouge-2": 100.0, "rouge-l": 100.0}


def test_english_by_hand():
    # ROUGE works on jieba words (spaces dropped) and, as rouge-chinese does, on *distinct* n-grams for rouge-1/2:
    # prediction {the, cat, sat} vs reference {the, cat, sat, on, mat}: P 3/3, R 3/5 -> F 0.75;
    # bigrams 2/2 vs 2/5 -> F 2*0.4/1.4; LCS 3 of 3 and 6 words -> F 2*0.5/1.5.
    # BLEU-4 is on characters: every n-gram of the 11-char prediction occurs in the reference (precision 1), so
    # BLEU = brevity penalty exp(1 - 22/11).
    scores = similarity("the cat sat", "the cat sat on the mat")
    assert scores["rouge-1"] == 75.0
    assert scores["rouge-2"] == round(100 * 2 * 0.4 / 1.4, 4)
    assert scores["rouge-l"] == round(100 * 2 * 0.5 / 1.5, 4)
    assert scores["bleu-4"] == round(100 * math.exp(1 - 22 / 11), 4)


def test_chinese_is_segmented_with_jieba():
    # 我/爱/北京 vs 我/爱/北京/天安门: P 1, R 3/4 -> F 6/7; bigrams 2/2 vs 2/3 -> F 0.8; chars 4 vs 7 -> BP exp(-0.75)
    scores = similarity("我爱北京", "我爱北京天安门")
    assert scores == {"bleu-4": round(100 * math.exp(1 - 7 / 4), 4), "rouge-1": round(100 * 6 / 7, 4),
                      "rouge-2": 80.0, "rouge-l": round(100 * 6 / 7, 4)}


def test_empty_prediction_scores_zero_and_the_corpus_is_the_mean():
    assert similarity("", "reference") == {"bleu-4": 0.0, "rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}
    mean = corpus_similarity(["same words", ""], ["same words", "other"])
    assert mean == {"bleu-4": 50.0, "rouge-1": 50.0, "rouge-2": 50.0, "rouge-l": 50.0}
    with pytest.raises(ValueError):
        corpus_similarity(["a"], [])


def test_token_accuracy_shifts_and_masks():
    # position t predicts label t+1; -100 labels are ignored; rows are averaged
    predictions = [[7, 8, 9, 0], [5, 5, 5, 5]]
    labels = [[-100, 7, 8, 1], [-100, -100, 5, 6]]
    assert token_accuracy(predictions, labels) == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_eval_keys_load_with_lf_names(tmp_path):
    config = load_config(None, ["task=mmlu_test", "task_dir=evaluation", "lang=zh", "n_shot=0", "batch_size=8",
                                "save_dir=out", "seed=3"])
    assert (config.eval.task, config.eval.lang, config.eval.n_shot, config.eval.batch_size) == ("mmlu_test", "zh", 0, 8)
    assert config.train.seed == 3  # `seed` is the TrainingArguments key, shared with training
    with pytest.raises(ConfigError, match="<benchmark>_<split>"):
        load_config(None, ["task=mmlu"])
    with pytest.raises(ConfigError, match="lang"):
        load_config(None, ["lang=fr"])
    with pytest.raises(ConfigError, match="n_shot"):
        load_config(None, ["n_shot=-1"])
