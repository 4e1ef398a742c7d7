"""Every shipped recipe loads, passes the pre-flight checks and dry-runs with the real data files
(the model swapped for the tiny local one: no hub download here)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import tasks
from rlvr import config, preflight
from rlvr.models import named_models
from rlvr.train_config import TrainConfig

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


def test_there_are_recipes_for_math_gsm8k_and_code():
    assert {p.name for p in CONFIGS} >= {"dapo_math_1p5b.yaml", "gsm8k_grpo.yaml", "code_grpo.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_recipe_values_are_valid(path):
    cfg = config.load(TrainConfig, path)
    assert preflight.config_problems(cfg) == []
    # a hub id (a real model for a GPU machine) or a named model (a real model that runs on the CPU)
    assert cfg.model.path.count("/") == 1 or cfg.model.path in named_models


def local_data(cfg: TrainConfig, shared_data: Path, tmp_path: Path) -> list[str]:
    """Overrides that point a recipe's task at a local copy of its data (none for a generator)."""
    if tasks.get(cfg.data.task).source.startswith("generated"):
        return []
    files = {"gsm8k": shared_data / "gsm8k_train.jsonl", "mbpp": shared_data / "mbpp.jsonl"}
    if cfg.data.task in files:
        return [f"data.path={files[cfg.data.task]}"]
    # DAPO-Math-17k is not in ../shared/data: a small file in its published column layout.
    rows = [{"prompt": [{"role": "user", "content": f"Solve: {i} + {i} = ?"}], "reward_model": {"ground_truth": str(2 * i)}}
            for i in range(1, 6)]
    path = tmp_path / "dapo.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return [f"data.path={path}"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_recipe_dry_run(path, tiny_chat_model_dir, shared_data, tmp_path):
    cfg = config.load(TrainConfig, path)
    overrides = [f"model.path={tiny_chat_model_dir}", *local_data(cfg, shared_data, tmp_path), f"checkpoint.output_dir={tmp_path / 'run'}"]
    result = subprocess.run([sys.executable, "-m", "rlvr", "train", "--config", str(path), "--dry-run", *overrides],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dry run: config, model, data and verifiers are valid" in result.stdout
    plan = json.loads(result.stdout[result.stdout.index("{") : result.stdout.rindex("}") + 1])
    assert plan["task"] == cfg.data.task and plan["prompts"] > 0
    assert not (tmp_path / "run").exists()  # a dry run trains nothing and writes nothing


def test_a_chat_template_on_a_base_tokenizer_is_a_preflight_problem(tiny_model_dir, shared_data):
    cfg = config.load(TrainConfig, None, [f"model.path={tiny_model_dir}", "data.template=chat", "rollout.engine=hf",
                                          f"data.path={shared_data / 'gsm8k_test.jsonl'}", "data.limit=3"])
    problems = preflight.environment_problems(cfg)
    assert len(problems) == 1 and problems[0].startswith("data.template: template 'chat' needs a tokenizer with a chat template")
