"""Multi-turn, tool-integrated rollouts: the model runs Python in a sandbox while it answers.

:class:`ToolRollout` wraps any rollout engine and has the same ``generate``: every sample is advanced turn by
turn. A turn samples until the model closes a code block (the stop string: ``</code>`` of ``<code> ... </code>``,
or the closing fence of a ```python block, by the :class:`ToolFormat` of ``ToolsConfig.format``), the code
runs in the sample's own persistent interpreter (one per sample, in the sandbox, closed when the sample
ends), and its output is appended as an observation (``<output> ... </output>``, an ```output block); then the
next turn samples on, all unfinished samples of the batch together, until the model ends (EOS),
``max_tool_calls`` is spent or the token budget (``max_new_tokens``, model and observation tokens together)
runs out.

Token in, token out: a response is a list of ids, exactly the ids the engine sampled, turn after turn, with
the observation ids between them. Model tokens are never decoded and re-encoded (decoded text is only read,
to find the code); an observation is encoded on its own and appended as ids. ``Completion.loss_mask`` marks
the model's tokens (1) and the observations' (0), whose ``logprobs`` entries are 0.0 placeholders; the
verifier reads the model's text only (``Completion.text``), so an answer printed by the tool counts only
once the model writes it. Security: the host only slices the decoded text; the code runs in
:class:`sandboxes.repl.PythonRepl`, and whatever it does there is one more tool error in the observation.

Call formats are plug-ins too (``register_tool_format``). Tools are plug-ins: a class registered with
``@register_tool("name")`` taking a :class:`~rlvr.train_config.ToolsConfig`, whose ``sessions()`` is a context
manager around one ``generate`` that yields a function opening a session (one per sample, with ``run(code)``
returning a :class:`~sandboxes.repl.ReplResult`, and ``close()``); what the sessions share (the python tool: one
cgroup bounding the memory of all of a batch's interpreters together) lives as long as the context.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from rlvr.registry import Registry
from rlvr.rollout.base import Completion, GroupCallback, RolloutEngine, ToolUse, per_prompt_limits
from rlvr.train_config import ToolsConfig

MAX_PIDS_UNBOUNDED = 1 << 22  # the kernel's most pids (each interpreter has its own pids limit)
TURN_SEED_STRIDE = 1_000_003  # turn k of a call seeds its requests from seed + k * stride (distinct from turn 0's)


@dataclass(frozen=True)
class ToolFormat:
    """The markers of a call and of its observation (the prompt templates name the same ones): ``tags``, the
    code between ``<code>`` and ``</code>``. Sampling stops at ``call_end``; :meth:`call_at_stop` then reads
    the call. Formats are plug-ins: an instance registered with ``register_tool_format("name")(...)``."""

    call_start: str = "<code>"
    call_end: str = "</code>"
    observation_start: str = "\n<output>\n"
    observation_end: str = "\n</output>\n"
    truncation_note: str = "\n[output cut]"

    def find_call(self, text: str) -> str | None:
        """The code of the call that ends ``text``'s first ``call_end``: what follows the last ``call_start``
        before it (None when there is none). Plain slicing: the host never parses or runs the code."""
        end = text.find(self.call_end)
        if end < 0:
            return None
        start = text.rfind(self.call_start, 0, end)
        if start < 0:
            return None
        return text[start + len(self.call_start) : end].strip("\n")

    def call_at_stop(self, text: str) -> str | None:
        """What to run when sampling stopped at ``call_end`` after ``text`` (the model's text since the last
        observation): the code, "" for a ``call_end`` without a call (told to the model as an error), or None
        when it is no call and sampling goes on."""
        code = self.find_call(text)
        return "" if code is None else code


@dataclass(frozen=True)
class FenceFormat(ToolFormat):
    """``fence``: the code in a Markdown block opened by a fence with a Python info string (```python, ```py),
    as chat models write code; the output in an ```output block. The closing fence is also the start of every
    other fence, so sampling stops at each: a stop that opens a block, or closes a block in another language,
    is no call, and sampling goes on (one more engine round, the ids appended as sampled)."""

    call_start: str = "```python\n"
    call_end: str = "```"
    observation_start: str = "\n```output\n"
    observation_end: str = "\n```\n"
    languages: tuple[str, ...] = ("python", "py", "python3")

    def find_call(self, text: str) -> str | None:
        """The code of the block ``text`` ends with, if it is a Python block: fences pair up in order (an odd
        count: the last one opens a block, no call yet); the one before the last opens the block, its info
        string (up to the line's end) names the language. Plain slicing, as in ``tags``."""
        fence = self.call_end
        fences, index = [], text.find(fence)
        while index >= 0:
            fences.append(index)
            index = text.find(fence, index + len(fence))
        if not fences or len(fences) % 2:
            return None
        opener, closer = fences[-2] + len(fence), fences[-1]
        line_end = text.find("\n", opener, closer)
        if line_end < 0 or text[opener:line_end].strip().lower() not in self.languages:
            return None
        return text[line_end + 1 : closer].strip("\n")

    def call_at_stop(self, text: str) -> str | None:
        return self.find_call(text)


