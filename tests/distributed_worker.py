"""What tests/test_distributed.py runs on one process and under ``torchrun --nproc_per_node 2``: the same
policy updates from the same fixed rollouts, and the same sampling rounds, so the two can be compared.

``python tests/distributed_worker.py MODEL_DIR OUT_DIR`` (under torchrun: every rank) writes, from rank 0,
``OUT_DIR/updates.pt`` (final parameters and metrics per update setting) and ``OUT_DIR/rollouts.pt`` (the kept
samples of two sampling steps, by whole-batch position)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import train_plugins  # noqa: E402  (registers the test task and verifier)

from rlvr import config, distributed  # noqa: E402
from rlvr.distributed import World  # noqa: E402
from rlvr.policy import load_policy  # noqa: E402
from rlvr.train_config import TrainConfig  # noqa: E402
from rlvr.trainer import build_prompts, max_model_len  # noqa: E402
from rlvr.update import TrainBatch, per_sample_logprobs, update_policy  # noqa: E402

GROUPS, GROUP_SIZE = 3, 4  # 3 groups on 2 ranks: one rank holds twice the samples of the other
# (name, overrides): one micro-batch per mini-batch and one optimizer step; and for every loss aggregation,
# micro-batching, several mini-batches, two PPO epochs (old log-probs from a forward of their own), a KL
# penalty against a (sharded) reference and an entropy bonus
WHOLE = ["optim.mini_batch_size=12", "optim.micro_batch_size=12", "optim.ppo_epochs=1"]
MICRO = ["optim.mini_batch_size=5", "optim.micro_batch_size=2", "optim.ppo_epochs=2", "algorithm.kl_coef=0.1",
         "algorithm.entropy_coef=0.01"]
UPDATE_SETTINGS = [
    (f"{agg}/{shape}", [f"algorithm.loss_agg={agg}", "rollout.max_new_tokens=8", *extra])  # seq-mean-token-sum-norm's length
    for agg, shape, extra in (
        ("token-mean", "whole", WHOLE),
        ("token-mean", "micro", MICRO),
        ("seq-mean-token-mean", "micro", MICRO),
        ("seq-mean-token-sum-norm", "micro", MICRO),
    )
]


def fixed_batch(world: World) -> TrainBatch:
    """The same 12 samples on every layout (lengths 1-7, advantages of both signs, one sample out of the loss),
    this rank's whole groups of them."""
    rng = torch.Generator().manual_seed(7)
    samples = GROUPS * GROUP_SIZE
    prompts = [[3 + group, 10 + group, 20 + group][: 1 + group % 3] for group in range(GROUPS) for _ in range(GROUP_SIZE)]
    completions = [torch.randint(5, 300, (1 + (i * 5) % 7,), generator=rng).tolist() for i in range(samples)]
    advantages = torch.randn(samples, generator=rng)
    sample_mask = torch.ones(samples)
    sample_mask[5] = 0.0
    mine = [g * GROUP_SIZE + j for g in distributed.shard(GROUPS, world) for j in range(GROUP_SIZE)]
    return TrainBatch(
        prompt_ids=[prompts[i] for i in mine], completion_ids=[completions[i] for i in mine], advantages=advantages[mine],
        sample_mask=sample_mask[mine], sampler_logprobs=[[-1.0] * len(completions[i]) for i in mine],
        positions=mine, global_size=samples,
    )


def run_updates(model_dir: str, world: World) -> dict[str, dict]:
    results = {}
    for name, overrides in UPDATE_SETTINGS:
        cfg = config.load(TrainConfig, None, [f"model.path={model_dir}", "optim.max_grad_norm=1e9", *overrides])
        torch.manual_seed(0)
        policy = distributed.shard_policy(load_policy(model_dir)[0], world)
        reference = distributed.shard_policy(load_policy(model_dir)[0].eval(), world)
        # plain SGD without clipping, at a rate that keeps the steps small: the update is then the gradient, so a
        # gradient off by a factor (a wrong denominator, averaged instead of summed over ranks) shows (Adam and
        # clipping would normalise it away)
        optimizer = torch.optim.SGD(policy.parameters(), lr=1e-2)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        batch = fixed_batch(world)
        everyone = list(range(len(batch)))
        batch.old_logprobs = per_sample_logprobs(policy, batch, everyone, cfg, 0, world)
        batch.ref_logprobs = per_sample_logprobs(reference, batch, everyone, cfg, 0, world)
        metrics = update_policy(policy, optimizer, scheduler, batch, cfg, 0, torch.Generator().manual_seed(1), world)
        results[name] = {"metrics": metrics, "weights": dict(distributed.full_parameters(policy))}
    return results


def run_sampling(model_dir: str, world: World) -> list[dict]:
    """Two steps of sampling rounds (dynamic sampling on) from the hf engine, kept samples by position."""
    import rlvr.rollout
    from rlvr.sampling import PromptStream, Rewarder, collect_rollouts

    cfg = config.load(TrainConfig, None, train_plugins.overrides(model_dir, "unused") + ["algorithm.max_sampling_rounds=2"])
    policy, tokenizer = load_policy(model_dir)
    stream = PromptStream(build_prompts(cfg, tokenizer), cfg.data.seed)
    steps = []
    with rlvr.rollout.get("hf")(model_dir, max_model_len=max_model_len(cfg), seed=0) as engine, Rewarder({}, 1) as rewarder:
        for step in (1, 2):
            kept, metrics = collect_rollouts(engine, stream, rewarder, cfg, step, world)
            rows = distributed.gather_by_position(world, kept.positions, {
                "completion_ids": kept.completion_ids, "sampler_logprobs": kept.sampler_logprobs,
                "prompt_ids": kept.prompt_ids, "rewards": kept.rewards,
            })
            steps.append({"rows": rows, "metrics": metrics, "total_groups": kept.total_groups})
    return steps


def main(model_dir: str, out_dir: str) -> None:
    world = distributed.init(timeout_seconds=120)
    torch.set_num_threads(1)
    updates, rollouts = run_updates(model_dir, world), run_sampling(model_dir, world)
    if world.is_main:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        torch.save(updates, Path(out_dir) / "updates.pt")
        torch.save(rollouts, Path(out_dir) / "rollouts.pt")
    distributed.shutdown(world)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
