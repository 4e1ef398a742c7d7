"""What every sandbox back-end shares: limits, results, the ``Sandbox`` base class, and the
streaming process runner used by the back-ends that start a local process (bwrap, subprocess).

A back-end implements :meth:`Sandbox._execute`; argument checking, language selection, result
classification and batching live here once.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, ClassVar

from rlvr.config import option

STATUSES = ("ok", "error", "timeout", "memory", "output_limit", "compile_error", "sandbox_error")

# bwrap is started as this unprivileged uid and gid ("nobody") whenever the host side is root, so
# that RLIMIT_NPROC binds (the kernel exempts uid 0 from it) and host files stay out of reach.
SANDBOX_UID = 65534

# Back-ends that run programs as host uids (subprocess, docker) give each run or container its own
# uid from this range: RLIMIT_NPROC counts processes per host uid, so a shared uid would let one
# run's processes count against another's limit.
RUN_UID_RANGE = (200_000, 300_000)


def fresh_run_uid() -> int:
    """An unprivileged host uid from :data:`RUN_UID_RANGE` for one run or container."""
    return RUN_UID_RANGE[0] + secrets.randbelow(RUN_UID_RANGE[1] - RUN_UID_RANGE[0])


# The only environment sandboxed code sees (plus PWD set by the shell-less exec).
SANDBOX_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/work", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
# The environment of launcher processes started on the host: nothing from the caller's.
LAUNCHER_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


class SandboxError(RuntimeError):
    """A back-end that cannot run here; the message says what to install or configure."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run. Every back-end enforces all of them (see the README's Sandboxes section)."""

    timeout: float = option(10.0, "Wall-clock seconds before the whole process tree is killed (status 'timeout').")
    memory_mb: int = option(512, "Memory of the run in MiB: address space per process, and the whole tree where cgroups are available.")
    cpu_seconds: int | None = option(None, "CPU seconds per process (RLIMIT_CPU); None: the timeout rounded up, plus one.")
    max_processes: int = option(64, "Processes and threads the run may have at once.")
    max_open_files: int = option(256, "Open file descriptors per process (RLIMIT_NOFILE).")
    max_file_mb: int = option(32, "Largest file a process may write, in MiB (RLIMIT_FSIZE).")
    disk_mb: int = option(64, "Size of each private writable file system (the work dir and /tmp), in MiB.")
    max_output_bytes: int = option(1 << 20, "Bytes kept from each of stdout and stderr; more kills the run (status 'output_limit').")
    compile_timeout: float = option(30.0, "Wall-clock seconds the compiler of a compiled language (C++) may take, once per program.")
    compile_memory_mb: int = option(1024, "Memory of the compiler in MiB (address space per process, and the whole tree with cgroups).")

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None and (not isinstance(value, (int, float)) or value <= 0):
                raise ValueError(f"sandbox limit {field.name}={value!r} must be a positive number")

    @property
    def cpu_limit(self) -> int:
        return self.cpu_seconds if self.cpu_seconds is not None else int(self.timeout) + 1

    def rlimits(self) -> dict[str, int]:
        """The per-process limits, by ``resource`` module name (RLIMIT_AS, ...), soft = hard."""
        return {
            "RLIMIT_AS": self.memory_mb << 20,
            "RLIMIT_NPROC": self.max_processes,
            "RLIMIT_NOFILE": self.max_open_files,
            "RLIMIT_FSIZE": self.max_file_mb << 20,
            "RLIMIT_CPU": self.cpu_limit,
            "RLIMIT_CORE": 0,
        }

    def prlimit_argv(self) -> list[str]:
        """``prlimit`` (util-linux) options that set :meth:`rlimits` before exec'ing the program."""
        names = {"RLIMIT_AS": "as", "RLIMIT_NPROC": "nproc", "RLIMIT_NOFILE": "nofile", "RLIMIT_FSIZE": "fsize",
                 "RLIMIT_CPU": "cpu", "RLIMIT_CORE": "core"}
        return ["prlimit", *(f"--{names[key]}={value}:{value}" for key, value in self.rlimits().items()), "--"]


@dataclass(frozen=True)
class Language:
    """How to run a program of one language: the file the code goes in and the command, run in
    the work dir. A compiled language also has ``compile``, a command that writes the executable
    ``binary`` to stdout (so every back-end can hand it back without a file channel); the program
    is then run as ``./binary``. More languages are more entries in :data:`LANGUAGES`."""

    name: str
    filename: str
    argv: tuple[str, ...]
    compile: tuple[str, ...] = ()
    binary: str = ""


LANGUAGES: dict[str, Language] = {
    "python": Language("python", "main.py", ("python3", "main.py")),
    # The compiler's own output goes to stderr, where a compile error is reported from.
    "cpp": Language("cpp", "main.cpp", ("./main",), binary="main", compile=(
        "sh", "-c", "g++ -std=gnu++17 -O2 -pipe -o main main.cpp 1>&2 && cat main")),
}