_tool_formats: Registry[ToolFormat] = Registry("tool call format", entry_point_group="rlvr.tool_formats")
register_tool_format = _tool_formats.register
TAGS = register_tool_format("tags")(ToolFormat())
FENCE = register_tool_format("fence")(FenceFormat())


def available_tool_formats() -> list[str]:
    """Names of every registered tool call format."""
    return _tool_formats.available()


def get_tool_format(name: str) -> ToolFormat:
    return _tool_formats.get(name)


class ToolSession(Protocol):
    def run(self, code: str) -> Any: ...

    def close(self) -> None: ...


_tools: Registry[Any] = Registry("tool", entry_point_group="rlvr.tools")
register_tool = _tools.register


def available_tools() -> list[str]:
    """Names of every registered tool (``none``, no tool, is not one)."""
    return _tools.available()


def get_tool(name: str) -> Any:
    return _tools.get(name)


@register_tool("python")
class PythonTool:
    """A persistent sandboxed Python interpreter per sample (:class:`sandboxes.repl.PythonRepl`)."""

    def __init__(self, config: ToolsConfig):
        from sandboxes import SandboxError
        from sandboxes.repl import PythonRepl

        self.config = config
        reason = PythonRepl.unavailable_reason()
        if reason is not None:
            raise SandboxError(f"the python tool cannot run here: {reason}")

    @contextlib.contextmanager
    def sessions(self) -> Iterator[Callable[[], ToolSession]]:
        """Opens interpreters inside one cgroup of ``total_memory_mb`` (where cgroups can be made): past it the
        kernel kills the largest of them (a ``memory`` error for its sample), never the host's processes."""
        from sandboxes._cgroup import Cgroup
        from sandboxes.repl import PythonRepl

        config = self.config
        shared = Cgroup.create(total_memory_bytes(config), MAX_PIDS_UNBOUNDED)
        try:
            yield lambda: PythonRepl(time_limit=config.time_limit, memory_mb=config.memory_mb,
                                     max_output_bytes=config.max_output_bytes, cgroup_parent=shared)
        finally:
            if shared is not None:
                shared.remove()


def total_memory_bytes(config: ToolsConfig) -> int:
    """``total_memory_mb`` in bytes; its default (0) is half of this machine's memory."""
    if config.total_memory_mb > 0:
        return config.total_memory_mb << 20
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2


def observation_text(status: str, output: str) -> str:
    """What the model is shown of a call: its output, and what went wrong if something did."""
    notes = {"timeout": "[the call timed out]", "memory": "[the call ran out of memory]",
             "output_limit": "[the output was too long and was cut]", "sandbox_error": "[the tool failed]",
             "no_code": "[no code to run]"}
    body = output.rstrip("\n")
    note = notes.get(status)
    return f"{body}\n{note}" if note and body else (note or body)


