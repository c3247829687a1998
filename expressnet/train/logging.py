"""Run outputs: config.yaml, log.csv, history.json, TensorBoard events, curves.png, summary.json."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..evaluate.plots import training_curves
from ..io import atomic_write_text
from ..progress import progress_bar
from .config import TrainConfig

# how to get TensorBoard; a dependency of the package today (the message is the one place to change if it
# becomes an extra, e.g. "pip install 'expressnet[tensorboard]'")
TENSORBOARD_INSTALL = "pip install tensorboard"


def tensorboard_writer(log_dir: Path):
    """A ``SummaryWriter`` writing to ``log_dir``; ``ImportError`` saying how to install TensorBoard if it is missing.
    Imported here, not at the top: TensorBoard takes seconds to import and runs with ``tensorboard: false`` skip it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ImportError(
            f"tensorboard: true needs the tensorboard package ({TENSORBOARD_INSTALL}), "
            f"or set tensorboard: false ({exc})"
        ) from exc
    return SummaryWriter(str(log_dir))


class RunLogger:
    def __init__(self, out: Path, cfg: TrainConfig, enabled: bool = True, history: list[dict] | None = None) -> None:
        self.out, self.enabled = out, enabled
        self.history = history if history is not None else []
        self.routing: list[dict] = []
        self._tb = None
        if enabled:
            out.mkdir(parents=True, exist_ok=True)
            cfg.save(out / "config.yaml")
            if (out / "history.json").is_file():
                self.routing = json.loads((out / "history.json").read_text()).get("routing", [])[: len(self.history)]
            if cfg.tensorboard:
                self._tb = tensorboard_writer(out / "tb")

    @contextmanager
    def progress(self, description: str, total: int) -> Iterator:
        """Yields ``advance(**metrics)``: a rich progress bar with loss, accuracy and images/s."""
        bar = progress_bar(
            "loss {task.fields[loss]:.4f} acc {task.fields[acc]:.3f} {task.fields[ips]:.0f} img/s", enabled=self.enabled
        )
        if bar is None:
            yield lambda **_: None
            return
        with bar:
            task = bar.add_task(description, total=total, loss=0.0, acc=0.0, ips=0.0)
            yield lambda **m: bar.update(task, advance=1, **m)

    def epoch(self, row: dict, routing: dict) -> None:
        if not self.enabled:
            return
        self.routing.append(routing)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(self.history[-1]))
        writer.writeheader()
        writer.writerows(self.history)
        atomic_write_text(self.out / "log.csv", buf.getvalue())
        atomic_write_text(
            self.out / "history.json", json.dumps({"epochs": self.history, "routing": self.routing}, indent=1)
        )
        training_curves(self.history, self.out / "curves.png")
        if self._tb is not None:
            for key, value in row.items():
                if key != "epoch":
                    self._tb.add_scalar(key.replace("_", "/", 1), value, row["epoch"])
            self._tb.flush()

    def finish(self, summary: dict) -> None:
        if not self.enabled:
            return
        atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=1))
        if self._tb is not None:
            self._tb.close()
