"""Checkpoints, the prompt stream, the metrics log, pre-flight checks and the LR schedule."""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from rlvr import checkpoint, config, preflight
from rlvr.config import ConfigError
from rlvr.sampling import Prompt, PromptStream
from rlvr.tracking import MetricsLogger, read_metrics
from rlvr.train_config import TrainConfig
from rlvr.trainer import build_optimizer


def make_prompts(count):
    return [Prompt(example=f"example-{i}", token_ids=[i]) for i in range(count)]


def test_prompt_stream_covers_each_epoch_and_resumes_exactly():
    stream = PromptStream(make_prompts(5), seed=3)
    first_epoch = [p.example for p in stream.take(5)]
    assert sorted(first_epoch) == [f"example-{i}" for i in range(5)]
    head = [p.example for p in stream.take(2)]
    state = stream.state_dict()
    rest = [p.example for p in stream.take(6)]

    resumed = PromptStream(make_prompts(5), seed=3)
    resumed.load_state_dict(state)
    assert [p.example for p in resumed.take(6)] == rest
    assert head + rest[:3] != first_epoch  # a new epoch is reshuffled (seeded)
    with pytest.raises(ValueError, match="no training prompts"):
        PromptStream([], seed=0)


def test_lr_schedule_warmup_then_cosine():
    cfg = config.load(TrainConfig, None, ["optim.lr=1.0", "optim.warmup_steps=2", "optim.lr_schedule=cosine",
                                          "optim.steps=3", "optim.prompts_per_step=2", "rollout.group_size=2",
                                          "optim.mini_batch_size=4"])
    optimizer, scheduler = build_optimizer(torch.nn.Linear(1, 1), cfg)
    seen = []
    for _ in range(3):  # 3 steps x 1 mini-batch of 4 samples = 3 optimizer steps in all
        seen.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    # warm-up: (0+1)/2, (1+1)/2; then cosine at progress (2-2)/(3-2) = 0 -> 1.0
    assert seen == pytest.approx([0.5, 1.0, 1.0])
    seen_after = scheduler.get_last_lr()[0]  # progress 1: 0.5 * (1 + cos(pi)) = 0
    assert seen_after == pytest.approx(0.0, abs=1e-12)


class Saveable:
    """Stands in for a model and a tokenizer: anything with save_pretrained."""

    def __init__(self, name):
        self.name = name

    def save_pretrained(self, directory):
        (directory / f"{self.name}.json").write_text(json.dumps({"name": self.name}))


def test_checkpoint_save_latest_load_and_prune(tmp_path):
    for step in (1, 2):
        checkpoint.save(tmp_path, step, Saveable("model"), Saveable("tokenizer"), {"data": {"index": step}}, keep_last=2)
    torch.manual_seed(7)
    checkpoint.save(tmp_path, 3, Saveable("model"), Saveable("tokenizer"), {"data": {"index": 3}}, keep_last=2)
    draw_after_save = torch.rand(3)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-000002", "step-000003"]
    latest = checkpoint.latest(tmp_path)
    assert latest.name == "step-000003"
    torch.manual_seed(99)
    assert checkpoint.load_state(latest)["data"] == {"index": 3}
    # the RNG state saved with step 3 is restored: the same draws follow
    assert torch.equal(torch.rand(3), draw_after_save)
    assert (latest / "model.json").is_file() and (latest / "tokenizer.json").is_file()


