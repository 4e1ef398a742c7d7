"""What TTRL's label-free reward costs per prompt: the majority vote over ``votes`` completions by the math
verifier's equivalence, then the verdicts of the trained samples, against plain gold-answer verification of
the same trained samples (the reward TTRL replaces).

    .venv/bin/python -m benchmarks.ttrl_vote [--prompts 50] [--votes 64] [--trained 32] [--seed 0]

Completions are ``\\boxed{}`` answers drawn (seeded) from the answer classes of ``benchmarks.eval_scoring``
(each written several equivalent ways, some only SymPy matches, plus a no-answer class), so the vote runs
through the verifier's time-bounded SymPy workers as in training. Gold: a random class's first spelling.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import verifiers
from benchmarks.eval_scoring import ANSWER_CLASSES
from verifiers.ttrl import vote_verdicts


def completions_of(rng: random.Random, votes: int) -> list[str]:
    """``votes`` completions, a popular class favoured (as a model's samples are) and some without an answer."""
    favourite = rng.randrange(len(ANSWER_CLASSES))
    drawn = []
    for _ in range(votes):
        roll = rng.random()
        if roll < 0.1:
            drawn.append("I am not sure.")
        else:
            answer_class = favourite if roll < 0.55 else rng.randrange(len(ANSWER_CLASSES))
            drawn.append(f"So the answer is \\boxed{{{rng.choice(ANSWER_CLASSES[answer_class])}}}.")
    return drawn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--votes", type=int, default=64)
    parser.add_argument("--trained", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    groups = [(completions_of(rng, args.votes), ANSWER_CLASSES[rng.randrange(len(ANSWER_CLASSES))][0])
              for _ in range(args.prompts)]
    verifier = verifiers.get("math")
    verifier.verify("\\boxed{2\\sqrt{2}}", "\\sqrt{8}")  # start a SymPy worker outside the timing

    started = time.perf_counter()
    for completions, gold in groups:
        verifier.verify_batch(completions[: args.trained], [gold] * args.trained, workers=1)
    gold_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for completions, _ in groups:
        vote_verdicts(verifier, completions, None, args.trained)
    vote_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for completions, gold in groups:  # as training logs it: the label and each trained sample checked against gold
        vote_verdicts(verifier, completions, gold, args.trained)
    graded_seconds = time.perf_counter() - started
    verifier.close()
    print(json.dumps({
        "prompts": args.prompts, "votes": args.votes, "trained": args.trained,
        "gold_reward_ms_per_prompt": round(1000 * gold_seconds / args.prompts, 1),
        "ttrl_vote_ms_per_prompt": round(1000 * vote_seconds / args.prompts, 1),
        "ttrl_vote_with_gold_metrics_ms_per_prompt": round(1000 * graded_seconds / args.prompts, 1),
        "vote_over_gold": round(vote_seconds / gold_seconds, 2),
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
