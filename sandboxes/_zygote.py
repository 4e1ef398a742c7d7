# The warm fork server ("zygote") of the bwrap and docker back-ends. It runs inside the outer
# sandbox (a bwrap namespace, or a container) as the unprivileged sandbox user, started once:
#
#   python3 -I -B _zygote.py FD        # FD: a SOCK_SEQPACKET socket to the host
#   python3 -I -B _zygote.py PATH      # or the path of the host's listening socket (containers)
#
# It imports what runs need up front, then only ever forks: it never reads a run's program, files
# or stdin (they arrive as file descriptors that only the forked child reads), so no run's data
# (the harness's nonce, the tests) is ever in its memory, and every child starts from this clean
# state, never from a state a previous run could have touched. Each request is a small JSON header
# (argv, limits, environment: nothing secret) plus descriptors: a control socket, the run's stdin,
# stdout and stderr pipes, a memfd holding its files, and, where the host made a cgroup for the
# run, the cgroup files (opened by the host) through which init moves itself there.
#
# Per run, two processes:
# * init is cloned from the server straight into a nested user namespace with fresh mount, PID
#   and IPC namespaces (PID 1 of its own PID namespace: one fork of the warm interpreter per run
#   fewer than forking a child that unshares), and into a network namespace that the server made
#   and lends to this run alone (NetworkNamespaces), ahead of its request: a spare. It closes
#   the server's sockets, maps its ids, makes every mount private and mounts the namespace's own
#   /proc (where the outer /proc does not allow that, as in containers, an empty tmpfs hides it),
#   then waits; the server keeps SPARES of them and, given a request, hands it to one (the run's
#   descriptors go to that init alone) and clones the next while the run goes on. Given its
#   request, init joins the run's cgroup before anything else happens, mounts private tmpfs on
#   /work, /tmp and /dev/shm, writes the files, and starts the program. It enforces the timeout and
#   kills the run on the host's word (or when the host hangs up), kills and reaps whatever the
#   program left, then reports the exit status over the control socket. Nothing in the namespace
#   can signal it (PID 1 gets only the signals it handles, and it handles none) or trace it (not
#   dumpable, and the program has no capabilities), and when it exits the kernel kills everything
#   left in the namespace.
# * the program drops every capability, gets the rlimits, a seccomp filter against new user
#   namespaces and the fixed environment, then execs argv, or, for Python (``python3 FILE``),
#   runs the file in this already-warm interpreter exactly as ``python3 FILE`` would.
# A program the host announced as its own (``precompile``: a verifier's harness, never a run's
# code) runs as init itself, isolated as a program is but left non-dumpable: one forked
# interpreter per run fewer. Its timeout is then a timer signal and the host's kill a SIGIO from
# the control socket; init acts on either only when the clock or the socket says so, so the same
# signals sent by the program's children are ignored, and those children get the defaults back.
# Standard library only: it runs on the outer sandbox's python3.
import _signal
import atexit
import builtins
import contextlib
import ctypes
import fcntl
import functools
import gc
import json
import os
import resource
import select
import signal
import socket
import sys
import time
import traceback
import types

libc = ctypes.CDLL(None, use_errno=True)
# Every page a run writes is a copy of the server's, made by the kernel on the first write, and in
# this Python (3.11) running a function writes to it (its reference count, its code's counters):
# so what runs do is done with as few Python-level functions as will do. Looked up once here: the
# first lookup of a C function through a CDLL runs ctypes' Python code.
for name in ("capset", "mount", "prctl", "setns", "syscall", "unshare"):
    getattr(libc, name)
