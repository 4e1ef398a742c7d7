"""The host side of a warm fork server (``_zygote.py``), shared by the bwrap and docker back-ends.

A back-end starts the server once (inside bwrap, or as a container's main process) and hands
back the host's end of a ``SOCK_SEQPACKET`` socket to it; :class:`ForkServer` then turns each run
into one request. The
run's data never passes through the server: the host makes the run's pipes, a control socket
and a memfd with its files, and hands the server only the descriptors, which the run's init
reads after it has left the server. Where the host can make cgroups, it also hands over
descriptors through which init moves itself into the run's cgroup, first thing, before
anything of the run exists (no round trip to the host, and no host-side move, which on cgroup v1
waits for an RCU grace period). The host streams the output with the usual caps, and asks the
init to kill the run on overflow; if init does not answer in time, the cgroup is
killed, and without a cgroup the whole server is restarted, so a run can never outlive its limits.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sandboxes._cgroup import Cgroup
from sandboxes.base import SANDBOX_ENV, Limits, RawOutcome, SandboxError, executable_file, pump_pipes

ZYGOTE_SOURCE = Path(__file__).with_name("_zygote.py").read_text()
# Seconds the server gets to start, and a run's init to set up or to report after a kill.
START_SECONDS = 20.0
GRACE_SECONDS = 3.0
# The interpreter of the server, on the outer sandbox's file system (a real binary, not a shim).
PYTHON = "/usr/bin/python3"
# The server's bound on one message (``MAX_REQUEST`` in _zygote.py), and on programs it keeps compiled.
MAX_MESSAGE = 1 << 16
MAX_PRECOMPILED = 16


class ServerProcess:
    """What a back-end returns from its ``start`` callable: how to stop the server and why it died."""

    def stop(self) -> None:
        raise NotImplementedError

    def pids(self) -> set[int]:
        """Host pids of the server's own processes (not of its runs)."""
        return set()

    def failure(self) -> str:
        """What the server said before it died (for error messages)."""
        return ""


