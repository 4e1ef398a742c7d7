"""Data-parallel training on the CPU (gloo, 2 ranks) against one process: the same updates from the same
rollouts, the same samples, the same training run; two torchrun agents on loopback training as one job; a rank
killed with SIGKILL ending the job with the last checkpoint intact, and resumes (same and other world size).

The task and verifier are plug-ins loaded from entry points (tests/train_plugins.py, advertised by a
``*.dist-info`` directory on PYTHONPATH, as an installed package would), so every rank finds them."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from rlvr import checkpoint, distributed
from rlvr.distributed import World
from rlvr.tracking import read_metrics

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
import distributed_worker  # noqa: E402
import train_plugins  # noqa: E402

pytestmark = pytest.mark.slow
# Weights after a few AdamW steps from float sums taken in another order: Adam divides tiny gradient differences
# by tiny second moments, so single entries move by up to ~1e-5 while training moves them by ~5e-3.
WEIGHT_ATOL = 1e-4


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    """The environment of a process that finds the test plug-ins through entry points."""
    site = tmp_path_factory.mktemp("plugins")
    info = site / "rlvr_test_plugins-0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rlvr-test-plugins\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text(
        "[rlvr.tasks]\neven-length-prompts = train_plugins:counting_prompts\n\n"
        "[rlvr.verifiers]\neven-length = train_plugins:EvenLength\nfails-on-rank-1 = train_plugins:FailsOnRankOne\n"
        "nan-on-rank-1 = train_plugins:NanOnRankOne\n"
    )
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(TESTS)])}


def train_arguments(model_dir: Path, output_dir: Path, steps: int = 3, *extra: str) -> list[str]:
    return ["train", *train_plugins.overrides(model_dir, output_dir, steps=steps), "model.cpu_threads=1",
            "distributed.timeout=60", *extra]


def rlvr(arguments: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "rlvr", *arguments], env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(directory / "model.safetensors")


def assert_same_weights(first: Path, second: Path, atol: float = WEIGHT_ATOL) -> None:
    a, b = weights(first), weights(second)
    assert set(a) == set(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=atol, msg=lambda m, name=name: f"{name}: {m}")


def assert_same_metrics(first: list[dict], second: list[dict]) -> None:
    assert [row["step"] for row in first] == [row["step"] for row in second]
    for a, b in zip(first, second, strict=True):
        assert set(a) == set(b)
        for key in a:
            if not key.startswith("time/") and key not in ("tokens_per_second", "elapsed"):
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (a["step"], key)


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory, plugin_env) -> dict[str, Path]:
    """The same 3-step training (dynamic sampling, 2 mini-batches of 2 micro-batches, checkpoints at 2 and 3):
    one process, and `rlvr train --nproc 2`."""
    root = tmp_path_factory.mktemp("runs")
    rlvr(train_arguments(tiny_model_dir, root / "single"), plugin_env)
    rlvr(["train", "--nproc", "2", *train_arguments(tiny_model_dir, root / "two")[1:]], plugin_env)
    return {"single": root / "single", "two": root / "two"}


def test_updates_and_samples_do_not_depend_on_the_number_of_ranks(tiny_model_dir, tmp_path, plugin_env):
    """Same rollouts -> same update for every loss aggregation, with and without micro-batching, several
    mini-batches and epochs, KL and entropy terms; same prompts and seeds -> same completions (hf engine)."""
    world = World()
    one_updates = distributed_worker.run_updates(str(tiny_model_dir), world)
    one_rollouts = distributed_worker.run_sampling(str(tiny_model_dir), world)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(TESTS / "distributed_worker.py"), str(tiny_model_dir), str(tmp_path)]
    done = subprocess.run(command, env=plugin_env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-4000:]
    two_updates = torch.load(tmp_path / "updates.pt", weights_only=False)
    two_rollouts = torch.load(tmp_path / "rollouts.pt", weights_only=False)

    assert set(one_updates) == set(two_updates) == {name for name, _ in distributed_worker.UPDATE_SETTINGS}
    original = weights(tiny_model_dir)
    for name, one in one_updates.items():
        two = two_updates[name]
        # the update did something to compare
        assert max((value - original[key]).abs().max().item() for key, value in one["weights"].items()) > 1e-3
        for key, value in one["weights"].items():
            torch.testing.assert_close(two["weights"][key], value, rtol=1e-5, atol=1e-6, msg=lambda m, n=name, k=key: f"{n} {k}: {m}")
        assert set(one["metrics"]) == set(two["metrics"])
        for key, value in one["metrics"].items():
            assert two["metrics"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), (name, key)

    for one, two in zip(one_rollouts, two_rollouts, strict=True):
        assert one["total_groups"] == two["total_groups"] == 4
        for column in ("prompt_ids", "completion_ids", "rewards"):
            assert one["rows"][column] == two["rows"][column], column
        for a, b in zip(one["rows"]["sampler_logprobs"], two["rows"]["sampler_logprobs"], strict=True):
            torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=0, atol=1e-5)
        assert {k: v for k, v in one["metrics"].items() if not k.startswith("time/")} == \
            {k: v for k, v in two["metrics"].items() if not k.startswith("time/")}


def test_a_two_rank_run_equals_the_one_process_run(runs):
    single, two = runs["single"], runs["two"]
    assert_same_metrics(read_metrics(single), read_metrics(two))
    for step in ("step-000002", "step-000003"):
        assert_same_weights(single / step, two / step)
    assert any(not torch.equal(a, b) for a, b in zip(weights(two / "step-000002").values(), weights(two / "step-000003").values()))
    # the optimizer state is sharded, one file per rank
    assert sorted(p.name for p in (two / "step-000003" / checkpoint.OPTIMIZER_DIR).glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert (two / "final").read_text().strip() == "step-000003"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_agents_on_loopback_train_together_and_a_killed_rank_ends_the_job(tiny_model_dir, tmp_path, runs, plugin_env):
    """Two torchrun agents (`--nnodes 2`, one rank each: two "machines" on 127.0.0.1) train as one job, with the
    results of the single-machine 2-rank run; SIGKILL of rank 1 mid-run ends both agents, the last checkpoint
    stays intact, and `--resume` (2 ranks) ends with exactly the weights of the uninterrupted run."""
    run_dir = tmp_path / "killed"
    port = free_port()
    agents = [
        subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
                          f"--node_rank={node}", "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "rlvr",
                          *train_arguments(tiny_model_dir, run_dir, 3, "checkpoint.every=1")],
                         env=plugin_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for node in (0, 1)
    ]
    try:
        deadline = time.monotonic() + 300
        while checkpoint.latest(run_dir) is None:  # step 1 saved: step 2 is under way
            assert all(agent.poll() is None for agent in agents), "an agent ended before it could be killed"
            assert time.monotonic() < deadline, "the two-agent job did not save step 1"
            time.sleep(0.05)
        rank1 = psutil.Process(agents[1].pid).children()
        assert len(rank1) == 1
        os.kill(rank1[0].pid, signal.SIGKILL)
        codes = [agent.wait(timeout=180) for agent in agents]  # the job ends instead of hanging
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
    assert all(code != 0 for code in codes), codes
    last = checkpoint.latest(run_dir)
    assert last is not None and checkpoint.load_state(last)["step"] in (1, 2)
    # what the two agents trained before the kill is what the one-machine 2-rank run trained
    straight, before_kill = read_metrics(runs["two"]), read_metrics(run_dir)
    assert before_kill
    assert_same_metrics(before_kill, straight[: len(before_kill)])

    rlvr(["train", "--nproc", "2", "--resume", *train_arguments(tiny_model_dir, run_dir, 3, "checkpoint.every=1")[1:]], plugin_env)
    assert_same_weights(run_dir / "step-000003", runs["two"] / "step-000003", atol=0)
    assert_same_metrics(read_metrics(run_dir), straight)


def test_a_two_rank_checkpoint_resumes_on_one_process(tiny_model_dir, tmp_path, runs, plugin_env):
    """The optimizer shards of 2 ranks are read back resharded by 1 process: it ends where the 1-process run ends."""
    run_dir = tmp_path / "resharded"
    shutil.copytree(runs["two"], run_dir)
    shutil.rmtree(run_dir / "step-000003")
    (run_dir / checkpoint.LATEST_FILE).write_text("step-000002\n")
    rlvr(["train", "--resume", *train_arguments(tiny_model_dir, run_dir)[1:]], plugin_env)
    assert_same_weights(run_dir / "step-000003", runs["single"] / "step-000003")
    assert_same_metrics(read_metrics(run_dir), read_metrics(runs["single"]))


def start_two_ranks(model_dir: Path, run_dir: Path, env: dict[str, str], *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rlvr", "train", "--nproc", "2", *train_arguments(model_dir, run_dir, 3, *extra)[1:]],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def rank_process(job: subprocess.Popen, rank: int) -> psutil.Process:
    """The worker process of ``rank`` under ``rlvr train --nproc`` (launcher -> torchrun agent -> workers)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for child in psutil.Process(job.pid).children(recursive=True):
            try:
                if child.environ().get("RANK") == str(rank) and "torch.distributed.run" not in " ".join(child.cmdline()):
                    return child
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.1)
    raise AssertionError(f"no worker of rank {rank} appeared")


