"""Evaluation jobs: multiple-choice benchmarks (`tunesmith eval`) and generation metrics for predictions."""
