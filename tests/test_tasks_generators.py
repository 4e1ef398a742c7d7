"""Procedural generators and prompt templates."""

from __future__ import annotations

import re

import pytest
import sympy
from sympy.parsing.sympy_parser import implicit_multiplication, parse_expr, standard_transformations

import tasks
from rlvr.registry import RegistryError
from tasks import Example


def test_generators_are_deterministic_by_seed_and_split():
    first = tasks.load("arithmetic", limit=20, seed=3)
    assert [(e.problem, e.reference) for e in first] == [
        (e.problem, e.reference) for e in tasks.load("arithmetic", limit=20, seed=3)
    ]
    assert [e.problem for e in tasks.load("arithmetic", limit=5, seed=3)] == [e.problem for e in first[:5]]
    assert [e.problem for e in tasks.load("arithmetic", limit=20, seed=4)] != [e.problem for e in first]
    test_split = tasks.load("arithmetic", split="test", limit=20, seed=3)
    assert [e.problem for e in test_split] != [e.problem for e in first]
    assert len(tasks.load("linear", limit=None)) == 1000  # the default count; any limit works
    assert len(tasks.load("linear", limit=5000)) == 5000


def test_arithmetic_answers_are_right_and_solutions_short():
    examples = tasks.load("arithmetic", limit=300, seed=0, steps=4)
    for example in examples:
        expression = re.fullmatch(r"What is ([\d+\-* ]+)\?", example.problem).group(1)
        assert example.reference == str(eval(expression))  # Python's own precedence, independent of ours
        solution = example.metadata["solution"]
        assert solution.endswith(f"\\boxed{{{example.reference}}}")
        assert solution.count(" = ") == 4  # one line per operation
        assert len(solution.split()) <= 30


def test_linear_answers_solve_the_equation():
    x = sympy.Symbol("x")
    transformations = (*standard_transformations, implicit_multiplication)
    for both_sides in (False, True):
        for example in tasks.load("linear", limit=80, seed=1, both_sides=both_sides, digits=2):
            left, right = re.fullmatch(r"Solve for x: (.+) = (.+)", example.problem).groups()
            equation = sympy.Eq(
                parse_expr(left, transformations=transformations), parse_expr(right, transformations=transformations)
            )
            assert sympy.solve(equation, x) == [int(example.reference)]
            assert example.metadata["solution"].endswith(f"\\boxed{{{example.reference}}}")
            assert len(example.metadata["solution"].split()) <= 30


def test_difficulty_knobs_change_the_problems():
    for steps in (1, 3, 6):
        for example in tasks.load("arithmetic", limit=50, steps=steps, digits=3):
            numbers = re.findall(r"\d+", example.problem)
            assert len(numbers) == steps + 1 and all(len(n) == 3 for n in numbers)
    only_sums = tasks.load("arithmetic", limit=50, ops="+")
    assert all("-" not in e.problem.replace("What is", "") and "*" not in e.problem for e in only_sums)
    one_side = tasks.load("linear", limit=50)
    assert all(e.problem.split("=")[1].strip().lstrip("-").isdigit() for e in one_side)
    both = tasks.load("linear", limit=50, both_sides=True)
    assert all("x" in e.problem.split("=")[1] for e in both)
    big = tasks.load("linear", limit=200, digits=3)
    assert max(abs(int(e.reference)) for e in big) >= 100


def test_generated_solutions_and_answers_verify():
    import verifiers

    checker = verifiers.get("math")
    examples = tasks.load("arithmetic", limit=50) + tasks.load("linear", limit=50, both_sides=True)
    verdicts = checker.verify_batch([e.metadata["solution"] for e in examples], [e.reference for e in examples])
    assert all(v.correct for v in verdicts)
    wrong = checker.verify(examples[0].metadata["solution"], str(int(examples[0].reference) + 1))
    assert not wrong.correct


def test_bad_knobs_are_named():
    with pytest.raises(tasks.TaskDataError, match=r"task 'linear' has no option 'steps'; its knobs: digits"):
        tasks.load("linear", steps=2)
    with pytest.raises(tasks.TaskDataError, match=r"arithmetic knob 'steps' must be in \[1, 20\], got 0"):
        tasks.load("arithmetic", steps=0)
    with pytest.raises(tasks.TaskDataError, match=r"arithmetic knob 'digits' should be int, got '2'"):
        tasks.load("arithmetic", digits="2")
    with pytest.raises(tasks.TaskDataError, match=r"'ops' must be a non-empty subset of '\+-\*', got '/'"):
        tasks.load("arithmetic", ops="/", limit=1)
    with pytest.raises(tasks.TaskDataError, match=r"generates its problems; it reads no file"):
        tasks.load("linear", path="x.jsonl")