def test_sigterm_to_one_rank_checkpoints_the_whole_job_and_resume_continues_exactly(tiny_model_dir, tmp_path, runs, plugin_env):
    """A preemption notice that reaches one machine of a job only: every rank stops at the same step boundary,
    the checkpoint is written (both optimizer shards), the job exits non-zero with the message, and `--resume`
    ends with exactly the weights of the uninterrupted 2-rank run."""
    run_dir = tmp_path / "preempted"
    job = start_two_ranks(tiny_model_dir, run_dir, plugin_env, "checkpoint.every=100")
    try:
        rank1 = rank_process(job, 1)
        deadline = time.monotonic() + 300
        while not read_metrics(run_dir):  # step 1 logged: step 2 is under way
            assert job.poll() is None, job.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "the job did not log step 1"
            time.sleep(0.05)
        rank1.send_signal(signal.SIGTERM)
        output, _ = job.communicate(timeout=180)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0, output[-3000:]
    last = checkpoint.latest(run_dir)
    assert last is not None and last.name in ("step-000001", "step-000002"), output[-3000:]
    assert f"stopped by SIGTERM after step {int(last.name[5:])}" in output
    assert sorted(p.name for p in (last / checkpoint.OPTIMIZER_DIR).glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert [row["step"] for row in read_metrics(run_dir)] == list(range(1, int(last.name[5:]) + 1))  # both stopped there

    rlvr(["train", "--nproc", "2", "--resume", *train_arguments(tiny_model_dir, run_dir, 3, "checkpoint.every=100")[1:]], plugin_env)
    assert_same_weights(run_dir / "step-000003", runs["two"] / "step-000003", atol=0)
    assert_same_metrics(read_metrics(run_dir), read_metrics(runs["two"]))


def test_verifier_failures_on_one_rank_stop_every_rank_before_training(tiny_model_dir, tmp_path, plugin_env):
    """Rank 1's sandbox service is dead (all its verifications error; half the job's): the job stops at step 1
    with the cause named, on every rank, before any update, instead of training on zeros."""
    run_dir = tmp_path / "failing"
    job = start_two_ranks(tiny_model_dir, run_dir, plugin_env, "verifier.name=fails-on-rank-1",
                          "faults.max_verifier_failure_share=0.3", "algorithm.dynamic_sampling=false")
    output, _ = job.communicate(timeout=300)
    assert job.returncode != 0
    assert "step 1: 50% of verifications failed" in output and "faults.max_verifier_failure_share=0.3" in output
    assert checkpoint.latest(run_dir) is None and not read_metrics(run_dir)


def test_a_non_finite_loss_on_one_rank_skips_the_update_on_every_rank(tiny_model_dir, tmp_path, plugin_env):
    """Rank 1's rewards are NaN every step (rank 0's are finite): both ranks skip each update together (no
    rank steps its optimizer alone, no collective hangs), the run stops after 2 such steps, and the checkpoint
    of step 1 holds the untrained, finite weights."""
    run_dir = tmp_path / "nan"
    job = start_two_ranks(tiny_model_dir, run_dir, plugin_env, "verifier.name=nan-on-rank-1", "faults.max_nonfinite_steps=2",
                          "checkpoint.every=1", "algorithm.dynamic_sampling=false")
    output, _ = job.communicate(timeout=300)
    assert job.returncode != 0
    assert "step 2: 2 steps in a row had a non-finite loss or gradient" in output, output[-3000:]
    rows = read_metrics(run_dir)
    assert [row["step"] for row in rows] == [1, 2] and all(row["update/nonfinite_skipped"] > 0 for row in rows)
    assert [p.name for p in sorted(run_dir.glob("step-*"))] == ["step-000001"]
    assert_same_weights(run_dir / "step-000001", tiny_model_dir, atol=0)


def test_vllm_engine_in_each_rank(tiny_model_dir, tmp_path, plugin_env):
    """The form of vLLM that runs on the CPU: an in-process engine per rank, full weights gathered from the
    FSDP shards into it after each update; the job (and vLLM's teardown of the process group) ends cleanly."""
    run_dir = tmp_path / "vllm"
    rlvr(["train", "--nproc", "2", *train_arguments(tiny_model_dir, run_dir, 2, "rollout.engine=vllm")[1:]], plugin_env, timeout=500)
    rows = read_metrics(run_dir)
    assert [row["step"] for row in rows] == [1, 2]
    # step 2 sampled from the weights step 1 trained: the sampler's log-probs are the trainer's
    assert rows[1]["sampler_logprob_gap"] < 1e-3
    assert any(not torch.equal(a, b) for a, b in zip(weights(tiny_model_dir).values(), weights(run_dir / "step-000002").values()))


def test_helpers_on_one_process_are_identities():
    world = World()
    assert list(distributed.shard(5, World(rank=1, size=2))) == [2, 3, 4]
    assert list(distributed.shard(5, World(rank=0, size=2))) == [0, 1]
    assert distributed.worker_share(None, World(local_size=2)) == max(1, (os.cpu_count() or 1) // 2)
    assert distributed.worker_share(3, world) == 3
    assert distributed.reduce(world, [1, 2]) == [1.0, 2.0]
    assert distributed.gather_by_position(world, [2, 0, 1], {"x": ["c", "a", "b"]}) == {"x": ["a", "b", "c"]}
