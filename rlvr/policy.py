"""Loading the policy, and the trainer's forward pass: log-probs of completion tokens only.

The vocabulary projection is the largest activation of a language model (152k columns for Qwen);
materialising fp32 logits for every position of a batch is what makes naive RL trainers run out
of memory. Here the backbone runs once, hidden states are kept only at completion positions, and
the projection + log-softmax is done in row chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rlvr.algorithms import entropy_from_logits

LOGIT_CHUNK_ROWS = 1024  # rows of hidden states projected to the vocabulary at a time


class ModelNotFoundError(FileNotFoundError):
    """The model path is neither a local model directory nor a cached hub id."""


def resolve_dtype(name: str) -> torch.dtype:
    """``auto`` is bf16 on a GPU and fp32 on the CPU (bf16 matmuls are slow on most CPUs)."""
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise ValueError(f"model.dtype {name!r} is not one of auto, {', '.join(dtypes)}")
    return dtypes[name]


def load_policy(path: str, dtype: str = "auto", gradient_checkpointing: bool = False):
    """(model, tokenizer) from a local directory or a hub id already in the local cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_model_path(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype))
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device), tokenizer


def check_model_path(path: str) -> None:
    """Fail early, with what to do, when ``path`` names no model we can load."""
    if not path:
        raise ModelNotFoundError("no model given: set model.path to a Hugging Face model directory or hub id")
    local = Path(path).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ModelNotFoundError(f"{path!r} exists but has no config.json: point model.path at a model directory")
        return
    if path.startswith((".", "/", "~")) or path.count("/") != 1:
        raise ModelNotFoundError(f"model path {path!r} does not exist; check the path or give a hub id like Qwen/Qwen2.5-Math-1.5B")
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(path, "config.json"), str):
        raise ModelNotFoundError(
            f"model {path!r} is not a local directory and not in the Hugging Face cache; download it first "
            f"(`huggingface-cli download {path}`) or pass a local directory"
        )


@dataclass
class TokenStats:
    """Per-token outputs of :func:`completion_logprobs`, aligned with ``completion_mask`` [B, T]."""

    logprobs: torch.Tensor  # log-prob of each completion token under logits / temperature (0 where masked)
    entropy: torch.Tensor  # entropy of the next-token distribution at each completion token (0 where masked)


def completion_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_lengths: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    temperature: float = 1.0,
    entropy_grad: bool = False,
) -> TokenStats:
    """Log-probs and entropies of the completion tokens of right-padded ``prompt + completion`` rows.

    ``input_ids``/``attention_mask``: [B, L]; row b holds its prompt (``prompt_lengths[b]`` tokens)
    then its completion, then padding. ``completion_ids``/``completion_mask``: [B, T], completion
    token j of row b sits at input position ``prompt_lengths[b] + j``. Logits are divided by
    ``temperature`` so the log-probs are those of the distribution the sampler drew from. Entropy
    carries a gradient only with ``entropy_grad`` (an entropy bonus); otherwise it is a metric.
    """
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    positions = torch.arange(completion_ids.shape[1], device=hidden.device)
    # The state at position t predicts token t + 1.
    source = (prompt_lengths.to(hidden.device)[:, None] + positions[None, :] - 1).clamp(max=hidden.shape[1] - 1)
    gathered = hidden.gather(1, source[..., None].expand(-1, -1, hidden.shape[-1]))
    mask = completion_mask.bool()
    rows, targets = gathered[mask], completion_ids.to(hidden.device)[mask]
    lm_head = model.get_output_embeddings()

    def project(rows_chunk: torch.Tensor, targets_chunk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = lm_head(rows_chunk).float() / temperature
        token_logprobs = logits.gather(-1, targets_chunk[:, None]).squeeze(-1) - logits.logsumexp(-1)
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = entropy_from_logits(logits)
        return token_logprobs, entropy

    logprob_chunks, entropy_chunks = [], []
    for start in range(0, rows.shape[0], LOGIT_CHUNK_ROWS):
        chunk = (rows[start : start + LOGIT_CHUNK_ROWS], targets[start : start + LOGIT_CHUNK_ROWS])
        if torch.is_grad_enabled():
            # Recompute the chunk's logits in the backward pass instead of keeping them alive.
            token_logprobs, entropy = torch.utils.checkpoint.checkpoint(project, *chunk, use_reentrant=False)
        else:
            token_logprobs, entropy = project(*chunk)
        logprob_chunks.append(token_logprobs)
        entropy_chunks.append(entropy)
    logprobs = torch.zeros(mask.shape, dtype=torch.float32, device=hidden.device)
    entropies = torch.zeros(mask.shape, dtype=torch.float32, device=hidden.device)
    if logprob_chunks:
        logprobs = logprobs.masked_scatter(mask, torch.cat(logprob_chunks))
        entropies = entropies.masked_scatter(mask, torch.cat(entropy_chunks))
    return TokenStats(logprobs=logprobs, entropy=entropies)
