"""Draws training_loss.png (and eval_loss.png) from trainer_state.json's log history."""

from __future__ import annotations

import json
import math
from pathlib import Path


def smooth(values: list[float], weight: float | None = None) -> list[float]:
    """Exponential moving average; the weight grows with the number of points (as TensorBoard-style plots do)."""
    if not values:
        return []
    if weight is None:
        weight = 1.8 * (1 / (1 + math.exp(-0.05 * len(values))) - 0.5)
    out, last = [], values[0]
    for value in values:
        last = last * weight + (1 - weight) * value
        out.append(last)
    return out


def plot_losses(output_dir: str | Path, keys: tuple[str, ...] = ("loss", "eval_loss")) -> list[Path]:
    """Writes one PNG per key that has values; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output_dir = Path(output_dir)
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    written = []
    for key in keys:
        points = [(entry["step"], entry[key]) for entry in history if key in entry]
        if not points:
            continue
        steps, values = zip(*points)
        figure = plt.figure()
        plt.plot(steps, values, color="#1f77b4", alpha=0.4, label="original")
        plt.plot(steps, smooth(list(values)), color="#1f77b4", label="smoothed")
        plt.title(f"{key} of {output_dir.name}")
        plt.xlabel("step")
        plt.ylabel(key)
        plt.legend()
        name = "training_loss.png" if key == "loss" else f"{key}.png"
        figure.savefig(output_dir / name, format="png", dpi=100)
        plt.close(figure)
        written.append(output_dir / name)
    return written
