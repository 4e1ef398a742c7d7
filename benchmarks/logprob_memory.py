"""Peak memory of one training micro-batch: rlvr's chunked log-probs vs the naive full-vocabulary log-softmax.

    .venv/bin/python -m benchmarks.logprob_memory [--model gemma3-270m] [--batch 4] [--prompt-tokens 32]
        [--tokens 384] [--threads 1]

One micro-batch of ``--batch`` rows, each ``--prompt-tokens`` prompt tokens then ``--tokens`` completion tokens
(random ids, seeded; no padding), goes forward and backward through the policy, float32 on the CPU, with the
loss ``-mean log p(completion token)``:

- ``rlvr``: :func:`rlvr.policy.completion_logprobs`: the backbone once, hidden states kept at completion
  positions only, the vocabulary projection + log-softmax in chunks of ``LOGIT_CHUNK_ELEMENTS / vocab`` rows, each chunk
  recomputed in the backward pass instead of kept (it also computes the entropy, without a gradient);
- ``naive``: ``model(...).logits`` at every position, ``log_softmax`` over the whole vocabulary in float32,
  then the completion tokens gathered: what a straightforward trainer does.

Each runs in its own subprocess. Its peak resident memory is reset (``/proc/self/clear_refs``) after the model
and the batch are in memory, so ``peak - base`` is what the forward + backward itself added; a second,
untimed pass records the largest tensor any operation produced (forward and backward), through a
``TorchDispatchMode`` (:class:`LargestTensors`). The default model is Gemma 3 270M (vocabulary 262,144), where
one ``[batch, tokens, vocabulary]`` float32 tensor is ``batch x tokens x 1 MiB``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

VARIANTS = ("rlvr", "naive")


class LargestTensors(TorchDispatchMode):
    """Records the shape of the largest tensor (in bytes) that any operation returns while active.

    Autograd runs the backward pass of CPU tensors on the calling thread with the same mode, so the backward
    operations are seen too."""

    def __init__(self) -> None:
        super().__init__()
        self.largest_bytes = 0
        self.largest_shape: tuple[int, ...] = ()
        self.shapes: list[tuple[int, ...]] = []  # every output's shape, for structural checks

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for output in result if isinstance(result, (tuple, list)) else (result,):
            if isinstance(output, torch.Tensor):
                self.shapes.append(tuple(output.shape))
                size = output.numel() * output.element_size()
                if size > self.largest_bytes:
                    self.largest_bytes, self.largest_shape = size, tuple(output.shape)
        return result


def micro_batch(vocab: int, batch: int, prompt_tokens: int, tokens: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random prompt + completion rows (no padding) in the layout :func:`rlvr.policy.completion_logprobs` takes."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, vocab, (batch, prompt_tokens + tokens), generator=generator)
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "prompt_lengths": torch.full((batch,), prompt_tokens),
        "completion_ids": input_ids[:, prompt_tokens:],
        "completion_mask": torch.ones(batch, tokens),
    }


def rlvr_loss(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    from rlvr.policy import completion_logprobs

    stats = completion_logprobs(model, **inputs)
    return -(stats.logprobs * inputs["completion_mask"]).sum() / inputs["completion_mask"].sum()


def naive_loss(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    start = int(inputs["prompt_lengths"][0])
    logprobs = torch.log_softmax(logits[:, start - 1 : -1].float(), dim=-1)
    token_logprobs = logprobs.gather(-1, inputs["completion_ids"][..., None]).squeeze(-1)
    return -(token_logprobs * inputs["completion_mask"]).sum() / inputs["completion_mask"].sum()


LOSSES = {"rlvr": rlvr_loss, "naive": naive_loss}


def memory_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure(variant: str, model_dir: str, batch: int, prompt_tokens: int, tokens: int, threads: int) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    if threads:
        torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    vocab = model.get_output_embeddings().weight.shape[0]
    inputs = micro_batch(vocab, batch, prompt_tokens, tokens)
    loss_of = LOSSES[variant]
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    base = memory_kib("VmRSS")
    started = time.perf_counter()
    loss_of(model, inputs).backward()
    seconds = time.perf_counter() - started
    peak = memory_kib("VmHWM")
    model.zero_grad(set_to_none=True)
    with LargestTensors() as tracker:
        loss_of(model, inputs).backward()
    return {
        "variant": variant,
        "vocab": vocab,
        "base_mib": round(base / 1024),
        "peak_minus_base_mib": round((peak - base) / 1024),
        "seconds": round(seconds, 2),
        "largest_tensor_shape": list(tracker.largest_shape),
        "largest_tensor_mib": round(tracker.largest_bytes / 2**20),
        "full_logits_mib": round(batch * tokens * vocab * 4 / 2**20),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="gemma3-270m", help="model directory or named model (default: gemma3-270m)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=384, help="completion tokens per row")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(measure(args.child, args.model, args.batch, args.prompt_tokens, args.tokens,
                                             args.threads)))
        return 0

    from rlvr.models import resolve_model_path

    model_dir = resolve_model_path(args.model)
    print(f"{args.model}: micro-batch {args.batch} x ({args.prompt_tokens} prompt + {args.tokens} completion) tokens, "
          "float32, forward + backward", flush=True)
    results = {}
    for variant in args.variants.split(","):
        command = [sys.executable, "-m", "benchmarks.logprob_memory", "--child", variant, "--model", model_dir,
                   "--batch", str(args.batch), "--prompt-tokens", str(args.prompt_tokens), "--tokens", str(args.tokens),
                   "--threads", str(args.threads)]
        run = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
        if run.returncode != 0 or not lines:
            print(f"{variant}: FAILED (exit {run.returncode})\n{run.stderr[-3000:]}", file=sys.stderr)
            return 1
        results[variant] = json.loads(lines[-1].removeprefix("RESULT "))
        print(results[variant], flush=True)
    print(f"\n{'variant':<8}{'peak - base MiB':>16}{'largest tensor':>28}{'MiB':>8}{'s':>8}")
    for row in results.values():
        shape = "x".join(map(str, row["largest_tensor_shape"]))
        print(f"{row['variant']:<8}{row['peak_minus_base_mib']:>16}{shape:>28}{row['largest_tensor_mib']:>8}{row['seconds']:>8}")
    if len(results) == 2:
        print(f"one [batch, tokens, vocab] float32 tensor: {results['rlvr']['full_logits_mib']} MiB; naive / rlvr peak: "
              f"{results['naive']['peak_minus_base_mib'] / max(results['rlvr']['peak_minus_base_mib'], 1):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
