"""Hostile programs and how to tell from the host side that a sandbox contained each one.

Used by the test suite (``tests/test_sandbox_hostile.py``, against every back-end) and by
``rlvr sandbox check``. Each case is a program plus a check that looks at the result *and* at the
host (files, processes, a canary process, a listening socket, a secret in the environment and on
disk) and returns what escaped, or None when the run was contained.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandboxes.base import RUN_UID_RANGE, SANDBOX_UID, ExecResult

# Limits the suite runs under: small, so that every bomb hits a limit quickly.
SUITE_LIMITS = {"timeout": 3.0, "memory_mb": 256, "max_processes": 32, "max_open_files": 64, "max_file_mb": 8,
                "disk_mb": 16, "max_output_bytes": 64 * 1024}


@dataclass
class Host:
    """Things planted on the host that a contained program must not reach."""

    token: str = field(default_factory=lambda: secrets.token_hex(12))
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rlvr-hostile-")))
    env_name: str = "RLVR_HOSTILE_SECRET"
    canary: subprocess.Popen | None = None
    listener: socket.socket | None = None
    # The canary lives this long (then it would look killed): longer than the runs checked against it.
    canary_seconds: int = 600

    def __enter__(self) -> Host:
        os.chmod(self.directory, 0o755)
        self.secret_file.write_text(self.token)
        os.environ[self.env_name] = self.token
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.listener.setblocking(False)
        # A process of the same host uid the sandbox user maps to: kill(-1) must not reach it.
        as_sandbox_uid = ["setpriv", f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}", "--clear-groups"]
        sleep = ["sleep", str(self.canary_seconds)]
        command = [*as_sandbox_uid, *sleep] if os.geteuid() == 0 else sleep
        self.canary = subprocess.Popen(command, start_new_session=True)
        return self

    def __exit__(self, *exc_info: object) -> None:
        os.environ.pop(self.env_name, None)
        if self.canary:
            self.canary.kill()
            self.canary.wait()
        if self.listener:
            self.listener.close()
        for path in sorted(self.directory.rglob("*"), reverse=True):
            path.unlink() if not path.is_dir() else path.rmdir()
        self.directory.rmdir()

    @property
    def secret_file(self) -> Path:
        return self.directory / "secret.txt"

    @property
    def port(self) -> int:
        return self.listener.getsockname()[1] if self.listener else 0

    def connections(self) -> int:
        count = 0
        while True:
            try:
                connection, _ = self.listener.accept()
            except BlockingIOError:
                return count
            connection.close()
            count += 1

    def leftover_processes(self, resident: set[int] | frozenset[int] = frozenset()) -> list[int]:
        """Host processes of the sandbox uids, other than the canary and the back-end's ``resident``
        ones (its warm server, see :meth:`sandboxes.base.Sandbox.resident_pids`)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or (self.canary and int(entry) == self.canary.pid) or int(entry) in resident:
                continue
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{entry}/status").read_text()
                fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
                uid = int(fields["Uid"].split()[0])
                if (uid == SANDBOX_UID or RUN_UID_RANGE[0] <= uid < RUN_UID_RANGE[1]) and "Z" not in fields["State"]:
                    found.append(int(entry))
        return found


Check = Callable[[ExecResult, Host], "str | None"]


@dataclass(frozen=True)
class Hostile:
    """One hostile program. ``needs_isolation``: only back-ends that isolate can contain it."""

    name: str
    code: str
    check: Check
    needs_isolation: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    def source(self, host: Host) -> str:
        return self.code.replace("TOKEN", host.token).replace("SECRET_FILE", str(host.secret_file)).replace(
            "HOST_DIR", str(host.directory)).replace("PORT", str(host.port)).replace("ENV_NAME", host.env_name)


def _status(*allowed: str) -> Check:
    def check(result: ExecResult, host: Host) -> str | None:
        return None if result.status in allowed else f"status {result.status!r}, expected one of {allowed}"
    return check


def _all(*checks: Check) -> Check:
    def check(result: ExecResult, host: Host) -> str | None:
        for part in checks:
            problem = part(result, host)
            if problem:
                return problem
        return None
    return check


def _no_token(result: ExecResult, host: Host) -> str | None:
    if host.token in result.stdout or host.token in result.stderr:
        return "the host secret reached the program"
    return None


def _no_host_files(result: ExecResult, host: Host) -> str | None:
    planted = [path.name for path in host.directory.iterdir() if path != host.secret_file]
    return f"program wrote into the host directory: {planted}" if planted else None


def _no_connections(result: ExecResult, host: Host) -> str | None:
    return "a connection reached the host" if host.connections() else None


def _canary_alive(result: ExecResult, host: Host) -> str | None:
    return "the host canary process was killed" if host.canary and host.canary.poll() is not None else None


