"""Metrics out of a training run: JSON lines for scripts, TensorBoard for people, a PNG plot.

Every record goes to `metrics.jsonl` (one JSON object per line, greppable, loadable with
pandas) and its numeric fields to TensorBoard under `phase/name`; `plot_success` draws the
success rate per RIPT iteration, the figure people look at first.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from torch.utils.tensorboard import SummaryWriter


class MetricsLogger:
    """Append records to `<dir>/metrics.jsonl` and `<dir>/tensorboard/`."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / "metrics.jsonl"
        self._file = self.path.open("a")
        self._tb = SummaryWriter(str(self.directory / "tensorboard"))

    def log(self, phase: str, step: int, record: dict[str, Any]) -> None:
        row = {"phase": phase, "step": step, **record}
        self._file.write(json.dumps(row, default=str) + "\n")
        self._file.flush()
        for key, value in record.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
                continue
            self._tb.add_scalar(f"{phase}/{key}", value, step)
        self._tb.flush()

    def close(self) -> None:
        self._file.close()
        self._tb.close()


def read_metrics(path: str | Path, phase: str | None = None) -> list[dict[str, Any]]:
    """Records of a metrics.jsonl file, optionally of one phase."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [r for r in rows if phase is None or r["phase"] == phase]


def plot_success(
    iterations: Sequence[int],
    curves: dict[str, Sequence[float]],
    path: str | Path,
    title: str = "RIPT success rate",
) -> Path:
    """Line plot of success rates (0-1) per iteration, saved as PNG."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for label, values in curves.items():
        ax.plot(iterations, [100 * v for v in values], marker="o", label=label)
    ax.set_xlabel("RIPT iteration (0 = after SFT)")
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
