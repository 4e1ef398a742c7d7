"""``rlvr demo``: the whole method on a laptop CPU, no download, in minutes.

1. build a tiny model and tokenizer from scratch (``DIR/init``);
2. warm-start it with SFT on generated problems with short worked solutions (``DIR/base``);
3. evaluate it on held-out generated problems (``DIR/eval-base``);
4. train it with DAPO on verifiable rewards (``DIR/rl``, final weights in ``DIR/final``);
5. evaluate ``DIR/final`` the same way (``DIR/eval-final``) and write ``DIR/report.md`` with the
   before/after table and plots.

Each stage leaves a marker when it is done: after Ctrl-C, running the same command again skips the
finished stages and the RL stage resumes from its last checkpoint.

``rlvr demo --model smollm2-135m-instruct`` (:func:`run_model_demo`) runs a real pretrained model through a
recipe of ``configs/`` instead, with its control: evaluate the model on held-out problems, train it with the
recipe, evaluate it, train it again from the start with the random reward paying as many samples as the
model's own accuracy (``verifier.name=random``), evaluate that, and report both against the base with
paired 95% intervals.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlvr.config import ConfigError, Registered, option, render
from rlvr.train_config import ENGINES, TEMPLATES

if TYPE_CHECKING:
    from rlvr.tiny import TinyModelSpec


@dataclass
class ProblemsConfig:
    task: str = option("arithmetic", "Generator task of the training and held-out problems.")
    options: dict[str, Any] = option({"steps": 1, "digits": 1, "ops": "+-*"}, "Difficulty knobs of the generator (see `rlvr tasks show`).")
    sft_examples: int = option(4000, "Generated problems with worked solutions for the SFT warm-start.")
    eval_problems: int = option(200, "Held-out problems (the generator's test split) for each evaluation.")


@dataclass
class ModelConfig:
    hidden_size: int = option(128, "Width of the tiny Qwen2 model.")
    num_layers: int = option(4, "Transformer layers.")
    intermediate_size: int = option(384, "MLP width.")
    vocab_size: int = option(384, "Byte-level BPE vocabulary, trained on the generator's own text.")


@dataclass
class SFTStageConfig:
    steps: int = option(400, "SFT optimizer steps.")
    batch_size: int = option(32, "Examples per SFT step.")
    lr: float = option(3e-3, "Peak SFT learning rate.")
    wrong_answer_fraction: float = option(0.5, "Share of worked solutions whose boxed answer the careless teacher gets wrong.")


@dataclass
class RLStageConfig:
    steps: int = option(100, "RL steps.")
    prompts_per_step: int = option(16, "Prompts per RL step.")
    group_size: int = option(8, "Samples per prompt.")
    lr: float = option(3e-4, "RL learning rate.")
    micro_batch_size: int = option(64, "Samples per forward/backward in the RL update.")
    kimi_coef: float = option(0.1, "Weight of the Kimi k1.5 group length penalty (keeps answers short).")
    max_new_tokens: int = option(64, "Longest response in tokens.")
    engine: str = option("auto", "Rollout engine: auto (vllm when installed, else hf), vllm or hf.",
                         choices=Registered(ENGINES.names, extra=("auto",)))


@dataclass
class EvalStageConfig:
    n: int = option(8, "Samples per held-out problem.")
    temperature: float = option(1.0, "Sampling temperature of the evaluation.")


@dataclass
class DemoConfig:
    out: str = option("runs/demo", "Directory of everything the demo writes.")
    seed: int = option(0, "Seed of the model, the data and sampling.")
    template: str = option("base-short", "Prompt template: R1-Zero style (<think> reasoning, \\boxed{} answer) without the preamble.",
                           choices=TEMPLATES)
    problems: ProblemsConfig = option(ProblemsConfig(), "The generated problems.")
    model: ModelConfig = option(ModelConfig(), "The tiny model built from scratch.")
    sft: SFTStageConfig = option(SFTStageConfig(), "The supervised warm-start.")
    rl: RLStageConfig = option(RLStageConfig(), "The RL stage (DAPO with a length regularizer).")
    eval: EvalStageConfig = option(EvalStageConfig(), "Evaluation before and after RL.")


STAGES = ("model", "sft", "eval-base", "rl", "eval-final", "report")
MODEL_STAGES = ("eval-base", "rl", "eval-final", "control", "eval-control", "report")
RECIPES = Path(__file__).resolve().parents[1] / "configs"


@dataclass
class ModelDemoConfig:
    out: str = option("runs/demo-model", "Directory of everything the demo writes.")
    model: str = option("smollm2-135m-instruct", "Named model (see `rlvr model list`) or model directory to train.")
    recipe: str = option(str(RECIPES / "smollm2_arithmetic_grpo.yaml"), "Training config of the RL stage and of its control (the task, its options and the template come from it).")
    eval_problems: int = option(100, "Held-out problems (the task's test split) for each evaluation.")
    n: int = option(4, "Samples per held-out problem.")
    temperature: float = option(0.6, "Sampling temperature of the evaluations.")
    train_overrides: list[str] = option([], "section.key=value overrides of the recipe for both training runs, e.g. [optim.steps=10].")


def run_model_demo(cfg: ModelDemoConfig, log=sys.stdout) -> Path:
    """Evaluate, train, evaluate, train the random-reward control, evaluate, report; every stage not yet
    done (the same markers as :func:`run_demo`). Returns the path of ``report.md``."""
    from rlvr import config
    from rlvr.models import resolve_model_path
    from rlvr.train_config import TrainConfig

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_config.yaml").write_text(render(cfg) + "\n")
    if not Path(cfg.recipe).is_file():
        raise FileNotFoundError(f"recipe {cfg.recipe!r} does not exist; pass recipe=PATH of a training config (configs/*.yaml)")
    model_dir = Path(resolve_model_path(cfg.model))
    recipe = config.load(TrainConfig, cfg.recipe, [f"model.path={model_dir}", *cfg.train_overrides])
    steps = {
        "eval-base": lambda: evaluate_recipe(cfg, recipe, model_dir, out / "eval-base"),
        "rl": lambda: train_recipe(recipe, out / "rl", out / "final", {}),
        "eval-final": lambda: evaluate_recipe(cfg, recipe, out / "final", out / "eval-final"),
        "control": lambda: train_recipe(recipe, out / "control", out / "control-final", control_verifier(recipe, out)),
        "eval-control": lambda: evaluate_recipe(cfg, recipe, out / "control-final", out / "eval-control"),
        "report": lambda: write_model_report(cfg, recipe, out),
    }
    return run_stages(out, steps, log, fingerprint(cfg))


def evaluate_recipe(cfg: ModelDemoConfig, recipe: Any, model_dir: Path, output_dir: Path) -> None:
    """``rlvr eval`` of ``model_dir`` on the held-out split of the recipe's task, with its template and length."""
    from rlvr.evaluation import evaluate

    evaluate(
        model_dir, [recipe.data.task], n=cfg.n, ks=_ks(cfg.n), temperature=cfg.temperature, top_p=1.0,
        max_tokens=recipe.rollout.max_new_tokens, template=recipe.data.template, seed=recipe.optim.seed,
        limit=cfg.eval_problems, split="test", output_dir=output_dir, engine=recipe.rollout.engine,
        engine_options={"gpu_memory_utilization": recipe.rollout.gpu_memory_utilization, "dtype": recipe.model.dtype},
        task_options={recipe.data.task: recipe.data.options}, progress=lambda line: print(f"  {line}", flush=True),
    )


