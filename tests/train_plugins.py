"""A task and a verifier registered through the real plug-in registries, so an untrained tiny
model gets a reward with variance (an even-length answer scores 1). Imported by training tests
and by the subprocesses they start."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import tasks
import verifiers
from tasks import Example, TaskSpec


@verifiers.register("even-length")
class EvenLength(verifiers.Verifier):
    def verify(self, completion: str, reference: Any) -> verifiers.Verdict:
        even = len(completion) % 2 == 0
        return verifiers.Verdict(reward=float(even), correct=even, extracted=completion, reason="correct" if even else "wrong")


class CountingPrompts(TaskSpec):
    source = "made in the test"

    def load(self, split=None, path=None, limit=None, seed=None, **options: Any) -> list[Example]:
        return [
            Example(id=str(i), problem=f"What is {i} + {i}?", reference="", verifier="even-length")
            for i in range(limit or 16)
        ]


@tasks.register("even-length-prompts")
def counting_prompts() -> TaskSpec:
    return CountingPrompts(kind="math", summary="prompts whose answers score by length parity", verifier="even-length")


def overrides(model_dir, output_dir, engine="hf", steps=3) -> list[str]:
    return [
        f"model.path={model_dir}", f"checkpoint.output_dir={output_dir}", f"rollout.engine={engine}",
        "data.task=even-length-prompts", "data.limit=16", "data.template=base", "rollout.group_size=4",
        "rollout.max_new_tokens=12", "optim.prompts_per_step=4", "optim.mini_batch_size=8", "optim.micro_batch_size=4",
        f"optim.steps={steps}", "optim.lr=1e-3", "checkpoint.every=2", "checkpoint.keep_last=0",
        "rollout.gpu_memory_utilization=0.05", "verifier.workers=1",
    ]


class OnRankOne(EvenLength):
    """The even-length verifier, except on rank 1 of a torchrun job (the only place a test verifier may read
    the rank: it stands for a fault that strikes one machine of a job)."""

    def verify(self, completion: str, reference: Any) -> verifiers.Verdict:
        verdict = super().verify(completion, reference)
        return self.on_rank_one(verdict) if os.environ.get("RANK") == "1" else verdict

    def on_rank_one(self, verdict: verifiers.Verdict) -> verifiers.Verdict:
        raise NotImplementedError


@verifiers.register("fails-on-rank-1")
class FailsOnRankOne(OnRankOne):
    """Every verification of rank 1 errors, as when that machine's sandbox service died."""

    def on_rank_one(self, verdict: verifiers.Verdict) -> verifiers.Verdict:
        return verifiers.Verdict(0.0, False, None, "error", {"error": "SandboxError: the service went away"})


@verifiers.register("nan-on-rank-1")
class NanOnRankOne(OnRankOne):
    """Rank 1's rewards are NaN: its loss and gradients are, the other rank's are finite."""

    def on_rank_one(self, verdict: verifiers.Verdict) -> verifiers.Verdict:
        return dataclasses.replace(verdict, reward=math.nan)
