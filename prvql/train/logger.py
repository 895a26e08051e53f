"""Run logging: a progress bar (:func:`prvql.progress.progress_bar`: on a terminal a tqdm bar, elsewhere a line a
minute), a JSON-lines log and, when tensorboard is installed, event files.

``RUN_DIR/log.jsonl`` holds one JSON object per line: ``{"split": "train", "iteration": i, "lr": ..., "loss": ...,
"loss_prob_s0": ..., ...}`` every ``log_every`` iterations and ``{"split": "val", "iteration": i, ...}`` after each
validation. Only the main process writes; the other ranks get a disabled logger.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import TracebackType
from typing import Any

from prvql.atomic import atomic_write_text
from prvql.progress import Bar, progress_bar

LOG_NAME = "log.jsonl"

log = logging.getLogger(__name__)


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """All records of a JSON-lines log."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class RunLogger:
    """Progress bar + ``log.jsonl`` + optional TensorBoard for one training run.

    Args:
        run_dir: the run folder.
        total: the iteration budget (progress bar length).
        start: the iteration the run starts from (0, or the resumed one); log records after it are dropped.
        enabled: False on non-main ranks (everything becomes a no-op).
        tensorboard: write TensorBoard events to ``run_dir/tb`` when the package is installed.
    """

    def __init__(
        self, run_dir: str | Path, total: int, start: int = 0, enabled: bool = True, tensorboard: bool = True
    ) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / LOG_NAME
        self.bar: Bar | None = None
        self.writer: Any = None
        if not enabled:
            return
        if self.path.exists():
            kept = [r for r in read_log(self.path) if r.get("iteration", 0) <= start]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self.file = self.path.open("a")
        self.bar = progress_bar("train", total, "it", initial=start)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.info("tensorboard is not installed: no event files")
            else:
                self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tb"), purge_step=start + 1)

    def step(self, loss: float, lr: float) -> None:
        """Advance the progress bar by one iteration and show the latest loss and learning rate."""
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4g}", lr=f"{lr:.3g}", refresh=False)
            self.bar.update(1)

    def record(self, split: str, iteration: int, values: dict[str, float]) -> None:
        """Append one record to the log (and TensorBoard as ``split/key``)."""
        if not self.enabled:
            return
        entry = {"split": split, "iteration": iteration, **values}
        self.file.write(json.dumps(entry) + "\n")
        self.file.flush()
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"{split}/{key}", value, iteration)
        if split != "train" and self.bar is not None:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in values.items() if not k.startswith("loss_"))
            self.bar.write(f"[{split} @ {iteration}] {shown}")

    def warn(self, iteration: int, message: str) -> None:
        """A warning: to the console (Python logging) and as ``{"split": "warning", "message": ...}`` in the log."""
        if not self.enabled:
            return
        log.warning("%s", message)
        self.file.write(json.dumps({"split": "warning", "iteration": iteration, "message": message}) + "\n")
        self.file.flush()

    def close(self) -> None:
        """Close the progress bar and the log file."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        self.file.close()
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
