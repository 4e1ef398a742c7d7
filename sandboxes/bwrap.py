"""The ``bwrap`` back-end: runs forked from a warm server inside one bubblewrap sandbox.

The sandbox (started on first use, restarted if it dies) holds a read-only ``/usr`` (the host's
runtime, with the usual ``/bin``, ``/lib`` links), a minimal ``/dev``, nothing else of the host's
file system, no network, no host IPC, a fixed environment and no capabilities; bwrap itself is
started as uid 65534 ("nobody") when the host side is root, so the namespace's user is an
unprivileged host user. Its only process is the fork server (``_zygote.py``, host side in
``_warm.py``), which gives every run its own nested user namespace with fresh mount, PID and IPC
namespaces, a network namespace of its own while it runs (made by the server, lent to one run at
a time, its loopback down), its own ``/proc``, private size-limited tmpfs ``/work`` (the program and
``files``), ``/tmp`` and ``/dev/shm``, a read-only ``/dev``, the rlimits, a seccomp filter against
new user namespaces, and, where cgroups are writable, a cgroup bounding the memory and process
count of its whole tree (out-of-memory kills are reported as ``memory``). Python programs run in
the server's already-started interpreter, forked from its clean state, never from a state a
previous run touched. On timeout, output overflow, or when the program exits, the run's PID 1
dies and the kernel kills every process in its namespace, daemonised ones included.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from sandboxes import register
from sandboxes._warm import PYTHON, ZYGOTE_SOURCE, ForkServer, ServerProcess
from sandboxes.base import LANGUAGES, LAUNCHER_ENV, SANDBOX_ENV, SANDBOX_UID, Limits, RawOutcome, Sandbox, SandboxError

WORK_DIR = "/work"
STOP_SECONDS = 2.0


def drop_privileges_argv(uid: int = SANDBOX_UID) -> list[str]:
    """Command prefix that runs the command as ``uid`` (and the same gid) when we are root."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]


@register("bwrap")
class BwrapSandbox(Sandbox):
    """Namespaces via bubblewrap: the default where unprivileged user namespaces work."""

    name = "bwrap"

    def __init__(self, bwrap: str = "bwrap", runtime: tuple[str, ...] = ("/usr",), **limits: Any):
        super().__init__(**limits)
        self.bwrap = bwrap
        self.runtime = tuple(runtime)
        self._server = ForkServer(self._start_server, "bwrap")

    @classmethod
    def unavailable_reason(cls, bwrap: str = "bwrap", **options: Any) -> str | None:
        if shutil.which(bwrap) is None:
            return f"{bwrap!r} is not installed (apt-get install bubblewrap)"
        with cls(bwrap=bwrap) as box:
            probe = box.run("", timeout=10)
        if probe.status != "ok":
            return f"bubblewrap cannot create namespaces here: {probe.stderr.strip()[:300]}"
        return None

    def _server_argv(self, zygote_fd: int, channel_fd: int) -> list[str]:
        # No --disable-userns: the server needs nested user namespaces (runs get a seccomp filter
        # against them instead). No --die-with-parent: it would fire when the host *thread* that
        # started bwrap ends; the server exits when the host's end of its socket closes instead.
        argv = [
            self.bwrap, "--unshare-all", "--unshare-user", "--new-session",
            "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "sandbox", "--clearenv",
        ]
        for key, value in SANDBOX_ENV.items():
            argv += ["--setenv", key, value]
        for path in self.runtime:
            argv += ["--ro-bind", path, path]
        for name in ("bin", "sbin", "lib", "lib32", "lib64"):
            host = Path("/") / name
            if host.is_symlink():
                argv += ["--symlink", os.readlink(host), str(host)]
            elif host.is_dir() and str(host) not in self.runtime:
                argv += ["--ro-bind", str(host), str(host)]
        # /work and /tmp are mount points: every run mounts its own tmpfs on them.
        argv += ["--proc", "/proc", "--dev", "/dev", "--dir", WORK_DIR, "--dir", "/tmp", "--dir", "/sandbox",
                 "--perms", "0444", "--file", str(zygote_fd), "/sandbox/zygote.py", "--remount-ro", "/",
                 "--chdir", WORK_DIR, "--"]
        return [*drop_privileges_argv(), *argv, PYTHON, "-I", "-B", "/sandbox/zygote.py", str(channel_fd)]

    def _start_server(self) -> tuple[socket.socket, ServerProcess]:
        host_end, channel = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        zygote_fd = os.memfd_create("sandbox-zygote")
        try:
            os.write(zygote_fd, ZYGOTE_SOURCE.encode())
            os.lseek(zygote_fd, 0, os.SEEK_SET)
            log = tempfile.TemporaryFile()
            try:
                process = subprocess.Popen(
                    self._server_argv(zygote_fd, channel.fileno()), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    env=LAUNCHER_ENV, pass_fds=(zygote_fd, channel.fileno()), start_new_session=True,
                )
            except OSError as error:
                log.close()
                host_end.close()
                raise SandboxError(f"could not start bubblewrap ({error}); install it with apt-get install bubblewrap") from error
        finally:
            os.close(zygote_fd)
            channel.close()
        return host_end, _BwrapServer(process, log)

    def _execute(self, argv: list[str], files: dict[str, bytes], stdin: bytes, limits: Limits) -> RawOutcome:
        return self._server.execute(argv, files, stdin, limits)

    def precompile(self, code: str) -> None:
        self._server.precompile(LANGUAGES["python"].filename, code)

    def close(self) -> None:
        """Stop the warm server (a later run starts a new one)."""
        self._server.close()

    def resident_pids(self) -> set[int]:
        return self._server.resident_pids()


class _BwrapServer(ServerProcess):
    def __init__(self, process: subprocess.Popen, log: Any):
        self.process = process
        self.log = log

    def stop(self) -> None:
        # The server exits when its socket closes (already done); a server that does not is killed,
        # and bwrap, PID 1 of the server's namespace, takes every run in it along.
        try:
            self.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.log.close()

    def pids(self) -> set[int]:
        # bwrap, bwrap as PID 1 of the server's namespace, the server: each the first child of the last.
        found = {self.process.pid}
        pid = self.process.pid
        for _ in range(2):
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                break
            if not children:
                break
            pid = int(children[0])
            found.add(pid)
        return found

    def failure(self) -> str:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=1)
        self.log.seek(0)
        return self.log.read().decode(errors="replace")
