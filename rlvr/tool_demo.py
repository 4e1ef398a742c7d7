"""``rlvr demo --tools``: GRPO with the Python tool on a tiny model warm-started to call it, on the CPU.

Shows RL raising the rate of correct answers reached through tool calls (README, "The tool-use demo"): the
warm-started model calls the tool on about half of the samples, copying the numbers right, and boxes a guess
on the rest; GRPO, rewarded by the math verifier, makes it call the tool on nearly all of them.

The problems multiply numbers too long for a tiny model to multiply in its head (the ``arithmetic``
generator, one product of 2-digit numbers by default). The stages (the same markers and resumption as
:mod:`rlvr.demo`):

1. a tiny model and tokenizer built from scratch (``DIR/init``); the tool markers are whole tokens of the
   tokenizer, so that SFT, which encodes a transcript as one text, sees the same ids as a rollout, which
   appends the ids of the prompt, the model's turns and the observations one after another;
2. SFT on transcripts of two kinds (``DIR/base``): in ``sft.tool_fraction`` of them the model writes
   ``<code>print(a * b)</code>``, reads the output and boxes it; in the rest it boxes a guess with the
   right leading digits (a wrong answer, as mental arithmetic at this size gives). The warm-started model
   knows the tool's format and calls it on some problems only; answers that copy a rarer length of output
   are repeated (see :func:`sft_rows`);
3. ``rlvr eval --tools python`` of the base model on held-out problems (``DIR/eval-base``);
4. GRPO with the tool (``rollout.tools.name=python``): samples that call it get the reward, guesses do not
   (``DIR/rl``, final weights in ``DIR/final``);
5. the same evaluation of ``DIR/final`` (``DIR/eval-final``) and ``DIR/report.md``: accuracy, the share of
   samples that call the tool and the accuracy reached through tool calls, before and after.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlvr.config import option, render
from rlvr.demo import ModelConfig, ProblemsConfig, fingerprint, run_stages, tiny_model_spec
from rlvr.rollout.tools import TAGS
from rlvr.train_config import ENGINES, ToolsConfig

TEMPLATE = "tool-short"


@dataclass
class ToolSFTConfig:
    steps: int = option(1200, "SFT optimizer steps (copying sets in after ~300 of 32; at 800 a call is right 78% of the time, at 1200 97%).")
    batch_size: int = option(32, "Examples per SFT step.")
    lr: float = option(3e-3, "Peak SFT learning rate.")
    tool_fraction: float = option(0.5, "Share of transcripts that call the tool; the others box a guess.")


@dataclass
class ToolRLConfig:
    steps: int = option(30, "RL steps.")
    prompts_per_step: int = option(16, "Prompts per RL step.")
    group_size: int = option(8, "Samples per prompt.")
    lr: float = option(3e-4, "RL learning rate.")
    micro_batch_size: int = option(64, "Samples per forward/backward in the RL update.")
    max_new_tokens: int = option(48, "Longest response in tokens, model and tool output together.")
    engine: str = option("hf", "Rollout engine: hf or vllm.", choices=ENGINES)


@dataclass
class ToolDemoConfig:
    out: str = option("runs/demo-tools", "Directory of everything the demo writes.")
    seed: int = option(0, "Seed of the model, the data and sampling.")
    problems: ProblemsConfig = option(ProblemsConfig(options={"steps": 1, "digits": 2, "ops": "*"}, sft_examples=3000, eval_problems=100),
                                      "The generated problems: one product of 2-digit numbers; sft_examples count tool transcripts.")
    model: ModelConfig = option(ModelConfig(hidden_size=64, num_layers=2, intermediate_size=256),
                                "The tiny model built from scratch (its tokenizer trained on the transcripts).")
    cpu_threads: int = option(1, "torch threads of SFT and RL: this model's matrices are too small to share among cores.")
    sft: ToolSFTConfig = option(ToolSFTConfig(), "The supervised warm-start on tool and guess transcripts.")
    rl: ToolRLConfig = option(ToolRLConfig(), "The RL stage (GRPO with the python tool).")
    tools: ToolsConfig = option(ToolsConfig(name="python", max_tool_calls=2, max_observation_tokens=32, time_limit=5.0),
                                "The tool, in RL and in both evaluations.")
    eval_n: int = option(4, "Samples per held-out problem.")
    eval_temperature: float = option(1.0, "Sampling temperature of the evaluations.")


def run_tool_demo(cfg: ToolDemoConfig, log=sys.stdout) -> Path:
    """Run every stage not yet done; returns the path of ``report.md``."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_config.yaml").write_text(render(cfg) + "\n")
    steps = {
        "model": lambda: build_model(cfg, out / "init"),
        "sft": lambda: warm_start(cfg, out / "init", out / "base"),
        "eval-base": lambda: evaluate_checkpoint(cfg, out / "base", out / "eval-base"),
        "rl": lambda: reinforce(cfg, out / "base", out / "rl", out / "final"),
        "eval-final": lambda: evaluate_checkpoint(cfg, out / "final", out / "eval-final"),
        "report": lambda: write_report(cfg, out),
    }
    return run_stages(out, steps, log, fingerprint(cfg))