class ForkServer:
    """One warm server; thread-safe; (re)started on first use and whenever it died."""

    def __init__(self, start: Callable[[], tuple[socket.socket, ServerProcess]], what: str):
        self._start = start
        self.what = what
        self._lock = threading.Lock()
        self._channel: socket.socket | None = None
        self._process: ServerProcess | None = None
        self._cgroups: list[Cgroup] = []
        self._cgroups_lock = threading.Lock()
        # Sent to every server started, the current one included.
        self._precompile_messages: list[bytes] = []

    def close(self) -> None:
        with self._lock:
            self._stop_locked()
        with self._cgroups_lock:
            for cgroup in self._cgroups:
                cgroup.remove()
            self._cgroups.clear()

    def _stop_locked(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self._process is not None:
            self._process.stop()
            self._process = None

    def _ensure_started(self) -> socket.socket:
        if self._channel is not None:
            return self._channel
        host_end, self._process = self._start()
        host_end.settimeout(START_SECONDS)
        try:
            hello = host_end.recv(16)
        except OSError:
            hello = b""
        if hello != b"ready":
            failure = self._process.failure()
            host_end.close()
            self._stop_locked()
            raise SandboxError(f"the {self.what} fork server did not start: {failure.strip()[-1000:] or 'no output'}")
        host_end.settimeout(None)
        for message in self._precompile_messages:
            host_end.send(message)
        self._channel = host_end
        return host_end

    def precompile(self, filename: str, source: str) -> None:
        """Have the server compile the Python program ``filename`` = ``source`` once, so that runs
        of exactly this program skip compiling it (see :meth:`Sandbox.precompile`)."""
        message = json.dumps({"precompile": filename, "source": source}).encode()
        with self._lock:
            if (len(message) >= MAX_MESSAGE or message in self._precompile_messages
                    or len(self._precompile_messages) >= MAX_PRECOMPILED):
                return
            self._precompile_messages.append(message)
            if self._channel is not None:
                with contextlib.suppress(OSError):  # a dead server: its successor gets it on start
                    self._channel.send(message)

    def resident_pids(self) -> set[int]:
        """The server's own processes, and its spare inits: cloned ahead of their runs, they hold
        nothing of a run until one arrives, and then move into its cgroup first thing."""
        process = self._process
        found = process.pids() if process is not None else set()
        return found.union(*(_spare_inits(pid) for pid in found))

    def restart(self) -> None:
        """Kill the server and every run in it (the last resort when a run cannot be killed alone)."""
        with self._lock:
            self._stop_locked()

    # --- one run

    def execute(self, argv: list[str], files: dict[str, bytes], stdin: bytes, limits: Limits) -> RawOutcome:
        request: dict[str, Any] = {
            "argv": argv, "env": SANDBOX_ENV, "rlimits": limits.rlimits(), "timeout": limits.timeout,
            "disk_bytes": limits.disk_mb << 20,
            # ``python3 FILE`` runs in the warm interpreter instead of starting a new one.
            "python": argv[1] if len(argv) == 2 and argv[0] == "python3" else None,
        }
        executable = executable_file(argv)
        files_fd = os.memfd_create("sandbox-files")
        control, control_for_run = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pipes = [os.pipe() for _ in range(3)]
        (stdin_read, stdin_write), (stdout_read, stdout_write), (stderr_read, stderr_write) = pipes
        for_run = [control_for_run.fileno(), stdin_read, stdout_write, stderr_write, files_fd]
        started = time.monotonic()
        cgroup = None
        try:
            cgroup = self._acquire_cgroup(limits)
            if cgroup is not None:
                try:
                    for_run += cgroup.open_for_joining()
                except OSError as error:
                    raise SandboxError(f"cannot put the run into its cgroup: {error}") from None
            request["cgroup_fds"] = len(for_run) - 5
            # The files' bytes one after another; the request says where each ends.
            request["files"] = [[name, len(content), name == executable] for name, content in files.items()]
            with open(files_fd, "wb", closefd=False) as handle:
                handle.write(b"".join(files.values()))
            os.lseek(files_fd, 0, os.SEEK_SET)
            with self._lock:
                try:
                    socket.send_fds(self._ensure_started(), [json.dumps(request).encode()], for_run)
                except OSError:  # the server died since the last run (killed from outside): once more
                    self._stop_locked()
                    try:
                        socket.send_fds(self._ensure_started(), [json.dumps(request).encode()], for_run)
                    except OSError as error:
                        self._stop_locked()
                        raise SandboxError(f"the {self.what} fork server is gone ({error})") from None
        except BaseException:
            control.close()
            for fd in (stdin_write, stdout_read, stderr_read):
                os.close(fd)
            if cgroup is not None:
                self._release_cgroup(cgroup)
            raise
        finally:
            control_for_run.close()
            for fd in for_run[1:]:
                os.close(fd)
        try:
            pumped = pump_pipes(stdin_write, stdout_read, stderr_read, stdin=stdin, cap=limits.max_output_bytes,
                                deadline=started + limits.timeout + GRACE_SECONDS, exited=lambda: False)
            if pumped.timed_out or pumped.overflow:
                with contextlib.suppress(OSError):
                    control.send(b"kill")
            report = self._receive(control, time.monotonic() + limits.timeout + GRACE_SECONDS)
            if report is None:
                self._kill_run(cgroup)
                raise SandboxError(f"the {self.what} run did not report back (the run was killed)")
            if "error" in report:
                raise SandboxError(report["error"])
            wait_status = report["wait_status"]
            return RawOutcome(
                pid=0,
                exit_code=None if wait_status is None else os.waitstatus_to_exitcode(wait_status),
                stdout=pumped.stdout,
                stderr=pumped.stderr,
                wall_time=time.monotonic() - started,
                timed_out=report["timed_out"] or pumped.timed_out,
                output_overflow=pumped.overflow,
                stdout_truncated=pumped.stdout_truncated,
                stderr_truncated=pumped.stderr_truncated,
                out_of_memory=bool(cgroup and cgroup.out_of_memory()),
            )
        finally:
            control.close()
            for fd in (stdout_read, stderr_read):
                os.close(fd)
            if cgroup is not None:
                self._release_cgroup(cgroup)

    def _receive(self, control: socket.socket, deadline: float) -> dict | None:
        control.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            return _json(control.recv(MAX_REPORT))
        except OSError:
            return None

    def _kill_run(self, cgroup: Cgroup | None) -> None:
        if cgroup is not None:
            cgroup.kill_all()
        else:
            self.restart()

    def _acquire_cgroup(self, limits: Limits) -> Cgroup | None:
        # A returned cgroup can still hold the init of its last run for a moment (it exits
        # right after reporting): take an empty one, else make a new one.
        with self._cgroups_lock:
            empty = next((cgroup for cgroup in self._cgroups if cgroup.empty()), None)
            if empty is not None:
                self._cgroups.remove(empty)
        cgroup = empty or Cgroup.create(limits.memory_mb << 20, limits.max_processes + 2)
        if cgroup is not None:
            cgroup.reset(limits.memory_mb << 20, limits.max_processes + 2)
        return cgroup

    def _release_cgroup(self, cgroup: Cgroup) -> None:
        with self._cgroups_lock:
            self._cgroups.append(cgroup)


MAX_REPORT = 1 << 16


def _spare_inits(server: int) -> set[int]:
    """Children of ``server`` still in its own cgroup: not moved into a run's (a run's init, too, for the
    instant between its request and its move, which is its first act; where runs get no
    cgroup of their own, every child: a run's init too, never the program it starts)."""
    try:
        own = Path(f"/proc/{server}/cgroup").read_bytes()
        children = Path(f"/proc/{server}/task/{server}/children").read_text().split()
    except OSError:
        return set()
    found = set()
    for child in children:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{child}/cgroup").read_bytes() == own:
                found.add(int(child))
    return found


def _json(message: bytes) -> dict | None:
    try:
        value = json.loads(message)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
