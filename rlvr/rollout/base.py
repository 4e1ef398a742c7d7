"""The interface every rollout engine implements, and what it returns.

Log-prob semantics (the same for every engine): ``Completion.logprobs[t]`` is the log-probability of
the sampled token under the distribution it was actually drawn from, i.e.
``log_softmax(logits / temperature)`` renormalised over the top-p nucleus. With ``top_p=1`` (the RL
default) this is exactly what the trainer computes from its own forward pass, so the two agree up to
numerics; with ``top_p < 1`` it is the truncated distribution's log-prob, which is the correct
behaviour-policy probability for importance sampling. With ``temperature=0`` (greedy) it is
``log_softmax(logits)`` of the chosen token.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

FinishReason = Literal["stop", "length"]
DTYPES = ("float32", "bfloat16", "float16")


def resolve_dtype(dtype: str, on_accelerator: bool) -> str:
    """The dtype an engine runs in: ``auto`` is bfloat16 on an accelerator and float32 on the CPU, the trainer's
    rule, so sampler and trainer compute the same numbers. (vLLM's own ``auto`` would run a float32 checkpoint
    in bfloat16 even on the CPU.)"""
    if dtype == "auto":
        return "bfloat16" if on_accelerator else "float32"
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} for a rollout engine; use auto, {', '.join(DTYPES)}")
    return dtype


@dataclass
class Completion:
    """One sampled response to one prompt."""

    token_ids: list[int]
    """Response tokens only (no prompt), including the end-of-sequence token when it stopped on one."""
    logprobs: list[float]
    """Sampling log-prob of each token of ``token_ids`` (see the module docstring for the distribution)."""
    text: str
    """The decoded response, special tokens skipped."""
    finish_reason: FinishReason
    """``stop``: ended on an end-of-sequence token or a stop string; ``length``: cut at ``max_new_tokens``."""
    stop_reason: str | None = None
    """The stop string (of ``generate``'s ``stop``) that ended the response; None when it ended otherwise.
    ``token_ids`` are still exactly the sampled tokens: the last one holds the end of the stop string (and
    maybe more text after it), and nothing is cut from the ids; ``text`` may be cut at the stop string."""
    loss_mask: list[int] | None = None
    """Per token of ``token_ids``: 1 for a token the model sampled, 0 for one it did not (a tool's output
    appended by :mod:`rlvr.rollout.tools`, whose ``logprobs`` entry is a 0.0 placeholder). None: all 1."""
    tool_use: ToolUse | None = None
    """What the tool did in a multi-turn response (None: generated without tools)."""


@dataclass
class ToolUse:
    """What the tool did in one multi-turn response."""

    calls: int = 0
    errors: int = 0  # calls whose code failed (an exception, a memory or output limit, a sandbox refusal)
    timeouts: int = 0
    observation_tokens: int = 0
    turns: int = 0  # model turns sampled
    observations: list[str] = field(default_factory=list)  # each call's observation text (before the token cap)


GroupCallback = Callable[[int, list[Completion]], None]


class RolloutEngine(ABC):
    """Samples ``n`` completions per prompt from a causal LM whose weights the trainer keeps replacing.

    Use it as a context manager (or call :meth:`close`) so the engine's memory is released.
    """

    name: ClassVar[str]

    def __init__(
        self,
        model_path: str,
        *,
        max_model_len: int,
        seed: int = 0,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.3,
        sleep_between_steps: bool = False,
        batch_sequences: int | None = None,
        **options: object,
    ) -> None:
        """Load the model at ``model_path``.

        ``max_model_len`` bounds prompt + response tokens. ``seed`` seeds sampling when ``generate`` gets
        no seed. ``dtype``: ``auto``, ``float32``, ``bfloat16`` or ``float16``. ``gpu_memory_utilization``
        and ``sleep_between_steps`` are for engines that manage accelerator memory; others ignore them.
        ``batch_sequences`` is how many sequences (prompts x n) a ``generate`` call usually asks for, a hint
        for engines that size buffers up front (None: unknown). ``options`` are engine-specific (see each
        engine's docstring).
        """
        self.model_path = str(model_path)
        self.max_model_len = max_model_len
        self.seed = seed

    @abstractmethod
    def generate(
        self,
        prompt_token_ids: list[list[int]],
        *,
        n: int,
        max_new_tokens: int | Sequence[int],
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        on_group: GroupCallback | None = None,
        stop: Sequence[str] = (),
    ) -> list[list[Completion]]:
        """``n`` completions for each prompt, prompts in input order.

        ``max_new_tokens``: one limit for every prompt, or one per prompt. ``stop``: strings that end a
        response as soon as its decoded text contains one (multi-turn tool calls stop at the end of a code
        block); see :attr:`Completion.stop_reason`.

        ``on_group(index, completions)`` is called once per prompt as soon as its ``n`` completions are done,
        while other prompts may still be generating (the trainer starts verifying there); an engine that
        finishes everything at once calls it for every prompt at the end.

        The same ``seed`` with the same weights and prompts gives the same samples on the ``hf`` engine;
        vLLM's batched kernels make it reproducible only approximately.
        """

    @abstractmethod
    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy new weights (Hugging Face parameter names, e.g. from ``model.named_parameters()``) into the
        running engine, without a restart or a round-trip through the disk."""

    def load_adapter(self, adapter_dir: str, version: int) -> None:
        """Sample from the engine's base weights plus the peft LoRA adapter saved in ``adapter_dir`` from now on;
        ``version`` (a positive integer) is new for each adapter. Engines without LoRA support take base +
        adapter merged through :meth:`update_weights` instead (``model.lora.sync=merge``)."""
        raise NotImplementedError(f"the {self.name} rollout engine cannot serve LoRA adapters; set model.lora.sync=merge")

    def sleep(self) -> None:
        """Release the KV cache (and offload weights) while the trainer needs the memory; no-op by default."""
        return None

    def wake_up(self) -> None:
        """Undo :meth:`sleep` before the next ``generate``; no-op by default."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Release the engine's memory; the engine cannot be used afterwards."""

    def __enter__(self) -> RolloutEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def check_request(self, prompt_token_ids: list[list[int]], n: int, max_new_tokens: int | Sequence[int],
                      temperature: float, top_p: float, stop: Sequence[str] = ()) -> list[int]:
        """Raise ``ValueError`` with what to change when a ``generate`` request cannot be served; returns the
        token limit of each prompt."""
        limits = per_prompt_limits(max_new_tokens, len(prompt_token_ids))
        if n < 1 or min(limits, default=1) < 1:
            raise ValueError(f"n and max_new_tokens must be at least 1 (got n={n}, max_new_tokens={max_new_tokens})")
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1 (got {temperature}, {top_p})")
        if isinstance(stop, str) or not all(isinstance(text, str) and text for text in stop):
            raise ValueError(f"stop must be a list of non-empty strings, got {stop!r}")
        for index, (prompt, max_new_tokens) in enumerate(zip(prompt_token_ids, limits, strict=True)):
            if not prompt:
                raise ValueError(f"prompt {index} is empty; every prompt needs at least one token")
            if len(prompt) + max_new_tokens > self.max_model_len:
                raise ValueError(
                    f"prompt {index} has {len(prompt)} tokens, which with max_new_tokens={max_new_tokens} exceeds "
                    f"max_model_len={self.max_model_len}; raise max_model_len or lower max_new_tokens / the prompt "
                    "length limit"
                )
        return limits


def per_prompt_limits(max_new_tokens: int | Sequence[int], prompts: int) -> list[int]:
    """``generate``'s ``max_new_tokens`` as one limit per prompt."""
    if isinstance(max_new_tokens, int):
        return [max_new_tokens] * prompts
    limits = [int(limit) for limit in max_new_tokens]
    if len(limits) != prompts:
        raise ValueError(f"max_new_tokens has {len(limits)} limits for {prompts} prompts; give one per prompt or one int")
    return limits
