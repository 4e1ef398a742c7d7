"""The verifier interface: ``Verdict`` and the ``Verifier`` base class."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence


@dataclass
class Verdict:
    """The outcome of checking one completion."""

    reward: float
    correct: bool
    extracted: str | None = None
    reason: str = ""  # "correct", "wrong", "no answer", "timeout", "several different answers", ...
    details: dict[str, Any] = field(default_factory=dict)  # verifier-specific: passed/total, first failure, ...


@dataclass
class BatchStats:
    """Counts over a batch of verdicts, so that a silent all-zero reward cannot go unnoticed."""

    total: int
    correct: int
    reasons: dict[str, int]

    @classmethod
    def of(cls, verdicts: Sequence[Verdict]) -> BatchStats:
        return cls(
            total=len(verdicts),
            correct=sum(v.correct for v in verdicts),
            reasons=dict(Counter(v.reason for v in verdicts)),
        )

    @property
    def timeouts(self) -> int:
        return self.reasons.get("timeout", 0)

    @property
    def errors(self) -> int:
        return sum(n for reason, n in self.reasons.items() if "error" in reason)


class Verifier:
    """Base class. Subclasses implement :meth:`verify`; :meth:`verify_batch` may be overridden
    for parallelism. Neither may raise: failures are verdicts with reward 0 and a reason."""

    def verify(self, completion: str, reference: Any) -> Verdict:
        raise NotImplementedError

    def verify_batch(
        self, completions: Sequence[str], references: Sequence[Any], workers: int | None = None
    ) -> list[Verdict]:
        """Verdicts in input order. The base version is sequential."""
        if len(completions) != len(references):
            raise ValueError(f"{len(completions)} completions but {len(references)} references")
        return [self.verify(c, r) for c, r in zip(completions, references, strict=True)]
