"""Runs are isolated from each other on the warm back-ends (bwrap and docker fork every run from one
server): nothing a run leaves or changes reaches the next run, and a run cannot see or signal a
run going on at the same time. C++ programs on every back-end."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import signal
import threading
import time
import warnings

import pytest

import sandboxes

ISOLATING = ["bwrap", "docker"]


def _sandbox(name: str, **limits):
    reason = sandboxes.unavailable_reason(name)
    if reason:
        pytest.skip(f"{name} sandbox unavailable here: {reason}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the subprocess back-end warns that it does not isolate
        return sandboxes.get(name, **limits)


@pytest.fixture(scope="module", params=ISOLATING)
def sandbox(request):
    box = _sandbox(request.param, timeout=10, memory_mb=256)
    yield box
    box.close()


# Processes of one run that each stay within the per-process memory limit; all together they need
# COUNT x 80 MiB.
TREE_MEMORY = """
import os, time
children = []
for _ in range(COUNT):
    pid = os.fork()
    if pid == 0:
        block = bytearray(80 << 20)  # zero-filled, so resident
        time.sleep(0.5)
        os._exit(0)
    children.append(pid)
print([os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children])
"""


def test_the_memory_limit_bounds_the_whole_process_tree(sandbox):
    from sandboxes._cgroup import Cgroup

    probe = Cgroup.create(1 << 30, 64)
    if probe is None:
        pytest.skip("no cgroup can be made here (needs root and the memory and pids controllers)")
    probe.remove()
    within = sandbox.run(TREE_MEMORY.replace("COUNT", "2"), memory_mb=256)
    assert (within.status, within.stdout) == ("ok", "[0, 0]\n")
    beyond = sandbox.run(TREE_MEMORY.replace("COUNT", "4"), memory_mb=256)
    assert beyond.status == "memory", beyond


# Places a program could leave something for the next one: files in every writable directory, an
# environment variable, patched modules and builtins, a new module, System V IPC objects, a daemon
# that keeps writing, and in the network namespace (which the server lends to one run after another):
# a bound abstract socket the daemon holds, one held only by descriptors in flight between closed
# sockets (freed by the kernel's garbage collector), and the loopback interface brought up.
LEAVE_TRACES = """
import array, builtins, ctypes, fcntl, json, os, socket, struct, sys, time
held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
held.bind("\\0trace-TOKEN")
held.listen(1)
in_flight = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
in_flight.bind("\\0flight-TOKEN")
one, other = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
one.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [one.fileno(), in_flight.fileno()]))])
other.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [other.fileno()]))])
for closed in (one, other, in_flight):
    closed.close()
try:
    fcntl.ioctl(socket.socket(), 0x8914, struct.pack("16sH", b"lo", 1))  # SIOCSIFFLAGS: IFF_UP
    loopback = "up"
except OSError:
    loopback = "refused"
network = os.stat("/proc/self/ns/net").st_ino if os.path.exists("/proc/self/ns/net") else None
print("network", network, "loopback", loopback, flush=True)
written = []
for directory in ["/work", ".", "/tmp", "/dev/shm", "/var/tmp", "/run", "/run/lock", "/dev/mqueue", "/dev", "/", "/sandbox",
                  "/usr", "/etc", "/home", os.path.expanduser("~")]:
    try:
        with open(os.path.join(directory, "trace-TOKEN"), "w") as handle:
            handle.write("TOKEN")
        written.append(directory)
    except OSError:
        pass
os.environ["TRACE"] = "TOKEN"
os.putenv("TRACE_PUT", "TOKEN")
json.dumps = lambda *args, **kwargs: "TOKEN"
builtins.len = lambda value: 4242
sys.modules["trace_module"] = type(sys)("trace_module")
os.getcwd = lambda: "TOKEN"
libc = ctypes.CDLL(None, use_errno=True)
shm = libc.shmget(0x7256, 4096, 0o1666)  # IPC_CREAT
queue = libc.msgget(0x7256, 0o1666)
key = libc.syscall(248, b"user", b"rlvr-trace", b"TOKEN", 16, -3)  # add_key to the session keyring
print("written", written, "shm", shm, "queue", queue, "key", key, flush=True)
if os.fork() == 0:
    os.setsid()
    while True:
        for directory in ["/tmp", "/work"]:
            try:
                open(os.path.join(directory, "daemon-TOKEN"), "w").write("TOKEN")
            except OSError:
                pass
        time.sleep(0.01)
time.sleep(0.2)
"""

LOOK_FOR_TRACES = """
import builtins, ctypes, fcntl, json, os, socket, struct, sys
found = []
for name, kind in (("trace-TOKEN", socket.SOCK_STREAM), ("flight-TOKEN", socket.SOCK_DGRAM)):
    try:
        socket.socket(socket.AF_UNIX, kind).bind("\\0" + name)
    except OSError:
        found.append("abstract socket " + name)
