"""The ``bwrap`` back-end: each run in fresh Linux namespaces made by bubblewrap.

What a run sees: a read-only ``/usr`` (the host's runtime, with the usual ``/bin``, ``/lib``
links), a fresh ``/proc`` of its own PID namespace, a minimal ``/dev``, and two size-limited tmpfs
(``/work``, its working directory holding the program and ``files``, and ``/tmp``); nothing else
of the host's file system, no network, no host IPC, an environment of a few fixed variables, and
no capabilities. The program's files are copied in from memory, so nothing is written on the host.

How the limits hold when the host side is root (RLIMIT_NPROC does not bind uid 0): bwrap itself
is started as uid 65534 ("nobody"), so the namespace's user is an unprivileged host user, and
``prlimit`` inside sets the per-process limits (in a fresh user namespace RLIMIT_NPROC counts
the run's own processes only). Where cgroups are writable, a per-run cgroup bounds the memory
and process count of the whole tree and its out-of-memory kills are reported as ``memory``.
On timeout, output overflow, or when the program exits, the namespace's init dies and the
kernel kills every process in the PID namespace, daemonised ones included.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

from sandboxes import register
from sandboxes._cgroup import Cgroup
from sandboxes.base import (
    LAUNCHER_ENV,
    SANDBOX_ENV,
    SANDBOX_UID,
    Limits,
    RawOutcome,
    Sandbox,
    SandboxError,
    stream_process,
)

WORK_DIR = "/work"


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

    @classmethod
    def unavailable_reason(cls, bwrap: str = "bwrap", **options: Any) -> str | None:
        if shutil.which(bwrap) is None:
            return f"{bwrap!r} is not installed (apt-get install bubblewrap)"
        probe = cls(bwrap=bwrap).run("", timeout=10)
        if probe.status != "ok":
            return f"bubblewrap cannot create namespaces here: {probe.stderr.strip()[:300]}"
        return None

    def _bwrap_argv(self, files: dict[str, bytes], fds: dict[str, int], limits: Limits) -> list[str]:
        argv = [
            self.bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
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
        disk = str(limits.disk_mb << 20)
        argv += ["--proc", "/proc", "--dev", "/dev", "--size", disk, "--tmpfs", "/tmp", "--size", disk,
                 "--tmpfs", WORK_DIR]
        directories = sorted({str(parent) for name in files for parent in PurePosixPath(name).parents} - {"."})
        for directory in directories:
            argv += ["--dir", f"{WORK_DIR}/{directory}"]
        for name, fd in fds.items():
            argv += ["--perms", "0644", "--file", str(fd), f"{WORK_DIR}/{name}"]
        return [*argv, "--chdir", WORK_DIR, "--"]

    def _execute(self, argv: list[str], files: dict[str, bytes], stdin: bytes, limits: Limits) -> RawOutcome:
        fds: dict[str, int] = {}
        cgroup = Cgroup.create(limits.memory_mb << 20, limits.max_processes + 2)
        try:
            for name, content in files.items():
                fd = os.memfd_create(f"sandbox-{PurePosixPath(name).name}")
                fds[name] = fd
                os.write(fd, content)
                os.lseek(fd, 0, os.SEEK_SET)
            command = [
                *(cgroup.join_argv() if cgroup else []),
                *drop_privileges_argv(),
                *self._bwrap_argv(files, fds, limits),
                *limits.prlimit_argv(),
                *argv,
            ]

            def kill(process: subprocess.Popen) -> None:
                # The namespace's init has --die-with-parent: killing bwrap takes the whole tree.
                try:
                    os.kill(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                if cgroup:
                    cgroup.kill_all()

            try:
                raw = stream_process(command, stdin=stdin, limits=limits, env=LAUNCHER_ENV,
                                     pass_fds=list(fds.values()), kill=kill)
            except OSError as error:
                raise SandboxError(f"could not start bubblewrap ({error}); install it with apt-get install bubblewrap") from error
            if cgroup and cgroup.out_of_memory():
                raw.out_of_memory = True
            if raw.exit_code == 1 and raw.stderr.startswith(b"bwrap: ") and not raw.stdout:
                raise SandboxError(f"bubblewrap failed: {raw.stderr.decode(errors='replace').strip()}")
            return raw
        finally:
            for fd in fds.values():
                os.close(fd)
            if cgroup:
                cgroup.remove()
