"""The ``docker`` back-end: runs in warm containers of any Docker Engine API endpoint, through
the ``docker`` SDK (Docker itself, or Podman's API service as on machines without Docker).

Each sandbox keeps a small pool of long-lived containers (created on first use, one per
concurrent run) with no network, a read-only root file system, dropped capabilities,
``no-new-privileges``, size-limited tmpfs ``/work`` and ``/tmp``, and cgroup limits on memory and
process count. Each run is one ``exec`` of a small launcher (``_docker_launcher.py``) that
makes a fresh work dir, starts the program as the container's unprivileged uid with the run's
rlimits, and afterwards kills every process of that uid and deletes everything it wrote, so
the next run in the container starts clean. Only one run uses a container at a time, so the
container's cgroup limits are that run's. The host caps stdout/stderr while streaming and
enforces the timeout itself too; a container that does not come back clean is discarded.

Where the API is: ``base_url=`` if given, else ``DOCKER_HOST`` (the docker SDK's usual
environment), else the Podman socket that ``scripts/sandbox_setup.sh`` starts, else Docker's
default socket.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import secrets
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

from sandboxes import register
from sandboxes.base import SANDBOX_ENV, Limits, RawOutcome, Sandbox, SandboxError, fresh_run_uid

# Keep in sync with scripts/sandbox_setup.sh.
PODMAN_SOCKET = "/run/rlvr/podman.sock"
DEFAULT_IMAGE = "localhost/rlvr-sandbox-python:bookworm"
LAUNCHER = (Path(__file__).with_name("_docker_launcher.py")).read_text()
# PID 1 of a warm container: reaps the orphans of past runs at once (they count against the
# process limits until reaped), sleeping in sigwait between SIGCHLDs.
REAPER = """
import os, signal
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
while True:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
    signal.sigwait([signal.SIGCHLD])
