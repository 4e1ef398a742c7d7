"""What a long run does when something boring goes wrong: a preemption signal, a non-finite loss,
verifiers that fail, a full disk. Each costs at most the current step, never the run and never
silently the reward.

* :class:`StopSignals` turns SIGTERM/SIGINT into a request the trainer honours at the next safe point
  (the end of a step): it writes a checkpoint and stops with :class:`Interrupted`; ``--resume`` continues
  exactly. A second SIGINT interrupts at once.
* :class:`NonFiniteGuard` counts steps whose update was skipped for a non-finite loss or gradient and
  stops the run after ``faults.max_nonfinite_steps`` in a row; :func:`require_finite_weights` keeps a NaN
  out of every checkpoint.
* :func:`check_verifier_failures` stops the run when too many verifications of a step errored or timed
  out, instead of training on rewards that silently became zeros.
* :func:`engine_failed` names the cause when the rollout engine dies and the checkpoint to resume from.

Every decision is taken the same way on every rank (:func:`agreed`): a flag one rank raises is raised for
all, so no rank skips an update or a checkpoint the others take. ``world`` is the job's
:class:`rlvr.distributed.World` (None: a single process).
"""

from __future__ import annotations

import math
import signal
import sys
import threading
from collections.abc import Iterable
from types import FrameType
from typing import Any, TextIO


class RunStopped(RuntimeError):
    """The run stopped on purpose; the message says why and what to do. ``exit_code`` is for the CLI."""

    exit_code = 1


class Interrupted(RunStopped):
    """A stop signal arrived; a checkpoint of the last finished step was written."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum  # what a shell reports for a process ended by that signal


class NonFiniteUpdates(RunStopped):
    """Too many updates in a row had a non-finite loss or gradient."""


class CheckpointNotWritten(RunStopped):
    """A checkpoint could not be written (e.g. the disk is full); the previous one is intact."""


class EngineFailed(RunStopped):
    """The rollout engine failed while sampling; nothing of the step was applied."""


def engine_failed(engine: str, step: int, error: BaseException, last_checkpoint: Any) -> EngineFailed:
    resume = (f"the last checkpoint, {last_checkpoint}, is intact: run the same command with --resume"
              if last_checkpoint else "no checkpoint was written yet: run the same command again")
    return EngineFailed(f"step {step}: the {engine} rollout engine failed while sampling ({type(error).__name__}: "
                        f"{error}); {resume}")


class VerifierFailures(RunStopped):
    """Too many verifications of a step errored or timed out."""


def agreed(flag: bool, world: Any = None) -> bool:
    """``flag`` or'ed over every rank of ``world`` (the flag itself for a single process)."""
    if world is None or not world.distributed:
        return flag
    from rlvr.distributed import reduce

    return reduce(world, [1.0 if flag else 0.0], "max")[0] > 0


class StopSignals:
    """While active (a context manager), SIGTERM and SIGINT only set :attr:`received`; the previous
    handlers come back on exit. A second SIGINT raises :class:`KeyboardInterrupt` at once (a user who
    really means it)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, stream: TextIO = sys.stderr):
        self.received: int | None = None
        self._stream = stream
        self._previous: dict[int, Any] = {}

    def install(self) -> StopSignals:
        """Take over the signals; a no-op outside the main thread, where Python delivers no signals."""
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def __enter__(self) -> StopSignals:
        return self.install()

    def __exit__(self, *exc_info: object) -> None:
        self.restore()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        print(f"received {signal.Signals(signum).name}: finishing the current step, then writing a checkpoint "
              "and stopping (Ctrl-C again stops at once, losing the step)", file=self._stream, flush=True)

    def requested(self, world: Any = None) -> bool:
        """Whether any rank received a stop signal (every rank must call it at the same point)."""
        return agreed(self.received is not None, world)

    def interrupted(self, step: int, checkpoint_dir: Any) -> Interrupted:
        signum = self.received if self.received is not None else signal.SIGTERM
        return Interrupted(f"stopped by {signal.Signals(signum).name} after step {step}; checkpoint {checkpoint_dir} "
                           "holds it: run the same command with --resume to continue", signum)


def finite_update(loss: float | None, grad_norm: float, world: Any = None) -> bool:
    """Whether an optimizer step may be taken: the loss (this rank's share; None when it had no samples)
    and the global gradient norm are finite on every rank."""
    local = math.isfinite(grad_norm) and (loss is None or math.isfinite(loss))
    return not agreed(not local, world)


class NonFiniteGuard:
    """Counts training steps in a row whose update was skipped (all or part) for a non-finite loss or
    gradient; :meth:`observe` raises :class:`NonFiniteUpdates` when ``limit`` is reached."""

    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError(f"faults.max_nonfinite_steps must be at least 1, got {limit}")
        self.limit = limit
        self.in_a_row = 0

    def observe(self, step: int, skipped_updates: float) -> None:
        self.in_a_row = self.in_a_row + 1 if skipped_updates > 0 else 0
        if self.in_a_row >= self.limit:
            raise NonFiniteUpdates(
                f"step {step}: {self.in_a_row} steps in a row had a non-finite loss or gradient and their updates "
                "were skipped; the weights of the last checkpoint are finite: lower optim.lr or optim.max_grad_norm, "
                "or check the rewards and data, then --resume"
            )


def require_finite_weights(named_parameters: Iterable[tuple[str, Any]], world: Any = None) -> None:
    """Raise :class:`NonFiniteUpdates` naming the first parameter holding a NaN or inf (on any rank);
    called before a checkpoint is written, so none ever holds one."""
    import torch

    bad = None
    with torch.no_grad():
        for name, parameter in named_parameters:
            local = parameter.to_local() if hasattr(parameter, "to_local") else parameter  # a sharded DTensor
            if not bool(torch.isfinite(local).all()):
                bad = name
                break
    if agreed(bad is not None, world):
        where = f"parameter {bad!r}" if bad else "a parameter on another rank"
        raise NonFiniteUpdates(f"{where} holds a NaN or inf: this checkpoint is not written, the last one is intact; "
                               "lower optim.lr and --resume")


def check_verifier_failures(step: int, metrics: dict[str, float], max_share: float, world: Any = None) -> None:
    """Stop when more than ``max_share`` of the step's verifications errored or timed out (their reward
    would be 0 though nothing was judged): a sandbox service or a verifier worker that died."""
    share = metrics.get("verifier/failure_share", 0.0)
    if agreed(share > max_share, world):
        raise VerifierFailures(
            f"step {step}: {100 * share:.0f}% of verifications failed ({metrics.get('verifier/errors', 0):.0f} errors, "
            f"{metrics.get('verifier/timeouts', 0):.0f} timeouts), above faults.max_verifier_failure_share="
            f"{max_share}: the rewards would be zeros that judge nothing. Check the sandbox service "
            "(`rlvr sandbox check`) or raise verifier.time_limit, then --resume from the last checkpoint"
        )