def control_verifier(recipe: Any, out: Path) -> dict[str, Any]:
    """The random reward at the base model's held-out accuracy under the recipe's own reward (strict or
    lenient extraction), so that the control pays about as many samples as the real verifier did."""
    base = json.loads((out / "eval-base" / "results.json").read_text())["tasks"][recipe.data.task]
    scored = base["strict"] if recipe.verifier.extraction == "strict" and "strict" in base else base
    p = round(scored[f"avg@{base['n']}"], 4)
    print(f"  control: random reward with p={p} (the base model's {recipe.verifier.extraction} accuracy)", flush=True)
    return {"name": "random", "options": {"random": {"p": p, "seed": recipe.optim.seed}}}


def train_recipe(recipe: Any, run_dir: Path, final_dir: Path, verifier: dict[str, Any]) -> None:
    """Train with the recipe into ``run_dir`` (resuming there), with ``verifier`` settings overriding its
    own; the final weights become the plain model directory ``final_dir``."""
    import copy

    from rlvr.trainer import train

    train_cfg = copy.deepcopy(recipe)
    train_cfg.checkpoint.output_dir = str(run_dir)
    for key, value in verifier.items():
        setattr(train_cfg.verifier, key, value)
    final = train(train_cfg, resume=True)
    shutil.rmtree(final_dir, ignore_errors=True)
    shutil.copytree(final, final_dir, ignore=shutil.ignore_patterns("trainer_state.pt"))