"""
# Headroom above the program's memory for the launcher and the tmpfs pages, in MiB.
CONTAINER_MEMORY_HEADROOM_MB = 96
START_GRACE_SECONDS = 5.0
STDERR_TAIL = 4096


def default_base_url() -> str | None:
    """The Docker API endpoint used when no ``base_url`` is given (None: the SDK's default)."""
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    if Path(PODMAN_SOCKET).is_socket():
        return f"unix://{PODMAN_SOCKET}"
    return None


@register("docker")
class DockerSandbox(Sandbox):
    """Warm containers on a Docker Engine API endpoint (Docker or Podman), one exec per run."""

    name = "docker"

    def __init__(self, base_url: str | None = None, image: str = DEFAULT_IMAGE, max_containers: int = 2, **limits: Any):
        super().__init__(**limits)
        self.base_url = base_url or default_base_url()
        self.image = image
        self.max_containers = max_containers
        self._client: Any = None
        self._idle: queue.Queue = queue.Queue()
        self._count = 0
        self._lock = threading.Lock()

    @classmethod
    def unavailable_reason(cls, base_url: str | None = None, image: str = DEFAULT_IMAGE, **options: Any) -> str | None:
        try:
            client = cls._connect(base_url or default_base_url())
        except SandboxError as error:
            return str(error)
        try:
            client.images.get(image)
        except Exception:
            return f"image {image!r} is not on the Docker host; build it with scripts/sandbox_setup.sh"
        finally:
            client.close()
        return None

    @staticmethod
    def _connect(base_url: str | None) -> Any:
        import docker

        try:
            client = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
            client.ping()
        except Exception as error:
            where = base_url or "the default Docker socket"
            raise SandboxError(
                f"no Docker API at {where} ({error}); start Docker, or Podman's service with "
                f"`sudo bash scripts/sandbox_setup.sh`, or pass base_url= / set DOCKER_HOST"
            ) from None
        return client

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._connect(self.base_url)
            return self._client

    def _new_container(self) -> tuple[Any, int]:
        limits = self.limits
        disk = f"size={limits.disk_mb}m,mode=1777"
        memory = f"{limits.memory_mb + CONTAINER_MEMORY_HEADROOM_MB}m"
        uid = fresh_run_uid()
        try:
            container = self.client.containers.run(
                self.image, ["python3", "-c", REAPER], detach=True, network_disabled=True, network_mode="none",
                read_only=True, tmpfs={"/work": disk, "/tmp": disk, "/var/tmp": disk}, mem_limit=memory,
                memswap_limit=memory, pids_limit=limits.max_processes + 8, cap_drop=["ALL"],
                cap_add=["SETUID", "SETGID"], security_opt=["no-new-privileges"], labels={"rlvr.sandbox": "1"},
                environment={}, working_dir="/work",
            )
        except Exception as error:
            raise SandboxError(
                f"could not start a container of {self.image!r} on {self.base_url or 'the Docker host'}: {error}. "
                "Build the image with scripts/sandbox_setup.sh or pass image="
            ) from None
        return container, uid

    def _acquire(self) -> tuple[Any, int]:
        with self._lock:
            create = self._idle.empty() and self._count < self.max_containers
            if create:
                self._count += 1
        if create:
            try:
                return self._new_container()
            except BaseException:
                with self._lock:
                    self._count -= 1
                raise
        return self._idle.get()

    def _discard(self, container: Any) -> None:
        with self._lock:
            self._count -= 1
        try:
            container.remove(force=True)
        except Exception:  # already gone; nothing else to clean
            pass

    def close(self) -> None:
        """Remove the warm containers."""
        while not self._idle.empty():
            container, _ = self._idle.get_nowait()
            self._discard(container)
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _execute(self, argv: list[str], files: dict[str, bytes], stdin: bytes, limits: Limits) -> RawOutcome:
        container, uid = self._acquire()
        clean = False
        try:
            raw, clean = self._exec(container, uid, argv, files, stdin, limits)
            return raw
        finally:
            if clean:
                self._idle.put((container, uid))
            else:
                self._discard(container)

    def _exec(
        self, container: Any, uid: int, argv: list[str], files: dict[str, bytes], stdin: bytes, limits: Limits
    ) -> tuple[RawOutcome, bool]:
        nonce = secrets.token_hex(16)
        rlimits = {key: value for key, value in limits.rlimits().items()}
        spec = {
            "nonce": nonce, "uid": uid, "gid": uid, "argv": argv, "env": SANDBOX_ENV, "timeout": limits.timeout, "rlimits": rlimits,
            "files": {name: base64.b64encode(content).decode() for name, content in files.items()},
            "stdin": base64.b64encode(stdin).decode(),
        }
        api = self.client.api
        started = time.monotonic()
        try:
            exec_id = api.exec_create(container.id, ["python3", "-c", LAUNCHER], stdin=True, user="0:0")["Id"]
            sock = api.exec_start(exec_id, socket=True)
        except Exception as error:
            raise SandboxError(f"docker exec failed: {error}") from None
        raw_socket: socket.socket = getattr(sock, "_sock", sock)
        try:
            raw_socket.sendall(json.dumps(spec).encode())
            raw_socket.shutdown(socket.SHUT_WR)
            reader = _FrameReader(raw_socket, limits.max_output_bytes)
            host_deadline = started + limits.timeout + START_GRACE_SECONDS
            finished = reader.read_until(host_deadline, stop_on_overflow=True)
            if not finished:
                # Flood or a stuck launcher: kill every process of the run, then let the launcher clean up.
                self._kill_run(container, uid)
                finished = reader.read_until(time.monotonic() + START_GRACE_SECONDS, stop_on_overflow=False)
        finally:
            sock.close()
        trailer, stderr = reader.trailer(nonce)
        wall_time = time.monotonic() - started
        if trailer is None:
            if reader.overflow:
                return RawOutcome(0, None, reader.stdout(), stderr, wall_time, output_overflow=True,
                                  stdout_truncated=reader.overflow[1], stderr_truncated=reader.overflow[2]), False
            if wall_time >= limits.timeout:
                return RawOutcome(0, None, reader.stdout(), stderr, wall_time, timed_out=True), False
            raise SandboxError(f"the sandbox launcher did not report (container discarded); stderr: {stderr[-500:]!r}")
        return RawOutcome(
            pid=0,
            exit_code=trailer["exit_code"],
            stdout=reader.stdout(),
            stderr=stderr,
            wall_time=wall_time,
            timed_out=trailer["timed_out"],
            output_overflow=any(reader.overflow.values()),
            stdout_truncated=reader.overflow[1],
            stderr_truncated=reader.overflow[2],
            out_of_memory=trailer["oom"],
        ), finished

    def _kill_run(self, container: Any, uid: int) -> None:
        try:
            container.exec_run(["kill", "-9", "-1"], user=f"{uid}:{uid}")
        except Exception:  # the container is discarded below if it does not come back clean
            pass


class _FrameReader:
    """Reads the Docker API's multiplexed exec stream (8-byte headers: stream id, size), keeping
    up to ``cap`` bytes of each stream and always the last bytes of stderr (where the trailer is)."""

    def __init__(self, sock: socket.socket, cap: int):
        self.sock = sock
        self.cap = cap
        self.kept = {1: bytearray(), 2: bytearray()}
        self.tail = bytearray()
        self.overflow = {1: False, 2: False}
        self.pending = bytearray()
        self.eof = False

    def read_until(self, deadline: float, stop_on_overflow: bool) -> bool:
        """Read until the stream ends (True) or the deadline / an overflow (False)."""
        while not self.eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (stop_on_overflow and any(self.overflow.values())):
                return False
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return False
            except OSError:
                chunk = b""
            if not chunk:
                self.eof = True
                break
            self.pending += chunk
            self._parse()
        return True

    def _parse(self) -> None:
        while len(self.pending) >= 8:
            stream, size = struct.unpack(">BxxxL", self.pending[:8])
            if len(self.pending) < 8 + size:
                return
            payload = bytes(self.pending[8 : 8 + size])
            del self.pending[: 8 + size]
            if stream not in self.kept:
                continue
            if stream == 2:
                self.tail += payload
                del self.tail[:-STDERR_TAIL]
            kept = self.kept[stream]
            # stderr keeps room for the launcher's trailer; it is trimmed to the cap in trailer().
            room = self.cap + (STDERR_TAIL if stream == 2 else 0) - len(kept)
            if len(payload) > room:
                self.overflow[stream] = True
            kept += payload[: max(room, 0)]

    def stdout(self) -> bytes:
        return bytes(self.kept[1][: self.cap])

    def trailer(self, nonce: str) -> tuple[dict | None, bytes]:
        """The launcher's trailer (None if missing) and the program's stderr without it."""
        marker = b"\n" + nonce.encode()
        stderr = bytes(self.kept[2])
        trailer = None
        position = self.tail.rfind(marker)
        if position >= 0:
            line = bytes(self.tail[position + len(marker) :]).split(b"\n", 1)[0]
            try:
                trailer = json.loads(line)
            except ValueError:
                trailer = None
            in_kept = stderr.rfind(marker)
            if in_kept >= 0:
                stderr = stderr[:in_kept]
        if len(stderr) > self.cap:
            stderr = stderr[: self.cap]
            self.overflow[2] = True
        return trailer, stderr