def _problems(cfg: ToolDemoConfig, split: str, count: int) -> list:
    import tasks

    return tasks.load(cfg.problems.task, split=split, limit=count, seed=cfg.seed, **cfg.problems.options)


def call_text(example: Any) -> str:
    return f"{TAGS.call_start}print({example.metadata['expression']}){TAGS.call_end}"


def observation(example: Any) -> str:
    return f"{TAGS.observation_start}{example.reference}{TAGS.observation_end}"


def answer_text(answer: str) -> str:
    return f"The answer is \\boxed{{{answer}}}."


def guess(example: Any, rng: random.Random) -> str:
    """A boxed guess that keeps the answer's first two digits and draws the rest (wrong unless by chance)."""
    answer = example.reference
    return answer_text(answer[:2] + "".join(rng.choice("0123456789") for _ in answer[2:]))


def sft_rows(examples: list, tool_fraction: float, rng: random.Random) -> list[dict[str, str]]:
    """SFT rows: for a tool transcript two, the call (prompt -> ``<code>print(a * b)</code>``) and the answer
    (prompt, call and output -> ``\\boxed{output}``), so the output is context, never a target (SFT has no
    per-token mask; predicting the output would be mental arithmetic); for the others one boxed guess. Then
    copies of the answer rows of rarer output lengths (:func:`balance_output_lengths`)."""
    rows = []
    for example in examples:
        base = {"problem": example.problem, "answer": example.reference}
        if rng.random() < tool_fraction:
            rows.append({**base, "solution": call_text(example)})
            rows.append({**base, "solution": answer_text(example.reference),
                         "transcript": call_text(example) + observation(example)})
        else:
            rows.append({**base, "solution": guess(example, rng)})
    return rows + balance_output_lengths(rows)


