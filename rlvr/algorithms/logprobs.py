"""Memory-light per-token log-probabilities (:func:`token_logprobs`) and entropy (:func:`entropy_from_logits`):
autograd functions that turn logits into fp32 one chunk of rows at a time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

# Rows of logits turned into fp32 at a time by token_logprobs / entropy_from_logits.
DEFAULT_CHUNK_ROWS = 1024


def _row_blocks(logits: Tensor, chunk_rows: int) -> Iterator[tuple[int, Tensor]]:
    """``(first_row, block [r, V])`` views covering ``logits [..., V]`` in row-major order, never copying.

    A slice such as ``logits[:, prompt_len - 1 : -1]`` cannot be flattened without a copy, so such inputs
    are split along their leading axis until each piece is a plain ``[rows, V]`` view.
    """
    pending = [logits]
    first_row = 0
    while pending:
        piece = pending.pop(0)
        try:
            rows = piece.view(-1, piece.shape[-1])
        except RuntimeError:
            pending[:0] = list(piece.unbind(0))
            continue
        for start in range(0, rows.shape[0], chunk_rows):
            yield first_row + start, rows[start : start + chunk_rows]
        first_row += rows.shape[0]


def _compute_dtype(logits: Tensor) -> torch.dtype:
    """fp32 for half-precision logits, else their own dtype (fp64 stays fp64)."""
    return torch.promote_types(logits.dtype, torch.float32)


class _TokenLogprobs(torch.autograd.Function):
    """log_softmax(logits)[token] in row chunks; keeps only the per-row logsumexp for backward."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, token_ids: Tensor, chunk_rows: int) -> Tensor:
        ids = token_ids.reshape(-1, 1)
        chosen = torch.empty(ids.shape[0], dtype=_compute_dtype(logits), device=logits.device)
        logsumexp = torch.empty_like(chosen)
        for start, block in _row_blocks(logits, chunk_rows):
            stop = start + block.shape[0]
            block = block.to(chosen.dtype)
            chosen[start:stop] = torch.log_softmax(block, dim=-1).gather(-1, ids[start:stop]).squeeze(-1)
            # log p_token = z_token - logsumexp(z), so the row's logsumexp comes for free.
            logsumexp[start:stop] = block.gather(-1, ids[start:stop]).squeeze(-1) - chosen[start:stop]
        ctx.save_for_backward(logits, ids, logsumexp)
        ctx.chunk_rows = chunk_rows
        return chosen.view(token_ids.shape)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, None, None]:
        logits, ids, logsumexp = ctx.saved_tensors
        grad_rows = grad_out.reshape(-1, 1).to(logsumexp.dtype)
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        flat_grad = grad.view(-1, logits.shape[-1])
        in_place = grad.dtype == logsumexp.dtype
        for start, block in _row_blocks(logits, ctx.chunk_rows):
            stop = start + block.shape[0]
            # d log p_token / dz = onehot(token) - softmax(z), built in place to avoid temporaries.
            piece = flat_grad[start:stop] if in_place else torch.empty_like(block, dtype=logsumexp.dtype)
            torch.sub(block, logsumexp[start:stop, None], out=piece)
            piece.exp_().mul_(-grad_rows[start:stop])
            piece.scatter_add_(-1, ids[start:stop], grad_rows[start:stop])
            if not in_place:
                flat_grad[start:stop] = piece
        return grad, None, None


def token_logprobs(logits: Tensor, token_ids: Tensor, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Tensor:
    """Log-probability of each chosen token: ``log_softmax(logits)[..., token_ids]``, ``[...]``, at least fp32.

    ``logits`` is ``[..., V]`` in any dtype and ``token_ids`` ``[...]``. Only ``chunk_rows`` rows are
    converted to fp32 at a time, and backward keeps just one logsumexp per row (recomputing the softmax
    from the logits chunk by chunk), so neither pass materialises a full fp32 ``[B, T, V]`` tensor.
    """
    if logits.shape[:-1] != token_ids.shape:
        raise ValueError(f"logits {tuple(logits.shape)} must be token_ids {tuple(token_ids.shape)} plus a vocab axis")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    return _TokenLogprobs.apply(logits, token_ids.long(), chunk_rows)


def _p_log_p(log_probs: Tensor) -> Tensor:
    """``p * log p`` with the limit 0 where ``p = 0`` (logits of -inf), instead of ``0 * -inf = NaN``."""
    return torch.where(log_probs.isneginf(), 0.0, log_probs.exp() * log_probs)


class _Entropy(torch.autograd.Function):
    """Softmax entropy per row in row chunks; keeps the per-row logsumexp and entropy for backward."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, chunk_rows: int) -> Tensor:
        num_rows = logits.numel() // logits.shape[-1]
        logsumexp = torch.empty(num_rows, dtype=_compute_dtype(logits), device=logits.device)
        entropy = torch.empty_like(logsumexp)
        for start, block in _row_blocks(logits, chunk_rows):
            stop = start + block.shape[0]
            block = block.to(logsumexp.dtype)
            block_lse = torch.logsumexp(block, dim=-1)
            log_probs = block - block_lse[:, None]
            entropy[start:stop] = -_p_log_p(log_probs).sum(-1)
            logsumexp[start:stop] = block_lse
        ctx.save_for_backward(logits, logsumexp, entropy)
        ctx.chunk_rows = chunk_rows
        return entropy.view(logits.shape[:-1])

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, None]:
        logits, logsumexp, entropy = ctx.saved_tensors
        grad_rows = grad_out.reshape(-1, 1).to(logsumexp.dtype)
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        flat_grad = grad.view(-1, logits.shape[-1])
        for start, block in _row_blocks(logits, ctx.chunk_rows):
            stop = start + block.shape[0]
            log_probs = block.to(logsumexp.dtype) - logsumexp[start:stop, None]
            # dH/dz_j = -p_j * (log p_j + H)
            p_log_p = _p_log_p(log_probs) + log_probs.exp() * entropy[start:stop, None]
            flat_grad[start:stop] = -p_log_p * grad_rows[start:stop]
        return grad, None


def entropy_from_logits(logits: Tensor, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Tensor:
    """Entropy of ``softmax(logits)`` over the last axis, ``[...]``, at least fp32; stable via logsumexp.

    Memory-light like :func:`token_logprobs`: fp32 copies exist one ``chunk_rows`` chunk at a time.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    return _Entropy.apply(logits, chunk_rows)
