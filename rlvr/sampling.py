"""From prompts to scored groups: the prompt stream, rewards, and DAPO dynamic sampling."""

from __future__ import annotations

import random
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

import verifiers
from rlvr import distributed
from rlvr.algorithms import dynamic_sampling_mask, is_token_level, uses_greedy_baseline
from rlvr.distributed import SINGLE, World
from rlvr.rollout.base import Completion, RolloutEngine, ToolUse
from rlvr.rollout.tools import tool_metrics
from rlvr.train_config import TrainConfig
from verifiers.ttrl import VoteStats, check_votable, vote_verdicts


@dataclass
class Prompt:
    """A training prompt: the task example and its rendered, tokenized prompt."""

    example: Any  # tasks.Example
    token_ids: list[int]


class PromptStream:
    """An endless stream of prompts, reshuffled (seeded) every epoch. Its position is part of a
    checkpoint, so a resumed run sees exactly the prompts the interrupted one would have."""

    def __init__(self, prompts: list[Prompt], seed: int):
        if not prompts:
            raise ValueError("no training prompts: the task gave no examples short enough for data.max_prompt_tokens")
        self.prompts = prompts
        self.seed = seed
        self.epoch = 0
        self.index = 0
        self._order = self._shuffled(0)

    def take(self, count: int) -> list[Prompt]:
        taken = []
        for _ in range(count):
            if self.index == len(self._order):
                self.epoch, self.index = self.epoch + 1, 0
                self._order = self._shuffled(self.epoch)
            taken.append(self.prompts[self._order[self.index]])
            self.index += 1
        return taken

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.index = state["epoch"], state["index"]
        self._order = self._shuffled(self.epoch)

    def _shuffled(self, epoch: int) -> list[int]:
        order = list(range(len(self.prompts)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order


class Rewarder:
    """Scores completions with each example's own verifier (math, code, ...), built once.

    :meth:`submit` verifies in a background thread, so verification overlaps with whatever the caller does
    next (generating the other groups, see :func:`generate_and_score`). Close it (or use it as a context
    manager) to stop that thread.

    With ``ttrl_trained`` (TTRL, label-free), each run of samples of one example is a vote: its majority
    answer is the pseudo-label, and only its first ``ttrl_trained`` samples get verdicts, rewarded for agreeing
    with the label (:func:`verifiers.ttrl.vote_verdicts`)."""

    def __init__(self, options: dict[str, Any], workers: int | None = None,
                 own_options: dict[str, dict[str, Any]] | None = None, ttrl_trained: int | None = None):
        self.options = options  # shared: each verifier takes those its constructor accepts
        self.ttrl_trained = ttrl_trained
        self.own_options = own_options or {}  # per verifier name: each must be one that verifier accepts
        for name, own in self.own_options.items():
            verifiers.check_options(name, own)
        self.workers = workers
        self._verifiers: dict[str, verifiers.Verifier] = {}
        self._background: ThreadPoolExecutor | None = None
        self.busy_seconds = 0.0  # spent in background verification (one thread: no lock needed)

    def verifier(self, name: str) -> verifiers.Verifier:
        if name not in self._verifiers:
            self._verifiers[name] = verifiers.get_accepting(name, self.own_options.get(name), **self.options)
        return self._verifiers[name]

    def score(self, completions: list[str], examples: list[Any]) -> list[verifiers.Verdict]:
        """Verdicts in input order; each verifier checks its share of the batch in parallel (TTRL: see the class)."""
        if self.ttrl_trained is not None:
            return self._score_by_vote(completions, examples)
        verdicts: list[verifiers.Verdict | None] = [None] * len(completions)
        by_verifier: dict[str, list[int]] = {}
        for index, example in enumerate(examples):
            by_verifier.setdefault(example.verifier, []).append(index)
        for name, indices in by_verifier.items():
            results = self.verifier(name).verify_batch(
                [completions[i] for i in indices], [examples[i].reference for i in indices], workers=self.workers
            )
            for index, verdict in zip(indices, results, strict=True):
                verdicts[index] = verdict
        return verdicts  # type: ignore[return-value]

    def check_votable(self, names: set[str]) -> None:
        """TTRL: fail before any sampling when one of the verifiers ``names`` cannot vote (it extracts no answer)."""
        for name in sorted(names):
            check_votable(self.verifier(name))

    def _score_by_vote(self, completions: list[str], examples: list[Any]) -> list[verifiers.Verdict]:
        verdicts: list[verifiers.Verdict] = []
        start = 0
        while start < len(completions):
            example, stop = examples[start], start + 1
            while stop < len(completions) and examples[stop] is example:
                stop += 1
            verdicts.extend(vote_verdicts(self.verifier(example.verifier), completions[start:stop], example.reference,
                                          self.ttrl_trained))
            start = stop
        return verdicts

    def submit(self, completions: list[str], examples: list[Any]) -> Future[list[verifiers.Verdict]]:
        """:meth:`score` in the background, one submitted batch after another (each batch is itself
        verified ``workers`` at a time)."""
        if self._background is None:
            self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rlvr-rewarder")
        return self._background.submit(self._timed_score, completions, examples)

    def _timed_score(self, completions: list[str], examples: list[Any]) -> list[verifiers.Verdict]:
        started = time.monotonic()
        try:
            return self.score(completions, examples)
        finally:
            self.busy_seconds += time.monotonic() - started

    def close(self) -> None:
        if self._background is not None:
            self._background.shutdown(wait=True, cancel_futures=True)
            self._background = None

    def __enter__(self) -> Rewarder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def generate_and_score(engine: RolloutEngine, prompt_token_ids: list[list[int]], examples: list[Any],
                       rewarder: Rewarder, **sampling: Any) -> tuple[list[list[Completion]], list[list[verifiers.Verdict]], dict[str, float]]:
    """Sample a group per prompt (``engine.generate(..., **sampling)``) and verify it, each group going to
    the verifiers as soon as the engine has finished it, while the rest are still being generated.

    Returns the groups, their verdicts, and timings: ``time/generate``; ``time/verify``, the seconds the
    verifiers were busy; ``time/verify_wait``, the part of it left after generation ended (what it cost)."""
    pending: dict[int, Future[list[verifiers.Verdict]]] = {}

    def verify_group(index: int, completions: list[Completion]) -> None:
        pending[index] = rewarder.submit([c.text for c in completions], [examples[index]] * len(completions))

    busy_before = rewarder.busy_seconds
    started = time.monotonic()
    groups = engine.generate(prompt_token_ids, on_group=verify_group, **sampling)
    generated = time.monotonic()
    missing = [index for index in range(len(groups)) if index not in pending]
    if missing:
        raise RuntimeError(f"the {type(engine).__name__} engine never passed group(s) {missing} to on_group")
    verdicts = [pending[index].result() for index in range(len(groups))]
    timings = {"time/generate": generated - started, "time/verify": rewarder.busy_seconds - busy_before,
               "time/verify_wait": time.monotonic() - generated}
    return groups, verdicts, timings


@dataclass
class Rollouts:
    """Scored samples of one step, groups contiguous (``group_size`` samples per prompt).

    Data-parallel, each rank holds its own groups of the step's batch: ``positions`` (filled by
    :func:`collect_rollouts`) are its samples' places in the whole batch of ``total_groups`` groups."""

    group_size: int
    total_groups: int = 0
    positions: list[int] = field(default_factory=list)
    prompt_ids: list[list[int]] = field(default_factory=list)
    completion_ids: list[list[int]] = field(default_factory=list)
    sampler_logprobs: list[list[float]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    verifier_names: list[str] = field(default_factory=list)
    loss_masks: list[list[int]] = field(default_factory=list)  # per token: 1 the model's, 0 a tool's output
    tool_uses: list[ToolUse | None] = field(default_factory=list)
    baseline_rewards: list[float] = field(default_factory=list)  # ReMax: the reward of its prompt's greedy sample,
    baseline_lengths: list[int] = field(default_factory=list)  # its model tokens
    baseline_truncated: list[bool] = field(default_factory=list)  # and whether it was cut at max_new_tokens
    votes: list[VoteStats | None] = field(default_factory=list)  # TTRL: its prompt's vote

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def lengths(self) -> torch.Tensor:
        return torch.tensor([len(ids) for ids in self.completion_ids], dtype=torch.float32)

    def extend_groups(self, other: Rollouts, groups: list[int]) -> None:
        """Append the chosen groups of ``other``."""
        size = self.group_size
        for name, values in vars(other).items():
            if isinstance(values, list):
                getattr(self, name).extend(v for g in groups for v in values[g * size : (g + 1) * size])


def needs_greedy_baseline(config: TrainConfig) -> bool:
    """Whether the advantage estimator takes the reward of a greedy sample per prompt (ReMax)."""
    return uses_greedy_baseline(config.algorithm.estimator)


def sample_round(engine, prompts: list[Prompt], rewarder: Rewarder, config: TrainConfig, seed: int) -> tuple[Rollouts, dict[str, float]]:
    """Generate ``group_size`` completions per prompt and score them (verification overlapping generation).

    TTRL (``verifier.ttrl_votes``): ``ttrl_votes`` completions per prompt vote, the first ``group_size`` are
    kept. An estimator with a greedy baseline (ReMax): one more completion per prompt at temperature 0, scored
    by the same verifier, whose reward is kept as the group's baseline (it is not trained on)."""
    size = config.rollout.group_size
    ids, examples = [p.token_ids for p in prompts], [p.example for p in prompts]
    limits = {"max_new_tokens": config.rollout.max_new_tokens, "seed": seed}
    groups, verdicts, timings = generate_and_score(
        engine, ids, examples, rewarder, n=max(size, config.verifier.ttrl_votes),
        temperature=config.rollout.temperature, top_p=config.rollout.top_p, **limits,
    )
    baselines = [(0.0, 0, False)] * len(prompts)  # (reward, model tokens, truncated) of each prompt's greedy sample
    if needs_greedy_baseline(config):
        greedy, greedy_verdicts, greedy_timings = generate_and_score(engine, ids, examples, rewarder, n=1, temperature=0.0,
                                                                     top_p=1.0, **limits)
        baselines = [(verdict[0].reward, sum(sample[0].loss_mask or [1] * len(sample[0].token_ids)),
                      sample[0].finish_reason == "length") for sample, verdict in zip(greedy, greedy_verdicts, strict=True)]
        timings = {name: timings[name] + greedy_timings[name] for name in timings}
    rollouts = Rollouts(size)
    for prompt, completions, group_verdicts, baseline in zip(prompts, groups, verdicts, baselines, strict=True):
        for completion, verdict in zip(completions[:size], group_verdicts, strict=True):
            rollouts.prompt_ids.append(prompt.token_ids)
            rollouts.completion_ids.append(list(completion.token_ids))
            rollouts.sampler_logprobs.append(list(completion.logprobs))
            rollouts.texts.append(completion.text)
            rollouts.truncated.append(completion.finish_reason == "length")
            rollouts.verifier_names.append(prompt.example.verifier)
            rollouts.rewards.append(verdict.reward)
            rollouts.correct.append(verdict.correct)
            rollouts.reasons.append(verdict.reason)
            rollouts.loss_masks.append(completion.loss_mask or [1] * len(completion.token_ids))
            rollouts.tool_uses.append(completion.tool_use)
            rollouts.baseline_rewards.append(baseline[0])
            rollouts.baseline_lengths.append(baseline[1])
            rollouts.baseline_truncated.append(baseline[2])
            rollouts.votes.append(verdict.details.get("vote"))
    return rollouts, timings


def collect_rollouts(engine, stream: PromptStream, rewarder: Rewarder, config: TrainConfig, step: int,
                     world: World = SINGLE) -> tuple[Rollouts, dict[str, float]]:
    """Sample until ``prompts_per_step`` groups carry signal (DAPO dynamic sampling), or the
    extra-round budget is spent. With dynamic sampling off, every group is kept.

    Data-parallel, every rank takes the same prompts from its copy of the stream and samples its contiguous
    share of them, seeded by their places in the round (so the samples are those of one process); the
    ranks' signal masks are gathered, so every rank keeps the same groups of the whole round and takes the
    same decision about another round."""
    wanted, size = config.optim.prompts_per_step, config.rollout.group_size
    kept = Rollouts(size)
    everything = Rollouts(size)  # for metrics: all samples this rank drew this step
    timings: Counter[str] = Counter()
    rounds = 0
    while kept.total_groups < wanted and rounds <= config.algorithm.max_sampling_rounds:
        prompts = stream.take(wanted)
        mine = distributed.shard(len(prompts), world)
        seed = config.optim.seed * 100_003 + step * 101 + rounds + mine.start * size  # the engines seed prompt i with seed + i * n
        rollouts, round_timings = sample_round(engine, prompts[mine.start : mine.stop], rewarder, config, seed=seed)
        timings.update(round_timings)
        everything.extend_groups(rollouts, list(range(len(mine))))
        if config.algorithm.dynamic_sampling and not is_token_level(config.algorithm.estimator):  # GAE: see group_signal
            signal = group_signal(rollouts, needs_greedy_baseline(config))
        else:
            signal = [True] * len(mine)
        whole_round = [flag for rank_signal in distributed.all_gather(world, signal) for flag in rank_signal]
        chosen = [index for index, flag in enumerate(whole_round) if flag][: wanted - kept.total_groups]
        for place, index in enumerate(chosen, start=kept.total_groups):
            if index in mine:
                kept.extend_groups(rollouts, [index - mine.start])
                kept.positions.extend(range(place * size, (place + 1) * size))
        kept.total_groups += len(chosen)
        rounds += 1
        if not config.algorithm.dynamic_sampling:
            break
    metrics = sample_metrics(everything, kept.total_groups, rounds, world)
    names = sorted(timings)  # the slowest rank's times: what the step waited for
    metrics.update(zip(names, distributed.reduce(world, [timings[name] for name in names], "max"), strict=True))
    return kept, metrics


def group_signal(rollouts: Rollouts, greedy_baseline: bool) -> list[bool]:
    """DAPO dynamic sampling: per group, whether its rewards are not all equal. With a greedy baseline (ReMax)
    the baseline's reward counts as one more member: a group that all matches its greedy sample has zero
    advantages, one that differs from it has signal, even with one sample per prompt. (With a value model, GAE,
    every group has signal: its baseline is the value, not the group, so dynamic sampling keeps every group.)"""
    rewards = torch.tensor(rollouts.rewards).reshape(-1, rollouts.group_size)
    if greedy_baseline:
        rewards = torch.cat([rewards, torch.tensor(rollouts.baseline_rewards).reshape(-1, rollouts.group_size)[:, :1]], dim=1)
    return dynamic_sampling_mask(rewards.reshape(-1), rewards.shape[1]).tolist()


def sample_metrics(everything: Rollouts, kept_groups: int, rounds: int, world: World = SINGLE) -> dict[str, float]:
    """Reward, accuracy (overall and per verifier), lengths and verifier failures over all samples drawn
    (by every rank)."""
    columns = {"rewards": everything.rewards, "correct": everything.correct, "truncated": everything.truncated,
               "reasons": everything.reasons, "verifier_names": everything.verifier_names,
               "lengths": [len(ids) for ids in everything.completion_ids], "tool_uses": everything.tool_uses,
               "votes": everything.votes}
    drawn = {name: [value for rank_columns in distributed.all_gather(world, columns) for value in rank_columns[name]]
             for name in columns} if world.distributed else columns
    rewards, lengths, correct = torch.tensor(drawn["rewards"]), torch.tensor(drawn["lengths"], dtype=torch.float32), drawn["correct"]
    metrics = {
        "reward/mean": rewards.mean().item(),
        "accuracy": sum(correct) / len(correct),
        "response_length/mean": lengths.mean().item(),
        "response_length/max": lengths.max().item(),
        "response_length/truncated_fraction": sum(drawn["truncated"]) / len(correct),
        "groups/kept_fraction": kept_groups / (len(correct) // everything.group_size),
        "groups/sampling_rounds": float(rounds),
    }
    for name in sorted(set(drawn["verifier_names"])):
        picked = [c for c, v in zip(correct, drawn["verifier_names"], strict=True) if v == name]
        metrics[f"accuracy/{name}"] = sum(picked) / len(picked)
    verdicts = verifiers.BatchStats(len(correct), sum(correct), dict(Counter(drawn["reasons"])))
    metrics["verifier/timeouts"] = float(verdicts.timeouts)
    metrics["verifier/errors"] = float(verdicts.errors)
    metrics["verifier/failure_share"] = (verdicts.timeouts + verdicts.errors) / len(correct)  # see faults.check_verifier_failures
    metrics.update(tool_metrics(drawn["tool_uses"], correct))
    metrics.update(vote_metrics(drawn["votes"]))
    return metrics


def vote_metrics(votes: list[VoteStats | None]) -> dict[str, float]:
    """TTRL: mean agreement with the pseudo-label and vote entropy over the trained samples (each prompt weighs
    as its trained samples); where gold answers exist, how often the pseudo-label is right
    (``ttrl/label_accuracy``) and how often the trained samples are (``ttrl/gold_accuracy``)."""
    cast = [vote for vote in votes if vote is not None]
    if not cast:
        return {}
    metrics = {"ttrl/agreement": sum(v.agreement for v in cast) / len(cast),
               "ttrl/vote_entropy": sum(v.entropy for v in cast) / len(cast)}
    graded = [vote for vote in cast if vote.label_correct is not None]
    if graded:
        metrics["ttrl/label_accuracy"] = sum(bool(v.label_correct) for v in graded) / len(graded)
        metrics["ttrl/gold_accuracy"] = sum(bool(v.gold_correct) for v in graded) / len(graded)
    return metrics
