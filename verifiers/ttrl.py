"""TTRL's label-free reward: the majority answer of many samples stands in for the gold answer.

Test-time reinforcement learning (Zuo et al. 2025, "TTRL: Test-Time Reinforcement Learning", arXiv
2504.16084) trains on problems without answers: per prompt it draws ``votes`` samples (64 in the paper),
takes the most common final answer as a pseudo-label, and rewards each trained sample (32 of them) 1 when
its answer agrees with that label, else 0. Answers are grouped by the verifier's own equivalence, not by
their spelling: "1/2", "0.5" and "\\frac{1}{2}" cast one vote together.

:func:`majority_vote` clusters a group's answers; :func:`vote_verdicts` turns a vote into rewards, with the
statistics the trainer logs (agreement, vote entropy, and, where a gold answer exists, whether the
pseudo-label and each sample are right).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from verifiers.base import Verdict


class AnswerVerifier(Protocol):
    """A verifier that can say what a completion's final answer is (the math verifier)."""

    def final_answer(self, completion: str) -> str | None: ...

    def verify(self, completion: str, reference: Any) -> Verdict: ...


@dataclass(frozen=True)
class Vote:
    """The clusters of one prompt's answers: ``cluster_of[i]`` is sample ``i``'s cluster (None: it gave no
    answer), ``answers[c]`` the answer that founded cluster ``c`` (its first sample's), ``sizes[c]`` its votes."""

    cluster_of: list[int | None]
    answers: list[str]
    sizes: list[int]

    @property
    def majority(self) -> int | None:
        """The largest cluster (ties: the one founded first), None when no sample answered."""
        return max(range(len(self.sizes)), key=lambda c: (self.sizes[c], -c)) if self.sizes else None

    @property
    def label(self) -> str | None:
        """The pseudo-label: the majority cluster's answer."""
        return None if self.majority is None else self.answers[self.majority]

    @property
    def agreement(self) -> float:
        """Share of all samples (those without an answer included) that agree with the label."""
        return 0.0 if self.majority is None else self.sizes[self.majority] / len(self.cluster_of)

    @property
    def entropy(self) -> float:
        """Entropy in nats of the answers' distribution over clusters, over the samples that answered
        (0: unanimous; log(k): k clusters of equal size)."""
        total = sum(self.sizes)
        return -sum(size / total * math.log(size / total) for size in self.sizes) if total else 0.0


def majority_vote(verifier: AnswerVerifier, completions: Sequence[str]) -> Vote:
    """Cluster the final answers of ``completions`` by the verifier's equivalence, exactly as ``rlvr eval``
    groups answers for maj@k (:func:`rlvr.metrics.answer_classes` with
    :func:`rlvr.evaluation.answer_equivalence`): in sample order, an answer joins the first cluster whose
    founding answer it is equivalent to (checked as that answer's gold), else it founds a new one; answers
    spelled alike share a cluster without a check."""
    from rlvr.evaluation import answer_equivalence
    from rlvr.metrics import answer_classes

    answers = [verifier.final_answer(completion) for completion in completions]
    classes = answer_classes(answers, answer_equivalence(verifier))
    count = max(classes, default=-1) + 1
    return Vote([None if c < 0 else c for c in classes], [answers[classes.index(c)] for c in range(count)],
                [classes.count(c) for c in range(count)])


@dataclass(frozen=True)
class VoteStats:
    """What the trainer logs about one sample's vote: its prompt's agreement and vote entropy, whether the
    pseudo-label is right and whether this sample is right (None for both when there is no gold answer)."""

    agreement: float
    entropy: float
    label_correct: bool | None
    gold_correct: bool | None


def check_votable(verifier: Any) -> None:
    """Raise ``TypeError`` saying what to do when ``verifier`` cannot take part in a vote (it extracts no answer)."""
    if not callable(getattr(verifier, "final_answer", None)):
        raise TypeError(f"TTRL votes on final answers, and the {type(verifier).__name__} verifier cannot extract one; "
                        "use a math task (verifier 'math') or turn TTRL off (verifier.ttrl_votes=0)")


def has_gold(reference: Any) -> bool:
    """Whether ``reference`` is a gold answer (answer-less rows of a TTRL run have None)."""
    return reference is not None and reference != "" and reference != []


def vote_verdicts(verifier: AnswerVerifier, completions: Sequence[str], reference: Any = None,
                  trained: int | None = None) -> list[Verdict]:
    """The first ``trained`` (default: all) of one prompt's samples rewarded by agreement with the majority
    answer of ALL ``completions`` (reward 1 or 0); the others only vote. Each verdict's ``details["vote"]`` is
    its :class:`VoteStats`. ``reference`` (the gold answer, or None) is used only for those statistics, never
    for the reward."""
    check_votable(verifier)
    vote = majority_vote(verifier, completions)
    gold = has_gold(reference)
    label_correct = None
    if gold:
        label_correct = vote.majority is not None and verifier.verify(
            completions[vote.cluster_of.index(vote.majority)], reference).correct
    verdicts = []
    for completion, cluster in zip(completions[:trained], vote.cluster_of[:trained], strict=True):
        agrees = cluster is not None and cluster == vote.majority
        stats = VoteStats(vote.agreement, vote.entropy, label_correct,
                          verifier.verify(completion, reference).correct if gold else None)
        reason = "no answer" if cluster is None else ("agrees with the majority" if agrees else "disagrees with the majority")
        verdicts.append(Verdict(float(agrees), agrees, None if cluster is None else vote.answers[cluster], reason,
                                {"vote": stats, "label": vote.label}))
    return verdicts