@dataclass
class ExecResult:
    """The outcome of one run. ``status`` is one of :data:`STATUSES`; ``exit_code`` is negative
    when the process was killed by that signal, and None when it never ran or was killed by us."""

    status: str
    exit_code: int | None
    stdout: str
    stderr: str
    wall_time: float
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    # stdout as bytes (an executable from a compiler); not part of the result's repr.
    stdout_bytes: bytes = dataclasses.field(default=b"", repr=False)

    @property
    def truncated(self) -> bool:
        return self.stdout_truncated or self.stderr_truncated

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class RawOutcome:
    """What a back-end observed, before classification into an :class:`ExecResult`."""

    pid: int
    exit_code: int | None
    stdout: bytes
    stderr: bytes
    wall_time: float
    timed_out: bool = False
    output_overflow: bool = False
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    out_of_memory: bool = False


def classify(raw: RawOutcome) -> ExecResult:
    """The status of a run from what was observed. Order matters: a flood that also timed out is
    reported as the flood, a memory kill by its cause rather than as an error."""
    stderr = raw.stderr.decode("utf-8", "replace")
    if raw.output_overflow:
        status = "output_limit"
    elif raw.timed_out:
        status = "timeout"
    elif raw.out_of_memory or _ends_with_memory_error(stderr):
        status = "memory"
    elif raw.exit_code == 0:
        status = "ok"
    else:
        status = "error"
    return ExecResult(
        status=status,
        exit_code=None if raw.timed_out or raw.output_overflow else raw.exit_code,
        stdout=raw.stdout.decode("utf-8", "replace"),
        stderr=stderr,
        wall_time=raw.wall_time,
        stdout_truncated=raw.stdout_truncated,
        stderr_truncated=raw.stderr_truncated,
        stdout_bytes=raw.stdout,
    )


def _ends_with_memory_error(stderr: str) -> bool:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return bool(lines) and lines[-1].startswith("MemoryError")


def executable_file(argv: Sequence[str]) -> str | None:
    """The file among a run's files that must be executable: the program, when it is run as ``./NAME``
    (a compiled binary)."""
    return argv[0][2:] if argv and argv[0].startswith("./") else None


def check_files(files: Mapping[str, str | bytes] | None, program_name: str) -> dict[str, bytes]:
    """Relative file names (no ``..``) to bytes; the program itself must not be overwritten."""
    result: dict[str, bytes] = {}
    for name, content in (files or {}).items():
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or not path.parts or name != str(path):
            raise ValueError(f"sandbox file name {name!r} must be a plain relative path inside the work dir")
        if name == program_name:
            raise ValueError(f"sandbox file {name!r} would overwrite the program; pass the code as `code`")
        result[name] = content.encode() if isinstance(content, str) else bytes(content)
    return result