def write_model_report(cfg: ModelDemoConfig, recipe: Any, out: Path) -> None:
    """``report.md``: base, RL and control on the held-out problems, both scores (lenient and strict), the
    paired differences against the base with their 95% intervals, response lengths and training times."""
    from rlvr.evaluation import compare, load_results
    from rlvr.tracking import read_metrics

    task = recipe.data.task
    results = {name: load_results(out / name) for name in ("eval-base", "eval-final", "eval-control")}
    metric = f"avg@{cfg.n}"
    rows = ["| | base | after RL | RL - base [95% CI] | control | control - base [95% CI] |", "|---|---|---|---|---|---|"]
    for label, extraction in (("lenient", "lenient"), ("strict", "strict")):
        cells = []
        for name in ("eval-final", "eval-control"):
            row = next(r for r in compare(results["eval-base"], results[name])
                       if r["task"] == task and r["metric"] == metric and r["extraction"] == extraction)
            low, high = row["ci95"]
            cells.append((row["b"], f"{100 * row['difference']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"))
        base_value = next(r for r in compare(results["eval-base"], results["eval-final"])
                          if r["metric"] == metric and r["extraction"] == extraction)["a"]
        rows.append(f"| pass@1 {label} (%) | {100 * base_value:.1f} | {100 * cells[0][0]:.1f} | {cells[0][1]} "
                    f"| {100 * cells[1][0]:.1f} | {cells[1][1]} |")
    lengths = [results[name]["tasks"][task]["mean_response_length"] for name in results]
    rows.append(f"| mean response length (tokens) | {lengths[0]:.1f} | {lengths[1]:.1f} | "
                f"{100 * (lengths[1] / lengths[0] - 1):+.0f}% | {lengths[2]:.1f} | {100 * (lengths[2] / lengths[0] - 1):+.0f}% |")
    truncation = [100 * results[name]["tasks"][task]["truncation_rate"] for name in results]
    rows.append(f"| truncated (%) | {truncation[0]:.1f} | {truncation[1]:.1f} | | {truncation[2]:.1f} | |")
    train_seconds = {name: sum(row.get("time/step", 0.0) for row in read_metrics(out / name)) for name in ("rl", "control")}
    stage_seconds = {stage: float((out / f".done-{stage}").read_text()) for stage in MODEL_STAGES if (out / f".done-{stage}").exists()}
    base = results["eval-base"]["tasks"][task]
    text = "\n".join([
        "# rlvr demo report: a real model", "",
        f"Model `{cfg.model}`, recipe `{Path(cfg.recipe).name}`. Held-out problems: {base['num_problems']} of the "
        f"`{task}` test split ({recipe.data.options}), {cfg.n} samples each at temperature {cfg.temperature}, "
        f"at most {recipe.rollout.max_new_tokens} tokens; pass@1 = {metric}; lenient and strict are the math "
        "verifier's two extraction modes on the same samples. Control: the same training with the random reward "
        f"(`verifier.name=random`, p = the base model's {recipe.verifier.extraction} accuracy). Intervals: paired "
        "bootstrap over problems, 95%.", "",
        *rows, "",
        f"Training: {recipe.optim.steps} steps of {recipe.optim.prompts_per_step} prompts x {recipe.rollout.group_size} "
        f"samples; {train_seconds['rl']:.0f} s (RL) and {train_seconds['control']:.0f} s (control) in training steps.", "",
        "Seconds each stage took:", *[f"- {stage}: {seconds:.0f} s" for stage, seconds in stage_seconds.items()], "",
    ])
    (out / "report.md").write_text(text)
    print(text, flush=True)