flags = struct.unpack("16sH", fcntl.ioctl(socket.socket(), 0x8913, struct.pack("16sH", b"lo", 0)))[1]  # SIOCGIFFLAGS
if flags & 1:
    found.append("loopback up")
for top in ["/work", "/tmp", "/dev/shm", "/var/tmp", "/run", "/dev/mqueue", "/dev", "/", "/sandbox"]:
    try:
        names = os.listdir(top)
    except OSError:
        continue
    found += [os.path.join(top, name) for name in names if "TOKEN" in name]
if "TOKEN" in str(dict(os.environ)) or os.environ.get("TRACE") or os.environ.get("TRACE_PUT"):
    found.append("environment")
if json.dumps([1]) != "[1]" or len("ab") != 2 or "trace_module" in sys.modules or os.getcwd() == "TOKEN":
    found.append("patched modules")
libc = ctypes.CDLL(None, use_errno=True)
if libc.shmget(0x7256, 0, 0) != -1 or libc.msgget(0x7256, 0) != -1:
    found.append("System V IPC")
if libc.syscall(250, 10, -3, b"user", b"rlvr-trace", 0) > 0:  # KEYCTL_SEARCH the session keyring
    found.append("session key")
processes = [pid for pid in os.listdir("/proc") if pid.isdigit() and int(pid) != os.getpid()]
print("found", found, "processes", processes)
print("network", os.stat("/proc/self/ns/net").st_ino if os.path.exists("/proc/self/ns/net") else None)
"""


def test_nothing_one_run_leaves_reaches_the_next(sandbox):
    token = secrets.token_hex(8)
    first = sandbox.run(LEAVE_TRACES.replace("TOKEN", token))
    assert first.status == "ok", first
    # The traces were really left: the program could write at least its work dir and /tmp.
    assert "'/work'" in first.stdout and "'/tmp'" in first.stdout and "shm -1" not in first.stdout, first.stdout
    assert "loopback refused" in first.stdout, first.stdout
    network = first.stdout.split("network ")[1].split()[0]
    networks = []
    for _ in range(6):  # the next runs, whichever slot of the server and network namespace they land in
        second = sandbox.run(LOOK_FOR_TRACES.replace("TOKEN", token))
        assert second.status == "ok", second
        assert second.stdout.startswith("found [] processes"), second.stdout
        assert token not in second.stdout
        networks.append(second.stdout.split("network ")[1].split()[0])
    if network != "None":  # (where /proc shows it: the network namespace was lent again, so this was tested)
        assert network in networks, (network, networks)


def test_the_trace_detector_sees_traces_within_one_run(sandbox):
    # The control for the test above: in the same run, the detector finds what was left.
    token = secrets.token_hex(8)
    code = LEAVE_TRACES.replace("time.sleep(0.2)\n", "") + LOOK_FOR_TRACES
    result = sandbox.run(code.replace("TOKEN", token))
    found = result.stdout.split("found ", 1)[1]
    traces = ["/work/trace-", "/tmp/trace-", "environment", "patched modules", "System V IPC", "abstract socket trace-"]
    if "key -1" not in result.stdout:  # keyctl works here (Docker's seccomp profile forbids it)
        traces.append("session key")
    for trace in traces:
        assert trace in found, (trace, result.stdout)


# A run's stdin (where the code verifier's harness gets its nonce) must never be in the server's
# memory, so no later run can find it in the memory it inherits. The searcher knows the secret only
# by its hash, so that the secret itself is never in its own memory.
HOLD_SECRET = "import sys\nsecret = sys.stdin.read()\nprint(len(secret))\n"
SEARCH_MEMORY = """
import hashlib, re
hits = regions = 0
pattern = re.compile(rb"rlvr-secret:([0-9a-f]{32})")
with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", buffering=0) as memory:
    for line in maps:
        span, permissions = line.split()[:2]
        if not permissions.startswith("r"):
            continue
        start, end = (int(value, 16) for value in span.split("-"))
        try:
            memory.seek(start)
            data = memory.read(end - start)
        except (OSError, ValueError, OverflowError):
            continue
        regions += 1
        hits += sum(hashlib.sha256(match.group(1)).hexdigest() == "DIGEST" for match in pattern.finditer(data))