class Sandbox:
    """Runs untrusted programs under :class:`Limits`. Build one with ``sandboxes.get(name, **limits)``;
    the keyword arguments are the default limits of every run."""

    name: ClassVar[str] = ""
    # False for back-ends that only limit resources and do not isolate (see sandboxes.subprocess).
    isolated: ClassVar[bool] = True

    def __init__(self, **limits: Any):
        unknown = set(limits) - {field.name for field in dataclasses.fields(Limits)}
        if unknown:
            valid = ", ".join(field.name for field in dataclasses.fields(Limits))
            raise TypeError(f"unknown sandbox option(s) {sorted(unknown)}; valid: {valid}")
        self.limits = Limits(**limits)

    def run(
        self,
        code: str,
        *,
        stdin: str | bytes = "",
        timeout: float | None = None,
        memory_mb: int | None = None,
        files: Mapping[str, str | bytes] | None = None,
        language: str = "python",
        **limits: Any,
    ) -> ExecResult:
        """Run ``code`` as the main program of ``language`` with ``files`` beside it in a fresh
        work dir (a compiled language is compiled first: status ``compile_error`` if that fails).
        Unset limits come from the sandbox's defaults. Never raises for anything the program does;
        a back-end failure is status ``sandbox_error`` with the reason in stderr."""
        return self.session(code, files=files, language=language).run(stdin, timeout=timeout, memory_mb=memory_mb,
                                                                      **limits)

    def session(self, code: str, *, files: Mapping[str, str | bytes] | None = None, language: str = "python",
                **limits: Any) -> Session:
        """One program to run on many inputs (``session.run(stdin)``), compiled once here if its
        language is compiled; each run is still a fresh process in fresh isolation. ``limits``
        override the sandbox's defaults for the session (``compile_timeout=``, ...)."""
        return Session(self, code, files, language, _with(self.limits, limits))

    def _run_limited(self, argv: list[str], files: dict[str, bytes], stdin: bytes, run_limits: Limits) -> ExecResult:
        started = time.monotonic()
        try:
            raw = self._execute(argv, files, stdin, run_limits)
        except SandboxError as error:
            return ExecResult("sandbox_error", None, "", str(error), time.monotonic() - started)
        return classify(raw)

    def run_batch(
        self, programs: Sequence[str | Mapping[str, Any]], *, workers: int = 2, **common: Any
    ) -> list[ExecResult]:
        """Run many programs with at most ``workers`` at once; results in input order. Each item is
        the code, or a mapping of :meth:`run` arguments (``{"code": ..., "stdin": ...}``);
        ``common`` arguments apply to every item unless the item sets them."""
        jobs = [{"code": item} if isinstance(item, str) else dict(item) for item in programs]
        if workers < 1:
            raise ValueError(f"workers={workers} must be at least 1")
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda job: self.run(**{**common, **job}), jobs))

    def precompile(self, code: str) -> None:
        """A hint that the Python program ``code``, the caller's own (a verifier's harness), never
        untrusted code, will run many times: a back-end with a warm interpreter compiles it once,
        ahead of the runs, and runs it as the run's init process (one process fewer per run). It
        is isolated as any program is and its output and exit status are the same; only its
        process is PID 1 of the run, non-dumpable, and gets no signals from the processes it
        starts but those it handles."""

    def close(self) -> None:
        """Release what the back-end keeps between runs (warm servers); runs may follow."""

    def resident_pids(self) -> set[int]:
        """Host pids of the processes the back-end keeps between runs (its warm server): none of
        them ever runs a program, and none is a run's leftover."""
        return set()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _execute(self, argv: list[str], files: dict[str, bytes], stdin: bytes, limits: Limits) -> RawOutcome:
        raise NotImplementedError

    @classmethod
    def unavailable_reason(cls, **options: Any) -> str | None:
        """Why this back-end cannot run here (None if it can); used by ``sandboxes.get("auto")``."""
        return None


@dataclass
class Pumped:
    """What :func:`pump_pipes` collected."""

    stdout: bytes
    stderr: bytes
    timed_out: bool
    stdout_truncated: bool
    stderr_truncated: bool

    @property
    def overflow(self) -> bool:
        return self.stdout_truncated or self.stderr_truncated


def pump_pipes(stdin_fd: int, stdout_fd: int, stderr_fd: int, *, stdin: bytes, cap: int, deadline: float,
               exited: Callable[[], bool]) -> Pumped:
    """Feed ``stdin`` and collect stdout and stderr incrementally, each kept up to ``cap`` bytes;
    one byte more stops collecting (an overflow), so a flood never fills host memory. Stops at
    end of output, at an overflow, at ``deadline`` (timed out), or once ``exited()`` and nothing
    more is buffered. Closes ``stdin_fd``; the caller closes the others."""
    outputs = {stdout_fd: bytearray(), stderr_fd: bytearray()}
    overflow = {fd: False for fd in outputs}
    pending_stdin = memoryview(stdin)
    selector = selectors.DefaultSelector()
    for fd in outputs:
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)
    if pending_stdin:
        os.set_blocking(stdin_fd, False)
        selector.register(stdin_fd, selectors.EVENT_WRITE)
    else:
        os.close(stdin_fd)
    timed_out = False
    try:
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            # Once the main process has exited, only drain what is already buffered.
            done = exited()
            events = selector.select(0 if done else min(remaining, 0.5))
            if done and not events:
                break
            for key, _ in events:
                fd = key.fd
                if fd == stdin_fd:
                    try:
                        written = os.write(fd, pending_stdin[:65536])
                        pending_stdin = pending_stdin[written:]
                    except (BrokenPipeError, BlockingIOError):
                        pending_stdin = pending_stdin[:0]
                    if not pending_stdin:
                        selector.unregister(fd)
                        os.close(fd)
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    selector.unregister(fd)
                    continue
                buffer = outputs[fd]
                buffer += chunk[: cap + 1 - len(buffer)]
                if len(buffer) > cap:
                    del buffer[cap:]
                    overflow[fd] = True
            if any(overflow.values()):
                break
    finally:
        if stdin_fd in selector.get_map():
            os.close(stdin_fd)
        selector.close()
    return Pumped(bytes(outputs[stdout_fd]), bytes(outputs[stderr_fd]), timed_out, overflow[stdout_fd],
                  overflow[stderr_fd])


