"""PPO with a value model: GAE, VAPO's length-adaptive lambda, whitening and the clipped value loss against
values computed by hand (the recursion written out below), then the ``gae`` estimator training the tiny
model end to end (value warm-up, VAPO's decoupled lambdas) and its value model surviving save and resume
exactly."""

import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlvr import config, preflight
from rlvr.algorithms import (
    compute_advantages,
    gae_advantages,
    last_token_rewards,
    length_adaptive_lambda,
    value_loss,
    whiten,
)
from rlvr.tracking import read_metrics
from rlvr.train_config import TrainConfig
from rlvr.trainer import train

sys.path.insert(0, str(Path(__file__).parent))
import train_plugins  # noqa: E402
from test_distributed import WEIGHT_ATOL, assert_same_weights, plugin_env, rlvr, train_arguments  # noqa: E402, F401

GAMMA, LAM = 0.9, 0.8  # gamma * lam = 0.72


def three_sequences() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(token rewards, values, mask): a full sequence, one with a padded last token, one with a tool token
    (masked) in the middle. The masked positions hold values that must not matter."""
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 1]])
    values = torch.tensor([[0.5, 0.2, -0.1], [0.3, 0.4, 9.9], [0.1, 7.0, 0.6]])
    rewards = last_token_rewards(torch.tensor([1.0, -1.0, 1.0]), mask)
    return rewards, values, mask


def test_the_reward_sits_on_the_last_model_token():
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 1], [0, 0, 0]])
    got = last_token_rewards(torch.tensor([1.0, -1.0, 0.5, 2.0]), mask)
    assert torch.equal(got, torch.tensor([[0, 0, 1.0], [0, -1.0, 0], [0, 0, 0.5], [0, 0, 0]]))


def test_gae_against_the_recursion_by_hand():
    advantages, returns = gae_advantages(*three_sequences(), gamma=GAMMA, lam=LAM)
    # sequence 0, rewards (0, 0, 1):
    #   t=2: delta = 1 + 0.9*0 - (-0.1) = 1.1                    A = 1.1
    #   t=1: delta = 0 + 0.9*(-0.1) - 0.2 = -0.29                 A = -0.29 + 0.72*1.1 = 0.502
    #   t=0: delta = 0 + 0.9*0.2 - 0.5 = -0.32                    A = -0.32 + 0.72*0.502 = 0.04144
    # sequence 1, rewards (0, -1), position 2 padding:
    #   t=1: delta = -1 - 0.4 = -1.4                              A = -1.4
    #   t=0: delta = 0.9*0.4 - 0.3 = 0.06                         A = 0.06 + 0.72*(-1.4) = -0.948
    # sequence 2, rewards (0, [tool], 1): the tool token is skipped, t=0's next model token is t=2:
    #   t=2: delta = 1 - 0.6 = 0.4                                A = 0.4
    #   t=0: delta = 0.9*0.6 - 0.1 = 0.44                         A = 0.44 + 0.72*0.4 = 0.728
    expected = torch.tensor([[0.04144, 0.502, 1.1], [-0.948, -1.4, 0.0], [0.728, 0.0, 0.4]])
    assert torch.allclose(advantages, expected, atol=1e-6)
    # returns = A + V on model tokens, 0 elsewhere
    expected_returns = torch.tensor([[0.54144, 0.702, 1.0], [-0.648, -1.0, 0.0], [0.828, 0.0, 1.0]])
    assert torch.allclose(returns, expected_returns, atol=1e-6)


def test_gae_with_gamma_and_lambda_one_is_reward_minus_value():
    rewards, values, mask = three_sequences()
    advantages, returns = gae_advantages(rewards, values, mask, gamma=1.0, lam=1.0)
    final = torch.tensor([1.0, -1.0, 1.0])[:, None]
    assert torch.allclose(advantages, torch.where(mask.bool(), final - values, 0.0), atol=1e-6)
    assert torch.allclose(returns, torch.where(mask.bool(), final.expand(-1, 3), 0.0), atol=1e-6)


def test_a_lambda_per_sequence():
    advantages, _ = gae_advantages(*three_sequences(), gamma=GAMMA, lam=torch.tensor([0.8, 0.0, 0.8]))
    # sequence 1 with lambda 0: the one-step TD errors (0.06, -1.4); the others as above
    assert torch.allclose(advantages[1], torch.tensor([0.06, -1.4, 0.0]), atol=1e-6)
    assert torch.allclose(advantages[0], torch.tensor([0.04144, 0.502, 1.1]), atol=1e-6)


def test_gae_refuses_a_lambda_outside_0_1():
    with pytest.raises(ValueError, match="lambda must be in"):
        gae_advantages(*three_sequences(), gamma=1.0, lam=1.5)


def test_vapo_length_adaptive_lambda():
    # 1 - 1 / (0.05 * L): L=100 -> 0.8, L=40 -> 0.5, L=20 -> 0, L=10 -> -1 clamped to 0
    got = length_adaptive_lambda(torch.tensor([100, 40, 20, 10]), alpha=0.05)
    assert torch.allclose(got, torch.tensor([0.8, 0.5, 0.0, 0.0]))
    with pytest.raises(ValueError, match="alpha must be positive"):
        length_adaptive_lambda(torch.tensor([10]), alpha=0.0)


def test_whitening_over_model_tokens():
    advantages = torch.tensor([[1.0, 2.0, 3.0], [4.0, 50.0, 60.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    # tokens 1, 2, 3, 4: mean 2.5, Bessel std sqrt((2.25 + 0.25 + 0.25 + 2.25) / 3) = sqrt(5/3)
    std = (5.0 / 3.0) ** 0.5
    expected = torch.tensor([[-1.5 / std, -0.5 / std, 0.5 / std], [1.5 / std, 0.0, 0.0]])
    assert torch.allclose(whiten(advantages, mask), expected, atol=1e-6)


def test_clipped_value_loss_and_its_gradient():
    values = torch.tensor([[0.5, 1.0]], requires_grad=True)
    old, returns, mask = torch.tensor([[0.4, 0.4]]), torch.tensor([[1.0, 2.0]]), torch.ones(1, 2)
    loss, metrics = value_loss(values, old, returns, mask, clip=0.2)
    # token 0: V - V_old = 0.1 within the clip: 0.5 * (0.5 - 1)^2 = 0.125
    # token 1: V_clip = 0.4 + 0.2 = 0.6; max((1 - 2)^2, (0.6 - 2)^2) = 1.96 -> 0.98; token-mean (0.125 + 0.98) / 2
    assert loss.item() == pytest.approx(0.5525)
    loss.backward()
    # d/dV: token 0 (V - R) / 2 = -0.25; token 1: the clipped term wins and is flat in V: 0
    assert torch.allclose(values.grad, torch.tensor([[-0.25, 0.0]]))
    assert metrics["value/clip_frac"] == pytest.approx(0.5)
    assert metrics["value/mean"] == pytest.approx(0.75) and metrics["value/error"] == pytest.approx(0.75)


def test_unclipped_value_loss():
    values = torch.tensor([[0.5, 1.0]], requires_grad=True)
    loss, _ = value_loss(values, torch.tensor([[0.4, 0.4]]), torch.tensor([[1.0, 2.0]]), torch.ones(1, 2), clip=None)
    assert loss.item() == pytest.approx((0.125 + 0.5) / 2)  # 0.5 * (0.25 + 1) / 2
    loss.backward()
    assert torch.allclose(values.grad, torch.tensor([[-0.25, -0.5]]))


def test_gae_is_not_a_group_estimator():
    with pytest.raises(ValueError, match="needs a value model"):
        compute_advantages(torch.tensor([1.0, 0.0]), 2, "gae")


def gae_overrides(model_dir, output_dir, steps: int, *extra: str) -> list[str]:
    return [*train_plugins.overrides(model_dir, output_dir, steps=steps), "algorithm.estimator=gae",
            "algorithm.gae.value_lr=1e-3", *extra]


def weights(directory: Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return load_file(directory / name)


@pytest.mark.slow
def test_gae_with_vapo_options_and_value_warmup_trains(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    cfg = config.load(TrainConfig, None, gae_overrides(
        tiny_model_dir, run, 2, "checkpoint.every=1", "algorithm.gae.value_warmup_steps=1",
        "algorithm.gae.length_adaptive_alpha=0.5", "algorithm.gae.critic_lam=1.0", "rollout.group_size=1",
        "optim.prompts_per_step=8"))
    assert not preflight.config_problems(cfg)  # one sample per prompt is fine: the baseline is the value
    train(cfg)
    rows = read_metrics(run)
    assert rows[0]["note"].startswith("value warm-up") and "loss" not in rows[0]
    assert "value/loss" in rows[0] and "value/loss" in rows[1] and "loss" in rows[1]
    start, warmed, trained = weights(tiny_model_dir), weights(run / "step-000001"), weights(run / "step-000002")
    assert all(torch.equal(start[name], warmed[name]) for name in start)  # the policy waited for the critic
    assert any(not torch.equal(start[name], trained[name]) for name in start)
    head_1 = weights(run / "step-000001" / "value", "value_model.safetensors")["head.weight"]
    head_2 = weights(run / "step-000002" / "value", "value_model.safetensors")["head.weight"]
    assert head_1.abs().sum() > 0 and not torch.equal(head_1, head_2)  # zero at the start, learning since


@pytest.mark.slow
def test_the_value_model_survives_save_and_resume_exactly(tiny_model_dir, tmp_path):
    """Two steps straight, against step 1's checkpoint resumed for step 2: the same value model (weights, and
    through the update the optimizer state and schedule), the same policy."""
    straight = tmp_path / "straight"
    train(config.load(TrainConfig, None, gae_overrides(tiny_model_dir, straight, 2, "checkpoint.every=1")))
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(straight / "step-000001", resumed / "step-000001")
    (resumed / "latest").write_text("step-000001")
    final = train(config.load(TrainConfig, None, gae_overrides(tiny_model_dir, resumed, 2, "checkpoint.every=1")), resume=True)
    assert final.name == "step-000002"
    assert weights(straight / "step-000001" / "value", "value_model.safetensors")["head.weight"].abs().sum() > 0
    expected = weights(straight / "step-000002" / "value", "value_model.safetensors")
    got = weights(final / "value", "value_model.safetensors")
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    expected, got = weights(straight / "step-000002"), weights(final)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert read_metrics(resumed)[-1]["value/loss"] == read_metrics(straight)[-1]["value/loss"]


def test_resuming_a_gae_run_from_a_checkpoint_without_a_value_model_says_what_to_do(tiny_model_dir, tmp_path):
    from rlvr.critic import Critic, ValueModel

    model = ValueModel.from_pretrained(str(tiny_model_dir), torch.float32)
    critic_dir = tmp_path / "step-000002" / "value"
    optimizer = torch.optim.AdamW(model.parameters())
    critic = Critic(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0),
                    config.load(TrainConfig, None, []), 0)
    with pytest.raises(FileNotFoundError, match="not saved by a run with algorithm.estimator=gae"):
        critic.load(critic_dir)



@pytest.mark.slow
def test_a_two_rank_gae_run_equals_the_one_process_run_and_resumes(tiny_model_dir, tmp_path, plugin_env):  # noqa: F811 (the fixture)
    """The value model sharded with FSDP2 over 2 ranks (gloo): the same value model and policy as one process; its
    step-1 checkpoint resumed on 2 ranks (the value model and its optimizer resharded) ends where the run did."""
    def arguments(output_dir: Path) -> list[str]:
        return train_arguments(tiny_model_dir, output_dir, 2, "algorithm.estimator=gae", "algorithm.gae.value_lr=1e-3",
                               "checkpoint.every=1")[1:]

    rlvr(["train", *arguments(tmp_path / "single")], plugin_env)
    rlvr(["train", "--nproc", "2", *arguments(tmp_path / "two")], plugin_env)
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(tmp_path / "two" / "step-000001", resumed / "step-000001")
    (resumed / "latest").write_text("step-000001")
    rlvr(["train", "--nproc", "2", *arguments(resumed), "--resume"], plugin_env)
    single = weights(tmp_path / "single" / "step-000002" / "value", "value_model.safetensors")
    assert single["head.weight"].abs().sum() > 0
    for run in ("two", "resumed"):
        assert_same_weights(tmp_path / "single" / "step-000002", tmp_path / run / "step-000002")
        got = weights(tmp_path / run / "step-000002" / "value", "value_model.safetensors")
        assert set(single) == set(got)
        for name in single:
            torch.testing.assert_close(got[name], single[name], rtol=0, atol=WEIGHT_ATOL, msg=lambda m, name=name: f"{name}: {m}")
    rows_single, rows_two = read_metrics(tmp_path / "single"), read_metrics(tmp_path / "two")
    assert [r["value/loss"] for r in rows_two] == pytest.approx([r["value/loss"] for r in rows_single], rel=1e-4)


def test_per_token_advantages_reach_the_policy_loss(tiny_model_dir):
    """On-policy (ratio 1) the PPO loss per token is -A_t, so the token-mean loss of a micro-batch with GAE's
    per-token advantages is minus their mean over its tokens: (-(0.5 - 1.0 + 2.0) - (3.0 - 1.0)) / 5 = -0.7."""
    from rlvr.policy import load_policy
    from rlvr.update import TrainBatch, _micro_step

    model, tokenizer = load_policy(str(tiny_model_dir))
    batch = TrainBatch(prompt_ids=[[5, 6], [7]], completion_ids=[[8, 9, 10], [11, 12]], advantages=torch.zeros(2),
                       sample_mask=torch.ones(2), sampler_logprobs=[[-1.0] * 3, [-1.0] * 2],
                       token_advantages=[torch.tensor([0.5, -1.0, 2.0]), torch.tensor([3.0, -1.0])])
    cfg = config.load(TrainConfig, None, ["algorithm.estimator=gae"])
    metrics = _micro_step(model, batch, [0, 1], cfg, tokenizer.pad_token_id, torch.device("cpu"), denominator=5.0)
    assert metrics["loss"] == pytest.approx(-0.7, abs=1e-6)


def test_the_value_model_skips_a_tools_output_inside_a_response(tiny_model_dir):
    """A response with a tool's output in the middle (loss mask 1 0 0 1): with gamma = lam = 1 and no whitening,
    the advantage of each model token is R - V_t (the observation passes the last token's value through), the
    observation tokens get neither advantage nor return, and the value loss does not read their targets."""
    from rlvr.critic import Critic, ValueModel
    from rlvr.update import TrainBatch

    model = ValueModel.from_pretrained(str(tiny_model_dir), torch.float32)
    with torch.no_grad():  # values that differ per token (a fresh head is all zeros)
        model.head.weight.normal_(generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    cfg = config.load(TrainConfig, None, ["algorithm.estimator=gae", "algorithm.gae.lam=1.0", "algorithm.gae.whiten=false",
                                          "optim.mini_batch_size=2", "optim.micro_batch_size=2"])
    critic = Critic(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0), cfg, 0)

    batch = TrainBatch(prompt_ids=[[5, 6], [7]], completion_ids=[[8, 9, 10, 11], [12, 13]], advantages=torch.zeros(2),
                       sample_mask=torch.ones(2), sampler_logprobs=[[-1.0] * 4, [-1.0] * 2], loss_masks=[[1, 0, 0, 1], [1, 1]])
    critic.advantages(batch, torch.tensor([1.0, 0.0]))
    values = batch.old_values[0]
    assert values[0] != values[3]
    expected = torch.tensor([1.0 - values[0], 0.0, 0.0, 1.0 - values[3]])
    torch.testing.assert_close(batch.token_advantages[0], expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(batch.returns[0], torch.tensor([1.0, 0.0, 0.0, 1.0]), rtol=0, atol=1e-6)
    torch.testing.assert_close(batch.token_advantages[1], -batch.old_values[1], rtol=0, atol=1e-6)

    initial = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    losses = []
    for garbage in (0.0, 99.0):  # targets on the observation tokens: never part of the value loss
        model.load_state_dict(initial)
        optimizer.state.clear()
        batch.returns[0][1:3] = garbage
        losses.append(critic.update(batch, torch.Generator().manual_seed(0))["value/loss"])
    assert losses[0] == losses[1]