@dataclass
class _Sample:
    """One trajectory while it is being generated."""

    prompt: list[int]
    budget: int
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # the model's text, turn by turn
    use: ToolUse = field(default_factory=ToolUse)
    finish_reason: str = "stop"
    pending_call: str | None = None  # the code of the call the last turn ended on
    call_text: str = ""  # the model's text since the last observation, where a call is looked for
    done: bool = False
    session: Any = None

    @property
    def remaining(self) -> int:
        return self.budget - len(self.ids)

    def completion(self) -> Completion:
        return Completion(token_ids=self.ids, logprobs=self.logprobs, text="".join(self.texts),
                          finish_reason=self.finish_reason, loss_mask=self.mask, tool_use=self.use)  # type: ignore[arg-type]


class ToolRollout(RolloutEngine):
    """``engine`` with tool calls: same ``generate``, multi-turn responses (see the module docstring).

    ``tokenizer`` encodes the observations and decodes the model's turns (read only). ``workers``: tool calls
    run at once (each in its own interpreter process; the threads only wait on pipes). ``tool_format``: how
    calls are written (default: the registered format ``config.format`` names)."""

    name = "tools"

    def __init__(self, engine: RolloutEngine, tokenizer: Any, config: ToolsConfig, workers: int = 8,
                 tool_format: ToolFormat | None = None):
        # not RolloutEngine.__init__: this wraps a loaded engine
        self.engine = engine
        self.tool_format = tool_format or get_tool_format(config.format)
        self.tokenizer = tokenizer
        self.config = config
        self.tool = get_tool(config.name)(config)
        self.workers = workers
        self.max_model_len = engine.max_model_len

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
        """See :meth:`RolloutEngine.generate`; ``max_new_tokens`` bounds each whole multi-turn response."""
        limits = per_prompt_limits(max_new_tokens, len(prompt_token_ids))
        stops = [self.tool_format.call_end, *stop]
        sampling = {"temperature": temperature, "top_p": top_p}
        groups = self.engine.generate(prompt_token_ids, n=n, max_new_tokens=limits, seed=seed, stop=stops, **sampling)
        samples = [[_Sample(prompt, limit) for _ in group] for prompt, limit, group in zip(prompt_token_ids, limits, groups, strict=True)]
        flat = [sample for group in samples for sample in group]
        for sample, completion in zip(flat, (c for group in groups for c in group), strict=True):
            self._take_turn(sample, completion)
        reported: set[int] = set()
        turn = 0
        try:
            with self.tool.sessions() as open_session, \
                    ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="rlvr-tool") as pool:
                while True:
                    self._answer_calls([s for s in flat if s.pending_call is not None], pool, open_session)
                    self._report_finished(samples, reported, on_group)
                    active = [sample for sample in flat if not sample.done]
                    if not active:
                        break
                    turn += 1
                    turn_seed = None if seed is None else seed + turn * TURN_SEED_STRIDE
                    continued = self.engine.generate([s.prompt + s.ids for s in active], n=1,
                                                     max_new_tokens=[s.remaining for s in active], seed=turn_seed,
                                                     stop=stops, **sampling)
                    for sample, group in zip(active, continued, strict=True):
                        self._take_turn(sample, group[0])
        finally:
            for sample in flat:
                self._close(sample)
        return [[sample.completion() for sample in group] for group in samples]

    def _take_turn(self, sample: _Sample, completion: Completion) -> None:
        """Append a model turn; decide whether it ends the sample or calls the tool."""
        sample.ids += completion.token_ids
        sample.logprobs += completion.logprobs
        sample.mask += [1] * len(completion.token_ids)
        text = self.tokenizer.decode(completion.token_ids, skip_special_tokens=True)
        sample.texts.append(text)
        sample.call_text += text
        sample.use.turns += 1
        sample.finish_reason = completion.finish_reason
        if completion.stop_reason != self.tool_format.call_end:
            sample.done = True  # EOS, the caller's own stop string, or out of tokens (maybe inside a code block)
            return
        code = self.tool_format.call_at_stop(sample.call_text)  # None: no call (e.g. a fence that opens a block)
        if code is not None and sample.use.calls >= self.config.max_tool_calls:
            sample.done = True  # one call too many: the sample ends on it, unanswered
        elif sample.remaining <= 0:
            sample.done, sample.finish_reason = True, "length"
        elif code is not None:
            sample.pending_call = code  # else the next round samples on from here

    def _answer_calls(self, callers: list[_Sample], pool: ThreadPoolExecutor, open_session: Callable[[], ToolSession]) -> None:
        """Run every pending call (in parallel, each in its sample's interpreter) and append the observations."""
        results = list(pool.map(lambda sample: self._run_call(sample, open_session), callers))
        for sample, (status, output) in zip(callers, results, strict=True):
            use = sample.use
            use.calls += 1
            use.timeouts += status == "timeout"
            use.errors += status not in ("ok", "timeout")
            shown = observation_text(status, output)
            use.observations.append(shown)
            ids = self.observation_ids(shown, sample.remaining)
            use.observation_tokens += len(ids)
            sample.ids += ids
            sample.logprobs += [0.0] * len(ids)
            sample.mask += [0] * len(ids)
            sample.pending_call = None
            sample.call_text = ""
            if sample.remaining <= 0:
                sample.done, sample.finish_reason = True, "length"

    @staticmethod
    def _run_call(sample: _Sample, open_session: Callable[[], ToolSession]) -> tuple[str, str]:
        code = sample.pending_call
        if not code:
            return "no_code", ""
        if sample.session is None:
            sample.session = open_session()
        result = sample.session.run(code)
        return result.status, result.output

    def observation_ids(self, body: str, room: int) -> list[int]:
        """``<output> body </output>`` as ids: the pieces encoded on their own, the body cut to
        ``max_observation_tokens`` (with a note), the whole cut to ``room`` tokens."""
        encode, markers = self._encode, self.tool_format
        head, tail = encode(markers.observation_start), encode(markers.observation_end)
        body_ids = encode(body)
        if len(body_ids) > self.config.max_observation_tokens:
            body_ids = body_ids[: self.config.max_observation_tokens] + encode(markers.truncation_note)
        return (head + body_ids + tail)[: max(room, 0)]

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _report_finished(self, samples: list[list[_Sample]], reported: set[int], on_group: GroupCallback | None) -> None:
        for group in samples:
            for sample in group:
                if sample.done:
                    self._close(sample)  # a finished sample's interpreter ends with it
        for index, group in enumerate(samples):
            if index not in reported and all(sample.done for sample in group):
                reported.add(index)
                if on_group is not None:
                    on_group(index, [sample.completion() for sample in group])

    @staticmethod
    def _close(sample: _Sample) -> None:
        if sample.session is not None:
            sample.session.close()
            sample.session = None

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        self.engine.update_weights(named_tensors)

    def sleep(self) -> None:
        self.engine.sleep()

    def wake_up(self) -> None:
        self.engine.wake_up()

    def close(self) -> None:
        self.engine.close()