def run_demo(cfg: DemoConfig, log=sys.stdout) -> Path:
    """Run every stage not yet done; returns the path of ``report.md``."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_config.yaml").write_text(render(cfg) + "\n")
    engine = cfg.rl.engine if cfg.rl.engine != "auto" else _default_engine()
    steps = {
        "model": lambda: build_model(cfg, out / "init"),
        "sft": lambda: warm_start(cfg, out / "init", out / "base"),
        "eval-base": lambda: evaluate_checkpoint(cfg, out / "base", out / "eval-base", engine),
        "rl": lambda: reinforce(cfg, out / "base", out / "rl", out / "final", engine),
        "eval-final": lambda: evaluate_checkpoint(cfg, out / "final", out / "eval-final", engine),
        "report": lambda: write_report(cfg, out),
    }
    return run_stages(out, steps, log, fingerprint(cfg))


def run_stages(out: Path, steps: dict[str, Any], log, made_by: str) -> Path:
    """Run each stage of ``steps`` (in order) that has no ``.done-STAGE`` marker yet; a marker holds the
    seconds its stage took. Returns the path of ``report.md``.

    ``made_by`` (:func:`fingerprint`) is kept in ``.fingerprint``: stages done by other settings or other
    code are never reused (a skipped stage would put their numbers in this run's report)."""
    recorded = out / ".fingerprint"
    done = [stage for stage in steps if (out / f".done-{stage}").exists()]
    if done and (not recorded.exists() or recorded.read_text().strip() != made_by):
        raise ConfigError(
            f"{out} holds stages ({', '.join(done)}) done with other settings or another version of the code "
            f"(fingerprint {recorded.read_text().strip() if recorded.exists() else 'unknown'}, now {made_by}): their "
            "results are not this run's. Choose a new --out, or delete that directory"
        )
    recorded.write_text(made_by + "\n")
    started = time.monotonic()
    for number, (stage, step) in enumerate(steps.items(), start=1):
        marker = out / f".done-{stage}"
        if marker.exists():
            print(f"[{number}/{len(steps)}] {stage}: done earlier, skipped", file=log, flush=True)
            continue
        print(f"[{number}/{len(steps)}] {stage} ... (elapsed {time.monotonic() - started:.0f} s)", file=log, flush=True)
        stage_started = time.monotonic()
        step()
        marker.write_text(f"{time.monotonic() - stage_started:.1f}\n")
    print(f"demo finished in {time.monotonic() - started:.0f} s; report: {out / 'report.md'}", file=log, flush=True)
    return out / "report.md"


def fingerprint(cfg: Any) -> str:
    """What a demo's results depend on: its settings (but the output directory) and the source of the
    packages that compute them."""
    import dataclasses
    import hashlib
    import importlib

    digest = hashlib.sha256(render(dataclasses.replace(cfg, out="")).encode())
    for package in ("rlvr", "tasks", "verifiers", "sandboxes"):
        root = Path(importlib.import_module(package).__file__).parent
        for source in sorted(root.rglob("*.py")):
            digest.update(source.relative_to(root.parent).as_posix().encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:16]


def _default_engine() -> str:
    import importlib.util

    return "vllm" if importlib.util.find_spec("vllm") is not None else "hf"


def _problems(cfg: DemoConfig, split: str, count: int) -> list:
    import tasks

    return tasks.load(cfg.problems.task, split=split, limit=count, seed=cfg.seed, **cfg.problems.options)


def build_model(cfg: DemoConfig, model_dir: Path) -> None:
    """A tiny Qwen2 model with a tokenizer trained on the problems' own text (prompts and solutions)."""
    import tasks
    from rlvr.tiny import build_tiny_model

    corpus = [tasks.render_prompt(e, None, cfg.template) + " " + e.metadata["solution"]
              for e in _problems(cfg, "train", min(cfg.problems.sft_examples, 2000))]
    build_tiny_model(model_dir, tiny_model_spec(cfg.model, cfg.seed), corpus)


def tiny_model_spec(model: ModelConfig, seed: int) -> TinyModelSpec:
    """The tiny model of a demo's ``model`` section (heads of 32 dimensions, half as many KV heads)."""
    from rlvr.tiny import TinyModelSpec

    return TinyModelSpec(
        vocab_size=model.vocab_size, hidden_size=model.hidden_size, intermediate_size=model.intermediate_size,
        num_layers=model.num_layers, num_heads=model.hidden_size // 32, num_kv_heads=model.hidden_size // 64, seed=seed,
    )


def warm_start(cfg: DemoConfig, init_dir: Path, base_dir: Path) -> None:
    """SFT on worked solutions: the R1 "cold start" that teaches the answer format. The teacher is
    careless on purpose: in ``sft.wrong_answer_fraction`` of the solutions every step is right but
    the boxed number is off by a little, as in distilled data from a weaker model. The warm-started
    model inherits the habit; RL with the verifier has to unlearn it."""
    from rlvr import config, sft

    rng = random.Random(cfg.seed)
    rows = []
    for example in _problems(cfg, "train", cfg.problems.sft_examples):
        solution = example.metadata["solution"]
        if rng.random() < cfg.sft.wrong_answer_fraction:
            wrong = int(example.reference) + rng.choice((-2, -1, 1, 2))
            solution = solution.replace(f"\\boxed{{{example.reference}}}", f"\\boxed{{{wrong}}}")
        rows.append({"problem": example.problem, "answer": example.reference, "solution": solution})
    data_file = base_dir.parent / "sft_data.jsonl"
    data_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    sft_cfg = config.load(sft.SFTConfig, None, [
        f"model.path={init_dir}", "data.task=jsonl", f"data.path={data_file}", f"data.template={cfg.template}",
        f"data.seed={cfg.seed}", f"optim.steps={cfg.sft.steps}", f"optim.batch_size={cfg.sft.batch_size}",
        f"optim.micro_batch_size={cfg.sft.batch_size}", f"optim.lr={cfg.sft.lr}", "optim.warmup_steps=20",
        f"optim.seed={cfg.seed}", f"output.dir={base_dir}", "output.log_every=25",
    ])
    sft.train(sft_cfg, log=sys.stdout)


def evaluate_checkpoint(cfg: DemoConfig, model_dir: Path, output_dir: Path, engine: str) -> None:
    """What ``rlvr eval`` does, on the held-out split of the generator."""
    from rlvr.evaluation import evaluate

    evaluate(
        model_dir, [cfg.problems.task], n=cfg.eval.n, ks=_ks(cfg.eval.n), temperature=cfg.eval.temperature,
        top_p=1.0, max_tokens=cfg.rl.max_new_tokens, template=cfg.template, seed=cfg.seed,
        limit=cfg.problems.eval_problems, split="test", output_dir=output_dir, engine=engine,
        engine_options={"gpu_memory_utilization": 0.05} if engine == "vllm" else None,
        task_options={cfg.problems.task: cfg.problems.options}, progress=lambda line: print(f"  {line}", flush=True),
    )


def _ks(n: int) -> list[int]:
    return sorted({k for k in (1, 2, 4, 8, 16, 32, n) if k <= n})


def reinforce(cfg: DemoConfig, base_dir: Path, run_dir: Path, final_dir: Path, engine: str) -> None:
    """DAPO (clip-higher, dynamic sampling, token-level loss, overlong shaping) plus the Kimi k1.5
    length penalty; resumes from the last checkpoint after an interruption."""
    from rlvr import config
    from rlvr.train_config import TrainConfig
    from rlvr.trainer import train

    rl = cfg.rl
    train_cfg = config.load(TrainConfig, None, [
        f"model.path={base_dir}", f"data.task={cfg.problems.task}", "data.split=train", f"data.template={cfg.template}",
        f"data.seed={cfg.seed + 1}", f"rollout.engine={engine}", f"rollout.group_size={rl.group_size}",
        f"rollout.max_new_tokens={rl.max_new_tokens}", "rollout.temperature=1.0", "rollout.gpu_memory_utilization=0.05",
        "algorithm.estimator=grpo", "algorithm.loss_agg=token-mean", "algorithm.clip_low=0.2", "algorithm.clip_high=0.28",
        "algorithm.dynamic_sampling=true", "algorithm.max_sampling_rounds=2",
        f"algorithm.length.overlong_buffer={rl.max_new_tokens // 4}", f"algorithm.length.kimi_coef={rl.kimi_coef}",
        f"optim.steps={rl.steps}", f"optim.prompts_per_step={rl.prompts_per_step}",
        f"optim.mini_batch_size={rl.prompts_per_step * rl.group_size}", f"optim.micro_batch_size={rl.micro_batch_size}",
        f"optim.lr={rl.lr}", "optim.max_grad_norm=1.0", f"optim.seed={cfg.seed}", "verifier.require_boxed=true",
        f"checkpoint.output_dir={run_dir}", f"checkpoint.every={max(1, rl.steps // 4)}", "checkpoint.keep_last=1",
    ])
    train_cfg.data.options = dict(cfg.problems.options)
    final = train(train_cfg, resume=True)
    shutil.rmtree(final_dir, ignore_errors=True)
    shutil.copytree(final, final_dir, ignore=shutil.ignore_patterns("trainer_state.pt"))


REPORTED = ("pass@1", "maj@{n}", "pass@{n}", "avg@{n}")


def write_report(cfg: DemoConfig, out: Path) -> None:
    """``report.md``: the before/after table (from the two ``results.json``), stage times and plots."""
    from rlvr.evaluation import plot_pass_at_k
    from rlvr.tracking import read_metrics

    task = cfg.problems.task
    base = json.loads((out / "eval-base" / "results.json").read_text())["tasks"][task]
    final = json.loads((out / "eval-final" / "results.json").read_text())["tasks"][task]
    rows = ["| metric | SFT base | after RL | change |", "|---|---|---|---|"]
    for name in (template.format(n=cfg.eval.n) for template in REPORTED):
        low_b, high_b = base["ci95"][name]
        low_f, high_f = final["ci95"][name]
        rows.append(
            f"| {name} | {100 * base[name]:.1f} [{100 * low_b:.1f}, {100 * high_b:.1f}] "
            f"| {100 * final[name]:.1f} [{100 * low_f:.1f}, {100 * high_f:.1f}] | {100 * (final[name] - base[name]):+.1f} |"
        )
    growth = final["mean_response_length"] / max(base["mean_response_length"], 1e-9) - 1
    rows.append(f"| mean response length (tokens) | {base['mean_response_length']:.1f} | "
                f"{final['mean_response_length']:.1f} | {100 * growth:+.1f}% |")
    rows.append(f"| truncation rate | {100 * base['truncation_rate']:.1f}% | {100 * final['truncation_rate']:.1f}% | |")

    history = read_metrics(out / "rl")
    plots = [
        _plot_curves(history, ("accuracy", "reward/shaped_mean"), "RL step", "accuracy / shaped reward", out / "reward_accuracy.png"),
        _plot_curves(history, ("response_length/mean",), "RL step", "tokens", out / "response_length.png"),
        plot_pass_at_k({"tasks": {"SFT base": base, "after RL": final}, "settings": {"model": "held-out problems"}},
                       out / "pass_at_k.png"),
    ]
    times = {stage: float((out / f".done-{stage}").read_text()) for stage in STAGES if (out / f".done-{stage}").exists()}
    stage_lines = [f"- {stage}: {seconds:.0f} s" for stage, seconds in times.items()]
    text = "\n".join([
        "# rlvr demo report", "",
        f"Held-out problems: {base['num_problems']} from the `{task}` generator's test split "
        f"({cfg.problems.options}), {cfg.eval.n} samples each at temperature {cfg.eval.temperature}, "
        "scored by the math verifier; 95% bootstrap intervals over problems in brackets (percent).", "",
        *rows, "",
        f"SFT: {cfg.sft.steps} steps on {cfg.problems.sft_examples} worked solutions. "
        f"RL: {cfg.rl.steps} steps of {cfg.rl.prompts_per_step} prompts x {cfg.rl.group_size} samples "
        f"(DAPO: clip-higher, dynamic sampling, token-level loss, overlong shaping, Kimi length penalty).", "",
        "Seconds each stage took:", *stage_lines, "",
        f"Settings and code fingerprint: `{(out / '.fingerprint').read_text().strip()}` (a stage is reused only "
        "by a run with the same one).", "",
        *[f"![{path.stem}]({path.name})" for path in plots if path is not None],
        "",
    ])
    (out / "report.md").write_text(text)
    print(f"report: {out / 'report.md'}", flush=True)
    for path in plots:
        if path is not None:
            print(f"plot: {path}", flush=True)


def _plot_curves(history: list[dict], keys: tuple[str, ...], xlabel: str, ylabel: str, path: Path) -> Path | None:
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None or not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.5))
    for key in keys:
        points = [(row["step"], row[key]) for row in history if key in row]
        axes.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=key)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