# The C parts of json.loads (its Python layers cost a run more than the parsing).
SCAN_JSON = json.scanner.make_scanner(json.JSONDecoder())
# signal.signal() converts to and from enums in Python; _signal.signal() is the same call in C.
set_handler = _signal.signal
# The same C library, called with the GIL held: a clone() through it leaves the child's interpreter
# exactly as the parent's was at the call, as os.fork() does.
libc_holding_gil = ctypes.PyDLL(None, use_errno=True)
SYS_CLONE = 56
# The server's uid and gid: a child cloned into a new user namespace sees neither until it maps them.
SERVER_UID, SERVER_GID = os.getuid(), os.getgid()
# What a run's uid_map and gid_map say: our own ids, the only ones an unprivileged user may map.
ID_MAPS = (f"{SERVER_UID} {SERVER_UID} 1".encode(), f"{SERVER_GID} {SERVER_GID} 1".encode())
# The server's environment, as main() made it (runs get their own only where it differs).
SERVER_ENVIRONMENT = {}
# private_mount_plan(), made by main() before the first run.
PRIVATE_MOUNTS = []
# run_streams(), made by main(): the standard streams of every Python run.
RUN_STREAMS = []
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x8000000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    0x1, 0x2, 0x4, 0x8, 0x20, 0x1000, 0x4000, 0x40000)
PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP = 4, 24, 38, 22
SYS_KEYCTL, KEYCTL_JOIN_SESSION_KEYRING = 250, 1
MAX_REQUEST = 1 << 16
# A request's descriptors: control, stdin, stdout, stderr, files, and a cgroup file per hierarchy.
MAX_FDS = 8
# Inits cloned ahead of their requests (one per host worker of the default two): a request finds
# its namespaces made, and the server clones the next init while the run goes on.
SPARES = 2
# Modules runs commonly import, imported once by the server before any fork instead of once per
# run (typing alone costs a fresh interpreter ~9 ms): the code verifier's harness (base64,
# collections), HumanEval's prompts (typing), LiveCodeBench-style functional programs (the rest).
# Each run still gets its own copy of every module, forked from the server's clean state.
PRELOADED = ("base64", "bisect", "collections", "functools", "heapq", "itertools", "math", "typing")
# Programs the host announced as its own and as run often (a verifier's harness), compiled once by
# the server, by (path, source): a run whose program is byte for byte one of them skips compiling
# it, and runs as the run's init.
PRECOMPILED = {}
MAX_PRECOMPILED = 16


def check(result, what):
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def mount(source, target, fstype, flags, data=None):
    check(libc.mount(source.encode() if source else None, target.encode(), fstype.encode() if fstype else None,
                     flags, data.encode() if data else None), f"mount {target}")


def user_namespace_filter():
    """A seccomp filter (allowed unprivileged under no_new_privs): unshare/clone with CLONE_NEWUSER
    fail with EPERM, clone3 (whose flags a filter cannot read) with ENOSYS so libc falls back to
    clone, and syscalls of other architectures or of the x32 ABI (numbers with bit 30 set, which
    the checks below would not match) with EPERM."""
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, errno_ret = 0x7FFF0000, 0x00050000
    program = [
        (ld, 0, 0, 4), (jeq, 1, 0, 0xC000003E), (ret, 0, 0, errno_ret | 1),
        (ld, 0, 0, 0), (jge, 0, 1, 0x40000000), (ret, 0, 0, errno_ret | 1),
        (jeq, 0, 1, 435), (ret, 0, 0, errno_ret | 38),
        (jeq, 1, 0, 272), (jeq, 0, 2, 56),
        (ld, 0, 0, 16), (jset, 1, 0, CLONE_NEWUSER), (ret, 0, 0, allow), (ret, 0, 0, errno_ret | 1),
    ]

    class Instruction(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Instruction))]

    instructions = (Instruction * len(program))(*[Instruction(*item) for item in program])
    return Program(len(program), instructions)  # (which keeps the instructions alive)


# Built once by the server, not in every run.
NO_USER_NAMESPACES = user_namespace_filter()


def forbid_user_namespaces():
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    check(libc.prctl(PR_SET_SECCOMP, 2, ctypes.byref(NO_USER_NAMESPACES)), "seccomp")


def last_capability():
    """The highest capability number this kernel knows (read once by the server)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return 63  # dropping a capability the kernel does not know fails harmlessly


LAST_CAPABILITY = last_capability()


def drop_capabilities():
    """init created the run's user namespace: it and its children hold every capability in it."""
    for capability in range(LAST_CAPABILITY + 1):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            break
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()
    check(libc.capset(header, data), "capset")


