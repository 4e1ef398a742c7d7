"""`rlvr eval`: metric selection, scoring of verified samples, resumption, files and the command line.

Expected numbers are computed by hand in the comments. The end-to-end runs sample from the tiny untrained
model with the real `hf` engine and the real math verifier; that model answers nothing correctly, so the
known-correct cases come from hand-written completions that go through the same verifier and scorer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import tasks
import verifiers as verifier_module
from rlvr import evaluation
from rlvr.cli import main
from rlvr.rollout import Completion
from rlvr.rollout.hf_engine import HFEngine
from rlvr.sampling import Rewarder

N = 2
LIMIT = 2
MAX_TOKENS = 16


@pytest.fixture(scope="module")
def rewarder() -> Iterator[Rewarder]:
    with Rewarder(evaluation.VERIFIER_OPTIONS, workers=1) as shared:
        yield shared


def _data_paths(shared_data: Path) -> dict[str, Path]:
    return {"gsm8k": shared_data / "gsm8k_test.jsonl", "aime24": shared_data / "aime2024.jsonl"}


def _run(model: Path, shared_data: Path, output: Path, **overrides) -> dict:
    settings = dict(
        n=N, temperature=1.0, top_p=1.0, max_tokens=MAX_TOKENS, template="auto", seed=3, limit=LIMIT,
        data_path=_data_paths(shared_data), output_dir=output, engine="hf", problems_per_batch=1,
    )  # fmt: skip
    settings.update(overrides)
    return evaluation.evaluate(model, ["gsm8k", "aime24"], **settings)


def _rows(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / evaluation.SAMPLES_FILE).read_text().splitlines()]


@pytest.fixture(scope="module")
def evaluated(tiny_model_dir: Path, shared_data: Path, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("eval")
    _run(tiny_model_dir, shared_data, output)
    return output


# --------------------------------------------------------------------------------------------------
# Which k


def test_default_ks_are_powers_of_two_up_to_n_plus_n():
    assert evaluation.default_ks(16) == [1, 2, 4, 8, 16]
    assert evaluation.default_ks(6) == [1, 2, 4, 6]
    assert evaluation.default_ks(1) == [1]


def test_k_above_n_is_an_error_that_says_what_to_do():
    assert evaluation.check_ks([4, 1, 4], 4) == [1, 4]
    with pytest.raises(evaluation.EvaluationError, match=r"k=8 is not within 1..n=4.*raise --n to 8"):
        evaluation.check_ks([1, 8], 4)


# --------------------------------------------------------------------------------------------------
# Scoring


def _completion(text: str, length: int, finish_reason: str = "stop") -> Completion:
    return Completion(token_ids=list(range(length)), logprobs=[0.0] * length, text=text, finish_reason=finish_reason)


def test_hand_written_completions_are_verified_and_scored(shared_data, rewarder):
    first, second = tasks.load("gsm8k", path=shared_data / "gsm8k_test.jsonl", limit=2)
    assert (first.reference, second.reference) == ("18", "3")
    texts = [
        "so \\boxed{18}",  # correct, answer class A
        "The answer is 17",  # wrong, class B
        "\\boxed{18} or maybe \\boxed{20}",  # the last box counts: wrong, class C
        "\\boxed{18.0}",  # correct, class A (equivalent to 18)
        "no idea",  # no answer, no vote
        "Answer: 17",  # wrong, class B
    ]
    groups = [
        [_completion(text, length, "length" if length == 5 else "stop") for length, text in enumerate(texts, start=1)],
        [_completion("\\boxed{3}", 10) for _ in texts],
    ]
    verdicts = [rewarder.score([c.text for c in group], [example] * len(group)) for example, group in zip([first, second], groups)]
    rows = evaluation.sample_rows("gsm8k", [first, second], groups, verdicts)
    assert [row["correct"] for row in rows[:6]] == [True, False, False, True, False, False]
    assert [row["extracted"] for row in rows[:6]] == ["18", "17", "20", "18.0", None, "17"]
    assert rows[4]["finish_reason"] == "length" and rows[4]["reason"] == "no answer"

    equivalent = evaluation.answer_equivalence(rewarder.verifier("math"))
    result = evaluation.score_task(rows, 6, [1, 2, 4, 6], equivalent)
    # problem 1: c=2 of n=6; problem 2: all 6 correct
    assert result["num_problems"] == 2 and result["n"] == 6
    assert result["pass@1"] == pytest.approx((2 / 6 + 1) / 2)
    assert result["pass@2"] == pytest.approx((1 - 6 / 15 + 1) / 2)  # 1 - C(4,2)/C(6,2)
    assert result["pass@4"] == pytest.approx((1 - 1 / 15 + 1) / 2)  # 1 - C(4,4)/C(6,4)
    assert result["pass@6"] == 1.0
    assert result["avg@6"] == pytest.approx(2 / 3)
    # maj@6: A (samples 0, 3) ties B (1, 5) at two votes; A shows up first and is correct
    assert result["maj@6"] == 1.0
    # maj@2 over the 15 pairs of problem 1: A wins (0,1..5), (3,4), (3,5); 7 of 15
    assert result["maj@2"] == pytest.approx((7 / 15 + 1) / 2)
    assert result["maj@1"] == pytest.approx((2 / 6 + 1) / 2)
    assert result["mean_response_length"] == pytest.approx((21 + 60) / 12)
    assert result["truncation_rate"] == pytest.approx(1 / 12)
    assert result["verdicts"] == {"correct": 8, "wrong": 3, "no answer": 1}
    assert result["per_problem"]["ids"] == ["gsm8k-test-0", "gsm8k-test-1"]
    assert result["per_problem"]["pass@1"] == pytest.approx([1 / 3, 1.0])
    # bootstrap of two problems: resampled means 1/3, 2/3, 1 with chances 1/4, 1/2, 1/4
    assert result["ci95"]["pass@1"] == pytest.approx([1 / 3, 1.0])
    assert result["ci95"]["pass@6"] == [1.0, 1.0]

    # grouped by string equality instead, B (17, twice) outvotes "18" and "18.0": maj@6 of problem 1 is 0
    assert evaluation.score_task(rows, 6, [6])["maj@6"] == pytest.approx(0.5)


def test_strict_and_lenient_scores_come_from_the_same_samples(shared_data, rewarder):
    (example,) = tasks.load("gsm8k", path=shared_data / "gsm8k_test.jsonl", limit=1)
    assert example.reference == "18"
    # lenient reads all four answers; strict only the box and the final-answer statement
    texts = ["so \\boxed{18}", "The answer is 18", "18", "Adding up: 9 + 9 = 18"]
    group = [_completion(text, 3) for text in texts]
    strict = verifier_module.get("math", **evaluation.STRICT_VERIFIER_OPTIONS)
    try:
        rows = evaluation.sample_rows("gsm8k", [example], [group], [rewarder.score(texts, [example] * 4)],
                                      [strict.verify_batch(texts, ["18"] * 4)])
    finally:
        strict.close()
    assert [row["correct"] for row in rows] == [True, True, True, True]
    assert [row["correct_strict"] for row in rows] == [True, True, False, False]
    assert [row["reason_strict"] for row in rows] == ["correct", "correct", "no answer", "no answer"]
    lenient = evaluation.score_task(rows, 4, [1, 4])
    strict_result = evaluation.score_task(rows, 4, [1, 4], suffix="_strict")
    assert (lenient["pass@1"], strict_result["pass@1"]) == (1.0, 0.5)
    # pass@4 strict: 1 - C(2,4)/C(4,4) = 1; maj@4 strict: "18" has the two votes
    assert strict_result["pass@4"] == 1.0 and strict_result["maj@4"] == 1.0
    assert strict_result["verdicts"] == {"correct": 2, "no answer": 2}
    summary = evaluation.format_summary({"settings": {"model": "m", "n": 4, "temperature": 1, "top_p": 1,
                                                      "max_tokens": 3, "template": "chat", "seed": 0, "engine": "hf"},
                                         "tasks": {"gsm8k": {**lenient, "extraction": "lenient",
                                                             "strict": strict_result}}})  # fmt: skip
    assert "lenient %" in summary and "strict %" in summary
    pass_line = next(line.split() for line in summary.splitlines() if line.split()[:1] == ["pass@1"])
    assert pass_line == ["pass@1", "100.0", "[100.0,", "100.0]", "50.0", "[50.0,", "50.0]"]


def test_scoring_refuses_problems_with_missing_samples():
    rows = [{"task": "t", "problem_id": "p", "sample": 0, "correct": True, "extracted": "1", "reason": "correct",
             "length": 1, "finish_reason": "stop"}]  # fmt: skip
    with pytest.raises(evaluation.EvaluationError, match="problem 'p' has 1 samples, expected n=2"):
        evaluation.score_task(rows, 2, [1])


def test_pending_batches_skip_finished_problems_and_start_at_batch_boundaries():
    examples = [tasks.Example(id=str(i), problem="", reference="", verifier="math") for i in range(7)]
    batches = evaluation._pending_batches(examples, {"1", "5"}, 3)
    assert [(start, [e.id for e in batch]) for start, batch in batches] == [
        (0, ["0"]),
        (2, ["2"]),
        (3, ["3", "4"]),
        (6, ["6"]),
    ]


def _result_with(per_problem: dict[str, list[float]], ids: list[str]) -> dict:
    metrics = {name: sum(values) / len(values) for name, values in per_problem.items()}
    return {
        "complete": True,
        "settings": {},
        "tasks": {"aime24": {**metrics, "ci95": {name: [0, 1] for name in per_problem},
                             "per_problem": {"ids": ids, **per_problem}}},
    }  # fmt: skip


def test_compare_pairs_the_common_problems():
    a = _result_with({"pass@1": [0.0, 0.0, 0.5], "avg@4": [0.0, 0.25, 1.0]}, ["p1", "p2", "p3"])
    b = _result_with({"pass@1": [1.0, 1.0, 0.0], "avg@4": [0.25, 1.0, 0.0]}, ["p2", "p3", "p4"])
    rows = {row["metric"]: row for row in evaluation.compare(a, b)}
    # common problems p2, p3: pass@1 A = (0, 0.5), B = (1, 1); differences (1, 0.5), every resample > 0
    assert rows["pass@1"]["problems"] == 2
    assert (rows["pass@1"]["a"], rows["pass@1"]["b"]) == (0.25, 1.0)
    assert rows["pass@1"]["difference"] == 0.75
    assert rows["pass@1"]["ci95"] == [0.5, 1.0] and rows["pass@1"]["significant"]
    # avg@4: A = (0.25, 1.0), B = (0.25, 1.0): no difference at all
    assert rows["avg@4"]["difference"] == 0.0 and rows["avg@4"]["ci95"] == [0.0, 0.0]
    assert not rows["avg@4"]["significant"]
    disjoint = _result_with({"pass@1": [1.0]}, ["p9"])
    with pytest.raises(evaluation.EvaluationError, match="share no problem ids"):
        evaluation.compare(a, disjoint)


# --------------------------------------------------------------------------------------------------
# End to end on the tiny model (hf engine)


def test_evaluate_writes_samples_results_and_plot(evaluated: Path, tiny_model_dir: Path):
    rows = _rows(evaluated)
    assert len(rows) == 2 * LIMIT * N
    assert {(row["task"], row["problem_id"]) for row in rows} == {
        ("gsm8k", "gsm8k-test-0"), ("gsm8k", "gsm8k-test-1"), ("aime24", "2024-I-1"), ("aime24", "2024-I-2"),
    }  # fmt: skip
    for row in rows:
        assert set(row) == {"task", "problem_id", "sample", "completion", "extracted", "correct", "reason",
                            "length", "finish_reason", "correct_strict", "extracted_strict", "reason_strict"}  # fmt: skip
        assert row["sample"] in range(N) and 1 <= row["length"] <= MAX_TOKENS
        assert row["finish_reason"] in ("stop", "length")
        assert (row["finish_reason"] == "length") == (row["length"] == MAX_TOKENS)

    results = json.loads((evaluated / evaluation.RESULTS_FILE).read_text())
    assert results["complete"] is True
    settings = results["settings"]
    assert settings["model"] == str(tiny_model_dir.resolve())
    assert settings["verifier"] == {"on_multiple": "last", "extraction": "lenient"}
    assert (settings["n"], settings["ks"], settings["temperature"], settings["seed"]) == (N, [1, 2], 1.0, 3)
    assert set(settings["versions"]) == {"rlvr", "torch", "transformers", "vllm", "math-verify"}
    assert settings["versions"]["torch"] is not None
    for task in ("gsm8k", "aime24"):
        metrics = results["tasks"][task]
        task_rows = [row for row in rows if row["task"] == task]
        assert metrics["num_problems"] == LIMIT and metrics["n"] == N
        assert metrics["extraction"] == "lenient"
        assert set(metrics["ci95"]) == set(metrics["strict"]["ci95"]) == {"pass@1", "pass@2", "avg@2", "maj@1", "maj@2"}
        assert metrics["strict"]["avg@2"] == sum(row["correct_strict"] for row in task_rows) / len(task_rows)
        for name, (low, high) in metrics["ci95"].items():
            assert 0.0 <= low <= metrics[name] <= high <= 1.0
        assert metrics["avg@2"] == sum(row["correct"] for row in task_rows) / len(task_rows)
        assert metrics["mean_response_length"] == sum(row["length"] for row in task_rows) / len(task_rows)
        truncated = sum(row["finish_reason"] == "length" for row in task_rows)
        assert metrics["truncation_rate"] == truncated / len(task_rows)
    assert (evaluated / evaluation.PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_samples_only_unfinished_problems_and_matches_an_uninterrupted_run(
    evaluated: Path, tiny_model_dir: Path, shared_data: Path, tmp_path: Path, monkeypatch
):
    # an interrupted run: the first problem of each task finished, a row of the second and half a line written
    first_rows = _rows(evaluated)
    kept = [row for row in first_rows if row["problem_id"] in ("gsm8k-test-0", "2024-I-1")]
    partial = next(row for row in first_rows if row["problem_id"] == "gsm8k-test-1")
    (tmp_path / evaluation.SAMPLES_FILE).write_text(
        "".join(json.dumps(row) + "\n" for row in [*kept, partial]) + '{"task": "gsm8k", "probl'
    )
    (tmp_path / evaluation.RESULTS_FILE).write_text((evaluated / evaluation.RESULTS_FILE).read_text())

    prompts_sampled = []
    original_generate = HFEngine.generate

    def counting_generate(self, prompt_token_ids, **kwargs):
        prompts_sampled.append(len(prompt_token_ids))
        return original_generate(self, prompt_token_ids, **kwargs)

    monkeypatch.setattr(HFEngine, "generate", counting_generate)
    resumed = _run(tiny_model_dir, shared_data, tmp_path)
    assert prompts_sampled == [1, 1]  # gsm8k-test-1 and 2024-I-2 only

    rows = _rows(tmp_path)
    key = lambda row: (row["task"], row["problem_id"], row["sample"])  # noqa: E731
    assert sorted(rows, key=key) == sorted(first_rows, key=key)  # same seed: the samples of the full run
    uninterrupted = json.loads((evaluated / evaluation.RESULTS_FILE).read_text())
    timeless = lambda tasks: {t: {k: v for k, v in m.items() if k != "sampling_seconds"} for t, m in tasks.items()}  # noqa: E731
    assert timeless(resumed["tasks"]) == timeless(uninterrupted["tasks"])

    # nothing left to sample: a third run only scores
    prompts_sampled.clear()
    _run(tiny_model_dir, shared_data, tmp_path)
    assert prompts_sampled == [] and len(_rows(tmp_path)) == len(first_rows)


def test_resume_with_other_sampling_settings_is_refused(evaluated: Path, tiny_model_dir: Path, shared_data: Path):
    with pytest.raises(evaluation.EvaluationError, match=r"other settings \(temperature: 1.0 -> 0.5\)"):
        _run(tiny_model_dir, shared_data, evaluated, temperature=0.5)


def test_evaluate_with_engine_serves_the_trainer(tiny_model_dir: Path, shared_data: Path, rewarder):
    from transformers import AutoTokenizer

    examples = {"aime24": tasks.load("aime24", path=shared_data / "aime2024.jsonl", limit=1)}
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    with HFEngine(str(tiny_model_dir), max_model_len=1024) as engine:
        results = evaluation.evaluate_with_engine(
            engine, tokenizer, examples, n=2, ks=[2], max_tokens=8, rewarder=rewarder
        )
    assert results["aime24"]["num_problems"] == 1 and "pass@2" in results["aime24"]
    logged = evaluation.logging_metrics(results)
    assert {"eval/aime24/pass@2", "eval/aime24/avg@2", "eval/aime24/maj@2", "eval/aime24/truncation_rate"} <= set(
        logged
    )
    assert "eval/aime24/n" not in logged


# --------------------------------------------------------------------------------------------------
# Command line


def test_cli_evaluates_and_prints_a_summary(tiny_model_dir: Path, shared_data: Path, tmp_path: Path, capsys):
    code = main([
        "eval", "--model", str(tiny_model_dir), "--tasks", "aime24", "--data-path", str(shared_data / "aime2024.jsonl"),
        "--limit", "1", "--n", "2", "--k", "1,2", "--max-tokens", "8", "--engine", "hf", "--output", str(tmp_path),
    ])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "aime24: 1 problems x 2 samples" in out
    assert "pass@2" in out and "maj@2" in out and "95% CI" in out
    assert json.loads((tmp_path / "results.json").read_text())["tasks"]["aime24"]["n"] == 2


def test_cli_passes_task_options_to_every_task_or_to_one(tiny_model_dir: Path, tmp_path: Path, capsys):
    code = main([
        "eval", "--model", str(tiny_model_dir), "--tasks", "arithmetic,linear", "--option", "digits=1",
        "--option", "arithmetic.steps=1", "--option", "arithmetic.ops=+", "--limit", "1", "--n", "1",
        "--max-tokens", "4", "--engine", "hf", "--output", str(tmp_path),
    ])  # fmt: skip
    assert code == 0
    settings = json.loads((tmp_path / "results.json").read_text())["settings"]
    assert settings["task_options"] == {"arithmetic": {"digits": 1, "steps": 1, "ops": "+"}, "linear": {"digits": 1}}
    assert {json.loads(line)["task"] for line in (tmp_path / "samples.jsonl").read_text().splitlines()} == {
        "arithmetic", "linear"}  # a misspelt knob reaching the generator is refused: see test_cli_user_errors


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--model", "/no/such/model", "--tasks", "aime24"], "model path '/no/such/model' does not exist"),
        (["--tasks", "aime2024"], "unknown task 'aime2024'. Did you mean 'aime24'?"),
        (["--tasks", "aime24", "--n", "4", "--k", "1,8"], "k=8 is not within 1..n=4"),
        (["--tasks", "aime24,gsm8k", "--data-path", "x.jsonl"], "give one per task as --data-path TASK=FILE"),
        (["--tasks", "arithmetic", "--option", "linear.digits=1"], "names task 'linear', which is not in --tasks"),
        (["--tasks", "arithmetic", "--option", "steps"], "--option must be KEY=VALUE or TASK.KEY=VALUE"),
        (["--tasks", "arithmetic", "--option", "step=1"], "task 'arithmetic' has no option 'step'"),
    ],
)
def test_cli_user_errors(arguments, message, tiny_model_dir: Path, tmp_path: Path, capsys):
    base = ["eval", "--model", str(tiny_model_dir), "--output", str(tmp_path), "--engine", "hf"]
    assert main(base + arguments) == 2
    assert message in capsys.readouterr().err


def test_cli_compare_prints_differences(evaluated: Path, tmp_path: Path, capsys):
    results = json.loads((evaluated / evaluation.RESULTS_FILE).read_text())
    directories = []
    for name, solved in (("a", 0.0), ("b", 1.0)):  # B solves every gsm8k problem, A none
        results["tasks"]["gsm8k"]["per_problem"]["avg@2"] = [solved] * LIMIT
        (tmp_path / name).mkdir()
        (tmp_path / name / evaluation.RESULTS_FILE).write_text(json.dumps(results))
        directories.append(str(tmp_path / name))

    assert main(["eval", "--compare", *directories]) == 0
    lines = capsys.readouterr().out.splitlines()
    avg_gsm8k = next(line.split() for line in lines if line.startswith("gsm8k") and "avg@2" in line)
    assert avg_gsm8k == ["gsm8k", "avg@2", "lenient", "2", "0.0", "100.0", "+100.0", "[+100.0,", "+100.0]", "yes"]
    strict_gsm8k = next(line.split() for line in lines if line.split()[:3] == ["gsm8k", "avg@2", "strict"])
    assert strict_gsm8k[6:] == ["+0.0", "[+0.0,", "+0.0]", "no"]  # only the lenient score was changed
    pass_aime = next(line.split() for line in lines if line.startswith("aime24") and "pass@1" in line)
    assert pass_aime[:4] == ["aime24", "pass@1", "lenient", "2"]
    assert pass_aime[6:] == ["+0.0", "[+0.0,", "+0.0]", "no"]  # the same samples on both sides
    assert main(["eval", "--compare", directories[0], str(tmp_path / "missing")]) == 2
    assert "missing/results.json' does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_vllm_samples_do_not_depend_on_batching(tiny_model_dir: Path, shared_data: Path, rewarder):
    """Every vLLM sample has its own seed (seed + position * n + j), so problems sampled one at a time (as a
    resumed run does) get the same completions as when sampled together."""
    from transformers import AutoTokenizer

    from rlvr.rollout import get

    examples = {"aime24": tasks.load("aime24", path=shared_data / "aime2024.jsonl", limit=4)}
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    runs = []
    with get("vllm")(str(tiny_model_dir), max_model_len=1024, dtype="float32", gpu_memory_utilization=0.1) as engine:
        for problems_per_batch in (1, 4):
            rows: list[dict] = []
            results = evaluation.evaluate_with_engine(
                engine, tokenizer, examples, n=3, max_tokens=24, temperature=1.0, seed=5,
                problems_per_batch=problems_per_batch, rewarder=rewarder, on_rows=rows.extend,
            )  # fmt: skip
            runs.append((rows, results))
    for _, results in runs:  # wall time differs between the two runs; every other number must not
        assert all(task_result.pop("sampling_seconds") >= 0 for task_result in results.values())
    (rows_one_by_one, results_one_by_one), (rows_together, results_together) = runs
    assert len(rows_together) == 4 * 3
    assert len({row["completion"] for row in rows_together}) > 1  # really sampled, not one repeated string
    assert rows_one_by_one == rows_together
    assert results_one_by_one == results_together
