"""A throw-away control group per run, when the host lets us make one (root, cgroup v1 or v2 with
the memory and pids controllers). It bounds the memory and the process count of the whole
process tree (rlimits are per process), reports out-of-memory kills, and can kill every process
in it, daemons included. Without it the back-ends fall back to rlimits and PID namespaces."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
import uuid
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
GROUP_NAME = "rlvr-sandbox"

# Prepended to a command: the shell moves itself into the cgroups named before "--", then execs
# the command, so nothing the command starts can be outside them (no race with fork).
JOIN_PREFIX = [
    "sh", "-c", 'pid=$$; while [ "$1" != -- ]; do echo "$pid" > "$1" || exit 125; shift; done; shift; exec "$@"', "sh",
]


class Cgroup:
    """One run's cgroup(s): ``create`` returns None when cgroups cannot be used here."""

    def __init__(self, directories: list[Path], version: int):
        self.directories = directories
        self.version = version
        self._oom_kills_before = 0
        # The count while the cgroup is idle, where known (read at the end of its last run).
        self._idle_oom_kills: int | None = 0
        # (memory bytes, max pids) last written; runs cannot change them (no run sees a cgroup file).
        self._limits: tuple[int, int] | None = None

    @classmethod
    def create(cls, memory_bytes: int, max_pids: int, parent: Cgroup | None = None) -> Cgroup | None:
        """A new cgroup; inside ``parent`` (whose limits then bound it and its siblings together) when given."""
        if os.geteuid() != 0:
            return None
        remove_orphans(os.getpid())
        name = f"run-{_pid_namespace()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"  # whose it is: see remove_orphans
        try:
            if (CGROUP_ROOT / "cgroup.controllers").is_file():
                group = cls._create_v2(name, memory_bytes, max_pids, parent)
            elif (CGROUP_ROOT / "memory" / "memory.limit_in_bytes").is_file() and (CGROUP_ROOT / "pids").is_dir():
                group = cls._create_v1(name, memory_bytes, max_pids, parent)
            else:
                return None
        except OSError:
            return None
        group._limits = (memory_bytes, max_pids)
        return group

    @classmethod
    def _create_v1(cls, name: str, memory_bytes: int, max_pids: int, parent: Cgroup | None) -> Cgroup:
        memory_parent, pids_parent = (parent.directories if parent is not None else
                                      (CGROUP_ROOT / "memory" / GROUP_NAME, CGROUP_ROOT / "pids" / GROUP_NAME))
        memory, pids = memory_parent / name, pids_parent / name
        group = cls([memory, pids], version=1)
        try:
            memory.mkdir(parents=True)
            pids.mkdir(parents=True)
            (memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
            with contextlib.suppress(OSError):  # only where swap accounting is on
                (memory / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
            (pids / "pids.max").write_text(str(max_pids))
        except OSError:
            group.remove()
            raise
        return group

    @classmethod
    def _create_v2(cls, name: str, memory_bytes: int, max_pids: int, parent: Cgroup | None) -> Cgroup:
        above = parent.directories[0] if parent is not None else CGROUP_ROOT / GROUP_NAME
        above.mkdir(exist_ok=True)
        (above / "cgroup.subtree_control").write_text("+memory +pids")
        directory = above / name
        group = cls([directory], version=2)
        try:
            directory.mkdir()
            (directory / "memory.max").write_text(str(memory_bytes))
            with contextlib.suppress(OSError):
                (directory / "memory.swap.max").write_text("0")
            (directory / "pids.max").write_text(str(max_pids))
        except OSError:
            group.remove()
            raise
        return group

    def join_argv(self) -> list[str]:
        """Command prefix that puts the command into this cgroup before it runs."""
        return [*JOIN_PREFIX, *(str(directory / "cgroup.procs") for directory in self.directories), "--"]

    def open_for_joining(self) -> list[int]:
        """Write-only descriptors, one per directory, through which a process moves *itself* into
        the cgroup by writing ``0`` (children it forks later are inside too). Opened here, by root,
        so an unprivileged process can use them. Cgroup v1's ``tasks`` moves the writing thread
        alone, which the kernel does without the global lock that moving a whole process takes (a
        wait for an RCU grace period: milliseconds per run); the writer must be single-threaded.
        Cgroup v2 has no such file for domain cgroups: ``cgroup.procs`` there."""
        name = "tasks" if self.version == 1 else "cgroup.procs"
        fds: list[int] = []
        try:
            for directory in self.directories:
                fds.append(os.open(directory / name, os.O_WRONLY | os.O_CLOEXEC))
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    def out_of_memory(self) -> bool:
        """True if the kernel killed a process of the run for exceeding the memory limit (asked
        once the run is over)."""
        kills = self._idle_oom_kills = self._oom_kills()
        return kills > self._oom_kills_before

    def _oom_kills(self) -> int:
        events = self.directories[0] / ("memory.events" if self.version == 2 else "memory.oom_control")
        with contextlib.suppress(OSError):
            for line in _read(events).splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    def reset(self, memory_bytes: int, max_pids: int) -> None:
        """Make an empty cgroup ready for the next run (warm back-ends reuse them): its limits, and
        out-of-memory kills counted from now."""
        if self._limits != (memory_bytes, max_pids):
            memory, pids = (self.directories[0], self.directories[-1])
            if self.version == 2:
                (memory / "memory.max").write_text(str(memory_bytes))
            else:
                # memory+swap may never be below memory: one of the two writes of it fits either order.
                for name in ("memory.memsw.limit_in_bytes", "memory.limit_in_bytes", "memory.memsw.limit_in_bytes"):
                    with contextlib.suppress(OSError):
                        (memory / name).write_text(str(memory_bytes))
            (pids / "pids.max").write_text(str(max_pids))
            self._limits = (memory_bytes, max_pids)
        known, self._idle_oom_kills = self._idle_oom_kills, None
        self._oom_kills_before = self._oom_kills() if known is None else known

    def empty(self) -> bool:
        """No process left in the cgroup (every process of a run is in each of its directories)."""
        try:
            return not _read(self.directories[-1] / "cgroup.procs").strip()
        except OSError:
            return False

    def pids(self) -> set[int]:
        found: set[int] = set()
        for directory in self.directories:
            with contextlib.suppress(OSError):
                found.update(int(pid) for pid in _read(directory / "cgroup.procs").split())
        return found

    def kill_all(self, wait: float = 2.0) -> None:
        """SIGKILL every process in the cgroup until none is left (new forks included)."""
        deadline = time.monotonic() + wait
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)

    def remove(self) -> None:
        """Kill what is left and delete the cgroup directories."""
        self.kill_all()
        for directory in self.directories:
            for _ in range(200):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # busy for a moment while killed processes are reaped
                    time.sleep(0.005)


@functools.cache
def remove_orphans(creator: int) -> None:
    """Delete the empty cgroups left by processes that died without removing theirs (killed, or a warm
    back-end's reusable cgroups never closed). Only cgroups made in this PID namespace are judged (another
    namespace's pids mean other processes). ``creator``, this process's pid, makes the cache sweep once per
    process (a forked child sweeps again)."""
    namespace = _pid_namespace()
    for parent in (CGROUP_ROOT / GROUP_NAME, CGROUP_ROOT / "memory" / GROUP_NAME, CGROUP_ROOT / "pids" / GROUP_NAME):
        with contextlib.suppress(OSError):
            for directory in parent.glob(f"run-{namespace}-*-*"):
                owner = directory.name.split("-")[2]
                if owner.isdigit() and not os.path.exists(f"/proc/{owner}"):  # its creator is gone
                    _remove_empty_tree(directory)


def _remove_empty_tree(directory: Path) -> None:
    """``directory`` and the cgroups made inside it, where none holds a process."""
    with contextlib.suppress(OSError):
        for child in directory.glob("run-*"):
            _remove_empty_tree(child)
    with contextlib.suppress(OSError):  # not empty, or gone already
        directory.rmdir()


def _pid_namespace() -> int:
    return os.stat("/proc/self/ns/pid").st_ino


def _read(path: Path) -> str:
    """A cgroup file's text (as Path.read_text, without its Python layers: read several times a run)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 1 << 16).decode()
    finally:
        os.close(fd)
