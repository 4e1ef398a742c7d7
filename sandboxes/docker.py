"""The ``docker`` back-end: runs in a warm container of a Docker Engine API endpoint on this
machine, through the ``docker`` SDK (Docker itself, or Podman's API service as on machines without
Docker).

Each sandbox keeps one long-lived container (created on first use) whose main process is the
warm fork server (``_zygote.py``, see ``_warm.py``), as an unprivileged uid of its own, with no
network, a read-only root file system, every capability dropped, ``no-new-privileges``, and
cgroup limits on memory and process count. The server connects to a unix socket the host
bind-mounts into the container (read-only) and clones one isolated init per run, with the same
isolation as the bwrap back-end: a nested user namespace with fresh mount, PID and IPC namespaces,
a network namespace lent to the run alone, private tmpfs ``/work``, ``/tmp`` and ``/dev/shm``,
rlimits, a seccomp filter against new user namespaces, a per-run cgroup where the host can make
one, and the whole PID namespace killed at the end. One difference: container run-times mask
parts of ``/proc``, which forbids a fresh ``/proc`` in a nested namespace, so a run's ``/proc`` is
an empty tmpfs (nothing of other runs or of the server is visible). Runs' pipes and files pass as
file descriptors, so the engine must run on this machine (a ``unix://`` socket); a remote Docker
host cannot serve this back-end.

Where the API is: ``base_url=`` if given, else ``DOCKER_HOST`` (the docker SDK's usual
environment), else the Podman socket that ``scripts/sandbox_setup.sh`` starts, else Docker's
default socket.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

from sandboxes import register
from sandboxes._warm import START_SECONDS, ZYGOTE_SOURCE, ForkServer, ServerProcess
from sandboxes.base import LANGUAGES, SANDBOX_ENV, Limits, RawOutcome, Sandbox, SandboxError, fresh_run_uid

# Keep in sync with scripts/sandbox_setup.sh.
PODMAN_SOCKET = "/run/rlvr/podman.sock"
DEFAULT_IMAGE = "localhost/rlvr-sandbox:bookworm-python3-gxx"
# Where the host's socket appears in the container.
CHANNEL_DIR = "/rlvr"
# Headroom above the runs' memory for the server and the tmpfs pages, in MiB; the container's
# limits bound all concurrent runs together (each run also has its own cgroup where possible).
CONTAINER_MEMORY_HEADROOM_MB = 96
CONCURRENT_RUNS = 4


def default_base_url() -> str | None:
    """The Docker API endpoint used when no ``base_url`` is given (None: the SDK's default)."""
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    if Path(PODMAN_SOCKET).is_socket():
        return f"unix://{PODMAN_SOCKET}"
    return None


@register("docker")
class DockerSandbox(Sandbox):
    """A warm container on a local Docker Engine API endpoint (Docker or Podman) serving forked runs."""

    name = "docker"

    def __init__(self, base_url: str | None = None, image: str = DEFAULT_IMAGE, **limits: Any):
        super().__init__(**limits)
        self.base_url = base_url or default_base_url()
        self.image = image
        self._client: Any = None
        self._lock = threading.Lock()
        self._server = ForkServer(self._start_server, "docker")

    @classmethod
    def unavailable_reason(cls, base_url: str | None = None, image: str = DEFAULT_IMAGE, **options: Any) -> str | None:
        base_url = base_url or default_base_url()
        if base_url and not base_url.startswith("unix://"):
            return (f"the docker back-end needs the engine on this machine (a unix:// socket), not {base_url}: "
                    "runs' pipes pass to the container as file descriptors")
        try:
            client = cls._connect(base_url)
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

    def _start_server(self) -> tuple[socket.socket, ServerProcess]:
        limits = self.limits
        uid = fresh_run_uid()
        directory = Path(tempfile.mkdtemp(prefix="rlvr-docker-"))
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            os.chmod(directory, 0o711)
            path = directory / "channel"
            listener.bind(str(path))
            os.chmod(path, 0o666)
            listener.listen(1)
            listener.settimeout(START_SECONDS)
            disk = f"size={limits.disk_mb}m,mode=1777"
            memory = f"{CONCURRENT_RUNS * (limits.memory_mb + CONTAINER_MEMORY_HEADROOM_MB)}m"
            container = self.client.containers.run(
                # The server exits when the host's socket closes (a sandbox never closed included): then
                # the container goes away by itself.
                self.image, ["python3", "-I", "-B", "-c", ZYGOTE_SOURCE, f"{CHANNEL_DIR}/channel"], detach=True,
                auto_remove=True,
                user=f"{uid}:{uid}", network_disabled=True, network_mode="none", read_only=True,
                tmpfs={"/work": disk, "/tmp": disk}, mem_limit=memory, memswap_limit=memory,
                pids_limit=CONCURRENT_RUNS * (limits.max_processes + 8), cap_drop=["ALL"],
                security_opt=["no-new-privileges"], labels={"rlvr.sandbox": "1"}, environment=SANDBOX_ENV,
                working_dir="/work", volumes={str(directory): {"bind": CHANNEL_DIR, "mode": "ro"}},
            )
        except SandboxError:
            listener.close()
            shutil.rmtree(directory, ignore_errors=True)
            raise
        except Exception as error:
            listener.close()
            shutil.rmtree(directory, ignore_errors=True)
            raise SandboxError(
                f"could not start a container of {self.image!r} on {self.base_url or 'the Docker host'}: {error}. "
                "Build the image with scripts/sandbox_setup.sh or pass image="
            ) from None
        server = _DockerServer(container, directory)
        try:
            channel, _ = listener.accept()
        except OSError:
            failure = server.failure()
            server.stop()
            raise SandboxError(f"the docker fork server did not connect: {failure.strip()[-1000:] or 'no output'}") from None
        finally:
            listener.close()
        return channel, server

    def _execute(self, argv: list[str], files: dict[str, bytes], stdin: bytes, limits: Limits) -> RawOutcome:
        return self._server.execute(argv, files, stdin, limits)

    def precompile(self, code: str) -> None:
        self._server.precompile(LANGUAGES["python"].filename, code)

    def resident_pids(self) -> set[int]:
        return self._server.resident_pids()

    def close(self) -> None:
        """Remove the warm container (a later run starts a new one)."""
        self._server.close()
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


class _DockerServer(ServerProcess):
    def __init__(self, container: Any, directory: Path):
        self.container = container
        self.directory = directory
        self._pid: int | None = None

    def stop(self) -> None:
        with contextlib.suppress(Exception):  # already gone
            self.container.remove(force=True)
        shutil.rmtree(self.directory, ignore_errors=True)

    def pids(self) -> set[int]:
        if self._pid is None:
            with contextlib.suppress(Exception):
                self.container.reload()
                self._pid = int(self.container.attrs["State"]["Pid"]) or None
        return {self._pid} if self._pid else set()

    def failure(self) -> str:
        with contextlib.suppress(Exception):
            return self.container.logs().decode(errors="replace")
        return ""