def read_all(fd):
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def serve(channel, networks):
    """Hand each request to an init cloned ahead of it, until the host hangs up."""
    channel.send(b"ready")
    spares = []  # the server's ends of the handoff sockets of inits waiting for a request
    refused = False  # the kernel refused the last spare: none is tried again before a run's init
    while True:
        try:
            while pid := os.waitpid(-1, os.WNOHANG)[0]:
                networks.take_back(pid)
        except ChildProcessError:
            pass
        # (a request waiting comes first: a spare is made only while none is)
        if len(spares) < SPARES and not refused and not select.select([channel], [], [], 0)[0]:
            spare = clone_spare(channel, spares, networks)
            refused = spare is None
            if spare is not None:
                spares.append(spare)
                continue
        ready = select.select([channel], [], [], 1.0)[0]
        if not ready:
            continue
        message, fds, _, _ = socket.recv_fds(channel, MAX_REQUEST, MAX_FDS)
        if not message:  # the host hung up; runs still going end with their control sockets
            for spare in spares:
                spare.close()
            try:
                while True:
                    os.wait()
            except ChildProcessError:
                return
        if not fds:
            precompile(message)
            for spare in spares:  # (cloned before the program was known: replaced by ones that know it)
                spare.close()
            spares.clear()
            continue
        if len(fds) < 5:
            for fd in fds:
                os.close(fd)
            continue
        refused = not dispatch(message, fds, spares, channel, networks)
        for fd in fds:
            os.close(fd)


def dispatch(message, fds, spares, channel, networks):
    """Give a request to a spare init; with none left (or none alive), clone an init for it.
    Returns whether an init got it (else the run was told why not)."""
    while spares:
        spare = spares.pop(0)
        try:
            socket.send_fds(spare, [message], fds)
        except OSError:  # a spare that died: the next one
            continue
        finally:
            spare.close()
        return True
    # (a spare is only ever cloned while the server holds no run's descriptors: this init is the
    # one process that gets copies of these)
    try:
        clone_init([channel], networks, lambda: init(from_json(message), namespaces_entered(), *fds))
    except OSError as error:
        report_to(fds[0], {"error": f"cannot isolate the run: {error}"})
        return False
    return True


def clone_spare(channel, spares, networks):
    """Clone an init into new namespaces ahead of its request (see spare_init). Returns the
    server's end of its handoff socket (None if the kernel refused: the reason is in the log)."""
    server_end, init_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        clone_init([channel, server_end, *spares], networks, lambda: spare_init(init_end))
    except OSError as error:
        server_end.close()
        sys.stderr.write(f"sandbox: cannot clone a run's init: {error}\n")
        return None
    finally:
        init_end.close()
    return server_end


def clone_init(server_sockets, networks, run):
    """networks.clone_into_namespaces(); the child closes the server's sockets (it never touches
    those objects again) and its network namespaces, calls ``run()`` and exits. Returns in the
    server only."""
    if networks.clone_into_namespaces() == 0:
        status = 1
        try:
            for server_socket in server_sockets:
                os.close(server_socket.fileno())
            for fd in networks.descriptors():
                os.close(fd)
            run()
            status = 0
        finally:
            os._exit(status)


def spare_init(handoff):
    """An init cloned ahead of its request: it enters its namespaces (the part of isolation that
    needs no request), then waits for the request (none if the server discards it)."""
    failure = namespaces_entered()
    message, fds, _, _ = socket.recv_fds(handoff, MAX_REQUEST, MAX_FDS)
    os.close(handoff.fileno())
    if message and len(fds) >= 5:
        init(from_json(message), failure, *fds)


def namespaces_entered():
    """enter_namespaces(); returns why it failed, or None."""
    try:
        enter_namespaces()
    except OSError as error:
        return str(error)
    return None


def from_json(message):
    """json.loads of the host's bytes, in C."""
    return SCAN_JSON(message.decode(), 0)[0]


def precompile(message):
    """Compile a program the host announced (the host's own text, never a run's data). Only a
    speed hint: anything wrong with it and runs compile the program as usual."""
    try:
        request = from_json(message)
        path = "/work/" + request["precompile"]
        source = request["source"].encode()
        if len(PRECOMPILED) < MAX_PRECOMPILED:
            PRECOMPILED[(path, source)] = compile(source, path, "exec")
    except (ValueError, KeyError, TypeError, AttributeError, SyntaxError, StopIteration):
        pass


