"""ReMax: ``A = R - R(greedy)`` against hand-computed values, the greedy sample drawn by the engine in the same
round and scored by the same verifier (not trained on), dynamic sampling with the baseline as one more member
of the group, and 2 training steps on the tiny model."""

import dataclasses
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

import tasks
from rlvr import config, preflight
from rlvr.algorithms import compute_advantages, uses_greedy_baseline
from rlvr.rollout import get
from rlvr.sampling import Prompt, Rewarder, Rollouts, group_signal, sample_round
from rlvr.tracking import read_metrics
from rlvr.train_config import TrainConfig
from rlvr.trainer import shaped_baselines, train

sys.path.insert(0, str(Path(__file__).parent))
import train_plugins  # noqa: E402


def test_remax_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    baseline = torch.tensor([0.0] * 3 + [1.0] * 3 + [1.0] * 3)
    got = compute_advantages(rewards, 3, "remax", baseline=baseline)
    # group 0: r - 0; group 1: all wrong while greedy was right: -1 each (not zeroed, though the group is flat);
    # group 2: all right like greedy: 0
    assert torch.equal(got, torch.tensor([1.0, 0.0, 1.0, -1.0, -1.0, -1.0, 0.0, 0.0, 0.0]))
    one_per_prompt = compute_advantages(torch.tensor([0.5, 0.0]), 1, "remax", baseline=torch.tensor([0.25, 1.0]))
    assert torch.equal(one_per_prompt, torch.tensor([0.25, -1.0]))


def test_remax_needs_its_baseline():
    assert uses_greedy_baseline("remax") and not uses_greedy_baseline("grpo")
    with pytest.raises(ValueError, match="needs baseline="):
        compute_advantages(torch.tensor([1.0, 0.0]), 2, "remax")


def test_dynamic_sampling_counts_the_greedy_baseline():
    rollouts = Rollouts(2, rewards=[1.0, 1.0, 0.0, 0.0, 1.0, 0.0], baseline_rewards=[1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    # group 0 matches its greedy sample: no signal; group 1 is flat but differs from greedy; group 2 varies
    assert group_signal(rollouts, greedy_baseline=True) == [False, True, True]
    assert group_signal(rollouts, greedy_baseline=False) == [False, False, True]


def test_the_greedy_sample_is_drawn_in_the_round_and_scored_by_the_same_verifier(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = [dataclasses.replace(e, verifier="even-length") for e in tasks.load("arithmetic", limit=3, seed=0)]
    prompts = [Prompt(example, tasks.encode_prompt(example, tokenizer, "base-short")) for example in examples]
    cfg = config.load(TrainConfig, None, ["algorithm.estimator=remax", "rollout.group_size=2", "rollout.max_new_tokens=8"])
    with get("hf")(str(tiny_model_dir), max_model_len=256, seed=0) as engine, Rewarder({}) as rewarder:
        rollouts, _ = sample_round(engine, prompts, rewarder, cfg, seed=5)
        greedy = engine.generate([p.token_ids for p in prompts], n=1, max_new_tokens=8, temperature=0.0, seed=123)
    assert len(rollouts) == 6  # group_size samples per prompt: the greedy one is not among them
    expected = [float(len(group[0].text) % 2 == 0) for group in greedy]  # the even-length verifier, by hand
    assert rollouts.baseline_rewards == [reward for reward in expected for _ in range(2)]
    assert rollouts.baseline_lengths == [len(group[0].token_ids) for group in greedy for _ in range(2)]
    assert rollouts.baseline_truncated == [group[0].finish_reason == "length" for group in greedy for _ in range(2)]


def test_the_baseline_is_shaped_for_length_like_the_samples():
    cfg = config.load(TrainConfig, None, ["algorithm.estimator=remax", "rollout.max_new_tokens=12",
                                          "algorithm.length.overlong_buffer=4", "algorithm.length.kimi_coef=0.5"])
    scores = {"baselines": [1.0, 1.0, 0.0], "baseline_lengths": [11, 6, 12], "baseline_truncated": [False, False, True]}
    # DAPO overlong penalty from 12 - 4 = 8 tokens: -(11 - 8) / 4 = -0.75, none at 6, -1 at 12; Kimi's is 0 for a
    # group of one
    assert torch.allclose(shaped_baselines(scores, cfg), torch.tensor([0.25, 1.0, -1.0]))


@pytest.mark.slow
def test_remax_trains_two_steps(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    cfg = config.load(TrainConfig, None, [*train_plugins.overrides(tiny_model_dir, run, steps=2), "algorithm.estimator=remax",
                                          "rollout.group_size=1", "optim.prompts_per_step=4", "algorithm.dynamic_sampling=false"])
    assert not preflight.config_problems(cfg)  # one sample per prompt: the baseline is the greedy sample
    final = train(cfg)
    rows = read_metrics(run)
    assert [row["step"] for row in rows] == [1, 2]
    assert all(row["grad_norm"] > 0 for row in rows)
    before, after = load_file(tiny_model_dir / "model.safetensors"), load_file(final / "model.safetensors")
    assert any(not torch.equal(before[name], after[name]) for name in before)