def _output_capped(result: ExecResult, host: Host) -> str | None:
    cap = SUITE_LIMITS["max_output_bytes"]
    if len(result.stdout.encode()) > cap or len(result.stderr.encode()) > cap or not result.truncated:
        return "output was not capped"
    return None


def _printed_at_most(limit: int) -> Check:
    def check(result: ExecResult, host: Host) -> str | None:
        numbers = [int(word) for word in result.stdout.split() if word.isdigit()]
        if not numbers:
            return f"no count printed (status {result.status}, stderr {result.stderr[-300:]!r})"
        return None if max(numbers) <= limit else f"reached {max(numbers)} (limit {limit})"
    return check


MiB = 1 << 20
TIMEOUT = _status("timeout")

CASES: list[Hostile] = [
    Hostile("infinite loop", "while True:\n    pass\n", TIMEOUT),
    Hostile("sleep forever", "import time\ntime.sleep(10**6)\n", TIMEOUT),
    Hostile("ignore SIGTERM and SIGXCPU, loop",
            "import signal\nfor s in (signal.SIGTERM, signal.SIGXCPU, signal.SIGINT, signal.SIGHUP):\n"
            "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass\n", TIMEOUT),
    Hostile("stop itself", "import os, signal\nos.kill(os.getpid(), signal.SIGSTOP)\n", TIMEOUT),
    Hostile("fork bomb", "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
            _status("timeout", "error", "memory")),
    Hostile("thread bomb",
            "import threading, time\nn = 0\ntry:\n    while True:\n"
            "        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n        n += 1\n"
            "except (RuntimeError, MemoryError):\n    pass\nprint(n, flush=True)\nimport os\nos._exit(0)\n",
            _printed_at_most(SUITE_LIMITS["max_processes"])),
    Hostile("memory bomb", "blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 1024 * 1024))\n",
            _status("memory")),
    Hostile("memory bomb in many processes",
            "import os, time\nfor _ in range(16):\n    if os.fork() == 0:\n        blocks = []\n"
            "        try:\n            while True:\n                blocks.append(b'x' * (8 << 20))\n"
            "        except MemoryError:\n            time.sleep(60)\ntime.sleep(60)\n",
            _status("timeout", "memory")),
    Hostile("raise rlimits, then allocate",
            "import resource\nfor r in (resource.RLIMIT_AS, resource.RLIMIT_NPROC, resource.RLIMIT_CPU):\n"
            "    try:\n        resource.setrlimit(r, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n"
            "    except (ValueError, OSError):\n        pass\nx = bytearray(1 << 30)\nprint('allocated')\n",
            _status("memory")),
    Hostile("stdout flood", "import sys\nwhile True:\n    sys.stdout.write('A' * 65536)\n",
            _all(_status("output_limit"), _output_capped)),
    Hostile("stderr flood without newlines", "import os\nwhile True:\n    os.write(2, b'E' * 65536)\n",
            _all(_status("output_limit"), _output_capped)),
    Hostile("flood from a daemonised child",
            "import os\nif os.fork() == 0:\n    os.setsid()\n    while True:\n        os.write(1, b'D' * 65536)\n"
            "import time\ntime.sleep(60)\n", _all(_status("output_limit"), _output_capped)),
    Hostile("fill the work dir",
            "n = 0\ntry:\n    for i in range(10**6):\n        with open(f'fill{i}', 'wb') as f:\n"
            "            f.write(b'x' * (1 << 20))\n        n += 1\nexcept OSError:\n    pass\nprint(n)\n",
            _printed_at_most(SUITE_LIMITS["disk_mb"]), needs_isolation=True),
    Hostile("fill /tmp",
            "n = 0\ntry:\n    for i in range(10**6):\n        with open(f'/tmp/fill{i}', 'wb') as f:\n"
            "            f.write(b'x' * (1 << 20))\n        n += 1\nexcept OSError:\n    pass\nprint(n)\n",
            _printed_at_most(SUITE_LIMITS["disk_mb"]), needs_isolation=True),
    Hostile("one huge file",
            "import signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\nn = 0\ntry:\n"
            "    with open('big', 'wb') as f:\n        for _ in range(10**6):\n            f.write(b'x' * (1 << 20))\n"
            "            f.flush()\n            n += 1\nexcept OSError:\n    pass\nprint(n)\n",
            _printed_at_most(SUITE_LIMITS["max_file_mb"])),
    Hostile("file descriptor exhaustion",
            "import os\nfds = []\ntry:\n    while True:\n        fds.append(os.open('/dev/null', os.O_RDONLY))\n"
            "except OSError:\n    pass\nprint(len(fds))\n", _printed_at_most(SUITE_LIMITS["max_open_files"])),
    Hostile("zombie army",
            "import os\nfor _ in range(10000):\n    try:\n        if os.fork() == 0:\n            os._exit(0)\n"
            "    except OSError:\n        break\nimport time\ntime.sleep(60)\n", TIMEOUT),
    Hostile("daemonise and outlive the run",
            "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        for _ in range(600):\n            time.sleep(0.1)\n    os._exit(0)\nprint('parent exits')\n",
            _status("ok"), needs_isolation=True),
    Hostile("daemonise, then time out",
            "import os, time\nif os.fork() == 0:\n    os.setsid()\n    os.closerange(0, 3)\n"
            "    while True:\n        time.sleep(0.1)\nwhile True:\n    pass\n", TIMEOUT, needs_isolation=True),
    Hostile("read host secrets",
            "import glob\nfor path in ['SECRET_FILE', '/etc/shadow', '/root/.ssh/id_rsa', '/proc/1/environ',"
            " *glob.glob('/proc/*/environ'), *glob.glob('/proc/*/cmdline')]:\n    try:\n"
            "        print(path, open(path, 'rb').read()[:4000])\n    except OSError as error:\n"
            "        print(path, error)\n", _all(_status("ok"), _no_token), needs_isolation=True),
    Hostile("read the launcher's environment",
            "import os\nprint(dict(os.environ))\nfor pid in os.listdir('/proc'):\n    if pid.isdigit():\n"
            "        for name in ('environ', 'cmdline'):\n            try:\n"
            "                print(pid, open(f'/proc/{pid}/{name}', 'rb').read())\n            except OSError:\n"
            "                pass\nprint(os.environ.get('ENV_NAME'))\n",
            _all(_status("ok"), _no_token), needs_isolation=True),
    Hostile("list host files",
            "import os\nfor top in ('/', '/root', '/home', '/work', '/tmp', 'HOST_DIR'):\n    try:\n"
            "        print(top, os.listdir(top))\n    except OSError as error:\n        print(top, error)\n",
            _all(_status("ok"), lambda result, host: "the host directory is visible"
                 if "secret.txt" in result.stdout else None), needs_isolation=True),
    Hostile("write outside the work dir",
            "for path in ['HOST_DIR/planted', '/usr/planted', '/etc/planted', '/planted', '/root/planted']:\n"
            "    try:\n        open(path, 'w').write('x')\n        print('wrote', path)\n"
            "    except OSError as error:\n        print(path, error)\n",
            _all(_status("ok"), _no_host_files), needs_isolation=True),
    Hostile("network",
            "import socket\nfor address in [('127.0.0.1', PORT), ('1.1.1.1', 53), ('8.8.8.8', 443)]:\n    try:\n"
            "        socket.create_connection(address, timeout=1)\n        print('connected', address)\n"
            "    except OSError as error:\n        print(address, error)\n",
            _all(_status("ok"), _no_connections,
                 lambda result, host: "a connection succeeded" if "connected" in result.stdout else None),
            needs_isolation=True),
    Hostile("kill the parent and everything",
            "import os, signal\nfor pid in (os.getppid(), 1):\n    try:\n        os.kill(pid, signal.SIGKILL)\n"
            "    except OSError:\n        pass\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError:\n    pass\n"
            "print('still here')\n", _canary_alive, needs_isolation=True),
    Hostile("become root",
            "import os\nfor call in (lambda: os.setuid(0), lambda: os.setgid(0), lambda: os.chroot('/')):\n"
            "    try:\n        call()\n        print('escalated')\n    except OSError:\n        pass\n"
            "print(os.getuid())\n",
            _all(_status("ok"), lambda result, host: "privileges gained" if "escalated" in result.stdout else None),
            needs_isolation=True),
    Hostile("new user namespace",
            "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nprint('unshare', libc.unshare(0x10000000))\n",
            _all(_status("ok"), lambda result, host: None if "unshare -1" in result.stdout
                 else "the program could create a user namespace"), needs_isolation=True),
    Hostile("raise the user-namespace limit, then clone one",
            "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\ntry:\n"
            "    with open('/proc/sys/user/max_user_namespaces', 'w') as handle:\n        handle.write('100')\n"
            "except OSError:\n    pass\n"
            "pid = libc.syscall(56, 0x10000000 | 17, None, None, None, None)\nif pid == 0:\n    os._exit(0)\n"
            "print('clone', pid, 'unshare', libc.unshare(0x10000000))\n",
            _all(_status("ok"), lambda result, host: None if "clone -1 unshare -1" in result.stdout
                 else "the program could create a user namespace"), needs_isolation=True),
    Hostile("invalid UTF-8 output", "import os\nos.write(1, bytes(range(256)) * 4)\n", _status("ok")),
]
