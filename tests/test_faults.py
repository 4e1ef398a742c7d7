"""Faults injected into real training runs (tiny local model, hf engine, real checkpoints on disk):
preemption signals, NaN rewards, a disk that fills, failing verifiers, a step with nothing to learn.
Each must cost at most the current step; no checkpoint is ever lost or holds a NaN."""

import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import rlvr.rollout
import verifiers
from rlvr import checkpoint, config, faults
from rlvr.rollout.hf_engine import HFEngine
from rlvr.tracking import read_metrics
from rlvr.train_config import TrainConfig
from rlvr.trainer import train

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
import train_plugins  # noqa: E402  (registers the test task and the even-length verifier)

GROUPS_PER_STEP = 4  # train_plugins.overrides: optim.prompts_per_step=4, and dynamic sampling is off below


class StepCounting(train_plugins.EvenLength):
    """The even-length verifier, told which step each group belongs to (one group per call, in order)."""

    def __init__(self) -> None:
        self.calls = 0

    def verify_batch(self, completions, references, workers=None):
        step = self.calls // GROUPS_PER_STEP + 1
        self.calls += 1
        return self.alter(step, super().verify_batch(completions, references, workers=1))

    def alter(self, step, verdicts):
        raise NotImplementedError


@verifiers.register("nan-on-steps")
class NanOnSteps(StepCounting):
    """Rewards of the given steps are NaN: the loss and gradients of those steps are NaN."""

    def __init__(self, steps: list[int] = ()) -> None:
        super().__init__()
        self.steps = set(steps)

    def alter(self, step, verdicts):
        return [dataclasses.replace(v, reward=math.nan) if step in self.steps else v for v in verdicts]


@verifiers.register("failing-share")
class FailingShare(StepCounting):
    """The first ``per_group`` verifications of every group fail as a dead sandbox service makes them fail."""

    def __init__(self, per_group: int = 1) -> None:
        super().__init__()
        self.per_group = per_group

    def alter(self, step, verdicts):
        failed = verifiers.Verdict(0.0, False, None, "error", {"error": "SandboxError: the service went away"})
        return [failed if i < self.per_group else v for i, v in enumerate(verdicts)]


