"""The trainer's shared-prompt forward (each distinct prompt of a micro-batch run once, its KV cache reused by
every completion of the group) gives the log-probs and gradients of one forward per full sequence."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlvr.policy import completion_logprobs
from rlvr.update import micro_batch_stats, micro_batches, pack, pack_shared


@pytest.fixture()
def model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).train()


def test_pack_shared_layout():
    shared = pack_shared([[1, 2, 3], [4], [1, 2, 3]], [[5, 6], [7, 8, 9], [10]], pad_id=0, device=torch.device("cpu"))
    assert shared.prompt_ids.tolist() == [[1, 2, 3], [0, 0, 4]]  # distinct prompts, left-padded
    assert shared.prompt_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert shared.prompt_index.tolist() == [0, 1, 0]
    assert shared.completion_ids.tolist() == [[5, 6, 0], [7, 8, 9], [10, 0, 0]]
    assert shared.completion_mask.tolist() == [[1, 1, 0], [1, 1, 1], [1, 0, 0]]


def test_micro_batches_keep_groups_together_when_prompts_dominate():
    long_a, long_b = [1] * 50, [2] * 50
    prompts = [long_a, long_b, long_a, long_b]
    completions = [[7] * 3, [7] * 3, [7] * 4, [7] * 4]
    # By length: {0, 1} and {2, 3}, each running two 50-token prompts. By prompt: {0, 2} and {1, 3}, one each.
    assert micro_batches(prompts, completions, 2, share_prompts=True) == [[0, 2], [1, 3]]
    assert micro_batches(prompts, completions, 2, share_prompts=False) == [[0, 1], [2, 3]]


def gradients(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def test_shared_prompt_forward_matches_one_forward_per_sequence(model):
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randint(1, 200, (n,), generator=generator).tolist() for n in (9, 4))
    prompts = [a, a, a, b, b]
    completions = [torch.randint(1, 200, (n,), generator=generator).tolist() for n in (5, 1, 7, 3, 6)]
    weights = torch.randn(5, 7, generator=generator)

    stats, mask = micro_batch_stats(model, prompts, completions, pad_id=0, temperature=0.7)
    (stats.logprobs * mask * weights).sum().backward()
    shared_grads = gradients(model)
    model.zero_grad()

    packed = pack(prompts, completions, pad_id=0, device=torch.device("cpu"))
    full = completion_logprobs(model, packed.input_ids, packed.attention_mask, packed.prompt_lengths,
                               packed.completion_ids, packed.completion_mask, temperature=0.7)
    (full.logprobs * packed.completion_mask * weights).sum().backward()

    assert mask.tolist() == packed.completion_mask.tolist()
    torch.testing.assert_close(stats.logprobs, full.logprobs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stats.entropy, full.entropy, atol=1e-5, rtol=1e-5)
    for name, grad in gradients(model).items():
        torch.testing.assert_close(shared_grads[name], grad, atol=1e-5, rtol=1e-4)
    # And against the definition: log-softmax of one plain forward of prompt + completion.
    with torch.no_grad():
        logits = model(torch.tensor([a + completions[2]])).logits[0].float() / 0.7
    expected = logits.log_softmax(-1)[len(a) - 1 : -1].gather(-1, torch.tensor(completions[2])[:, None]).squeeze(-1)
    torch.testing.assert_close(stats.logprobs[2].detach(), expected, atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_falls_back_to_full_sequences(model):
    model.gradient_checkpointing_enable()
    stats, mask = micro_batch_stats(model, [[1, 2, 3]] * 2, [[4, 5], [6]], pad_id=0, temperature=1.0)
    stats.logprobs.sum().backward()
    assert mask.tolist() == [[1, 1], [1, 0]]
    assert all(p.grad is not None for p in model.parameters())
