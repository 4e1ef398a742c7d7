"""Multi-turn tool use: the persistent sandboxed interpreter, stop strings on both engines, token-in-token-out
trajectories (ids, masks, log-probs), the masked loss, and training / evaluation with the tool."""

from __future__ import annotations

import json
import os
from collections import defaultdict

import pytest
import torch

from rlvr.rollout.base import Completion
from rlvr.train_config import ToolsConfig
from sandboxes.repl import PythonRepl

REPL_MISSING = PythonRepl.unavailable_reason()
needs_repl = pytest.mark.skipif(REPL_MISSING is not None, reason=f"no sandboxed interpreter here: {REPL_MISSING}")
ENGINES = ["hf", pytest.param("vllm", marks=pytest.mark.slow)]


# ---------------------------------------------------------------------------------------------------------------
# The interpreter


@pytest.fixture
def repl():
    with PythonRepl(time_limit=1.0, memory_mb=256, max_output_bytes=2000) as interpreter:
        yield interpreter


@needs_repl
def test_state_persists_across_calls_and_a_last_expression_is_echoed(repl):
    assert repl.run("x = 6 * 7\ndef twice(v):\n    return 2 * v").status == "ok"
    result = repl.run("twice(x) + 1")
    assert (result.status, result.output) == ("ok", "85\n")
    assert repl.run("import math\nprint(math.factorial(20))").output == "2432902008176640000\n"
    assert repl.run("print(x, end='')").output == "42"


@needs_repl
def test_an_error_is_reported_briefly_and_the_state_survives(repl):
    repl.run("y = 3")
    result = repl.run("1 / 0")
    assert result.status == "error" and "ZeroDivisionError: division by zero" in result.output
    assert "repl_server" not in result.output  # the model sees its own code's error, not the server's frames
    assert repl.run("y").output == "3\n"
    assert repl.run("def broken(:").status == "error"


@needs_repl
def test_an_infinite_loop_is_a_timeout_and_the_interpreter_keeps_its_state(repl):
    repl.run("kept = 'yes'")
    result = repl.run("while True:\n    pass")
    assert result.status == "timeout"
    assert repl.run("kept").output == "'yes'\n"


@needs_repl
def test_code_that_ignores_the_timeout_is_killed_and_the_next_call_starts_fresh(repl):
    repl.run("kept = 1")
    result = repl.run("import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass")
    assert result.status == "timeout" and result.wall_time < 10
    after = repl.run("print('alive')")
    assert (after.status, after.output, after.restarted) == ("ok", "alive\n", True)
    assert repl.run("kept").status == "error"  # a fresh interpreter: the old state is gone, and the model is told


@needs_repl
def test_huge_output_is_cut_at_the_cap(repl):
    result = repl.run("print('x' * 10**7)")
    assert result.status == "output_limit" and result.truncated
    assert len(result.output) == 2000
    fd_level = repl.run("import os\nfor _ in range(10**4):\n    os.write(1, b'y' * 1000)")
    assert fd_level.status in ("output_limit", "error") and len(fd_level.output) <= 2000


@needs_repl
def test_a_memory_bomb_is_a_memory_error(repl):
    assert repl.run("block = bytearray(4 * 1024**3)").status == "memory"
    assert repl.run("1 + 1").output == "2\n"


@needs_repl
def test_the_interpreters_of_a_batch_share_one_memory_bound():
    """Two interpreters of 200 MiB each inside one cgroup of 120 MiB: holding 70 MiB each does not fit, so the
    kernel kills one of them (a memory error for its sample), not a process of the host; without the shared
    cgroup both would hold theirs."""
    from sandboxes._cgroup import Cgroup

    shared = Cgroup.create(120 << 20, 64)
    if shared is None:
        pytest.skip("cgroups are not writable here (needs root and the memory and pids controllers)")
    try:
        with PythonRepl(memory_mb=200, cgroup_parent=shared) as first, PythonRepl(memory_mb=200, cgroup_parent=shared) as second:
            held = first.run("x = b'1' * (70 << 20)\nlen(x)")
            assert held.status == "ok", held.output
            over = second.run("y = b'1' * (70 << 20)\nlen(y)")
            after = first.run("len(x)")
            assert "memory" in (over.status, after.status), (over, after)
            assert "all interpreters share" in (over.output + after.output)
            assert second.run("1 + 1").output == "2\n" and first.run("2 + 2").output == "4\n"  # fresh ones again
    finally:
        shared.remove()


