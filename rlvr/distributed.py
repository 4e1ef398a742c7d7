"""Data-parallel training across processes and machines: torchrun starts the processes, this module joins
them into one job.

``torchrun --nproc_per_node N [--nnodes M --rdzv_endpoint HOST:PORT] -m rlvr train ...`` starts one process per
rank with torchrun's standard variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``); :func:`init` joins the default process group from them (NCCL on GPUs, gloo on
the CPU) with a timeout on every collective, so a rank that dies or hangs ends the job instead of stalling it.
A process not started by torchrun is a single :class:`World` and touches no process group: nothing changes for
a single process.

What the trainer needs on top of PyTorch: the policy sharded with FSDP2 (:func:`shard_policy`), full weights
for the sampler (:func:`full_parameters`), a few collectives on Python values that are no-ops on one process
(:func:`all_gather`, :func:`reduce`, :func:`gather_by_position`, :func:`combine_metrics`), and the share of
the machine's verifier processes each rank may start (:func:`worker_share`). docs/distributed.md explains the
design.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TypeVar

import torch
from torch import nn

from rlvr.policy import TokenStats

T = TypeVar("T")
ReduceOp = Literal["sum", "max", "min"]


@dataclass(frozen=True)
class World:
    """This process's place in the job. The default is a single process without a process group."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    distributed: bool = False  # a process group is joined (torchrun started us), even with one rank
    device: str = "cpu"  # where collectives put their tensors (NCCL wants them on the rank's GPU)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes files, logs and prints."""
        return self.rank == 0


SINGLE = World()


def launched_by_torchrun() -> bool:
    """torchrun (and torch.distributed.run) sets these for every worker it starts."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"))


def init(timeout_seconds: float) -> World:
    """Join the process group torchrun prepared (see the module docstring), or return :data:`SINGLE`.

    ``timeout_seconds`` bounds every collective: past it, a rank waiting for a dead or stuck peer raises and
    the job ends (torchrun stops the other workers when one exits with an error)."""
    if not launched_by_torchrun():
        return SINGLE
    import torch.distributed as dist

    local_rank = int(os.environ["LOCAL_RANK"])
    on_gpu = torch.cuda.is_available()
    if on_gpu:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if on_gpu else "gloo", timeout=timedelta(seconds=timeout_seconds))
    size = dist.get_world_size()
    return World(rank=dist.get_rank(), size=size, local_rank=local_rank,
                 local_size=int(os.environ.get("LOCAL_WORLD_SIZE", size)), distributed=True,
                 device=f"cuda:{local_rank}" if on_gpu else "cpu")


def shutdown(world: World) -> None:
    """Leave the process group. vLLM's in-process engine destroys the default group when it closes, so it may
    be gone already."""
    import torch.distributed as dist

    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def launch_local(nproc: int, rlvr_arguments: Sequence[str]) -> int:
    """Run ``rlvr ARGUMENTS`` as ``nproc`` ranks on this machine (torchrun's standalone rendezvous: a free
    local port, no other machine); returns torchrun's exit status."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "rlvr", *rlvr_arguments]
    print("launching: " + " ".join(command[1:]), flush=True)
    return subprocess.call(command)


