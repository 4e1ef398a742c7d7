"""The random-reward control: a seeded coin flip per completion, blind to whether it is right.

A gain from RL is evidence only when the same run with a reward that carries no information does
not show it (spurious rewards are reported to "improve" some models). Set ``p`` to the base model's
own accuracy, so that the control rewards as many samples as the real verifier would::

    rlvr train --config configs/smollm2_arithmetic_grpo.yaml verifier.name=random verifier.options='{random: {p: 0.3}}'

The coin of a completion is a hash of ``(seed, reference, completion text)``: the same completion of
the same problem always gets the same reward, so a resumed run, a re-verification and the two
engines agree, and no state is shared between threads or worker processes. The verifier interface
hands over no sample index, so two identical completions of one problem share a coin; the coin still
depends only on the text, never on the answer's correctness (a fixed random labelling of the texts).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from verifiers import register
from verifiers.base import Verdict, Verifier

_UNIT = float(2**64)


@register("random")
class RandomReward(Verifier):
    """Pays reward 1 with probability ``p`` per completion, independently of its correctness.

    Options:
        p: probability of reward 1 (the base model's measured accuracy, for a matched control).
        seed: changes every coin; runs with the same seed pay the same completions.
    """

    def __init__(self, p: float = 0.5, seed: int = 0):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"random reward p must be a probability in [0, 1], not {p!r}")
        self.p = float(p)
        self.seed = int(seed)

    def verify(self, completion: str, reference: Any) -> Verdict:
        draw = coin(self.seed, reference, completion)
        paid = draw < self.p
        return Verdict(float(paid), paid, None, "paid" if paid else "not paid", {"draw": draw})


def coin(seed: int, reference: Any, completion: str) -> float:
    """A uniform number in [0, 1) fixed by ``seed``, the ``reference`` and the ``completion`` text."""
    key = json.dumps([seed, reference, completion], sort_keys=True, default=str, ensure_ascii=False)
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / _UNIT