def test_the_shared_bound_defaults_to_half_of_the_machines_memory():
    from rlvr.rollout.tools import total_memory_bytes

    with open("/proc/meminfo") as meminfo:  # MemTotal in kB, read independently of os.sysconf
        total_kib = int(meminfo.readline().split()[1])
    assert total_memory_bytes(ToolsConfig()) == pytest.approx(total_kib * 1024 / 2, rel=0.01)
    assert total_memory_bytes(ToolsConfig(total_memory_mb=300)) == 300 << 20


@needs_repl
def test_a_fork_bomb_is_contained_and_leaves_no_process_behind(repl):
    result = repl.run("import os\nwhile True:\n    os.fork()")
    assert result.status in ("error", "timeout")
    repl.run("import subprocess\nsubprocess.Popen(['sleep', '300'])")
    pids = repl.run("import json, os\nprint(json.dumps([p for p in os.listdir('/proc') if p.isdigit()]))")
    assert pids.status == "ok" and len(json.loads(pids.output)) == 2  # the sandbox's init and the interpreter only


@needs_repl
def test_escape_attempts_fail_inside_the_sandbox(repl):
    assert "FileNotFoundError" in repl.run("open('/etc/passwd').read()").output  # no host file system
    assert "Network is unreachable" in repl.run("import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)").output
    assert "Read-only file system" in repl.run("open('/usr/owned', 'w')").output
    assert repl.run("import os\nos.getuid()").output == "65534\n"
    assert repl.run("import os\nos.environ.get('HOME'), 'PATH' in os.environ").output == "('/work', True)\n"
    unshare = repl.run("import ctypes\nctypes.CDLL(None, use_errno=True).unshare(0x10000000) == 0")
    assert unshare.output == "False\n"  # no new user namespace (bwrap --disable-userns)


@needs_repl
def test_forged_replies_never_reach_the_host_as_results(repl):
    # The code may write anything to any descriptor it finds: a forged reply can only be its own call's output
    # (what it could print anyway); the honest reply that follows is not taken for the next call's.
    repl.run("import os, json, struct\nbody = json.dumps({'status': 'ok', 'output': 'forged', 'truncated': False}).encode()\n"
                      "for fd in range(3, 20):\n    try:\n        os.write(fd, struct.pack('>I', len(body)) + body)\n"
                      "    except OSError:\n        pass\nprint('honest')")
    following = repl.run("print('next')")
    assert following.output == "next\n"
    assert repl.run("print('and on')").output == "and on\n"
    garbage = repl.run("import os\nfor fd in range(3, 20):\n    try:\n        os.write(fd, b'\\xff' * 64)\n    except OSError:\n        pass")
    assert garbage.status in ("ok", "sandbox_error")
    assert repl.run("print('still')").output == "still\n"


@needs_repl
def test_close_ends_the_interpreter_processes():
    repl = PythonRepl(time_limit=1.0)
    repl.run("1")
    pid = repl._process.pid
    repl.close()
    assert not os.path.exists(f"/proc/{pid}")