def clone_into_namespaces(new_network=True):
    """fork(), with the child in a new user, mount, PID and IPC namespace, and in a new network
    namespace (or, without ``new_network``, in the server's current one). The child's C library
    still holds the server's thread id (a raw clone does not update it): init never calls what
    reads it (raise, pthread mutexes checked for their owner), and everything it forks goes through
    os.fork() again, which sets it right."""
    flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | signal.SIGCHLD
    if new_network:
        flags |= CLONE_NEWNET
    pid = libc_holding_gil.syscall(SYS_CLONE, flags, None, None, None, None)
    check(0 if pid >= 0 else -1, "clone")
    return pid


class NetworkNamespaces:
    """Network namespaces the server made, each lent to one run at a time: a run's init is cloned
    into one, and it is free again when the server reaps that init, which is after every process
    of the run has exited (PID 1 of a PID namespace exits last), every socket of the run closed.
    They are the server's own, made in a user namespace of its own one level above each run's, so
    no run holds a capability in them. A new network namespace has a loopback interface, down, and
    nothing else, and no run can bring it up or change anything in it: a run's sockets reach no
    process but its own, and none is left for the next run. (A new network namespace per run
    instead costs ~0.5 ms to make and ~0.5 ms of a kernel thread to free: the largest single cost
    of isolating a run, benchmarks/sandbox_breakdown.py.) Where the server cannot have a user
    namespace of its own, every run gets a new network namespace."""

    # Runs beyond this many at a time (a host with more workers) get a new one each.
    MOST = 32

    def __init__(self):
        self.free = []  # descriptors of /proc/self/ns/net
        self.lent = {}  # init's pid -> the descriptor of its namespace
        self.home = None  # the server's own, never lent: the sockets it makes are made there
        try:
            check(libc.unshare(CLONE_NEWUSER), "a user namespace for the server")
            write_id_maps()
            self.home = self.made()
        except OSError as error:
            sys.stderr.write(f"sandbox: each run gets a new network namespace ({error})\n")

    @staticmethod
    def made():
        """A new network namespace, which the server is in now."""
        check(libc.unshare(CLONE_NEWNET), "a network namespace")
        return os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)

    def descriptors(self):
        return [*self.free, *self.lent.values(), *([] if self.home is None else [self.home])]

    def clone_into_namespaces(self):
        """clone_into_namespaces() with the child in a free namespace (made now if none is), lent
        to it until take_back(); or in a new one of its own where none can be lent."""
        if self.home is None or (not self.free and len(self.lent) >= self.MOST):
            return clone_into_namespaces()
        network = self.free.pop() if self.free else self.made()
        try:
            check(libc.setns(network, CLONE_NEWNET), "setns")
            pid = clone_into_namespaces(new_network=False)
        except OSError:
            self.free.append(network)
            check(libc.setns(self.home, CLONE_NEWNET), "setns")
            raise
        if pid == 0:  # (the child stays where it was cloned, and needs no descriptor to get there)
            os.close(network)
            return 0
        check(libc.setns(self.home, CLONE_NEWNET), "setns")
        self.lent[pid] = network
        return pid

    def take_back(self, pid):
        """The server reaped ``pid``: the namespace lent to it, if any, is free again."""
        network = self.lent.pop(pid, None)
        if network is not None:
            self.free.append(network)


def report_to(control_fd, report):
    with contextlib.suppress(OSError):
        os.write(control_fd, json.dumps(report).encode())


def init(request, failure, control_fd, stdin_fd, stdout_fd, stderr_fd, files_fd, *cgroup_fds):
    """PID 1 of the run's namespaces, given its request: finish isolating, start the program,
    watch it, report. ``failure``: why the namespaces could not be set up, if they could not."""
    started = time.monotonic()
    control = socket.socket(fileno=control_fd)
    try:
        join_cgroup(cgroup_fds, request["cgroup_fds"])
    except OSError as error:
        control.send(json.dumps({"error": f"cannot put the run into its cgroup: {error}"}).encode())
        return
    try:
        if failure:
            raise OSError(failure)
        private_writable_mounts(request["disk_bytes"])
        files = write_files(files_fd, request["files"])
    except OSError as error:
        control.send(json.dumps({"error": f"cannot isolate the run: {error}"}).encode())
        return
    own = announced_program(request, files)
    if own is not None:
        run_as_init(request, own, control, (stdin_fd, stdout_fd, stderr_fd), started + request["timeout"])
        return
    program = os.fork()
    if program == 0:
        try:
            control.close()
            run_program(request, stdin_fd, stdout_fd, stderr_fd)
        except BaseException as error:  # noqa: B036 - report anything, never return into init
            os.write(2, f"sandbox: {error!r}\n".encode())
        finally:
            os._exit(127)
    for fd in (stdin_fd, stdout_fd, stderr_fd):
        os.close(fd)
    pidfd = os.pidfd_open(program)
    deadline = started + request["timeout"]
    timed_out = killed = False
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        ready = select.select([pidfd, control], [], [], remaining)[0]
        if pidfd in ready:
            break
        if control in ready:
            killed = True  # the host's "kill", or it hung up
            break
    status = None
    if not (timed_out or killed):
        status = os.waitpid(program, 0)[1]
    finish(control, status, timed_out)


