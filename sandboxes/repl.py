"""A persistent, sandboxed Python interpreter: the tool of multi-turn rollouts (``rlvr.rollout.tools``).

    with PythonRepl(time_limit=5) as repl:
        repl.run("x = 6 * 7").status          # "ok"
        repl.run("x + 1").output              # "43\\n" (a last expression is echoed, as in a REPL)

Each :class:`PythonRepl` is one long-lived ``python3`` (``_repl_server.py``) in its own bubblewrap sandbox:
a read-only ``/usr``, a minimal ``/dev``, private size-limited tmpfs ``/work`` and ``/tmp``, no network, new
user (further user namespaces disabled), PID, IPC and UTS namespaces, a fixed environment, no capabilities,
and, when we are root, a fresh unprivileged host uid per interpreter, so its process limit is its own. The
interpreter has the rlimits of :class:`~sandboxes.base.Limits` (address space, processes, open files, file
size) and, where cgroups are writable, its own cgroup bounding the memory and process count of its whole
tree (an out-of-memory kill is reported as ``memory``); every call is bounded in time and output. Calls share one namespace, so variables defined in one
exist in the next, until :meth:`PythonRepl.close`.

A call that runs out of time first gets an exception raised into it inside the sandbox (the state
survives); if the code ignores it, the whole sandbox is killed from the host, the call is reported as a
timeout and the next call starts a fresh interpreter (``restarted`` says so). Nothing the sandbox says is
trusted: replies are length-checked JSON, and anything else is a ``sandbox_error`` that kills it too. Code
can forge its own call's reply (it runs in the process that answers), which changes nothing it could not
print; every reply carries the number of the call it answers, so a stale one is never taken for a later
call's. The host never executes or evaluates the code. A separate back-end from the one-shot sandboxes of the code
verifier (``sandboxes.bwrap``), whose runs are fresh processes by design.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from sandboxes._cgroup import Cgroup
from sandboxes.base import LAUNCHER_ENV, SANDBOX_ENV, SANDBOX_UID, Limits, SandboxError, fresh_run_uid
from sandboxes.bwrap import drop_privileges_argv

SERVER_SOURCE = Path(__file__).with_name("_repl_server.py").read_text()
PYTHON = "/usr/bin/python3"
START_SECONDS = 10.0  # for the interpreter to start and answer its first call
KILL_GRACE_SECONDS = 1.0  # past the call's time limit before the host kills the sandbox
STOP_SECONDS = 2.0  # for bwrap to exit once the sandbox's PID 1 is killed
CPU_CALLS = 32  # the interpreter's CPU-time limit is this many calls' worth of time
REPL_STATUSES = ("ok", "error", "timeout", "memory", "output_limit", "sandbox_error")


@dataclass(frozen=True)
class ReplResult:
    """One call: ``status`` is one of :data:`REPL_STATUSES`; ``output`` is stdout and stderr interleaved as
    written (a traceback for ``error``), at most the output cap; ``restarted``: the interpreter had died
    (killed after a timeout, a crash) and this call ran in a fresh one, without the earlier state."""

    status: str
    output: str
    wall_time: float
    truncated: bool = False
    restarted: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class PythonRepl:
    """One persistent sandboxed interpreter. ``time_limit``: seconds per call; ``memory_mb``: address space
    of each process; ``max_output_bytes``: output kept per call (more is status ``output_limit``); the other
    :class:`~sandboxes.base.Limits` as there; ``cgroup_parent``: a cgroup to make this interpreter's inside (its
    limits then bound it and its siblings together). Started on the first :meth:`run`."""

    def __init__(self, *, time_limit: float = 5.0, memory_mb: int = 512, max_output_bytes: int = 8192,
                 max_processes: int = 8, bwrap: str = "bwrap", cgroup_parent: Cgroup | None = None, **limits: object):
        # RLIMIT_CPU counts over the interpreter's whole life: room for many calls, each also timed.
        limits.setdefault("cpu_seconds", int(CPU_CALLS * time_limit) + 1)
        self.limits = Limits(timeout=time_limit, memory_mb=memory_mb, max_output_bytes=max_output_bytes,
                             max_processes=max_processes, **limits)  # type: ignore[arg-type]
        self.bwrap = bwrap
        self._process: subprocess.Popen | None = None
        self._requests: int | None = None  # host -> interpreter
        self._replies: int | None = None  # interpreter -> host
        self._log: tempfile._TemporaryFileWrapper | None = None
        self._cgroup: Cgroup | None = None
        self._cgroup_parent = cgroup_parent  # shared with other interpreters: their memory together is bounded
        self._started_once = False
        self._number = 0
        self.calls = 0

    @staticmethod
    def unavailable_reason(bwrap: str = "bwrap") -> str | None:
        """Why the REPL cannot run here (None if it can)."""
        if shutil.which(bwrap) is None:
            return f"{bwrap!r} is not installed (apt-get install bubblewrap)"
        with PythonRepl(bwrap=bwrap) as repl:
            probe = repl.run("1")
        if probe.status != "ok":
            return f"the sandboxed interpreter does not start: {probe.output.strip()[:300]}"
        return None

    def run(self, code: str) -> ReplResult:
        """Run ``code`` in the interpreter's namespace. Never raises for anything the code does."""
        started = time.monotonic()
        restarted = self._started_once and self._process is None
        self.calls += 1
        try:
            if self._process is None:
                self._start()
            body = code.encode("utf-8", "replace")
            self._send(struct.pack(">I", len(body)) + body, time.monotonic() + START_SECONDS)
            self._number += 1
            deadline = time.monotonic() + self.limits.timeout + KILL_GRACE_SECONDS  # the start does not count
            reply = self._receive(deadline)
            while reply["call"] != self._number:  # a stale reply (an earlier call's code forged its own)
                reply = self._receive(deadline)
        except _Timeout:
            self._kill()
            return ReplResult("timeout", f"the call ran past its time limit ({self.limits.timeout:g} s) and was "
                              "killed; the interpreter restarts empty", time.monotonic() - started, restarted=restarted)
        except _Died:
            if self._out_of_memory():
                return self._memory_error(started, restarted)
            how = self._kill()
            return ReplResult("error", f"the interpreter died during the call ({how}, e.g. its CPU-time limit); "
                              "the next call starts a fresh one", time.monotonic() - started, restarted=restarted)
        except (SandboxError, OSError) as error:
            if self._out_of_memory():  # killed between calls: memory its siblings took (a shared cgroup_parent)
                return self._memory_error(started, restarted)
            self._kill()
            return ReplResult("sandbox_error", str(error), time.monotonic() - started, restarted=restarted)
        return ReplResult(reply["status"], reply["output"], time.monotonic() - started, reply["truncated"], restarted)

    def _out_of_memory(self) -> bool:
        return self._cgroup is not None and self._cgroup.out_of_memory()

    def _memory_error(self, started: float, restarted: bool) -> ReplResult:
        self._kill()
        shared = ", or the memory all interpreters share" if self._cgroup_parent is not None else ""
        return ReplResult("memory", f"the interpreter ran out of memory ({self.limits.memory_mb} MiB{shared}) and "
                          "was killed; the next call starts a fresh one", time.monotonic() - started, restarted=restarted)

    def close(self) -> None:
        """Stop the interpreter (its state is gone); a later :meth:`run` starts a fresh one."""
        self._kill()

    def __enter__(self) -> PythonRepl:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._kill()

    def _argv(self, server_fd: int) -> list[str]:
        uid = fresh_run_uid() if os.geteuid() == 0 else SANDBOX_UID
        argv = [self.bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--new-session",
                "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "sandbox", "--clearenv"]
        for key, value in SANDBOX_ENV.items():
            argv += ["--setenv", key, value]
        argv += ["--ro-bind", "/usr", "/usr"]
        for name in ("bin", "sbin", "lib", "lib32", "lib64"):
            host = Path("/") / name
            if host.is_symlink():
                argv += ["--symlink", os.readlink(host), str(host)]
            elif host.is_dir():
                argv += ["--ro-bind", str(host), str(host)]
        disk = str(self.limits.disk_mb << 20)
        argv += ["--proc", "/proc", "--dev", "/dev", "--size", disk, "--tmpfs", "/work", "--size", disk,
                 "--tmpfs", "/tmp", "--perms", "0444", "--file", str(server_fd), "/sandbox/repl_server.py",
                 "--remount-ro", "/", "--chdir", "/work", "--"]
        # Output goes to a file in /tmp: a file may hold the output cap and a little more, never fill the disk.
        limits = replace(self.limits, max_file_mb=max(1, -(-self.limits.max_output_bytes // (1 << 20)) + 1))
        return [*drop_privileges_argv(uid), *argv, *limits.prlimit_argv(), PYTHON, "-I", "-B", "/sandbox/repl_server.py"]

    def _start(self) -> None:
        if shutil.which(self.bwrap) is None:
            raise SandboxError(f"{self.bwrap!r} is not installed (apt-get install bubblewrap); the python tool needs it")
        server_fd = os.memfd_create("repl-server")
        requests_read, requests_write = os.pipe()
        replies_read, replies_write = os.pipe()
        self._log = tempfile.TemporaryFile()
        # the interpreter's tree: its processes plus bwrap's two and the interpreter itself
        self._cgroup = Cgroup.create(self.limits.memory_mb << 20, self.limits.max_processes + 3, self._cgroup_parent)
        try:
            os.write(server_fd, SERVER_SOURCE.encode())
            os.lseek(server_fd, 0, os.SEEK_SET)
            self._process = subprocess.Popen(
                [*(self._cgroup.join_argv() if self._cgroup else []), *self._argv(server_fd)], stdin=requests_read, stdout=replies_write, stderr=self._log, env=LAUNCHER_ENV,
                pass_fds=(server_fd,), start_new_session=True, close_fds=True,
            )
        except OSError as error:
            os.close(requests_write)
            os.close(replies_read)
            raise SandboxError(f"could not start bubblewrap for the python tool ({error})") from error
        finally:
            for fd in (server_fd, requests_read, replies_write):
                os.close(fd)
        self._requests, self._replies = requests_write, replies_read
        self._started_once = True
        self._number = 0  # calls sent to this interpreter; its replies carry the number they answer
        settings = json.dumps({"time_limit": self.limits.timeout, "max_output_bytes": self.limits.max_output_bytes})
        self._send(struct.pack(">I", len(settings)) + settings.encode(), time.monotonic() + START_SECONDS)

    def _send(self, data: bytes, deadline: float) -> None:
        assert self._requests is not None
        view = memoryview(data)
        with selectors.DefaultSelector() as selector:
            selector.register(self._requests, selectors.EVENT_WRITE)
            while view:
                if not selector.select(max(0.0, deadline - time.monotonic())):
                    raise self._failure("the interpreter stopped reading its input")
                try:
                    view = view[os.write(self._requests, view[: 1 << 16]) :]
                except BrokenPipeError:
                    raise self._failure("the interpreter exited") from None

    def _receive(self, deadline: float) -> dict:
        header = self._read(4, deadline)
        size = struct.unpack(">I", header)[0]
        if size > 4 * self.limits.max_output_bytes + 1024:  # JSON escapes at most quadruple the output
            raise SandboxError(f"the interpreter sent a reply of {size} bytes, more than any honest reply")
        try:
            reply = json.loads(self._read(size, deadline))
        except ValueError as error:
            raise SandboxError(f"the interpreter sent a malformed reply ({error})") from None
        if (not isinstance(reply, dict) or reply.get("status") not in REPL_STATUSES
                or not isinstance(reply.get("output"), str) or not isinstance(reply.get("truncated"), bool)
                or not isinstance(reply.get("call"), int)):
            raise SandboxError("the interpreter sent a malformed reply")
        if len(reply["output"].encode("utf-8", "replace")) > 4 * self.limits.max_output_bytes:
            raise SandboxError("the interpreter sent more output than its cap")
        return reply

    def _read(self, count: int, deadline: float) -> bytes:
        assert self._replies is not None
        data = bytearray()
        with selectors.DefaultSelector() as selector:
            selector.register(self._replies, selectors.EVENT_READ)
            while len(data) < count:
                if not selector.select(max(0.0, deadline - time.monotonic())):
                    raise _Timeout
                chunk = os.read(self._replies, count - len(data))
                if not chunk:
                    raise _Died
                data += chunk
        return bytes(data)

    def _failure(self, what: str) -> SandboxError:
        detail = ""
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.seek(0)
                detail = self._log.read(2000).decode("utf-8", "replace").strip()
        return SandboxError(f"{what}" + (f": {detail}" if detail else ""))

    def _kill(self) -> str:
        """Kill the sandbox's PID 1 (when it dies the kernel kills everything in its namespace); bwrap, its
        parent, reaps it and exits (killing bwrap first would orphan PID 1 to a host init that may never reap
        it). Returns how bwrap ended, for messages."""
        process, self._process = self._process, None
        for fd in (self._requests, self._replies):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._requests = self._replies = None
        if self._log is not None:
            self._log.close()
            self._log = None
        cgroup, self._cgroup = self._cgroup, None
        if process is None:
            if cgroup is not None:
                cgroup.remove()
            return ""
        for pid in _children(process.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:  # bwrap before it forked PID 1, or stuck: kill it too
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()
        if cgroup is not None:
            cgroup.remove()
        return f"exit status {process.returncode}"


class _Timeout(Exception):
    """The interpreter did not answer within the call's time limit and grace."""


class _Died(Exception):
    """The interpreter's reply channel closed during a call."""


def _children(pid: int) -> list[int]:
    """Host pids of the direct children of ``pid``."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found.extend(int(child) for child in (task / "children").read_text().split())
    return found