def with_tools(engine: RolloutEngine, tokenizer: Any, config: ToolsConfig) -> RolloutEngine:
    """``engine`` itself when ``config.name`` is ``none``, else the engine with that tool."""
    return engine if config.name == "none" else ToolRollout(engine, tokenizer, config)


def tool_metrics(uses: Sequence[ToolUse | None], correct: Sequence[bool]) -> dict[str, float]:
    """Per sample means of tool calls, errors, timeouts, observation tokens and turns; the share of samples
    that called the tool and the accuracy of those that did and did not (empty when no sample used tools)."""
    used = [use for use in uses if use is not None]
    if not used:
        return {}
    count = len(used)
    metrics = {f"tools/{name}_per_sample": sum(getattr(use, name) for use in used) / count
               for name in ("calls", "errors", "timeouts", "observation_tokens", "turns")}
    with_tool = [ok for use, ok in zip(uses, correct, strict=True) if use is not None and use.calls > 0]
    without = [ok for use, ok in zip(uses, correct, strict=True) if use is None or use.calls == 0]
    metrics["tools/used_fraction"] = len(with_tool) / len(uses)
    if with_tool:
        metrics["accuracy/with_tool"] = sum(with_tool) / len(with_tool)
    if without:
        metrics["accuracy/without_tool"] = sum(without) / len(without)
    metrics["accuracy/through_tool"] = sum(with_tool) / len(uses)  # correct answers reached with a call, of all samples
    return metrics