def test_a_save_killed_midway_leaves_the_last_good_checkpoint(tmp_path):
    """A process killed with SIGKILL while writing checkpoint 2 leaves checkpoint 1 as the latest."""
    checkpoint.save(tmp_path, 1, Saveable("model"), Saveable("tokenizer"), {"data": {}})
    script = textwrap.dedent(f"""
        import os, pathlib, signal
        from rlvr import checkpoint

        class Dies:
            def save_pretrained(self, directory):
                (directory / "half-written.bin").write_bytes(b"x" * 1000)
                os.kill(os.getpid(), signal.SIGKILL)

        checkpoint.save(pathlib.Path({str(tmp_path)!r}), 2, Dies(), Dies(), {{}})
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert result.returncode == -9
    assert checkpoint.latest(tmp_path).name == "step-000001"
    assert not (tmp_path / "step-000002").exists()
    # saving step 2 again after the crash works and replaces the partial directory
    checkpoint.save(tmp_path, 2, Saveable("model"), Saveable("tokenizer"), {"data": {}})
    assert checkpoint.latest(tmp_path).name == "step-000002"
    assert not list(tmp_path.glob(".*partial"))


def test_latest_falls_back_when_the_pointer_is_stale(tmp_path):
    checkpoint.save(tmp_path, 1, Saveable("model"), Saveable("tokenizer"), {})
    (tmp_path / checkpoint.LATEST_FILE).write_text("step-000009")
    assert checkpoint.latest(tmp_path).name == "step-000001"
    assert checkpoint.latest(tmp_path / "nothing-here") is None


def test_metrics_log_and_resume_truncation(tmp_path):
    stream = open(os.devnull, "w")
    logger = MetricsLogger(tmp_path, total_steps=4, stream=stream)
    for step in (1, 2, 3):
        logger.log(step, {"reward/mean": step / 10})
    line = logger.progress_line(3, {"reward/mean": 0.3, "accuracy": 0.25})
    assert line.startswith("step 3/4  reward 0.300  acc 0.250  ETA ")
    # resuming from the checkpoint of step 2: the line of step 3 (whose update was lost) goes
    MetricsLogger(tmp_path, total_steps=4, resume_from_step=2, stream=stream)
    assert [row["step"] for row in read_metrics(tmp_path)] == [1, 2]


def test_config_problems_are_all_reported_together():
    cfg = config.load(TrainConfig, None, ["rollout.group_size=1", "optim.micro_batch_size=512",
                                          "algorithm.dual_clip=0.5", "model.cpu_threads=-2"])
    cfg.algorithm.estimator = "gpro"  # set in Python: the loader would have refused it already
    problems = preflight.config_problems(cfg)
    text = "\n".join(problems)
    assert ("algorithm.estimator: 'gpro' is not one of the valid choices 'dr_grpo', 'gae', 'grpo', 'reinforce_pp_baseline', "
            "'remax', 'rloo'") in text
    assert "rollout.group_size=1" in text and "at least 2" in text
    assert "micro_batch_size=512 is larger than optim.mini_batch_size=256" in text
    assert "dual_clip must be > 1" in text
    assert "model.cpu_threads must be 0 (torch's default) or a positive thread count, got -2" in text
    assert len(problems) == 5
    assert preflight.config_problems(TrainConfig()) == []


def test_environment_problems_name_the_model_and_the_task(tmp_path):
    cfg = config.load(TrainConfig, None, [f"model.path={tmp_path / 'no-such-model'}", "rollout.engine=hf"])
    cfg.data.task = "no-such-task"
    with pytest.raises(ConfigError) as error:
        preflight.check(cfg)
    message = str(error.value)
    assert "model.path: model path" in message and "does not exist" in message
    assert "no-such-task" in message


def test_cosine_is_monotone_after_warmup():
    cfg = config.load(TrainConfig, None, ["optim.lr=1.0", "optim.lr_schedule=cosine", "optim.steps=10",
                                          "optim.prompts_per_step=1", "rollout.group_size=2", "optim.mini_batch_size=2"])
    optimizer, scheduler = build_optimizer(torch.nn.Linear(1, 1), cfg)
    values = []
    for _ in range(10):
        values.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert values[0] == 1.0
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert values[5] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_load_policy_sets_the_cpu_thread_count_when_asked(tiny_model_dir):
    from rlvr.policy import load_policy

    before = torch.get_num_threads()
    try:
        load_policy(str(tiny_model_dir), cpu_threads=1)
        assert torch.get_num_threads() == 1
        torch.set_num_threads(before)
        load_policy(str(tiny_model_dir))
        assert torch.get_num_threads() == before
        with pytest.raises(ValueError, match="cpu_threads must be 0"):
            load_policy(str(tiny_model_dir), cpu_threads=-1)
    finally:
        torch.set_num_threads(before)
