"""Per-step metrics: one JSON line per step in ``metrics.jsonl``, a progress line on the terminal,
and TensorBoard / Weights & Biases when configured and installed."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

# (metric key, label, format) shown on the progress line, when present.
PROGRESS_FIELDS = (
    ("reward/mean", "reward", "{:.3f}"),
    ("accuracy", "acc", "{:.3f}"),
    ("response_length/mean", "len", "{:.1f}"),
    ("groups/kept_fraction", "kept", "{:.2f}"),
    ("loss", "loss", "{:+.4f}"),
    ("approx_kl", "kl", "{:.4f}"),
    ("time/step", "s/step", "{:.1f}"),
)


class MetricsLogger:
    """Writes metrics for a run directory. On resume, lines of steps after the checkpoint (their
    updates were lost with the crash) are dropped so the file matches the restored state."""

    def __init__(
        self,
        run_dir: Path,
        total_steps: int,
        resume_from_step: int = 0,
        tensorboard: bool = False,
        wandb_project: str | None = None,
        config: dict[str, Any] | None = None,
        stream: TextIO | None = None,
        wandb_mode: str = "online",
    ):
        self.path = run_dir / "metrics.jsonl"
        self.total_steps = total_steps
        self.stream = stream if stream is not None else sys.stdout  # the one of now: a caller may redirect it
        self._started = time.monotonic()
        self._first_step = resume_from_step
        self._truncate_after(resume_from_step)
        self._tensorboard = _tensorboard_writer(run_dir) if tensorboard else None
        self._wandb = _wandb_run(wandb_project, config, run_dir, wandb_mode) if wandb_project else None

    def log(self, step: int, metrics: dict[str, float], note: str | None = None) -> None:
        """Record ``metrics`` of training step ``step`` (1-based: the number of updates done). ``note``: what
        went unusually (no update, and why); it ends the progress line and is kept in ``metrics.jsonl``."""
        with open(self.path, "a") as handle:
            handle.write(json.dumps({"step": step, **metrics, **({"note": note} if note else {})}) + "\n")
        print(self.progress_line(step, metrics) + (f"  [{note}]" if note else ""), file=self.stream, flush=True)
        if self._tensorboard is not None:
            for key, value in metrics.items():
                self._tensorboard.add_scalar(key, value, step)
            self._tensorboard.flush()
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)

    def progress_line(self, step: int, metrics: dict[str, float]) -> str:
        parts = [f"step {step}/{self.total_steps}"]
        parts += [f"{label} {fmt.format(metrics[key])}" for key, label, fmt in PROGRESS_FIELDS if key in metrics]
        done = step - self._first_step
        if done > 0:
            remaining = (time.monotonic() - self._started) / done * (self.total_steps - step)
            parts.append(f"ETA {_duration(remaining)}")
        return "  ".join(parts)

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self._wandb is not None:
            self._wandb.finish()

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        self.path.write_text("".join(line + "\n" for line in kept))


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every logged step of a run, in order."""
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _tensorboard_writer(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise RuntimeError("logging.tensorboard=true needs tensorboard: pip install 'rlvr[track]'") from error
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def _wandb_run(project: str, config: dict[str, Any] | None, run_dir: Path, mode: str):
    try:
        import wandb
    except ImportError as error:
        raise RuntimeError("logging.wandb_project needs wandb: pip install 'rlvr[track]'") from error
    return wandb.init(project=project, config=config, dir=str(run_dir), mode=mode)
