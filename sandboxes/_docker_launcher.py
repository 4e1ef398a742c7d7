# Runs inside a warm sandbox container, as root, once per run (`python3 -c <this file>`).
# It reads the run's JSON spec from stdin, then starts the program as the container's unprivileged
# uid in a fresh work dir with the run's rlimits, its stdin from a pipe, and stdout/stderr inherited
# (the host caps them while streaming). When the program exits or the deadline passes, every
# process of that uid is killed (daemons included) and everything it wrote is removed, so the
# container is clean for the next run. Last, it writes a trailer line to stderr that starts with
# the host's per-run nonce; the program never sees the nonce, so it cannot forge the trailer.
# Standard library only: it runs on the image's python3.
import base64
import json
import os
import resource
import select
import shutil
import signal
import sys
import threading
import time

spec = json.loads(sys.stdin.buffer.read())
NONCE = spec["nonce"]  # in the spec, not argv: any process can read another's /proc/PID/cmdline
uid, gid = spec["uid"], spec["gid"]
work = "/work/run-" + os.urandom(8).hex()
OOM_FILE = "/sys/fs/cgroup/memory/memory.oom_control"


def oom_kills():
    for path in (OOM_FILE, "/sys/fs/cgroup/memory.events"):
        try:
            with open(path) as handle:
                for line in handle:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except OSError:
            continue
    return 0


def as_sandbox_user():
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def run_as_sandbox_user(action):
    pid = os.fork()
    if pid == 0:
        try:
            as_sandbox_user()
            action()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def sandbox_pids(zombies=False):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as handle:
                    fields = dict(line.split(":", 1) for line in handle if ":" in line)
            except OSError:
                continue
            # Zombies are dead already (and our own child stays one until we reap it).
            if int(fields["Uid"].split()[0]) == uid and (zombies or not fields["State"].strip().startswith("Z")):
                found.append(int(entry))
    return found


def kill_everything():
    for _ in range(100):
        run_as_sandbox_user(lambda: os.kill(-1, signal.SIGKILL))
        if not sandbox_pids():
            break
        time.sleep(0.01)


def wait_until_reaped():
    # Zombies still count against RLIMIT_NPROC and pids.max: the next run must not inherit them.
    for _ in range(300):
        if not sandbox_pids(zombies=True):
            return
        time.sleep(0.01)


def forbid_user_namespaces():
    """A seccomp filter (allowed unprivileged under no_new_privs): unshare/clone with CLONE_NEWUSER
    fail with EPERM, clone3 (whose flags a filter cannot read) with ENOSYS so libc falls back to
    clone, and syscalls of other architectures with EPERM."""
    import ctypes

    ld, jeq, jset, ret = 0x20, 0x15, 0x45, 0x06
    allow, errno_ret = 0x7FFF0000, 0x00050000
    program = [
        (ld, 0, 0, 4), (jeq, 1, 0, 0xC000003E), (ret, 0, 0, errno_ret | 1),
        (ld, 0, 0, 0), (jeq, 0, 1, 435), (ret, 0, 0, errno_ret | 38),
        (jeq, 1, 0, 272), (jeq, 0, 2, 56),
        (ld, 0, 0, 16), (jset, 1, 0, 0x10000000), (ret, 0, 0, allow), (ret, 0, 0, errno_ret | 1),
    ]

    class Instruction(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Instruction))]

    instructions = (Instruction * len(program))(*[Instruction(*item) for item in program])
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.prctl(22, 2, ctypes.byref(Program(len(program), instructions))) != 0:
        raise OSError(ctypes.get_errno(), "cannot install the seccomp filter")


def remove_everything():
    def force(function, path, _):
        try:
            os.chmod(os.path.dirname(path), 0o700)
            os.chmod(path, 0o700)
        except OSError:
            pass
        try:
            function(path)
        except OSError:
            pass

    def clean():
        for top in ("/work", "/tmp", "/dev/shm", "/var/tmp"):
            try:
                names = os.listdir(top)
            except OSError:
                continue
            for name in names:
                path = os.path.join(top, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, onerror=force)
                else:
                    try:
                        os.unlink(path)
                    except OSError:
                        pass

    run_as_sandbox_user(clean)


stdin_read, stdin_write = os.pipe()
oom_before = oom_kills()
started = time.monotonic()
child = os.fork()
if child == 0:
    try:
        os.setsid()
        os.dup2(stdin_read, 0)
        os.close(stdin_read)
        os.close(stdin_write)
        as_sandbox_user()
        os.mkdir(work, 0o700)
        for name, content in spec["files"].items():
            path = os.path.join(work, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as handle:
                handle.write(base64.b64decode(content))
        os.chdir(work)
        for name, value in spec["rlimits"].items():
            resource.setrlimit(getattr(resource, name), (value, value))
        forbid_user_namespaces()
        env = dict(spec["env"], PWD=work)
        os.execvpe(spec["argv"][0], spec["argv"], env)
    except BaseException as error:  # noqa: B036 - report anything, then never return into the launcher
        os.write(2, f"sandbox launcher: {error!r}\n".encode())
    finally:
        os._exit(127)
os.close(stdin_read)


def feed_stdin():
    try:
        os.write(stdin_write, base64.b64decode(spec["stdin"]))
    except OSError:
        pass
    finally:
        os.close(stdin_write)


threading.Thread(target=feed_stdin, daemon=True).start()
deadline = started + spec["timeout"]
timed_out = False
status = None
pidfd = os.pidfd_open(child)
while True:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        timed_out = True
        break
    if select.select([pidfd], [], [], remaining)[0]:
        status = os.waitpid(child, 0)[1]
        break
kill_everything()
if status is None:
    status = os.waitpid(child, 0)[1]
wait_until_reaped()
elapsed = time.monotonic() - started
remove_everything()
exit_code = os.waitstatus_to_exitcode(status)
trailer = {"exit_code": exit_code, "timed_out": timed_out, "oom": oom_kills() > oom_before, "elapsed": elapsed}
sys.stderr.flush()
os.write(2, ("\n" + NONCE + json.dumps(trailer) + "\n").encode())