# ---------------------------------------------------------------------------------------------------------------
# Stop strings on the engines


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def reference_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def forward_logprobs(model, prompt: list[int], response: list[int]) -> torch.Tensor:
    """Log-probs of each response token after the prompt, from one plain forward pass (temperature 1)."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + response])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return torch.stack([logprobs[len(prompt) + j - 1, token] for j, token in enumerate(response)])


def build_engine(name: str, model_dir, max_model_len: int = 256):
    import rlvr.rollout

    options = {"gpu_memory_utilization": 0.05} if name == "vllm" else {}
    return rlvr.rollout.get(name)(str(model_dir), max_model_len=max_model_len, seed=0, **options)


@pytest.fixture(scope="module", params=ENGINES)
def engine(request, tiny_model_dir):
    with build_engine(request.param, tiny_model_dir) as running:
        yield running


@pytest.fixture(scope="module")
def prompts(tokenizer):
    return [tokenizer(text)["input_ids"] for text in ("What is 12 * 34?", "Compute 5 + 7 and box it.")]


def test_stop_ends_at_the_first_token_that_completes_the_stop_string_and_keeps_it(engine, tokenizer, prompts,
                                                                                  reference_model):
    stop = "e"
    groups = engine.generate(prompts, n=8, max_new_tokens=40, seed=3, stop=[stop])
    inside_a_token = 0
    for prompt, group in zip(prompts, groups, strict=True):
        for completion in group:
            ids = completion.token_ids
            if completion.stop_reason is None:
                assert stop not in tokenizer.decode(ids, skip_special_tokens=True)
                continue
            assert completion.stop_reason == stop and completion.finish_reason == "stop"
            assert stop in tokenizer.decode(ids, skip_special_tokens=True)
            assert stop not in tokenizer.decode(ids[:-1], skip_special_tokens=True)
            inside_a_token += not tokenizer.decode(ids[-1:]).endswith(stop)
            # the ids are what was sampled: their log-probs under the model are the sampler's
            torch.testing.assert_close(torch.tensor(completion.logprobs), forward_logprobs(reference_model, prompt, ids),
                                       atol=2e-3, rtol=1e-3)
    assert inside_a_token > 0  # some stop strings ended inside a token (e.g. "et"), whose id is kept whole


def test_hf_stop_cuts_the_very_samples_drawn_without_it(tiny_model_dir, tokenizer):
    # one sample per prompt: a prompt's generator draws for its rows still decoding, so with n > 1 a sibling
    # that stops early changes the draws of the others (as EOS does)
    prompts = [tokenizer(f"What is {a} * {a + 3}?")["input_ids"] for a in range(6)]
    with build_engine("hf", tiny_model_dir) as hf:
        free = hf.generate(prompts, n=1, max_new_tokens=30, seed=5)
        stopped = hf.generate(prompts, n=1, max_new_tokens=30, seed=5, stop=["e", "7"])
    assert any(group[0].stop_reason for group in stopped)
    for free_group, stopped_group in zip(free, stopped, strict=True):
        for whole, cut in zip(free_group, stopped_group, strict=True):
            assert whole.token_ids[: len(cut.token_ids)] == cut.token_ids
            assert whole.logprobs[: len(cut.logprobs)] == pytest.approx(cut.logprobs)


def test_per_prompt_token_limits(engine, prompts):
    groups = engine.generate(prompts, n=2, max_new_tokens=[3, 9], temperature=1.0, seed=1)
    assert all(len(c.token_ids) <= 3 for c in groups[0]) and all(len(c.token_ids) <= 9 for c in groups[1])
    assert any(len(c.token_ids) > 3 for c in groups[1])
    with pytest.raises(ValueError, match="one per prompt"):
        engine.generate(prompts, n=1, max_new_tokens=[3])


# ---------------------------------------------------------------------------------------------------------------
# Trajectories: token in, token out


class Recorder:
    """Passes generate calls to an engine and keeps what it sampled, by the exact prompt ids it was given."""

    def __init__(self, engine):
        self.engine = engine
        self.max_model_len = engine.max_model_len
        self.sampled: dict[tuple[int, ...], list[Completion]] = defaultdict(list)
        self.calls = 0

    def generate(self, prompt_token_ids, **sampling):
        groups = self.engine.generate(prompt_token_ids, **sampling)
        self.calls += 1
        for prompt, group in zip(prompt_token_ids, groups, strict=True):
            self.sampled[tuple(prompt)].extend(group)
        return groups


def runs(mask: list[int]) -> list[tuple[int, int, int]]:
    """(value, start, end) of each run of equal mask values."""
    found, start = [], 0
    for position in range(1, len(mask) + 1):
        if position == len(mask) or mask[position] != mask[start]:
            found.append((mask[start], start, position))
            start = position
    return found


def assert_is_observation(text: str, shown: str, tags, cut: bool) -> None:
    """``text`` (decoded observation ids) is ``<output> shown </output>``, or that with the body cut to the
    token cap (a head of it, then the note); ``cut`` by the budget, a beginning of one of those."""
    whole = f"{tags.observation_start}{shown}{tags.observation_end}"
    if text == whole or (cut and whole.startswith(text)):
        return
    assert text.startswith(tags.observation_start), text
    body = text[len(tags.observation_start):]
    tail = tags.truncation_note + tags.observation_end
    # the body's head is a head of what was shown (a cut may split a character), the rest the note and end
    splits = [k for k in range(len(body) + 1) if shown.startswith(body[:k].rstrip("\ufffd"))
              and (tail.startswith(body[k:]) if cut else body[k:] == tail)]
    assert splits, (text, shown)


# Markers a random tiny model writes often, so its trajectories have many turns (the real format is
# <code>...</code>; a random model never writes it). Its "code" is gibberish: every call is a tool error.
FREQUENT = {"call_start": " ", "call_end": "e"}


def tool_rollout(engine, tokenizer, **settings):
    from rlvr.rollout.tools import ToolFormat, ToolRollout

    config = ToolsConfig(name="python", **{"max_tool_calls": 3, "max_observation_tokens": 12, "time_limit": 2.0, **settings})
    return ToolRollout(engine, tokenizer, config, tool_format=ToolFormat(**FREQUENT))


@needs_repl
def test_trajectory_ids_are_the_sampled_ids_and_the_observation_ids(engine, tokenizer, prompts, reference_model):
    from rlvr.rollout.tools import ToolFormat

    tags = ToolFormat(**FREQUENT)
    recorder = Recorder(engine)
    rollout = tool_rollout(recorder, tokenizer)
    budget = 60
    groups = rollout.generate(prompts, n=4, max_new_tokens=budget, seed=7)
    multi_turn = 0
    for prompt, group in zip(prompts, groups, strict=True):
        for completion in group:
            ids, mask, use = completion.token_ids, completion.loss_mask, completion.tool_use
            assert len(ids) == len(mask) == len(completion.logprobs) <= budget
            model_runs = [(start, end) for value, start, end in runs(mask) if value == 1]
            observation_runs = [(start, end) for value, start, end in runs(mask) if value == 0]
            assert use.turns == len(model_runs) and use.calls == len(observation_runs) == len(use.observations)
            multi_turn += use.turns > 1
            for turn, (start, end) in enumerate(model_runs):
                # byte for byte what the engine sampled for exactly this prefix (turn 0: the prompt, n samples)
                drawn = recorder.sampled[tuple(prompt + ids[:start])]
                match = [c for c in drawn if c.token_ids == ids[start:end]]
                assert match, f"turn {turn}: ids not among the engine's samples for that prefix"
                assert completion.logprobs[start:end] == match[0].logprobs
                if end < len(ids):  # an observation follows only a turn that closed a call
                    assert match[0].stop_reason == tags.call_end
            for (start, end), shown in zip(observation_runs, use.observations, strict=True):
                assert all(value == 0.0 for value in completion.logprobs[start:end])
                assert_is_observation(tokenizer.decode(ids[start:end]), shown, tags, cut=end == len(ids) == budget)
            # the verifier reads the model's own text: its turns decoded, nothing of the observations
            assert completion.text == "".join(tokenizer.decode(ids[s:e], skip_special_tokens=True) for s, e in model_runs)
            # trainer and sampler log-probs line up on the model's tokens, with observations in the context
            trainer = forward_logprobs(reference_model, prompt, ids)
            model_positions = torch.tensor(mask, dtype=torch.bool)
            torch.testing.assert_close(torch.tensor(completion.logprobs)[model_positions], trainer[model_positions],
                                       atol=2e-3, rtol=1e-3)
    assert multi_turn > 0 and recorder.calls > 1


@needs_repl
def test_a_trajectory_that_runs_out_of_budget_mid_call_ends_cleanly(engine, tokenizer, prompts):
    rollout = tool_rollout(engine, tokenizer, max_observation_tokens=64)
    budget = 24
    groups = rollout.generate(prompts, n=8, max_new_tokens=budget, seed=11)
    cut_in_observation = 0
    for group in groups:
        for completion in group:
            assert len(completion.token_ids) <= budget
            if completion.loss_mask and completion.loss_mask[-1] == 0:  # ended inside a tool's output
                cut_in_observation += 1
                assert completion.finish_reason == "length" and len(completion.token_ids) == budget
    assert cut_in_observation > 0


@needs_repl
def test_no_tool_calls_past_the_limit(engine, tokenizer, prompts):
    groups = tool_rollout(engine, tokenizer, max_tool_calls=1).generate(prompts, n=4, max_new_tokens=80, seed=2)
    uses = [c.tool_use for group in groups for c in group]
    assert max(use.calls for use in uses) == 1 and max(use.turns for use in uses) == 2


def test_the_host_only_slices_the_code_out_of_the_text():
    from rlvr.rollout.tools import TAGS

    assert TAGS.find_call("Let me compute. <code>\nprint(2 + 2)\n</code> and more") == "print(2 + 2)"
    assert TAGS.find_call("<code>a = 1</code> then <code>b = 2</code>") == "a = 1"
    assert TAGS.find_call("no opening tag </code>") is None
    assert TAGS.find_call("<code>__import__('os').system('touch /tmp/pwned')") is None  # not closed: not a call


# ---------------------------------------------------------------------------------------------------------------
# The loss: model tokens only


def test_the_update_gradient_counts_model_tokens_only(tiny_model_dir):
    """With a loss mask, the trainer's gradient is that of the token-mean loss over the model's tokens,
    written out here: the observation tokens are context, not targets."""
    from transformers import AutoModelForCausalLM

    from rlvr import config
    from rlvr.train_config import TrainConfig
    from rlvr.update import TrainBatch, update_policy

    prompt, response, mask = [5, 6, 7], [20, 21, 40, 41, 42, 22, 23], [1, 1, 0, 0, 0, 1, 1]
    cfg = config.load(TrainConfig, None, ["optim.mini_batch_size=1", "optim.micro_batch_size=1", "optim.max_grad_norm=1e9"])

    def fresh():
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        return model, torch.optim.SGD(model.parameters(), lr=0.0)

    model, optimizer = fresh()
    batch = TrainBatch([prompt], [response], torch.tensor([1.0]), torch.ones(1), sampler_logprobs=[[0.0] * len(response)],
                       loss_masks=[mask])
    update_policy(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0), batch, cfg, pad_id=0,
                  generator=torch.Generator().manual_seed(0))
    trainer = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    expected_model, _ = fresh()
    logits = expected_model(torch.tensor([prompt + response])).logits[0].float()
    logprobs = torch.log_softmax(logits, -1)[[len(prompt) + j - 1 for j in range(len(response))], response]
    # on-policy, ratio 1: the clipped objective's gradient is -A * mean over model tokens of grad log p
    loss = -(logprobs * torch.tensor(mask, dtype=torch.float32)).sum() / sum(mask)
    loss.backward()
    expected = torch.cat([p.grad.flatten() for p in expected_model.parameters() if p.grad is not None])
    torch.testing.assert_close(trainer, expected, atol=1e-6, rtol=1e-4)


def test_tool_metrics():
    from rlvr.rollout.base import ToolUse
    from rlvr.rollout.tools import tool_metrics

    uses = [ToolUse(calls=2, errors=1, timeouts=1, observation_tokens=10, turns=3), ToolUse(turns=1),
            ToolUse(calls=1, observation_tokens=4, turns=2), ToolUse(turns=1)]
    metrics = tool_metrics(uses, [True, True, False, False])
    assert metrics["tools/calls_per_sample"] == 0.75 and metrics["tools/errors_per_sample"] == 0.25
    assert metrics["tools/timeouts_per_sample"] == 0.25 and metrics["tools/observation_tokens_per_sample"] == 3.5
    assert metrics["tools/turns_per_sample"] == 1.75 and metrics["tools/used_fraction"] == 0.5
    assert metrics["accuracy/with_tool"] == 0.5 and metrics["accuracy/without_tool"] == 0.5
    assert metrics["accuracy/through_tool"] == 0.25
    assert tool_metrics([None, None], [True, False]) == {}


# ---------------------------------------------------------------------------------------------------------------
# Training and evaluation with the real format, on a tiny model warm-started to use the tool


@pytest.fixture(scope="module")
def tool_model_dir(tmp_path_factory):
    """The tool demo's first two stages, small: a tiny model SFT'd on transcripts that call the tool."""
    from rlvr.tool_demo import ToolDemoConfig, build_model, warm_start

    root = tmp_path_factory.mktemp("tool-model")
    cfg = ToolDemoConfig()
    cfg.problems.options = {"steps": 1, "digits": 2, "ops": "*"}
    cfg.problems.sft_examples = 600
    cfg.sft.steps, cfg.sft.batch_size, cfg.sft.tool_fraction = 120, 16, 0.7
    build_model(cfg, root / "init")
    warm_start(cfg, root / "init", root / "base")
    return root / "base"


@pytest.mark.slow
@needs_repl
@pytest.mark.parametrize("engine_name", ["hf", "vllm"])
def test_training_steps_with_the_tool(tool_model_dir, tmp_path, engine_name):
    from rlvr import config
    from rlvr.tracking import read_metrics
    from rlvr.train_config import TrainConfig
    from rlvr.trainer import train

    cfg = config.load(TrainConfig, None, [
        f"model.path={tool_model_dir}", "data.task=arithmetic", "data.template=tool-short", f"rollout.engine={engine_name}",
        "rollout.group_size=4", "rollout.max_new_tokens=48", "rollout.tools.name=python", "rollout.tools.max_tool_calls=2",
        "rollout.gpu_memory_utilization=0.05", "optim.steps=2", "optim.prompts_per_step=4", "optim.mini_batch_size=16",
        "optim.micro_batch_size=16", "optim.lr=1e-4", "algorithm.dynamic_sampling=false", f"checkpoint.output_dir={tmp_path}",
    ])
    cfg.data.options = {"steps": 1, "digits": 2, "ops": "*"}
    final = train(cfg)
    assert (final / "config.json").exists()
    history = read_metrics(tmp_path)
    assert len(history) == 2
    assert sum(row["tools/calls_per_sample"] for row in history) > 0  # the warm-started model calls the tool
    assert all(row["tools/turns_per_sample"] >= 1 for row in history)
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in history)


@pytest.mark.slow
@needs_repl
def test_rlvr_eval_with_tools(tool_model_dir, tmp_path):
    from rlvr.cli import main

    out = tmp_path / "eval"
    assert main(["eval", "--model", str(tool_model_dir), "--tasks", "arithmetic", "--limit", "8", "--n", "2",
                 "--temperature", "1.0", "--max-tokens", "48", "--template", "tool-short", "--engine", "hf", "--tools", "python",
                 "--option", "steps=1", "--option", "digits=2", "--option", "ops='*'", "--output", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["tools"]["name"] == "python"
    tools = results["tasks"]["arithmetic"]["tools"]
    assert tools["tools/calls_per_sample"] > 0
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    called = [row for row in rows if row["tool_use"]["calls"]]
    assert called and all(row["tool_use"]["observations"] for row in called)
    # a call's output is what Python prints for the model's own code, e.g. the product it asked for
    assert any(obs.strip().isdigit() for row in called for obs in row["tool_use"]["observations"])


def test_the_tool_demo_never_trains_on_a_tool_output():
    import random

    import tasks
    from rlvr.rollout.tools import TAGS
    from rlvr.tool_demo import sft_rows

    examples = tasks.load("arithmetic", limit=40, digits=2, steps=1, ops="*")
    rows = sft_rows(examples, 0.5, random.Random(0))
    answers = [row for row in rows if "transcript" in row]
    assert answers and len(rows) > len(examples)
    for row in rows:
        assert TAGS.observation_start not in row["solution"]  # the output is never a target
    for row in answers:  # the output is context, and the target boxes it
        assert f"{TAGS.observation_start}{row['answer']}{TAGS.observation_end}" in row["transcript"]
        assert row["solution"] == f"The answer is \\boxed{{{row['answer']}}}."
        assert tasks.render_prompt(tasks.Example("x", row["problem"], row["answer"], "math", {"transcript": row["transcript"]}),
                                   None, "tool-short").endswith(row["transcript"])


@needs_repl
def test_the_tool_demo_tokenizer_gives_sft_the_ids_a_rollout_builds(tmp_path):
    """SFT encodes an answer row's context (prompt, call, output) as one text; a rollout concatenates the ids of
    the prompt, of the sampled call and of the observation, each encoded on its own. The demo's tokenizer keeps
    the markers whole, so no merge crosses a seam (``:<`` did) and both give the same ids."""
    import random
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    import tasks
    from rlvr.rollout.tools import ToolRollout
    from rlvr.tool_demo import TEMPLATE, ToolDemoConfig, build_model, call_text, sft_rows

    cfg = ToolDemoConfig()
    cfg.problems.sft_examples = 200
    build_model(cfg, tmp_path / "init")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "init")
    rollout = ToolRollout(SimpleNamespace(max_model_len=1024), tokenizer, cfg.tools)
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    for marker in ("<code>", "</code>", "<output>", "</output>"):
        assert len(encode(marker)) == 1 and tokenizer.decode(encode(marker), skip_special_tokens=True) == marker
    examples = tasks.load("arithmetic", split="test", limit=20, seed=1, **cfg.problems.options)
    rows = sft_rows(examples, 1.0, random.Random(0))[: 2 * len(examples)]  # a call and an answer row each
    for example, row in zip(examples, rows[1::2], strict=True):
        sft_context = tasks.encode_prompt(tasks.Example("x", row["problem"], row["answer"], "math",
                                                        {"transcript": row["transcript"]}), tokenizer, TEMPLATE)
        first, second = map(int, example.metadata["expression"].split(" * "))
        printed = str(first * second)  # what the interpreter prints for the call, its trailing newline dropped
        rollout_context = (tasks.encode_prompt(example, tokenizer, TEMPLATE) + encode(call_text(example))
                           + rollout.observation_ids(printed, room=64))
        assert sft_context == rollout_context


def test_the_tool_demo_repeats_answers_of_rarer_output_lengths():
    import random

    import tasks
    from rlvr.tool_demo import sft_rows

    examples = tasks.load("arithmetic", limit=400, seed=0, digits=2, steps=1, ops="*")
    short = sum(len(example.reference) == 3 for example in examples)
    assert 0 < short < len(examples) / 3  # 18% of products of two 2-digit numbers have 3 digits
    rows = sft_rows(examples, 1.0, random.Random(0))
    answers = [row for row in rows if "transcript" in row]
    calls = [row for row in rows if "transcript" not in row]
    assert len(calls) == len(examples)  # calls and guesses are not repeated
    counts = {length: sum(len(row["answer"]) == length for row in answers) for length in (3, 4)}
    assert counts[4] == len(examples) - short
    assert counts[3] == short * round((len(examples) - short) / short)
    assert 0.8 < counts[3] / counts[4] < 1.25
