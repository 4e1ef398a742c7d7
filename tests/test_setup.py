"""`make setup` picks torch's CPU build on a machine without a GPU (scripts/torch_source.py).

The internet is out of reach here, so two local package indexes stand in for PyPI (whose torch of the
pinned version is a CUDA build) and for PyTorch's CPU wheel index (which has the `+cpu` build); the
wheels are empty stand-ins with the real names. pip itself, run with `--isolated` so this machine's pip
configuration plays no part, then resolves what the set-up would ask for.
"""

from __future__ import annotations

import functools
import http.server
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "torch_source.py"
sys.path.insert(0, str(SCRIPT.parent))
import torch_source  # noqa: E402

VERSION = torch_source.TORCH_VERSION


def _stand_in_wheel(directory: Path, version: str) -> str:
    """An installable, empty wheel named like torch's."""
    name = f"torch-{version}-py3-none-any.whl"
    info = f"torch-{version}.dist-info"
    with zipfile.ZipFile(directory / name, "w") as wheel:
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")
    return name


def _simple_index(root: Path, version: str) -> None:
    """A PEP 503 index at ``root`` offering one torch wheel."""
    project = root / "torch"
    project.mkdir(parents=True)
    name = _stand_in_wheel(project, version)
    (project / "index.html").write_text(f'<html><body><a href="{name}">{name}</a></body></html>')
    (root / "index.html").write_text('<html><body><a href="torch/">torch</a></body></html>')


@pytest.fixture(scope="module")
def indexes(tmp_path_factory):
    """A web server with /pypi (torch VERSION, the CUDA build) and /cpu (torch VERSION+cpu)."""
    root = tmp_path_factory.mktemp("indexes")
    _simple_index(root / "pypi", VERSION)
    _simple_index(root / "cpu", f"{VERSION}+cpu")
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _resolve(pip_arguments: list[str], pypi: str, tmp_path: Path) -> str:
    """The torch wheel pip picks with ``pip_arguments``, PyPI being ``pypi``."""
    dest = tmp_path / "downloads"
    run = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--isolated", "--no-deps", "--disable-pip-version-check",
         "--index-url", pypi, "-d", str(dest), *pip_arguments],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    (wheel,) = dest.iterdir()
    return wheel.name


def _closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/cpu"


def test_without_a_gpu_the_cpu_build_is_installed(indexes, tmp_path):
    arguments = torch_source.pip_arguments("none", f"{indexes}/cpu", timeout=5)
    assert arguments == ["--extra-index-url", f"{indexes}/cpu", f"torch=={VERSION}+cpu"]
    assert _resolve(arguments, f"{indexes}/pypi", tmp_path) == f"torch-{VERSION}+cpu-py3-none-any.whl"


def test_the_bare_pin_would_install_the_cuda_build(indexes, tmp_path):
    """The control: what the set-up asked for before, on an ordinary machine, gets PyPI's (CUDA) torch."""
    assert _resolve([f"torch=={VERSION}"], f"{indexes}/pypi", tmp_path) == f"torch-{VERSION}-py3-none-any.whl"


def test_an_unreachable_index_is_said_and_the_cpu_pin_stays(indexes, tmp_path, capsys):
    started = time.monotonic()
    arguments = torch_source.pip_arguments("none", _closed_port_url(), timeout=2)
    assert time.monotonic() - started < 10
    assert arguments == [f"torch=={VERSION}+cpu"]
    assert "did not answer" in capsys.readouterr().err
    # Without the +cpu wheel anywhere, pip refuses rather than installing the CUDA build.
    run = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--isolated", "--no-deps", "--index-url", f"{indexes}/pypi",
         "-d", str(tmp_path), *arguments], capture_output=True, text=True, timeout=120,
    )
    assert run.returncode != 0 and f"torch=={VERSION}+cpu" in run.stderr
    assert not list(tmp_path.glob("*.whl"))


def test_on_a_gpu_machine_torch_is_left_to_the_vllm_extra(indexes):
    assert torch_source.pip_arguments("cuda", f"{indexes}/cpu", timeout=5) == []


def test_setup_installs_what_the_script_prints():
    """setup.sh hands the script's lines to pip unchanged (the script is the one place that decides)."""
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert 'mapfile -t torch_source < <(python3 scripts/torch_source.py --accelerator "$accelerator")' in setup
    assert '"${torch_source[@]}" -e ".[$extras]"' in setup
    run = subprocess.run([sys.executable, str(SCRIPT), "--accelerator", "cuda"], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == ""