print("regions", regions, "hits", hits)
"""


def test_no_run_inherits_the_data_of_an_earlier_run(sandbox):
    if sandbox.name == "docker":
        pytest.skip("docker runs have no /proc of their own to read their memory through")
    secret = secrets.token_hex(16)
    digest = hashlib.sha256(secret.encode()).hexdigest()
    search = SEARCH_MEMORY.replace("DIGEST", digest)
    stdin = f"rlvr-secret:{secret}\n" * 1000
    for _ in range(3):
        assert sandbox.run(HOLD_SECRET, stdin=stdin).stdout == f"{len(stdin)}\n"
    result = sandbox.run(search)
    assert result.status == "ok" and result.stdout.startswith("regions ") and result.stdout.endswith(" hits 0\n"), result
    # The control: the same search finds the secret in the memory of a run that holds it.
    holding = sandbox.run(HOLD_SECRET + search, stdin=stdin)
    assert int(holding.stdout.split()[-1]) >= 1, holding


VICTIM = """
import os, socket, subprocess, sys, time
os.environ["VICTIM_SECRET"] = "TOKEN"
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "TOKEN"])
time.sleep(0.5)  # until the child's command line is its own
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind("\\0victim-TOKEN")
listener.listen(1)
tcp = socket.socket()
try:  # loopback is down in a fresh network namespace
    tcp.bind(("127.0.0.1", 47123))
    tcp.listen(1)
except OSError:
    pass
open("/dev/shm/victim-TOKEN", "w").write("TOKEN")
time.sleep(WAIT)
print("victim alive", child.poll() is None, flush=True)
os._exit(0)
"""

ATTACKER = """
import ctypes, glob, os, signal, socket
seen = []
for path in glob.glob("/proc/*/cmdline") + glob.glob("/proc/*/environ") + glob.glob("/proc/*/mem"):
    try:
        with open(path, "rb") as handle:
            if b"TOKEN" in handle.read(1 << 20):
                seen.append(path)
    except OSError:
        pass
libc = ctypes.CDLL(None, use_errno=True)
own = {os.getpid()}
signalled = []
for pid in range(1, 5000):
    if pid in own:
        continue
    try:
        os.kill(pid, 0)
        signalled.append(pid)
    except OSError:
        pass
    if libc.ptrace(16, pid, 0, 0) == 0:  # PTRACE_ATTACH
        seen.append(f"ptrace {pid}")
for address in ["\\0victim-TOKEN"]:
    try:
        socket.socket(socket.AF_UNIX).connect(address)
        seen.append("abstract socket")
    except OSError:
        pass
try:
    socket.create_connection(("127.0.0.1", 47123), timeout=0.5)
    seen.append("tcp")
except OSError:
    pass
if os.path.exists("/dev/shm/victim-TOKEN"):
    seen.append("shm file")
try:
    os.kill(-1, signal.SIGKILL)
except OSError:
    pass
