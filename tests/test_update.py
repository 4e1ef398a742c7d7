"""The trainer's forward pass and update against direct computations."""

import pytest
import torch

from rlvr import config
from rlvr.algorithms import policy_loss
from rlvr.policy import completion_logprobs
from rlvr.train_config import TrainConfig
from rlvr.update import TrainBatch, length_buckets, loss_denominator, pack, update_policy


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)


def reference_logprobs(model, prompt, completion):
    """Log-probs of ``completion`` after ``prompt`` from one plain forward over full logits."""
    ids = torch.tensor([prompt + completion])
    logits = model(ids).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return torch.stack([logprobs[len(prompt) + j - 1, token] for j, token in enumerate(completion)])


def test_pack_layout():
    packed = pack([[1, 2, 3], [4]], [[5, 6], [7, 8, 9]], pad_id=0, device=torch.device("cpu"))
    assert packed.input_ids.tolist() == [[1, 2, 3, 5, 6], [4, 7, 8, 9, 0]]
    assert packed.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert packed.prompt_lengths.tolist() == [3, 1]
    assert packed.completion_ids.tolist() == [[5, 6, 0], [7, 8, 9]]
    assert packed.completion_mask.tolist() == [[1, 1, 0], [1, 1, 1]]


def test_completion_logprobs_match_a_full_forward(model):
    prompts, completions = [[5, 17, 33, 40], [8, 9]], [[60, 61, 62], [70, 71, 72, 73, 74]]
    packed = pack(prompts, completions, pad_id=0, device=torch.device("cpu"))
    with torch.no_grad():
        stats = completion_logprobs(model, packed.input_ids, packed.attention_mask, packed.prompt_lengths,
                                    packed.completion_ids, packed.completion_mask)
        for row, (prompt, completion) in enumerate(zip(prompts, completions)):
            expected = reference_logprobs(model, prompt, completion)
            torch.testing.assert_close(stats.logprobs[row, : len(completion)], expected, atol=1e-5, rtol=1e-5)
    assert stats.logprobs[0, 3:].abs().sum() == 0  # padding stays 0
    assert (stats.entropy[packed.completion_mask.bool()] > 0).all()


def test_completion_logprobs_temperature_scales_logits(model):
    packed = pack([[5, 6]], [[7, 8]], pad_id=0, device=torch.device("cpu"))
    with torch.no_grad():
        stats = completion_logprobs(model, packed.input_ids, packed.attention_mask, packed.prompt_lengths,
                                    packed.completion_ids, packed.completion_mask, temperature=0.5)
        logits = model(packed.input_ids).logits[0].float() / 0.5
    expected = torch.log_softmax(logits, -1)[[1, 2], [7, 8]]
    torch.testing.assert_close(stats.logprobs[0], expected, atol=1e-5, rtol=1e-5)


def test_length_buckets_group_similar_lengths():
    assert length_buckets([5, 1, 9, 2, 7], 2) == [[1, 3], [0, 4], [2]]


def test_loss_denominator():
    assert loss_denominator("token-mean", [3, 0, 5]) == 8.0
    assert loss_denominator("seq-mean-token-mean", [3, 0, 5]) == 2.0  # the empty (filtered) sample does not count


@pytest.mark.parametrize(("agg", "loss"), [("token-mean", "ppo"), ("seq-mean-token-mean", "ppo"), ("seq-mean-token-sum-norm", "ppo"),
                                         ("token-mean", "gspo"), ("seq-mean-token-sum-norm", "cispo")])
def test_micro_batches_accumulate_to_the_mini_batch_gradient(tiny_model_dir, agg, loss):
    """One optimizer step over 4 samples in micro-batches of 1 equals one step over all 4 at once (gspo and cispo
    fix their own aggregation over ``loss_agg``: the denominators must follow it)."""
    from transformers import AutoModelForCausalLM

    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]]
    completions = [[20, 21], [22, 23, 24, 25, 26], [27], [28, 29, 30]]
    advantages = torch.tensor([1.0, -0.5, 0.25, -1.0])
    sample_mask = torch.tensor([1.0, 1.0, 0.0, 1.0])  # sample 2 is filtered out of the loss

    def gradient(micro_batch_size):
        cfg = config.load(TrainConfig, None, [f"algorithm.loss_agg={agg}", f"algorithm.policy_loss={loss}", "optim.mini_batch_size=4",
                                              f"optim.micro_batch_size={micro_batch_size}", "rollout.max_new_tokens=6",
                                              "optim.max_grad_norm=1e9"])
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: keep the weights, read the gradient
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        batch = TrainBatch(prompts, completions, advantages, sample_mask, sampler_logprobs=[[0.0] * len(c) for c in completions])
        update_policy(model, optimizer, scheduler, batch, cfg, pad_id=0, generator=torch.Generator().manual_seed(0))
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    whole, accumulated = gradient(4), gradient(1)
    assert whole.abs().sum() > 0
    torch.testing.assert_close(accumulated, whole, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("loss_name", ["ppo", "gspo"])
def test_update_gradient_matches_the_loss_written_out(tiny_model_dir, loss_name):
    """The trainer's gradient equals that of the policy loss on directly computed log-probs (gspo: per sequence,
    although loss_agg says token-mean)."""
    from transformers import AutoModelForCausalLM

    prompts, completions = [[5, 6, 7], [8, 9]], [[20, 21], [22, 23, 24]]
    advantages = torch.tensor([1.0, -1.0])
    cfg = config.load(TrainConfig, None, ["optim.mini_batch_size=2", "optim.micro_batch_size=2", "optim.max_grad_norm=1e9",
                                          f"algorithm.policy_loss={loss_name}"])
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    batch = TrainBatch(prompts, completions, advantages, torch.ones(2), sampler_logprobs=[[0.0] * 2, [0.0] * 3])
    update_policy(model, optimizer, scheduler, batch, cfg, pad_id=0, generator=torch.Generator().manual_seed(0))
    trainer_grad = [p.grad.clone() for p in model.parameters()]

    model.zero_grad()
    rows = [reference_logprobs(model, p, c) for p, c in zip(prompts, completions)]
    logprobs = torch.stack([torch.cat([r, torch.zeros(3 - len(r))]) for r in rows])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    if loss_name == "ppo":
        loss, _ = policy_loss(logprobs, logprobs.detach(), advantages, mask, clip_low=0.2, clip_high=0.28, agg="token-mean")
    else:  # on-policy, sequence ratio 1: per sequence the mean of -A * d logprob, then the mean over the 2 sequences
        loss = -(advantages[0] * logprobs[0, :2].sum() / 2 + advantages[1] * logprobs[1].sum() / 3) / 2
    loss.backward()
    for got, want in zip(trainer_grad, [p.grad for p in model.parameters()]):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-4)