@rlvr.rollout.register("hf-dying-at-step-3")
class DyingEngine(HFEngine):
    """The hf engine, whose sampler dies in step 3 as a vLLM engine does when its worker is killed (the failure
    is injected: on the CPU vLLM runs its engine core inside the trainer's process, with no worker to kill)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0

    def generate(self, *args, **kwargs):
        self.calls += 1  # one call per step: dynamic sampling is off
        if self.calls == 3:
            raise RuntimeError("EngineCore encountered an issue: its worker process died (exit code -9)")
        return super().generate(*args, **kwargs)


def settings(model_dir, run_dir, steps, *extra) -> TrainConfig:
    return config.load(TrainConfig, None, [*train_plugins.overrides(model_dir, run_dir, steps=steps),
                                           "algorithm.dynamic_sampling=false", *extra])


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(directory / "model.safetensors")


def all_finite(directory: Path) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in weights(directory).values())


def cli_process(model_dir, run_dir, steps, *extra) -> subprocess.Popen:
    """``rlvr train`` in a child process (with the test plug-ins registered), as a cluster job runs it."""
    arguments = [*train_plugins.overrides(model_dir, run_dir, steps=steps), "algorithm.dynamic_sampling=false",
                 "checkpoint.every=100", *extra]
    script = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); import train_plugins; from rlvr.cli import main; "
              f"sys.exit(main(['train', *{arguments!r}]))")
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def signal_after(process: subprocess.Popen, run_dir: Path, logged_steps: int, signum: int) -> tuple[int, str, float]:
    """Send ``signum`` once ``logged_steps`` steps are in metrics.jsonl (the next step is under way);
    returns the exit code, stderr and the seconds from the signal to the exit."""
    deadline = time.monotonic() + 240
    while len(read_metrics(run_dir)) < logged_steps:
        assert process.poll() is None, f"the run ended before the signal: {process.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "the run did not get far enough"
        time.sleep(0.02)
    os.kill(process.pid, signum)
    sent = time.monotonic()
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr, time.monotonic() - sent


@pytest.mark.slow
def test_sigterm_then_sigint_each_checkpoint_the_step_and_resume_continues_exactly(tiny_model_dir, tmp_path):
    straight = tmp_path / "straight"
    train(settings(tiny_model_dir, straight, 5, "checkpoint.every=100"))

    run = tmp_path / "preempted"
    code, stderr, seconds = signal_after(cli_process(tiny_model_dir, run, 5), run, 1, signal.SIGTERM)
    first = checkpoint.latest(run)
    assert code == 128 + signal.SIGTERM, stderr[-2000:]
    assert first is not None and first.name in ("step-000001", "step-000002")  # the step under way, or the one just logged
    assert f"stopped by SIGTERM after step {int(first.name[5:])}; checkpoint {first} holds it" in stderr
    assert "--resume" in stderr
    assert seconds < 60  # the step under way finished and was saved; steps here take about a second

    code, stderr, _ = signal_after(cli_process(tiny_model_dir, run, 5, "--resume"), run, int(first.name[5:]) + 1,
                                   signal.SIGINT)
    second = checkpoint.latest(run)
    assert code == 128 + signal.SIGINT, stderr[-2000:]
    assert int(second.name[5:]) > int(first.name[5:]) and "stopped by SIGINT" in stderr

    final = train(settings(tiny_model_dir, run, 5, "checkpoint.every=100"), resume=True)
    assert final.name == "step-000005"
    expected, got = weights(straight / "step-000005"), weights(final)
    assert all(torch.equal(expected[name], got[name]) for name in expected)
    keys = ("reward/mean", "loss", "response_length/mean")
    assert [[row[k] for k in keys] for row in read_metrics(run)] == [[row[k] for k in keys] for row in read_metrics(straight)]


@pytest.mark.slow
def test_nan_steps_are_skipped_and_logged_and_k_in_a_row_stop_the_run(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    cfg = settings(tiny_model_dir, run, 6, "checkpoint.every=1", "verifier.name=nan-on-steps",
                   "verifier.options={nan-on-steps: {steps: [2, 4, 5]}}", "faults.max_nonfinite_steps=2")
    with pytest.raises(faults.NonFiniteUpdates, match="step 5: 2 steps in a row had a non-finite loss or gradient"):
        train(cfg)
    rows = read_metrics(run)
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5]  # the failing steps are logged before the stop
    assert [row["update/nonfinite_skipped"] for row in rows] == [0, 2, 0, 2, 2]  # 16 samples: 2 mini-batches of 8
    assert [("non-finite" in row.get("note", "")) for row in rows] == [False, True, False, True, True]
    assert all(math.isfinite(rows[i]["loss"]) for i in (0, 2))
    saved = sorted(p.name for p in run.glob("step-*"))
    assert saved == ["step-000001", "step-000002", "step-000003", "step-000004"]  # none for the step that stopped it
    assert all(all_finite(run / name) for name in saved)
    step = {name: weights(run / name) for name in saved}
    same = lambda a, b: all(torch.equal(step[a][k], step[b][k]) for k in step[a])  # noqa: E731
    assert same("step-000001", "step-000002") and same("step-000003", "step-000004")  # skipped: unchanged
    assert not same("step-000002", "step-000003")  # a finite step after a skipped one trains again


def test_a_checkpoint_with_a_nan_is_never_written(tiny_model_dir):
    from rlvr.policy import load_policy

    model, _ = load_policy(str(tiny_model_dir))
    faults.require_finite_weights(model.named_parameters())
    name, parameter = next(iter(model.named_parameters()))
    with torch.no_grad():
        parameter.view(-1)[3] = math.inf
    with pytest.raises(faults.NonFiniteUpdates, match=f"parameter '{name}' holds a NaN or inf"):
        faults.require_finite_weights(model.named_parameters())


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of its own (mounted as root, removed after the test), to fill for real."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def shrink_to_fit(mount_point: Path, spare_bytes: int) -> None:
    used = sum(p.stat().st_size for p in mount_point.rglob("*") if p.is_file())
    subprocess.run(["mount", "-o", f"remount,size={used + spare_bytes}", str(mount_point)], check=True)


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_is_a_clear_error_and_the_last_one_stays_intact(tiny_model_dir, small_disk):
    run = small_disk / "run"
    train(settings(tiny_model_dir, run, 1, "checkpoint.every=1"))
    good = run / "step-000001"
    size = sum(p.stat().st_size for p in good.rglob("*") if p.is_file())
    before = {p.relative_to(good): p.read_bytes() for p in good.rglob("*") if p.is_file()}
    shrink_to_fit(small_disk, size // 2)  # room for half a checkpoint

    with pytest.raises(faults.CheckpointNotWritten) as error:
        train(settings(tiny_model_dir, run, 3, "checkpoint.every=1"), resume=True)
    message = str(error.value)
    assert "checkpoint step-000002 could not be written" in message and "the disk is full" in message
    assert f"the last good checkpoint is {good}, intact" in message and "--resume" in message
    assert checkpoint.latest(run) == good and (run / "latest").read_text() == "step-000001"
    assert {p.relative_to(good): p.read_bytes() for p in good.rglob("*") if p.is_file()} == before
    assert not list(run.glob(".step-*.partial"))  # the partial one is gone, its space freed
    state = checkpoint.load_state(good)
    assert state["step"] == 1
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(good)


@pytest.mark.slow
def test_too_many_failed_verifications_stop_the_run_before_it_trains_on_them(tiny_model_dir, tmp_path):
    failing = ["verifier.name=failing-share", "verifier.options={failing-share: {per_group: 1}}", "checkpoint.every=1"]
    # one in four verifications fails (group_size 4): under a threshold of 0.5 the run goes on and says so
    train(settings(tiny_model_dir, tmp_path / "tolerated", 1, *failing))
    (row,) = read_metrics(tmp_path / "tolerated")
    assert row["verifier/failure_share"] == 0.25 and row["verifier/errors"] == 4

    stopped = tmp_path / "stopped"
    with pytest.raises(faults.VerifierFailures) as error:
        train(settings(tiny_model_dir, stopped, 2, *failing, "faults.max_verifier_failure_share=0.2"))
    assert "step 1: 25% of verifications failed (4 errors, 0 timeouts), above faults.max_verifier_failure_share=0.2" in str(error.value)
    assert read_metrics(stopped) == [] and checkpoint.latest(stopped) is None  # nothing trained on zeros


@pytest.mark.slow
def test_a_step_with_every_sample_truncated_says_it_has_nothing_to_learn(tiny_model_dir, tmp_path, capsys):
    run = tmp_path / "run"
    train(settings(tiny_model_dir, run, 2, "rollout.max_new_tokens=1", "algorithm.length.overlong_filter=true",
                   "logging.tensorboard=true"))
    rows = read_metrics(run)
    assert [row["response_length/truncated_fraction"] for row in rows] == [1.0, 1.0]  # one token: every one cut off
    for row in rows:
        assert row["samples/in_loss"] == 0 and row["update/nothing_to_learn"] == 1.0 and "loss" not in row
        assert row["note"] == "no update: every sample is masked out of the loss (overlong_filter: all truncated)"
    progress = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert len(progress) == 2 and all(line.endswith("[no update: every sample is masked out of the loss "
                                                    "(overlong_filter: all truncated)]") for line in progress)
    assert all(torch.equal(weights(run / "step-000002")[k], v) for k, v in weights(tiny_model_dir).items())
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("update/nothing_to_learn")] == [(1, 1.0), (2, 1.0)]


@pytest.fixture
def private_podman_service(tmp_path):
    """A Podman API service of this test's own (the shared one stays untouched), started the way
    scripts/sandbox_setup.sh starts it; yields (socket URL, start, stop)."""
    import shutil as shell

    if shell.which("podman") is None:
        pytest.skip("podman is not installed (scripts/setup.sh installs it)")
    socket_path = tmp_path / "podman.sock"
    environment = {**os.environ, "CONTAINERS_CONF": str(TESTS.parent / "sandboxes" / "containers.conf")}
    running: list[subprocess.Popen] = []

    def start() -> None:
        running.append(subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{socket_path}"], cwd=tmp_path,
                                        env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True))
        deadline = time.monotonic() + 30
        while not socket_path.is_socket():
            assert time.monotonic() < deadline, "the Podman service did not start"
            time.sleep(0.1)

    def stop() -> None:
        service = running.pop()
        service.kill()
        service.wait()
        socket_path.unlink(missing_ok=True)

    start()
    try:
        yield f"unix://{socket_path}", start, stop
    finally:
        while running:
            stop()


@pytest.mark.slow
def test_the_podman_service_dying_mid_run_never_turns_rewards_silently_into_zeros(private_podman_service):
    url, start, stop = private_podman_service
    reference = {"test_list": ["assert f() == 1"], "test_setup_code": ""}
    right = "```python\ndef f():\n    return 1\n```"

    def verdicts():
        checker = verifiers.get("code", sandbox="docker", base_url=url)
        return checker, checker.verify_batch([right] * 4, [reference] * 4, workers=1)

    running_checker, first = verdicts()
    if {v.reason for v in first} == {"sandbox_error"}:
        pytest.skip(f"the docker sandbox cannot start its image here: {first[0].details}")
    assert [v.reason for v in first] == ["correct"] * 4

    stop()  # the service dies mid-run: the checker's warm container lives on and keeps judging
    assert [v.reason for v in running_checker.verify_batch([right] * 4, [reference] * 4, workers=1)] == ["correct"] * 4
    _, dead = verdicts()  # a checker that needs the service now cannot judge: errors, not zeros that look like answers
    stats = verifiers.BatchStats.of(dead)
    assert stats.reasons == {"sandbox_error": 4} and stats.errors == 4 and all(v.reward == 0 for v in dead)
    with pytest.raises(faults.VerifierFailures, match="100% of verifications failed"):
        faults.check_verifier_failures(1, {"verifier/failure_share": stats.errors / stats.total, "verifier/errors": 4.0},
                                       TrainConfig().faults.max_verifier_failure_share)

    start()  # restarted: judging works again
    assert [v.reason for v in verdicts()[1]] == ["correct"] * 4


@pytest.mark.slow
def test_a_dead_rollout_engine_is_a_clear_error_and_the_run_resumes_from_its_last_checkpoint(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(faults.EngineFailed) as error:
        train(settings(tiny_model_dir, run, 3, "checkpoint.every=1", "rollout.engine=hf-dying-at-step-3"))
    assert str(error.value) == (
        "step 3: the hf-dying-at-step-3 rollout engine failed while sampling (RuntimeError: EngineCore encountered an "
        f"issue: its worker process died (exit code -9)); the last checkpoint, {run / 'step-000002'}, is intact: run "
        "the same command with --resume")
    assert checkpoint.latest(run).name == "step-000002" and [row["step"] for row in read_metrics(run)] == [1, 2]
    final = train(settings(tiny_model_dir, run, 3, "checkpoint.every=1"), resume=True)
    assert final.name == "step-000003" and [row["step"] for row in read_metrics(run)] == [1, 2, 3]