class Session:
    """A program ready to run: its files checked and, for a compiled language, its executable
    built (``compile_result`` says how that went). Made by :meth:`Sandbox.session`."""

    def __init__(self, sandbox: Sandbox, code: str, files: Mapping[str, str | bytes] | None, language: str,
                 limits: Limits):
        try:
            self.language = LANGUAGES[language]
        except KeyError:
            raise ValueError(f"unknown language {language!r}; available: {', '.join(LANGUAGES)}") from None
        self.sandbox = sandbox
        self.limits = limits
        self.files = {**check_files(files, self.language.filename), self.language.filename: code.encode()}
        self.compile_result: ExecResult | None = None
        if self.language.compile:
            self._compile()

    def _compile(self) -> None:
        limits = self.limits
        # The executable arrives on stdout: room for the largest file a run may write.
        compile_limits = dataclasses.replace(limits, timeout=limits.compile_timeout, memory_mb=limits.compile_memory_mb,
                                             max_output_bytes=max(limits.max_output_bytes, limits.max_file_mb << 20))
        result = self.sandbox._run_limited(list(self.language.compile), self.files, b"", compile_limits)
        if result.status == "ok" and result.stdout_bytes:
            self.files = {name: content for name, content in self.files.items() if name != self.language.filename}
            self.files[self.language.binary] = result.stdout_bytes
        elif result.status != "sandbox_error":
            why = {"timeout": f"the compiler ran out of time ({limits.compile_timeout:g} s)",
                   "memory": f"the compiler ran out of memory ({limits.compile_memory_mb} MiB)"}.get(result.status)
            result = dataclasses.replace(result, status="compile_error",
                                         stderr=result.stderr + (f"\n{why}" if why else ""))
        result.stdout_bytes = b""
        result.stdout = ""
        self.compile_result = result

    @property
    def compiled(self) -> bool:
        """False if compiling failed (then every run returns the compile result)."""
        return self.compile_result is None or self.compile_result.status == "ok"

    def run(self, stdin: str | bytes = "", *, timeout: float | None = None, memory_mb: int | None = None,
            **limits: Any) -> ExecResult:
        """One run of the program on ``stdin``, in a fresh process and a fresh work dir."""
        if not self.compiled:
            return self.compile_result
        overrides = {key: value for key, value in {"timeout": timeout, "memory_mb": memory_mb, **limits}.items()
                     if value is not None}
        run_limits = _with(self.limits, overrides)
        stdin_bytes = stdin.encode() if isinstance(stdin, str) else bytes(stdin)
        return self.sandbox._run_limited(list(self.language.argv), self.files, stdin_bytes, run_limits)


def _with(limits: Limits, overrides: Mapping[str, Any]) -> Limits:
    """``limits`` with ``overrides``, checked; the same object when they change nothing (the common
    case, per run)."""
    unset = object()  # (an unknown name is never "unchanged": replace() reports it)
    if all(getattr(limits, name, unset) == value for name, value in overrides.items()):
        return limits
    return dataclasses.replace(limits, **overrides)


def stream_process(
    argv: list[str],
    *,
    stdin: bytes,
    limits: Limits,
    env: Mapping[str, str],
    cwd: str | None = None,
    pass_fds: Sequence[int] = (),
    kill: Callable[[subprocess.Popen], None] | None = None,
) -> RawOutcome:
    """Start ``argv`` and run it through :func:`pump_pipes` (output capped while streaming). At
    ``limits.timeout`` or an overflow the run is killed with ``kill(process)`` (default: SIGKILL
    to its process group). Output is collected until the main process exits; children it leaves
    behind are the back-end's to kill."""
    kill = kill or _kill_process_group
    started = time.monotonic()
    deadline = started + limits.timeout
    stdin_read, stdin_write = os.pipe()
    try:
        process = subprocess.Popen(
            argv, stdin=stdin_read, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(env), cwd=cwd,
            pass_fds=tuple(pass_fds), start_new_session=True, close_fds=True,
        )
    except BaseException:
        os.close(stdin_write)
        raise
    finally:
        os.close(stdin_read)
    try:
        pumped = pump_pipes(stdin_write, process.stdout.fileno(), process.stderr.fileno(), stdin=stdin,
                            cap=limits.max_output_bytes, deadline=deadline, exited=lambda: process.poll() is not None)
        timed_out = pumped.timed_out
        if timed_out or pumped.overflow:
            kill(process)
        try:
            exit_code = process.wait(timeout=max(deadline - time.monotonic(), 0) + 0.5)
        except subprocess.TimeoutExpired:
            timed_out = True
            kill(process)
            exit_code = process.wait()
    finally:
        for stream in (process.stdout, process.stderr):
            if stream and not stream.closed:
                stream.close()
    return RawOutcome(
        pid=process.pid,
        exit_code=exit_code,
        stdout=pumped.stdout,
        stderr=pumped.stderr,
        wall_time=time.monotonic() - started,
        timed_out=timed_out,
        output_overflow=pumped.overflow,
        stdout_truncated=pumped.stdout_truncated,
        stderr_truncated=pumped.stderr_truncated,
    )


def _kill_process_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
