"""The hostile-program suite against every back-end, each run checked from the host side."""

from __future__ import annotations

import time
import warnings

import pytest

import sandboxes
from sandboxes._hostile import CASES, SUITE_LIMITS, Host

BACKENDS = ["bwrap", "docker", "subprocess"]


@pytest.fixture(scope="module", params=BACKENDS)
def sandbox(request):
    name = request.param
    reason = sandboxes.unavailable_reason(name)
    if reason:
        pytest.skip(f"{name} sandbox unavailable here: {reason}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the subprocess back-end warns that it does not isolate
        box = sandboxes.get(name, **SUITE_LIMITS)
    yield box
    box.close()


@pytest.fixture()
def host():
    with Host() as planted:
        yield planted


def _wait_for_no_leftovers(host: Host, sandbox, before: set[int], seconds: float = 3.0) -> list[int]:
    """Sandbox-uid processes that are not the back-end's own and were not there before the run
    (another module's warm sandbox, not yet collected, is not this run's leftover)."""
    deadline = time.monotonic() + seconds
    while (left := sorted(set(host.leftover_processes(sandbox.resident_pids())) - before)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_program_is_contained(sandbox, host, case):
    if case.needs_isolation and not sandbox.isolated:
        pytest.skip(f"the {sandbox.name} back-end does not isolate (by design); not claimed")
    before = set(host.leftover_processes(sandbox.resident_pids()))
    result = sandbox.run(case.source(host), **case.options)
    problem = case.check(result, host)
    assert problem is None, f"{case.name}: {problem}\nstdout: {result.stdout[-500:]!r}\nstderr: {result.stderr[-500:]!r}"
    # Every case: bounded in time, nothing left running on the host, the canary untouched.
    assert result.wall_time < SUITE_LIMITS["timeout"] + 6
    assert _wait_for_no_leftovers(host, sandbox, before) == [], "processes of the run survived it"
    assert host.canary.poll() is None


def test_suite_is_large_enough():
    assert len(CASES) >= 25
