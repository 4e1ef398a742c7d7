"""The verifier interface (``Verdict``, ``Verifier``) and ``WorkerPool``, the process pool that
bounds each verification in time from any thread and any process."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Verdict:
    """The outcome of checking one completion."""

    reward: float
    correct: bool
    extracted: str | None = None
    reason: str = ""  # "correct", "wrong", "no answer", "timeout", "several different answers", ...
    details: dict[str, Any] = field(default_factory=dict)  # verifier-specific: passed/total, first failure, ...


@dataclass
class BatchStats:
    """Counts over a batch of verdicts, so that a silent all-zero reward cannot go unnoticed."""

    total: int
    correct: int
    reasons: dict[str, int]

    @classmethod
    def of(cls, verdicts: Sequence[Verdict]) -> BatchStats:
        return cls(
            total=len(verdicts),
            correct=sum(v.correct for v in verdicts),
            reasons=dict(Counter(v.reason for v in verdicts)),
        )

    @property
    def timeouts(self) -> int:
        return self.reasons.get("timeout", 0)

    @property
    def errors(self) -> int:
        return sum(n for reason, n in self.reasons.items() if "error" in reason)


class Verifier:
    """Base class. Subclasses implement :meth:`verify`, which must be safe to call from several
    threads at once; :meth:`verify_batch` may be overridden. Neither may raise: failures are
    verdicts with reward 0 and a reason."""

    def verify(self, completion: str, reference: Any) -> Verdict:
        raise NotImplementedError

    def verify_batch(
        self, completions: Sequence[str], references: Sequence[Any], workers: int | None = None
    ) -> list[Verdict]:
        """Verdicts in input order, ``workers`` verifications at a time (default: one per CPU).

        The base version runs :meth:`verify` on threads: verifiers that do their work in other
        processes (a sandbox, a :class:`WorkerPool`) are parallel this way."""
        if len(completions) != len(references):
            raise ValueError(f"{len(completions)} completions but {len(references)} references")
        workers = workers or os.cpu_count() or 1
        if workers <= 1 or len(completions) <= 1:
            return [self._verify_safely(c, r) for c, r in zip(completions, references, strict=True)]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"verify-{type(self).__name__}") as pool:
            return list(pool.map(self._verify_safely, completions, references))

    def _verify_safely(self, completion: str, reference: Any) -> Verdict:
        try:
            return self.verify(completion, reference)
        except Exception as error:  # a bug in a verifier must cost one reward, not the batch
            return Verdict(0.0, False, None, "error", {"error": f"{type(error).__name__}: {error}"})


class CallTimeout(Exception):
    """A :class:`WorkerPool` call exceeded its time bound; its worker was killed."""


class WorkerCrashed(Exception):
    """A :class:`WorkerPool` worker died (killed by the OS, out of memory, a crash in C code)."""


class RemoteError(Exception):
    """The target raised inside the worker; the message is its type and text."""


class WorkerPool:
    """Worker processes that run ``target(*args)``, each call bounded in time.

    Every call checks out an idle worker (starting one if none is idle), so concurrent calls from
    several threads run in parallel processes. A worker that exceeds the bound is killed and a
    fresh one is started in its place at once. The bound works from any thread, unlike
    ``signal.alarm``. Workers are fresh interpreters (not forks: forking a process that runs
    threads can deadlock, and ``spawn``/``forkserver`` re-run an unguarded main script), so they
    work from any caller, daemon processes included. Start-up, and ``initializer`` (run once per
    worker, e.g. a warm-up), are not counted against the bound. ``target`` and ``initializer``
    must be picklable (module-level functions or ``functools.partial`` of them)."""

    def __init__(
        self, target: Callable[..., Any], initializer: Callable[[], Any] | None = None, max_idle: int | None = None
    ):
        self._target = target
        self._initializer = initializer
        self._max_idle = max_idle or 2 * (os.cpu_count() or 1)
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        self._pid = os.getpid()

    def start(self, count: int) -> None:
        """Start workers ahead of need (without waiting), so that the first calls do not wait for
        start-up, e.g. before a batch of ``count`` concurrent calls."""
        with self._lock:
            missing = min(count, self._max_idle) - len(self._idle)
        for _ in range(missing):
            self._checkin(self._new_worker())

    def call(self, *args: Any, timeout: float) -> Any:
        """``target(*args)`` in a worker. Raises :class:`CallTimeout`, :class:`WorkerCrashed` or
        :class:`RemoteError`."""
        worker = self._checkout()
        try:
            result = worker.call(args, timeout)
        except (CallTimeout, WorkerCrashed):
            worker.kill()
            self._checkin(self._new_worker())  # starts up while the caller moves on
            raise
        except BaseException:
            worker.kill()
            raise
        self._checkin(worker)
        return result

    def close(self) -> None:
        """Stop every idle worker; calls still running finish and then stop theirs."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()

    def __del__(self) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("a WorkerPool cannot be pickled; give the other process its own")

    def _new_worker(self) -> _Worker:
        return _Worker(self._target, self._initializer)

    def _checkout(self) -> _Worker:
        with self._lock:
            if os.getpid() != self._pid:  # a forked copy: the idle workers belong to the parent
                self._pid, self._idle = os.getpid(), []
            while self._idle:
                worker = self._idle.pop(0)
                if worker.alive():
                    return worker
                worker.kill()
        return self._new_worker()

    def _checkin(self, worker: _Worker) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(worker)
                return
        worker.kill()


_STARTUP_LIMIT = 120.0  # seconds for a new worker to import its modules and run its initializer

# The worker's first message is the parent's sys.path (plain data), so that it can then unpickle
# a target defined in a package that is importable only through the parent's path.
_BOOTSTRAP = (
    "import sys\n"
    "from multiprocessing.connection import Connection\n"
    "conn = Connection(int(sys.argv[1]))\n"
    "sys.path[:] = conn.recv()\n"
    "from verifiers.base import _serve\n"
    "_serve(conn)\n"
)


class _Worker:
    def __init__(self, target: Callable[..., Any], initializer: Callable[[], Any] | None):
        parent_socket, child_socket = socket.socketpair()
        self._process = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, str(child_socket.fileno())],
            pass_fds=[child_socket.fileno()],
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C belongs to the parent, which kills its workers
        )
        child_socket.close()
        self._conn = multiprocessing.connection.Connection(parent_socket.detach())
        self._conn.send(list(sys.path))
        self._conn.send((target, initializer))
        self._ready = False

    def alive(self) -> bool:
        return self._process.poll() is None

    def call(self, args: tuple[Any, ...], timeout: float) -> Any:
        if not self._ready:
            self._receive(_STARTUP_LIMIT)
            self._ready = True
        self._conn.send(args)
        ok, value = self._receive(timeout)
        if not ok:
            raise RemoteError(value)
        return value

    def _receive(self, timeout: float) -> Any:
        if not self._conn.poll(timeout):
            raise CallTimeout(f"no answer within {timeout:g} s")
        try:
            return self._conn.recv()
        except (EOFError, OSError) as error:
            raise WorkerCrashed(f"verifier worker died (exit code {self._process.poll()})") from error

    def kill(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait(timeout=10)
        self._conn.close()


def _serve(conn: multiprocessing.connection.Connection) -> None:
    """The worker's loop: receive arguments, send back ``(True, result)`` or ``(False, error)``."""
    target, initializer = conn.recv()
    if initializer is not None:
        initializer()
    conn.send((True, "ready"))
    while True:
        try:
            args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply = (True, target(*args))
        except Exception as error:
            reply = (False, f"{type(error).__name__}: {error}")
        conn.send(reply)