def finish(control, wait_status, timed_out):
    """Kill and reap what is left of the run, then report to the host."""
    # What the program left behind (all of it, on a timeout or kill) dies now, and is reaped here
    # so that its resource usage counts for the run (our exit would kill it too, unaccounted).
    # (again after each reap: a child forked while the signal went out escapes one round)
    try:
        while True:
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.wait()
    except ChildProcessError:
        pass
    try:
        control.send(b'{"wait_status": %s, "timed_out": %s}' % (
            b"null" if wait_status is None else b"%d" % wait_status, b"true" if timed_out else b"false"))
        # Closing with the host's "kill" unread would reset the connection and lose the report:
        # the host hangs up first.
        while control.recv(16):
            pass
    except OSError:
        pass


def announced_program(request, files):
    """The compiled code of the run's Python program if it is byte for byte one the host announced."""
    if not request.get("python"):
        return None
    path = "/work/" + request["python"]
    return PRECOMPILED.get((path, files.get(path)))


def run_as_init(request, code, control, stdio, deadline):
    """Run the host's own program in init (see the top of this file): isolated as any program,
    watched by signals instead of by a waiting init."""
    def handle(action):
        set_handler(signal.SIGALRM, action)
        set_handler(signal.SIGIO, action)

    def stop_if_due(signum, frame):
        due = time.monotonic() >= deadline
        if due or select.select([control], [], [], 0)[0]:
            handle(_signal.SIG_IGN)
            os.closerange(0, 3)
            finish(control, None, due)
            os._exit(0)

    handle(stop_if_due)  # (what init's children get back: see main())
    fcntl.fcntl(control.fileno(), fcntl.F_SETOWN, os.getpid())
    fcntl.fcntl(control.fileno(), fcntl.F_SETFL, fcntl.fcntl(control.fileno(), fcntl.F_GETFL) | os.O_ASYNC)
    signal.setitimer(signal.ITIMER_REAL, max(deadline - time.monotonic(), 0.001))
    try:
        isolate(request, *stdio, keep=control.fileno())
        status = run_main(request["python"], code)
    except BaseException as error:  # noqa: B036 - as a forked program would: reported, status 127
        os.write(2, f"sandbox: {error!r}\n".encode())
        status = 127
    handle(_signal.SIG_IGN)
    signal.setitimer(signal.ITIMER_REAL, 0)
    os.closerange(0, 3)  # the host reads the report once the output has ended
    finish(control, status << 8, False)


def join_cgroup(fds, expected):
    """Move this process (single-threaded: forked from the server, which starts no threads) into
    the run's cgroup: ``0`` written to a cgroup file means the writer itself. Everything the run
    forks later is inside."""
    if len(fds) != expected:
        raise OSError(f"{len(fds)} cgroup descriptors arrived, {expected} were sent")
    for fd in fds:
        os.write(fd, b"0")
        os.close(fd)


def fresh_session_keyring():
    """Keys added to a session keyring are visible to every process that shares it: each run (and
    the server, so it never holds its starter's keys) gets an empty one of its own. Where seccomp
    forbids keyctl (Docker's default profile), it does so for the runs too."""
    if libc.syscall(SYS_KEYCTL, KEYCTL_JOIN_SESSION_KEYRING, None) < 0 and ctypes.get_errno() not in (1, 38):
        check(-1, "new session keyring")


