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
from rlvr.models import ModelNotFoundError, looks_like_hub_id
from rlvr.rollout.base import resolve_dtype

# Vocabulary-wide values per chunk of rows projected at a time: 256 MiB of float32 logits, 441 rows of Qwen's
# 152k vocabulary, 256 of Gemma 3's 262k. A fixed row count would let the chunk (and the few temporaries of its
# log-softmax and entropy) grow with the vocabulary until it is as large as the whole batch's logits.
LOGIT_CHUNK_ELEMENTS = 1 << 26


def load_policy(path: str, dtype: str = "auto", gradient_checkpointing: bool = False, cpu_threads: int = 0):
    """(model, tokenizer) from a local directory or a hub id already in the local cache. ``cpu_threads`` > 0
    sets torch's intra-op thread count for this process (on a 2-core machine shared with another job, the
    default of one per core makes every op wait for the busy core)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_model_path(path)
    if cpu_threads < 0:
        raise ValueError(f"model.cpu_threads must be 0 (torch's default) or a positive thread count, got {cpu_threads}")
    if cpu_threads:
        torch.set_num_threads(cpu_threads)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    on_gpu = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, resolve_dtype(dtype, on_gpu)))
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    return model.to("cuda" if on_gpu else "cpu"), tokenizer


def check_model_path(path: str) -> None:
    """Fail early, with what to do, when ``path`` names no model we can load."""
    if not path:
        raise ModelNotFoundError("no model given: set model.path to a Hugging Face model directory or hub id")
    local = Path(path).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ModelNotFoundError(f"{path!r} exists but has no config.json: point model.path at a model directory")
        return
    if not looks_like_hub_id(path):
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
    return _token_stats(model, gathered, completion_ids, completion_mask, temperature, entropy_grad)


def can_share_prompts(model: nn.Module) -> bool:
    """Whether :func:`shared_prompt_logprobs` applies: it hands the prompts' KV cache to the completion
    forward, which gradient checkpointing (it drops caches in training) rules out."""
    return not (getattr(model, "is_gradient_checkpointing", False) and model.training)


def shared_prompt_logprobs(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    prompt_index: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    temperature: float = 1.0,
    entropy_grad: bool = False,
) -> TokenStats:
    """What :func:`completion_logprobs` computes, with each distinct prompt run through the model once.

    A GRPO group is ``group_size`` completions of one prompt; feeding every row its own copy of the prompt
    repeats the prompt's forward and backward ``group_size`` times. Here the U distinct prompts (``prompt_ids``,
    ``prompt_mask``: [U, P], LEFT-padded) run once, with a KV cache; the cache is indexed out to the B
    completions (``prompt_index``: [B], row b continues prompt ``prompt_index[b]``), and the completions
    (``completion_ids``/``completion_mask``: [B, T], right-padded) run on top of it. The math is the same as
    one forward of each full sequence (the prompt does not see its completions), and gradients reach the
    prompt's states through the indexing, summed over the group. Outputs are [B, T] as there.
    """
    device = prompt_ids.device
    prompt_positions = (prompt_mask.long().cumsum(-1) - 1).clamp(min=0)
    prompt_out = model.base_model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=prompt_positions,
                                  use_cache=True)
    cache = prompt_out.past_key_values
    index = prompt_index.to(device)
    # index_select, whose backward (index_add) is deterministic on the CPU; advanced indexing's
    # (index_put with accumulate) is not, and an exact resume needs bit-identical gradients.
    cache.reorder_cache(index)
    starts = prompt_mask.long().sum(-1)[index]
    completion_positions = starts[:, None] + torch.arange(completion_ids.shape[1], device=device)[None, :]
    full_mask = torch.cat([prompt_mask[index], completion_mask.to(prompt_mask.dtype)], dim=1)
    hidden = model.base_model(input_ids=completion_ids, attention_mask=full_mask, position_ids=completion_positions,
                              past_key_values=cache, use_cache=True).last_hidden_state
    # Completion token 0 is predicted by the prompt's last state (the last column: prompts are left-padded),
    # token t > 0 by the state of completion token t - 1.
    states = torch.cat([prompt_out.last_hidden_state[:, -1:].index_select(0, index), hidden[:, :-1]], dim=1)
    return _token_stats(model, states, completion_ids, completion_mask, temperature, entropy_grad)


def _token_stats(
    model: nn.Module, states: torch.Tensor, completion_ids: torch.Tensor, completion_mask: torch.Tensor,
    temperature: float, entropy_grad: bool,
) -> TokenStats:
    """Project the states that predict each completion token ([B, T, H]) to log-probs and entropies, in chunks
    of rows, completion tokens only."""
    mask = completion_mask.bool().to(states.device)
    rows, targets = states[mask], completion_ids.to(states.device)[mask]
    lm_head = model.get_output_embeddings()
    chunk_rows = max(1, LOGIT_CHUNK_ELEMENTS // lm_head.weight.shape[0])

    def project(rows_chunk: torch.Tensor, targets_chunk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = lm_head(rows_chunk).float() / temperature
        token_logprobs = logits.gather(-1, targets_chunk[:, None]).squeeze(-1) - logits.logsumexp(-1)
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = entropy_from_logits(logits)
        return token_logprobs, entropy

    # Recomputing a chunk's logits in the backward pass instead of keeping them alive only pays when there are
    # several chunks: with one, its logits are all there is, and they would be built twice for nothing.
    recompute = torch.is_grad_enabled() and rows.shape[0] > chunk_rows
    logprob_chunks, entropy_chunks = [], []
    for start in range(0, rows.shape[0], chunk_rows):
        chunk = (rows[start : start + chunk_rows], targets[start : start + chunk_rows])
        if recompute:
            token_logprobs, entropy = torch.utils.checkpoint.checkpoint(project, *chunk, use_reentrant=False)
        else:
            token_logprobs, entropy = project(*chunk)
        logprob_chunks.append(token_logprobs)
        entropy_chunks.append(entropy)
    logprobs = torch.zeros(mask.shape, dtype=torch.float32, device=states.device)
    entropies = torch.zeros(mask.shape, dtype=torch.float32, device=states.device)
    if logprob_chunks:
        logprobs = logprobs.masked_scatter(mask, torch.cat(logprob_chunks))
        entropies = entropies.masked_scatter(mask, torch.cat(entropy_chunks))
    return TokenStats(logprobs=logprobs, entropy=entropies)