print("seen", seen, "signalled", signalled)
"""


@pytest.mark.slow
def test_a_run_cannot_see_or_signal_a_concurrent_run(sandbox):
    token = secrets.token_hex(8)
    victim_result: list = []
    victim = threading.Thread(target=lambda: victim_result.append(
        sandbox.run(VICTIM.replace("TOKEN", token).replace("WAIT", "4"))))
    victim.start()
    time.sleep(1.5)  # the victim is up (its server start, if any, is behind it)
    attacker = sandbox.run(ATTACKER.replace("TOKEN", token))
    victim.join()
    assert attacker.status == "ok", attacker
    # Only the attacker's own init is there to signal; nothing of the victim is visible.
    assert attacker.stdout.strip() in ("seen [] signalled []", "seen [] signalled [1]"), attacker.stdout
    assert victim_result[0].status == "ok" and victim_result[0].stdout == "victim alive True\n", victim_result[0]


def test_the_attacker_sees_a_victim_in_its_own_run(sandbox):
    # The control for the test above: the attacker finds the victim's traces when they share a run.
    token = secrets.token_hex(8)
    victim = VICTIM.replace("time.sleep(WAIT)\nprint(\"victim alive\", child.poll() is None, flush=True)\nos._exit(0)\n", "")
    result = sandbox.run((victim + ATTACKER).replace("TOKEN", token))
    seen = result.stdout.split("seen ", 1)[1]
    # (docker runs have an empty /proc: nothing of any process to read there, their own included)
    for trace in ("abstract socket", "shm file", *(["cmdline"] if sandbox.name == "bwrap" else [])):
        assert trace in seen, (trace, result.stdout)


# --- C++


SUM = "#include <iostream>\nint main() { long long a, b; std::cin >> a >> b; std::cout << a + b << std::endl; }\n"


@pytest.fixture(scope="module", params=["bwrap", "docker", "subprocess"])
def any_sandbox(request):
    box = _sandbox(request.param, timeout=10, memory_mb=256)
    if box.run("int main() { return 0; }", language="cpp").status == "compile_error" and request.param == "subprocess":
        pytest.skip("g++ is not installed on the host (apt-get install g++)")
    yield box
    box.close()


@pytest.mark.slow
def test_cpp_is_compiled_once_and_run_per_input(any_sandbox):
    session = any_sandbox.session(SUM, language="cpp")
    assert session.compiled and session.compile_result.status == "ok", session.compile_result
    results = [session.run(stdin) for stdin in ("1 2", "40 2", "-5 5")]
    assert [(r.status, r.stdout) for r in results] == [("ok", "3\n"), ("ok", "42\n"), ("ok", "0\n")]
    crash = any_sandbox.run("int main() { volatile int *p = nullptr; return *p; }", language="cpp")
    assert crash.status == "error" and crash.exit_code == -11  # SIGSEGV


@pytest.mark.slow
def test_cpp_compile_errors_and_limits(any_sandbox):
    broken = any_sandbox.run("int main() { return undefined_name; }", language="cpp")
    assert broken.status == "compile_error" and "undefined_name" in broken.stderr and "error" in broken.stderr
    # The heavy header takes seconds to compile: far more than this budget.
    heavy = "#include <bits/stdc++.h>\nint main() {}\n"
    timed_out = any_sandbox.session(heavy, language="cpp", compile_timeout=0.3).compile_result
    assert timed_out.status == "compile_error" and "ran out of time" in timed_out.stderr, timed_out
    # SUM compiles under the default limits (test above), not in 24 MiB.
    starved = any_sandbox.session(SUM, language="cpp", compile_memory_mb=24).compile_result
    assert starved.status == "compile_error", starved



# A run that reports the pipes it was given, then stays alive while the test looks around.
OWN_PIPES = """
import os, time
print(*(f"pipe:[{os.fstat(fd).st_ino}]" for fd in (0, 1, 2)), flush=True)
time.sleep(2)
"""


def _namespace_pids(pid: int) -> list[str]:
    status = open(f"/proc/{pid}/status").read()
    return next(line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:"))


def test_spare_inits_hold_nothing_of_a_run(sandbox):
    # The server clones inits ahead of their requests; while a run goes on, none of the processes
    # it keeps (its own and the spares) holds a descriptor of that run: its pipes end when it ends.
    assert sandbox.run("pass").status == "ok"
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(result=sandbox.run(OWN_PIPES, timeout=10)))
    worker.start()
    held, spares = set(), set()
    time.sleep(0.5)  # (by then the run's init has long moved into the run's cgroup: it is no spare)
    while worker.is_alive():  # (looked at every 0.1 s while the program sleeps)
        for pid in sandbox.resident_pids():
            with contextlib.suppress(OSError):
                held |= {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
                if len(_namespace_pids(pid)) >= 3:
                    spares.add(pid)
        time.sleep(0.1)
    result = outcome["result"]
    assert result.status == "ok", result
    pipes = set(result.stdout.split())
    assert len(pipes) == 3, result.stdout
    assert spares, "no spare init (PID 1 of a namespace of its own) among the server's processes"
    assert not pipes & held, f"the server or a spare holds the run's pipes: {pipes & held}"


# A program the host announces with precompile() runs as the run's init (PID 1): it must still be
# bounded by the timeout and the output cap, its children must get the default signal handlers and
# be unable to stop it with a signal, and nothing it leaves may outlive the run.
AS_INIT = """
import os, signal, sys, time
mode = sys.stdin.read()
print(os.getpid(), flush=True)
if mode == "loop":
    while True:
        pass
if mode == "flood":
    if os.fork() == 0:
        while True:
            os.write(1, b"F" * 65536)
    time.sleep(60)
if mode == "children":
    child = os.fork()
    if child == 0:
        print([str(signal.getsignal(number)) for number in (signal.SIGALRM, signal.SIGIO)], flush=True)
        for number in (signal.SIGALRM, signal.SIGIO, signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
            os.kill(os.getppid(), number)
        os._exit(0)
    os.waitpid(child, 0)
    if os.fork() == 0:
        os.setsid()
        time.sleep(600)
    print("alive")
"""


def test_a_precompiled_program_runs_as_init_within_every_limit(sandbox):
    sandbox.precompile(AS_INIT)
    children = sandbox.run(AS_INIT, stdin="children", timeout=10)
    default = str(signal.SIG_DFL)
    assert (children.status, children.stdout) == ("ok", f"1\n{[default, default]!r}\nalive\n"), children
    assert children.wall_time < 5  # the daemon it left died with the run, it did not hold the run open
    looping = sandbox.run(AS_INIT, stdin="loop", timeout=1)
    assert (looping.status, looping.stdout) == ("timeout", "1\n") and looping.wall_time < 4, looping
    flooding = sandbox.run(AS_INIT, stdin="flood", timeout=10, max_output_bytes=1 << 16)
    assert flooding.status == "output_limit" and flooding.wall_time < 5, flooding
    # The same program, not announced (one byte differs), runs as an ordinary process.
    assert sandbox.run(AS_INIT + "\n", stdin="").stdout != "1\n"