def enter_namespaces():
    """Map our own uid and gid (the only ones an unprivileged user may map), make every mount
    private and mount the namespace's own /proc; then become non-dumpable."""
    fresh_session_keyring()
    write_id_maps()
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    try:
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError:
        mount("tmpfs", "/proc", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, "size=4k,mode=0555")
    # (only now: a process that is not dumpable cannot write its own uid_map)
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def write_id_maps():
    """In a user namespace this process has just made: our own uid and gid, as they are outside."""
    for name, text in (("setgroups", b"deny"), ("uid_map", ID_MAPS[0]), ("gid_map", ID_MAPS[1])):
        fd = os.open(f"/proc/self/{name}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text)
        finally:
            os.close(fd)


def private_mount_plan():
    """The mounts that keep every writable file system of the outer sandbox private to a run (its
    /work and /tmp are tmpfs of its own, so is every other writable file system: /dev/shm, a
    container's /var/tmp, ...; /dev itself becomes read-only), as mount() arguments whose data
    holds ``{size}``; an unknown kind of writable mount is an error. The server computes them once:
    its mounts never change."""
    flag_of = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC}
    with open("/proc/self/mountinfo") as handle:
        lines = handle.read().splitlines()
    own = {"/work": "0755", "/tmp": "1777", **({"/dev/shm": "1777"} if os.path.isdir("/dev/shm") else {})}
    plan = [("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"size={{size}},mode={mode}") for target, mode in own.items()]
    for line in lines:
        fields, _, rest = line.partition(" - ")
        fields, rest = fields.split(), rest.split()
        target = fields[4].replace("\\040", " ")
        options = fields[5].split(",")
        fstype = rest[0]
        if "ro" in options or target in own or target == "/proc" or target.startswith("/proc/") or not os.path.isdir(target):
            continue
        flags = MS_NOSUID | MS_NODEV
        if target == "/dev":
            kept = sum(flag for name, flag in flag_of.items() if name in options)
            plan.append((None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | kept, None))
        elif fstype == "tmpfs":
            plan.append(("tmpfs", target, "tmpfs", flags, "size={size},mode=1777"))
        elif fstype == "mqueue":
            plan.append(("mqueue", target, "mqueue", flags | MS_NOEXEC, None))
        elif fstype == "devpts":
            plan.append(("devpts", target, "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"))
        else:
            raise OSError(f"a writable {fstype} at {target} would be shared between runs")
    return plan


def private_writable_mounts(size):
    for source, target, fstype, flags, data in PRIVATE_MOUNTS:
        mount(source, target, fstype, flags, data and data.format(size=size))


def write_files(files_fd, listing):
    """Write the run's files into /work (``listing``: name, size and whether it is executable, in
    the order of their bytes in ``files_fd``); returns their contents by path."""
    data = read_all(files_fd)
    os.close(files_fd)
    written = {}
    end = 0
    for name, size, executable in listing:
        path = "/work/" + name
        if "/" in name:
            os.makedirs(path.rpartition("/")[0], exist_ok=True)
        start, end = end, end + size
        content = written[path] = data[start:end]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, 0o755 if executable else 0o644)
        finally:
            os.close(fd)
    return written


def run_program(request, stdin_fd, stdout_fd, stderr_fd):
    isolate(request, stdin_fd, stdout_fd, stderr_fd)
    libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # init is not; the program is an ordinary process (as after exec)
    if request.get("python"):
        os._exit(run_main(request["python"]))
    # Python ignores these; an exec'd program starts with the defaults, as under a shell.
    for number in (signal.SIGPIPE, signal.SIGXFSZ):
        set_handler(number, _signal.SIG_DFL)
    argv = request["argv"]
    os.execvpe(argv[0], argv, os.environ)


def isolate(request, stdin_fd, stdout_fd, stderr_fd, keep=None):
    """What a program gets before it runs: its own session, the run's stdio and no other
    descriptor (but ``keep``), the work dir, environment and rlimits, no capabilities, and the
    seccomp filter."""
    os.setsid()
    for target, fd in enumerate((stdin_fd, stdout_fd, stderr_fd)):
        os.dup2(fd, target)
    if keep is None:
        os.closerange(3, 1 << 20)
    else:
        os.closerange(3, keep)
        os.closerange(keep + 1, 1 << 20)
    os.chdir("/work")
    environment = {**request["env"], "PWD": "/work"}
    if environment != SERVER_ENVIRONMENT:  # (which it is, unless the server was started otherwise)
        os.environ.clear()
        os.environ.update(environment)
    for name, value in request["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (value, value))
    drop_capabilities()
    forbid_user_namespaces()


def run_main(filename, code=None):
    """``python3 FILE`` in this interpreter (``code``: FILE already compiled): a fresh __main__;
    returns the exit status python3 would have."""
    sys.stdin, sys.stdout, sys.stderr = sys.__stdin__, sys.__stdout__, sys.__stderr__ = RUN_STREAMS
    path = "/work/" + filename
    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    sys.argv = [filename]
    sys.path.insert(0, path.rpartition("/")[0])
    status = 0
    try:
        if code is None:
            with open(path, "rb") as handle:
                code = compile(handle.read(), path, "exec")
        exec(code, main.__dict__)
    except SystemExit as exit_request:
        status = exit_status(exit_request.code)
    except BaseException:  # noqa: B036 - what python3 does with an uncaught exception
        sys.excepthook(*sys.exc_info())
        status = 1
    try:
        if "threading" in sys.modules:  # as at python3's exit: only a program that imported it has threads
            sys.modules["threading"]._shutdown()
        atexit._run_exitfuncs()
    except SystemExit as exit_request:
        status = exit_status(exit_request.code)
    except BaseException:  # noqa: B036
        traceback.print_exc()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - python3 exits 120 when stdout cannot be flushed
            status = status or 120
    return status


def run_streams():
    """sys.stdin, sys.stdout and sys.stderr as python3 makes them on pipes at fds 0, 1 and 2, made
    while pipes are there: a stream keeps what it learned of its file when it was made (whether it
    can seek), and a run's standard streams are always pipes. Made once by the server (per run they
    cost a forked interpreter ~80 page copies); each run gets its own copy, never used before."""
    saved = [os.dup(fd) for fd in (0, 1, 2)]
    read_end, write_end = os.pipe()
    try:
        for fd, end in ((0, read_end), (1, write_end), (2, write_end)):
            os.dup2(end, fd)
        streams = []
        for fd, mode, model, buffering in ((0, "r", sys.__stdin__, -1), (1, "w", sys.__stdout__, -1),
                                           (2, "w", sys.__stderr__, 1)):
            # (the encoding and error handler python3 chose for the server's own, in the same locale)
            stream = open(fd, mode, encoding=model.encoding, errors=model.errors, closefd=False, buffering=buffering)
            stream.buffer.raw.name = model.name
            streams.append(stream)
    finally:
        for fd in (0, 1, 2):
            os.dup2(saved[fd], fd)
            os.close(saved[fd])
        os.close(read_end)
        os.close(write_end)
    return streams


def exit_status(code):
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write(f"{code}\n")
    except Exception:  # noqa: BLE001
        pass
    return 1


def main():
    # Python's own handler would let a run interrupt its init with SIGINT; PID 1 ignores every
    # signal from its namespace that it has no handler for. (Runs inherit this from the server.)
    set_handler(signal.SIGINT, _signal.SIG_DFL)
    os.environ["PWD"] = "/work"  # (bwrap and docker start the server there)
    SERVER_ENVIRONMENT.update(os.environ)
    fresh_session_keyring()
    # A harness running as init (run_as_init) handles these two signals; what it forks gets the
    # defaults back. Registered here, once: the server's own clones are raw system calls, which
    # run no fork hooks, while init's os.fork() runs them (C calls: no Python code in each child).
    for number in (signal.SIGALRM, signal.SIGIO):
        os.register_at_fork(after_in_child=functools.partial(set_handler, number, _signal.SIG_DFL))
    for name in PRELOADED:
        __import__(name)
    PRIVATE_MOUNTS.extend(private_mount_plan())
    RUN_STREAMS.extend(run_streams())
    # Every forked run copies the page tables of the server's memory and tears them down at its
    # exit: the heap's free pages go back to the kernel first (where the C library can).
    if hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
    gc.freeze()
    where = sys.argv[1]
    if where.isdigit():
        channel = socket.socket(fileno=int(where))
    else:
        channel = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        channel.connect(where)
    serve(channel, NetworkNamespaces())


if __name__ == "__main__":
    main()
