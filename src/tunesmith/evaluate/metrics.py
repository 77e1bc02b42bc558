"""Generation metrics as LLaMA-Factory reports them: BLEU-4 over characters and ROUGE-1/2/L over jieba words."""

from __future__ import annotations

import logging

from tunesmith.data.records import IGNORE_INDEX
from tunesmith.errors import DependencyError

METRIC_KEYS = ("bleu-4", "rouge-1", "rouge-2", "rouge-l")
INSTALL_HINT = "pip install nltk jieba rouge-chinese (or tunesmith[metrics])"


def require_packages():
    try:
        import jieba
        from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
        from rouge_chinese import Rouge
    except ImportError as exc:
        raise DependencyError(f"BLEU/ROUGE need the {exc.name} package: {INSTALL_HINT}") from None
    jieba.setLogLevel(logging.WARNING)  # its dictionary-loading banner would otherwise print on every run
    return jieba, sentence_bleu, SmoothingFunction, Rouge


def similarity(prediction: str, reference: str) -> dict[str, float]:
    """BLEU-4 (nltk sentence_bleu on characters, smoothing method3) and ROUGE-1/2/L F1 (rouge-chinese on jieba
    words), each x100 and rounded to 4 places, exactly as LLaMA-Factory's ComputeSimilarity; an empty side scores
    ROUGE 0."""
    jieba, sentence_bleu, smoothing, rouge_cls = require_packages()
    hypothesis = list(jieba.cut(prediction))
    words = list(jieba.cut(reference))
    if not " ".join(hypothesis).split() or not " ".join(words).split():
        rouge = {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}
    else:
        scores = rouge_cls().get_scores(" ".join(hypothesis), " ".join(words))[0]
        rouge = {key: value["f"] for key, value in scores.items()}
    bleu = sentence_bleu([list(reference)], list(prediction), smoothing_function=smoothing().method3)
    return {"bleu-4": round(bleu * 100, 4), **{key: round(value * 100, 4) for key, value in rouge.items()}}


def corpus_similarity(predictions: list[str], references: list[str]) -> dict[str, float]:
    """The mean of each metric over prediction/reference pairs (LLaMA-Factory's `predict_*` values)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        return {key: 0.0 for key in METRIC_KEYS}
    rows = [similarity(p, r) for p, r in zip(predictions, references, strict=True)]
    return {key: sum(row[key] for row in rows) / len(rows) for key in METRIC_KEYS}


def token_accuracy(predictions, labels, ignore_index: int = IGNORE_INDEX) -> float:
    """Share of label tokens the model's argmax predicts (shifted by one), over the unmasked positions of each
    row, averaged per row as LLaMA-Factory's ComputeAccuracy does. predictions and labels: (rows, length) ids."""
    import numpy as np

    predictions, labels = np.asarray(predictions), np.asarray(labels)
    scores = []
    for pred, label in zip(predictions[:, :-1], labels[:, 1:], strict=True):
        mask = label != ignore_index
        if mask.any():
            scores.append(float(np.mean(pred[mask] == label[mask])))
    return float(np.mean(scores)) if scores else 0.0
