"""The Sandbox API on every back-end: statuses, stdin/stdout, files, limits, batching, the registry."""

from __future__ import annotations

import shutil
import subprocess
import warnings

import pytest

import sandboxes
from sandboxes import ExecResult

BACKENDS = ["bwrap", "docker", "subprocess"]


@pytest.fixture(scope="module", params=BACKENDS)
def sandbox(request):
    reason = sandboxes.unavailable_reason(request.param)
    if reason:
        pytest.skip(f"{request.param} sandbox unavailable here: {reason}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        box = sandboxes.get(request.param, timeout=5, memory_mb=256, max_output_bytes=4096)
    yield box
    box.close()


def test_stdin_to_stdout(sandbox):
    result = sandbox.run("import sys\nprint(sum(map(int, sys.stdin.read().split())))", stdin="1 2 39")
    assert (result.status, result.exit_code, result.stdout, result.stderr) == ("ok", 0, "42\n", "")
    assert isinstance(result, ExecResult) and not result.truncated and result.wall_time > 0


def test_large_stdin_is_fed_without_deadlock(sandbox):
    data = "x" * (3 << 20)  # larger than any pipe buffer
    result = sandbox.run("import sys\nprint(len(sys.stdin.read()))", stdin=data)
    assert result.stdout == f"{3 << 20}\n"


def test_exit_code_and_error_status(sandbox):
    result = sandbox.run("import sys\nsys.stderr.write('bad')\nsys.exit(7)")
    assert (result.status, result.exit_code, result.stderr) == ("error", 7, "bad")


def test_files_beside_the_program_and_a_fresh_work_dir(sandbox):
    code = "import os\nprint(open('data/in.txt').read())\nprint(sorted(os.listdir('.')))\nopen('left.txt', 'w').write('x')"
    first = sandbox.run(code, files={"data/in.txt": "hello"})
    assert first.stdout == "hello\n['data', 'main.py']\n"
    second = sandbox.run(code, files={"data/in.txt": "again"})
    assert second.stdout == "again\n['data', 'main.py']\n"  # left.txt of the first run is gone


def test_bad_file_names_are_refused(sandbox):
    for name in ("../escape.py", "/etc/passwd", "main.py"):
        with pytest.raises(ValueError):
            sandbox.run("pass", files={name: "x"})


def test_per_run_limits_override_the_defaults(sandbox):
    assert sandbox.run("import time\ntime.sleep(2)", timeout=0.5).status == "timeout"
    assert sandbox.run("x = bytearray(150 << 20)").status == "ok"
    assert sandbox.run("x = bytearray(150 << 20)", memory_mb=100).status == "memory"


def test_output_is_capped_with_a_flag(sandbox):
    result = sandbox.run("print('y' * 10000)")
    assert result.status == "output_limit" and result.stdout_truncated and len(result.stdout) == 4096


def test_run_batch_keeps_order(sandbox):
    programs = [f"print({i} * {i})" for i in range(6)] + [{"code": "print(input())", "stdin": "echo"}]
    results = sandbox.run_batch(programs, workers=2)
    assert [r.stdout for r in results] == [f"{i * i}\n" for i in range(6)] + ["echo\n"]


def test_environment_is_clean(sandbox, monkeypatch):
    monkeypatch.setenv("RLVR_TEST_LEAK", "leaked-value")
    result = sandbox.run("import os\nprint(sorted(os.environ))")
    assert "RLVR_TEST_LEAK" not in result.stdout
    assert eval(result.stdout) == sorted(["PATH", "HOME", "LANG", "PYTHONDONTWRITEBYTECODE", "PWD"])


def test_precompiling_a_program_is_only_a_hint(sandbox):
    program = "import sys\nprint('precompiled', sys.argv[0], __name__)\nraise ValueError('boom')\n"
    sandbox.precompile(program)
    sandbox.precompile("def broken(:\n")  # refused quietly by the warm server, never fatal
    result = sandbox.run(program)
    assert (result.status, result.stdout) == ("error", "precompiled main.py __main__\n")
    assert "main.py\", line 3" in result.stderr and result.stderr.rstrip().endswith("ValueError: boom")
    # A program that differs by one word is never taken for the precompiled one.
    other = program.replace("'precompiled'", "'compiled'")
    assert sandbox.run(other).stdout == "compiled main.py __main__\n"
    broken = sandbox.run("def broken(:\n")
    assert broken.status == "error" and "SyntaxError" in broken.stderr



STREAMS = """
import sys
for stream in (sys.stdin, sys.stdout, sys.stderr):
    print(stream.name, stream.mode, stream.encoding, stream.errors, stream.line_buffering, stream.write_through,
          stream.seekable(), stream.buffer.raw.closefd, type(stream.buffer).__name__, stream.fileno())
print(sys.stdin.read().split(), sys.stdin is sys.__stdin__, sys.stdout is sys.__stdout__)
sys.stdout.write("caf\\u00e9\\n")
"""


def test_python_programs_get_the_standard_streams_python3_gives_them(sandbox):
    # The warm back-ends run Python programs in their server's interpreter: what a program sees of
    # its standard streams must be what a fresh python3 (the subprocess back-end) shows it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fresh = sandboxes.get("subprocess").run(STREAMS, stdin="one two\n")
    result = sandbox.run(STREAMS, stdin="one two\n")
    assert fresh.status == "ok" and "<stdin> r" in fresh.stdout, fresh
    assert (result.status, result.stdout) == ("ok", fresh.stdout), result


def test_registry_and_errors():
    assert {"bwrap", "docker", "subprocess"} <= set(sandboxes.available())
    with pytest.raises(TypeError, match="unknown sandbox option"):
        sandboxes.get("bwrap", tiemout=3)
    with pytest.raises(ValueError, match="must be a positive number"):
        sandboxes.get("bwrap", timeout=-1)
    with pytest.raises(LookupError, match="Did you mean 'docker'"):
        sandboxes.get("dokcer")


def test_subprocess_says_it_does_not_isolate():
    with pytest.warns(UserWarning, match="does not isolate"):
        box = sandboxes.get("subprocess")
    assert box.isolated is False
    assert "trusted code" in type(box).__doc__



def test_bwrap_is_available_wherever_bubblewrap_can_make_namespaces():
    # Every bwrap test skips where the back-end is unavailable: a broken warm server must fail here,
    # not turn the bwrap tests into skips.
    bare = shutil.which("bwrap") and subprocess.run(
        ["bwrap", "--unshare-all", "--unshare-user", "--ro-bind", "/", "/", "--", "true"], capture_output=True)
    if not bare or bare.returncode != 0:
        pytest.skip("bubblewrap cannot make namespaces on this machine")
    assert sandboxes.unavailable_reason("bwrap") is None


def test_auto_picks_an_isolating_backend():
    if sandboxes.unavailable_reason("bwrap") and sandboxes.unavailable_reason("docker"):
        with pytest.raises(sandboxes.SandboxError, match="no isolating sandbox"):
            sandboxes.get()
    else:
        box = sandboxes.get()
        assert box.isolated and box.name in ("bwrap", "docker")
        box.close()


def test_docker_backend_reports_an_unreachable_host():
    reason = sandboxes.unavailable_reason("docker", base_url="unix:///nonexistent/docker.sock")
    assert reason is not None and "no Docker API" in reason
    box = sandboxes.get("docker", base_url="unix:///nonexistent/docker.sock")
    result = box.run("print(1)")
    assert result.status == "sandbox_error" and "DOCKER_HOST" in result.stderr
