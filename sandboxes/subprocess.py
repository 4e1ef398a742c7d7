"""The ``subprocess`` back-end: resource limits only, NO isolation. For trusted code.

The program runs as a plain child process in a temporary directory on the host: it can read
whatever the running user can read, use the network, and see other processes. What it does get:
the per-process rlimits of :class:`sandboxes.base.Limits`, a clean environment, output capped
while streaming, a wall-clock timeout, and, when we are root, a fresh unprivileged uid (so RLIMIT_NPROC
binds to this run alone) and a per-run cgroup (memory and process count of the whole tree; every process in it,
daemonised ones included, is killed at the end). Without root and cgroups, children that leave
the process group (``setsid``) can outlive a timeout.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

from sandboxes import register
from sandboxes._cgroup import Cgroup
from sandboxes.base import (
    SANDBOX_ENV,
    Limits,
    RawOutcome,
    Sandbox,
    SandboxError,
    executable_file,
    fresh_run_uid,
    stream_process,
)
from sandboxes.bwrap import drop_privileges_argv


@register("subprocess")
class SubprocessSandbox(Sandbox):
    """No isolation, resource limits only: for trusted code (warns when created)."""

    name = "subprocess"
    isolated = False

    def __init__(self, **limits: Any):
        super().__init__(**limits)
        warnings.warn(
            "the 'subprocess' sandbox does not isolate programs from the host; use it for trusted code only "
            "(sandboxes.get('bwrap') or 'docker' for model-written code)",
            stacklevel=2,
        )

    def _execute(self, argv: list[str], files: dict[str, bytes], stdin: bytes, limits: Limits) -> RawOutcome:
        work_dir = Path(tempfile.mkdtemp(prefix="rlvr-sandbox-"))
        cgroup = Cgroup.create(limits.memory_mb << 20, limits.max_processes + 2)
        try:
            for name, content in files.items():
                path = work_dir / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
                if name == executable_file(argv):
                    path.chmod(0o755)
            as_user: list[str] = []
            if os.geteuid() == 0:
                uid = fresh_run_uid()
                for path in [work_dir, *work_dir.rglob("*")]:
                    os.chown(path, uid, uid)
                as_user = drop_privileges_argv(uid)
            command = [*(cgroup.join_argv() if cgroup else []), *as_user, *limits.prlimit_argv(), *argv]
            env = {**SANDBOX_ENV, "HOME": str(work_dir)}

            def kill(process: subprocess.Popen) -> None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                if cgroup:
                    cgroup.kill_all()

            try:
                raw = stream_process(command, stdin=stdin, limits=limits, env=env, cwd=str(work_dir), kill=kill)
            except OSError as error:
                raise SandboxError(f"could not start {argv[0]!r}: {error}") from error
            # Children left in the process group (or, with a cgroup, anywhere) die with the run.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(raw.pid, signal.SIGKILL)
            if cgroup and cgroup.out_of_memory():
                raw.out_of_memory = True
            return raw
        finally:
            if cgroup:
                cgroup.remove()
            shutil.rmtree(work_dir, ignore_errors=True)
