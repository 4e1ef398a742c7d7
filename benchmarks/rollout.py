"""Rollout tokens per second: the vLLM engine vs the hf engine, same model, prompts and sampling settings.

    .venv/bin/python -m benchmarks.rollout [--engines vllm,hf] [--prompts 64] [--n 8] [--tokens 64] [--repeats 3]
        [--model smollm2-135m-instruct]

The model is the tiny Qwen2 of ``rlvr.tiny`` (built fresh in a temporary directory; float32 on the CPU), or
``--model``: a model directory or a named model (``rlvr model list``), float32 too. The prompts are the first
``--prompts`` lines of the tiny model's training corpus cut to their first 16 tokens (a BOS token included
where the model's tokenizer adds one). Each
engine runs in its own subprocess (one engine's threads and memory do not disturb the other's). Per engine:
seconds to start, then ``--repeats`` timed ``generate`` calls (``n`` samples per prompt, up to ``--tokens``
new tokens, temperature 1, no per-call seed: a seed costs vLLM per-request generators) after one untimed
warm-up call; tokens/s counts response tokens
(EOS included) over the wall time of a call, and the best and median calls are reported.

``vllm-compiled`` is the vLLM engine with ``enforce_eager=False`` (torch.compile + the AOT compile cache in
``~/.cache/vllm``), to compare with the CPU default ``enforce_eager=True``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENGINE_SETTINGS = {
    "vllm": ("vllm", {"gpu_memory_utilization": 0.1, "enforce_eager": True}),
    "vllm-compiled": ("vllm", {"gpu_memory_utilization": 0.1, "enforce_eager": False}),
    "hf": ("hf", {}),
}


def measure(label: str, model_dir: str, prompts: int, n: int, tokens: int, repeats: int) -> dict:
    """Start one engine, then time ``repeats`` generate calls; the numbers as a dict."""
    from transformers import AutoTokenizer

    from rlvr.rollout import get
    from rlvr.tiny import default_corpus

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompt_ids = [tokenizer.encode(line)[:16] for line in default_corpus(lines=prompts)]
    name, options = ENGINE_SETTINGS[label]
    started = time.perf_counter()
    with get(name)(model_dir, max_model_len=16 + tokens, seed=0, **options) as engine:
        start_seconds = time.perf_counter() - started
        engine.generate(prompt_ids[:4], n=2, max_new_tokens=8)
        rates = []
        for _ in range(repeats):
            began = time.perf_counter()
            groups = engine.generate(prompt_ids, n=n, max_new_tokens=tokens)
            seconds = time.perf_counter() - began
            rates.append(sum(len(c.token_ids) for group in groups for c in group) / seconds)
    return {
        "engine": label,
        "start_s": round(start_seconds, 1),
        "best_tok_s": round(max(rates)),
        "median_tok_s": round(statistics.median(rates)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engines", default="vllm,hf", help=f"comma-separated, from {', '.join(ENGINE_SETTINGS)}")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", help="model directory or named model (default: the tiny model, built fresh)")
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.model_dir, args.prompts, args.n, args.tokens, args.repeats)))
        return 0

    from rlvr.models import resolve_model_path
    from rlvr.tiny import build_tiny_model

    print(f"{args.prompts} prompts x n={args.n} x up to {args.tokens} new tokens, {args.repeats} timed calls each, "
          f"model {args.model or 'tiny'}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = resolve_model_path(args.model) if args.model else str(build_tiny_model(Path(tmp) / "tiny"))
        for label in args.engines.split(","):
            command = [sys.executable, "-m", "benchmarks.rollout", "--child", label, "--model-dir", model_dir,
                       "--prompts", str(args.prompts), "--n", str(args.n), "--tokens", str(args.tokens),
                       "--repeats", str(args.repeats)]
            run = subprocess.run(command, capture_output=True, text=True)
            if run.returncode != 0:
                print(run.stderr[-3000:], file=sys.stderr)
                return run.returncode
            results.append(json.loads(run.stdout.strip().splitlines()[-1]))
            print(results[-1], flush=True)
    print(f"{'engine':<14} {'start s':>8} {'best tok/s':>11} {'median tok/s':>13}")
    for row in results:
        print(f"{row['engine']:<14} {row['start_s']:>8} {row['best_tok_s']:>11} {row['median_tok_s']:>13}")
    by_name = {row["engine"]: row for row in results}
    if "vllm" in by_name and "hf" in by_name:
        print(f"vllm / hf median tokens/s: {by_name['vllm']['median_tok_s'] / by_name['hf']['median_tok_s']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