def balance_output_lengths(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Copies of the answer rows (those with a transcript) of each output length, enough that every length has
    about as many rows as the commonest. A product of two 2-digit numbers has 4 digits in 82% of cases: trained
    on that mix, the model copied 4-digit outputs and miscopied nearly every 3-digit one (it had learned where a
    4-digit number's digits sit, not where the output starts), and RL could not fix that: all wrong, no signal."""
    by_length: dict[int, list[dict[str, str]]] = {}
    for row in rows:
        if "transcript" in row:
            by_length.setdefault(len(row["answer"]), []).append(row)
    most = max((len(group) for group in by_length.values()), default=0)
    return [row for group in by_length.values() for row in group * (round(most / len(group)) - 1)]


def build_model(cfg: ToolDemoConfig, model_dir: Path) -> None:
    """A tiny Qwen2 model with a tokenizer trained on the prompts and both kinds of transcript."""
    import tasks
    from rlvr.tiny import build_tiny_model

    rng = random.Random(cfg.seed)
    corpus = [tasks.render_prompt(e, None, TEMPLATE) + call_text(e) + observation(e) + answer_text(e.reference) + " " + guess(e, rng)
              for e in _problems(cfg, "train", min(cfg.problems.sft_examples, 2000))]
    markers = [marker.strip() for marker in (TAGS.call_start, TAGS.call_end, TAGS.observation_start, TAGS.observation_end)]
    build_tiny_model(model_dir, tiny_model_spec(cfg.model, cfg.seed), corpus, whole_tokens=markers)


def warm_start(cfg: ToolDemoConfig, init_dir: Path, base_dir: Path) -> None:
    """SFT on :func:`sft_rows`."""
    from rlvr import config, sft

    rows = sft_rows(_problems(cfg, "train", cfg.problems.sft_examples), cfg.sft.tool_fraction, random.Random(cfg.seed))
    data_file = base_dir.parent / "sft_data.jsonl"
    data_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    sft_cfg = config.load(sft.SFTConfig, None, [
        f"model.path={init_dir}", "data.task=jsonl", f"data.path={data_file}", f"data.template={TEMPLATE}",
        f"data.seed={cfg.seed}", f"optim.steps={cfg.sft.steps}", f"optim.batch_size={cfg.sft.batch_size}",
        f"optim.micro_batch_size={cfg.sft.batch_size}", f"optim.lr={cfg.sft.lr}", "optim.warmup_steps=20",
        f"optim.seed={cfg.seed}", f"output.dir={base_dir}", "output.log_every=50", f"model.cpu_threads={cfg.cpu_threads}",
    ])
    sft.train(sft_cfg, log=sys.stdout)


def evaluate_checkpoint(cfg: ToolDemoConfig, model_dir: Path, output_dir: Path) -> None:
    """What ``rlvr eval --tools python`` does, on the held-out split of the generator."""
    from rlvr.evaluation import evaluate

    evaluate(
        model_dir, [cfg.problems.task], n=cfg.eval_n, ks=[1, cfg.eval_n], temperature=cfg.eval_temperature, top_p=1.0,
        max_tokens=cfg.rl.max_new_tokens, template=TEMPLATE, seed=cfg.seed, limit=cfg.problems.eval_problems,
        split="test", output_dir=output_dir, engine=cfg.rl.engine,
        engine_options={"gpu_memory_utilization": 0.05} if cfg.rl.engine == "vllm" else None,
        task_options={cfg.problems.task: cfg.problems.options}, tools=cfg.tools,
        progress=lambda line: print(f"  {line}", flush=True),
    )


def reinforce(cfg: ToolDemoConfig, base_dir: Path, run_dir: Path, final_dir: Path) -> None:
    """GRPO with the tool on; resumes from the last checkpoint after an interruption."""
    import dataclasses

    from rlvr import config
    from rlvr.train_config import TrainConfig
    from rlvr.trainer import train

    rl = cfg.rl
    train_cfg = config.load(TrainConfig, None, [
        f"model.path={base_dir}", f"model.cpu_threads={cfg.cpu_threads}", f"data.task={cfg.problems.task}", "data.split=train", f"data.template={TEMPLATE}",
        f"data.seed={cfg.seed + 1}", f"rollout.engine={rl.engine}", f"rollout.group_size={rl.group_size}",
        f"rollout.max_new_tokens={rl.max_new_tokens}", "rollout.temperature=1.0", "rollout.gpu_memory_utilization=0.05",
        "algorithm.estimator=grpo", "algorithm.loss_agg=token-mean", "algorithm.dynamic_sampling=true",
        "algorithm.max_sampling_rounds=1", f"optim.steps={rl.steps}", f"optim.prompts_per_step={rl.prompts_per_step}",
        f"optim.mini_batch_size={rl.prompts_per_step * rl.group_size}", f"optim.micro_batch_size={rl.micro_batch_size}",
        f"optim.lr={rl.lr}", f"optim.seed={cfg.seed}", "verifier.require_boxed=true",
        f"checkpoint.output_dir={run_dir}", f"checkpoint.every={max(1, rl.steps // 3)}", "checkpoint.keep_last=1",
    ])
    train_cfg.data.options = dict(cfg.problems.options)
    train_cfg.rollout.tools = dataclasses.replace(cfg.tools)
    final = train(train_cfg, resume=True)
    shutil.rmtree(final_dir, ignore_errors=True)
    shutil.copytree(final, final_dir, ignore=shutil.ignore_patterns("trainer_state.pt"))


# (label, key of a task's results: avg@N, or a key of its "tools" metrics, see rlvr.rollout.tools.tool_metrics)
ROWS = (("accuracy (avg@{n})", "avg@{n}"), ("samples that call the tool", "tools/used_fraction"),
        ("correct through a tool call, of all samples", "accuracy/through_tool"),
        ("accuracy of samples with a call", "accuracy/with_tool"),
        ("accuracy of samples without a call", "accuracy/without_tool"),
        ("tool calls per sample", "tools/calls_per_sample"), ("tool errors per sample", "tools/errors_per_sample"))


def write_report(cfg: ToolDemoConfig, out: Path) -> None:
    """``report.md``: before/after rows from the two ``results.json`` and the stage times."""
    task = cfg.problems.task
    results = [json.loads((out / name / "results.json").read_text())["tasks"][task] for name in ("eval-base", "eval-final")]
    lines = ["| metric | SFT base | after RL |", "|---|---|---|"]
    for label, key in ROWS:
        values = []
        for result in results:
            value = result.get(key.format(n=cfg.eval_n), result.get("tools", {}).get(key))
            values.append("n/a" if value is None else (f"{value:.2f}" if "per sample" in label else f"{100 * value:.1f}%"))
        lines.append(f"| {label.format(n=cfg.eval_n)} | {values[0]} | {values[1]} |")
    times = {stage: float(path.read_text()) for stage in ("model", "sft", "eval-base", "rl", "eval-final")
             if (path := out / f".done-{stage}").exists()}
    text = "\n".join([
        "# rlvr tool-use demo report", "",
        f"Held-out problems: {results[0]['num_problems']} from the `{task}` generator's test split ({cfg.problems.options}), "
        f"{cfg.eval_n} samples each at temperature {cfg.eval_temperature}, with the python tool "
        f"(at most {cfg.tools.max_tool_calls} calls), scored by the math verifier on the model's own text.", "",
        *lines, "",
        f"SFT: {cfg.sft.steps} steps on {cfg.problems.sft_examples} transcripts ({100 * cfg.sft.tool_fraction:.0f}% call the "
        f"tool). RL: {cfg.rl.steps} steps of {cfg.rl.prompts_per_step} prompts x {cfg.rl.group_size} samples on the "
        f"{cfg.rl.engine} engine.", "",
        "Seconds each stage took: " + ", ".join(f"{stage} {seconds:.0f}" for stage, seconds in times.items()), "",
    ])
    (out / "report.md").write_text(text)
    print(text, flush=True)