# --- templates ------------------------------------------------------------------------------------------

MATH_EXAMPLE = Example(id="m1", problem="What is 2 + 3?", reference="5", verifier="math")
FUNCTION_EXAMPLE = Example(
    id="c1",
    problem="Return the sum of a list.",
    reference={"tests": [{"input": "[1, 2]", "output": "3", "testtype": "functional"}], "fn_name": "total"},
    verifier="code",
    metadata={"starter_code": "class Solution:\n    def total(self, nums):", "fn_name": "total"},
)
STDIN_EXAMPLE = Example(
    id="c2",
    problem="Read n and print n squared.",
    reference={"tests": [{"input": "3\n", "output": "9\n", "testtype": "stdin"}], "fn_name": None},
    verifier="code",
)


@pytest.fixture(scope="module")
def base_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def chat_tokenizer(tiny_chat_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_chat_model_dir)


def test_base_template_is_r1_zero_style(base_tokenizer):
    prompt = tasks.render_prompt(MATH_EXAMPLE, base_tokenizer, template="auto")
    assert prompt == tasks.render_prompt(MATH_EXAMPLE, None, template="base")
    assert prompt.startswith("A conversation between User and Assistant.")
    assert "<think> </think>" in prompt and "\\boxed{}" in prompt
    assert prompt.endswith("\nUser: What is 2 + 3?\nAssistant: <think>")


def test_chat_template_uses_the_tokenizers_template(chat_tokenizer, base_tokenizer):
    prompt = tasks.render_prompt(MATH_EXAMPLE, chat_tokenizer, template="auto")
    assert prompt == (
        "<|im_start|>user\nWhat is 2 + 3?\n\nPlease reason step by step, and put your final answer within "
        "\\boxed{}.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tasks.render_prompt(MATH_EXAMPLE, chat_tokenizer, template="chat") == prompt
    assert tasks.render_prompt(MATH_EXAMPLE, chat_tokenizer, template="base").endswith("Assistant: <think>")
    with pytest.raises(ValueError, match="template 'chat' needs a tokenizer with a chat template"):
        tasks.render_prompt(MATH_EXAMPLE, base_tokenizer, template="chat")


def test_code_template_asks_for_one_python_block(base_tokenizer, chat_tokenizer):
    prompt = tasks.render_prompt(FUNCTION_EXAMPLE, base_tokenizer)  # auto -> code for code tasks
    assert prompt == (
        "User: Return the sum of a list.\n\nStart from this code:\n```python\nclass Solution:\n"
        "    def total(self, nums):\n```\n\nWrite your solution as one fenced Python code block (```python ... ```) "
        "and nothing else after it.\nAssistant:"
    )
    stdin = tasks.render_prompt(STDIN_EXAMPLE, chat_tokenizer)
    assert stdin.startswith("<|im_start|>user\nRead n and print n squared.\n\nRead the input from standard input")
    assert stdin.endswith("<|im_end|>\n<|im_start|>assistant\n")
    named = Example(id="c3", problem="Add two numbers.", reference={}, verifier="code", metadata={"fn_name": "add"})
    assert "The function must be named `add`." in tasks.render_prompt(named, None, template="code")


def test_real_tasks_render_with_both_tokenizers(shared_data, base_tokenizer, chat_tokenizer):
    for task, file in [
        ("math500", "math500.jsonl"),
        ("livecodebench", "livecodebench_rllm.jsonl"),
        ("mbpp", "mbpp.jsonl"),
    ]:
        for example in tasks.load(task, path=shared_data / file, limit=3):
            for tokenizer in (base_tokenizer, chat_tokenizer):
                prompt = tasks.render_prompt(example, tokenizer)
                assert example.problem.strip() in prompt
                assert ("```python" in prompt) == (example.verifier == "code")


def test_unknown_template_is_named():
    assert tasks.available_templates() == ["auto", "base", "base-short", "chat", "code", "tool", "tool-fence", "tool-short"]
    with pytest.raises(RegistryError, match=r"unknown prompt template 'chatml'\. Did you mean 'chat'\?"):
        tasks.render_prompt(MATH_EXAMPLE, None, template="chatml")


def test_base_short_template_is_base_without_the_preamble():
    short = tasks.render_prompt(MATH_EXAMPLE, None, "base-short")
    assert short == f"User: {MATH_EXAMPLE.problem.strip()}\nAssistant: <think>"
    assert tasks.render_prompt(MATH_EXAMPLE, None, "base").endswith("\n" + short)
