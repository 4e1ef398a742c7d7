"""Cgroups left behind by processes that died without removing them are deleted by the next process that makes
one (empty ones only, and never one whose creator is alive)."""

import os
import subprocess
import sys

import pytest

from sandboxes import _cgroup
from sandboxes._cgroup import Cgroup

probe = Cgroup.create(1 << 28, 16)
if probe is not None:
    probe.remove()
needs_cgroups = pytest.mark.skipif(probe is None, reason="cgroups are not writable here (needs root and the memory and pids controllers)")


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@needs_cgroups
def test_an_orphans_empty_cgroup_is_removed_a_live_creators_is_kept():
    dead, made = dead_pid(), []
    try:
        for owner in (dead, os.getpid()):
            group = Cgroup.create(1 << 28, 16)
            renamed = []
            for directory in group.directories:  # as if ``owner`` had made it
                target = directory.with_name(directory.name.replace(f"-{os.getpid()}-", f"-{owner}-"))
                directory.rename(target)
                renamed.append(target)
            made.append(renamed)
        foreign = [directory.with_name(directory.name.replace("run-", "run-1-", 1)) for directory in made[0]]
        for directory in foreign:  # the same dead pid, as another PID namespace would name it
            directory.mkdir()
        made.append(foreign)
        _cgroup.remove_orphans(-1)  # a key of its own: the sweep of this process ran already
        assert not any(directory.exists() for directory in made[0])
        assert all(directory.exists() for directory in made[1])
        assert all(directory.exists() for directory in foreign)
    finally:
        for directories in made:
            for directory in directories:
                if directory.exists():
                    directory.rmdir()


@needs_cgroups
def test_a_cgroup_with_a_process_in_it_is_never_removed():
    group = Cgroup.create(1 << 28, 16)
    sleeper = subprocess.Popen([*group.join_argv(), "sleep", "30"])
    try:
        for _ in range(100):
            if group.pids():
                break
            subprocess.run(["sleep", "0.02"])
        dead = dead_pid()
        orphaned = [directory.rename(directory.with_name(directory.name.replace(f"-{os.getpid()}-", f"-{dead}-")))
                    for directory in group.directories]
        group.directories = orphaned
        _cgroup.remove_orphans(-2)
        assert all(directory.exists() for directory in orphaned)
        assert group.pids() == {sleeper.pid}
    finally:
        sleeper.kill()
        sleeper.wait()
        group.remove()


@needs_cgroups
def test_an_orphaned_cgroup_with_cgroups_inside_is_removed_whole():
    """A killed trainer leaves the tool's shared cgroup and its interpreters' cgroups inside it."""
    dead = dead_pid()
    shared = Cgroup.create(1 << 28, 16)
    inner = Cgroup.create(1 << 27, 8, parent=shared)
    assert all(child.parent == above for child, above in zip(inner.directories, shared.directories))
    orphaned = [directory.rename(directory.with_name(directory.name.replace(f"-{os.getpid()}-", f"-{dead}-")))
                for directory in shared.directories]
    try:
        _cgroup.remove_orphans(-3)
        assert not any(directory.exists() for directory in orphaned)
    finally:
        for directory in orphaned:
            for child in directory.glob("run-*"):
                child.rmdir()
            if directory.exists():
                directory.rmdir()