def shard(count: int, world: World) -> range:
    """This rank's contiguous share of ``count`` items (shares differ by at most one item)."""
    return range(count * world.rank // world.size, count * (world.rank + 1) // world.size)


def worker_share(requested: int | None, world: World) -> int | None:
    """How many verifier / sandbox processes this rank may start: ``requested`` (None: one per CPU core) is the
    limit for the whole machine, divided among the ranks on it, so N ranks do not start N x all cores."""
    if world.local_size == 1:
        return requested
    return max(1, (requested or os.cpu_count() or 1) // world.local_size)


def barrier(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        dist.barrier()


def all_gather(world: World, value: T) -> list[T]:
    """Every rank's ``value`` (any picklable object), in rank order."""
    if not world.distributed:
        return [value]
    import torch.distributed as dist

    gathered: list[Any] = [None] * world.size
    dist.all_gather_object(gathered, value)
    return gathered


def reduce(world: World, values: Sequence[float], op: ReduceOp = "sum") -> list[float]:
    """Element-wise sum, max or min of ``values`` over the ranks (float64), on every rank."""
    if not world.distributed:
        return [float(v) for v in values]
    import torch.distributed as dist

    tensor = torch.tensor(list(values), dtype=torch.float64, device=world.device)
    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
    dist.all_reduce(tensor, op=ops[op])
    return tensor.tolist()


def gather_by_position(world: World, positions: Sequence[int], columns: dict[str, list]) -> dict[str, list]:
    """Per-sample ``columns`` of every rank as whole-batch lists, ordered by each sample's global ``positions``."""
    if not world.distributed:
        if list(positions) != sorted(positions):
            order = sorted(range(len(positions)), key=lambda i: positions[i])
            return {name: [values[i] for i in order] for name, values in columns.items()}
        return columns
    merged: dict[int, dict[str, Any]] = {}
    for rank_positions, rank_columns in all_gather(world, (list(positions), columns)):
        for row, position in enumerate(rank_positions):
            merged[position] = {name: values[row] for name, values in rank_columns.items()}
    order = sorted(merged)
    return {name: [merged[position][name] for position in order] for name in columns}


def combine_metrics(world: World, local: dict[str, float]) -> dict[str, float]:
    """Metrics each rank computed as its share of a whole-batch value (already weighted by its share of the
    batch's tokens or samples): added up over ranks, except ``*_max`` / ``*_min``, which take the max / min."""
    if not world.distributed:
        return dict(local)
    combined: dict[str, float] = {}
    for rank_metrics in all_gather(world, local):
        for key, value in rank_metrics.items():
            if key not in combined:
                combined[key] = value
            elif key.endswith("_max"):
                combined[key] = max(combined[key], value)
            elif key.endswith("_min"):
                combined[key] = min(combined[key], value)
            else:
                combined[key] += value
    return combined


class ShardedPolicy(nn.Module):
    """The policy as FSDP2's root module. Its forward is a whole log-prob computation (a function of
    :mod:`rlvr.policy` applied to the wrapped model), so the root's parameters (embeddings, final norm, LM head,
    all-gathered by FSDP around the root's forward and backward) are there for that function's direct calls to
    ``base_model`` and the LM head, which bypass the Hugging Face model's own forward."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, compute: Callable[..., TokenStats], *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        stats = compute(self.module, *args, **kwargs)
        return stats.logprobs, stats.entropy  # tensors, so FSDP hooks the backward on them

    @property
    def is_gradient_checkpointing(self) -> bool:
        return bool(getattr(self.module, "is_gradient_checkpointing", False))


def token_stats(model: nn.Module, compute: Callable[..., TokenStats], *args: Any, **kwargs: Any) -> TokenStats:
    """``compute(model, ...)``, through the FSDP root's forward when ``model`` is a :class:`ShardedPolicy`."""
    if isinstance(model, ShardedPolicy):
        logprobs, entropy = model(compute, *args, **kwargs)
        return TokenStats(logprobs=logprobs, entropy=entropy)
    return compute(model, *args, **kwargs)


def unwrapped(model: nn.Module) -> nn.Module:
    """The Hugging Face model inside a :class:`ShardedPolicy` (its parameter names are the checkpoint's)."""
    return model.module if isinstance(model, ShardedPolicy) else model


def shard_policy(model: nn.Module, world: World, compute_dtype: torch.dtype | None = None, *,
                 layers_of: nn.Module | None = None) -> nn.Module:
    """Shard ``model`` with FSDP2 over all ranks: each decoder layer its own unit (gathered just for its
    forward and backward), the rest in the root :class:`ShardedPolicy`. Gradients are SUMMED over ranks (FSDP
    averages by default): every rank scales its loss by the whole batch's denominator already.

    ``layers_of``: a model whose own forward is what runs (PPO's value model, :mod:`rlvr.critic`) is its own
    root, its decoder layers those of the Hugging Face model ``layers_of`` inside it.

    On a GPU the parameters are kept in float32 and computed in ``compute_dtype`` (mixed precision, gradients
    reduced in float32). A single process is returned unchanged."""
    if not world.distributed:
        return model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    on_gpu = world.device.startswith("cuda")
    mesh = init_device_mesh("cuda" if on_gpu else "cpu", (world.size,))
    precision = MixedPrecisionPolicy()
    if on_gpu and compute_dtype is not None and compute_dtype != torch.float32:
        model = model.float()
        precision = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
    hf_model = model if layers_of is None else layers_of
    layer_classes = set(getattr(hf_model, "_no_split_modules", None) or ())
    layers = [module for module in hf_model.modules() if type(module).__name__ in layer_classes]
    if not layers:
        raise ValueError(f"found no decoder layers ({sorted(layer_classes)}) to shard in {type(hf_model).__name__}; "
                         "FSDP needs a Hugging Face causal LM that lists them in _no_split_modules")
    for layer in layers:
        fully_shard(layer, mesh=mesh, mp_policy=precision)
    root = ShardedPolicy(model) if layers_of is None else model
    fully_shard(root, mesh=mesh, mp_policy=precision)
    for module in root.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)  # a plain SUM: gloo has no pre-multiplied sum
    return root


def full_parameters(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, full tensor)`` for every parameter of the (possibly sharded) policy, under the Hugging Face
    names, one at a time: each sharded parameter is all-gathered when its turn comes (a collective: every
    rank iterates in the same order), so only one full parameter beyond the shards is alive at once."""
    from torch.distributed.tensor import DTensor

    for name, parameter in unwrapped(model).named_parameters():
        value = parameter.detach()
        yield name, value.full_tensor() if isinstance(value, DTensor) else value


def clip_grad_norm(model: nn.Module, max_norm: float) -> float:
    """Clip the gradients to ``max_norm`` by their global norm (over all shards) and return that norm."""
    from torch.distributed.tensor import DTensor

    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    return (norm.full_tensor() if isinstance(norm, DTensor) else norm).item()
