"""Checkpoints that survive a crash at any moment.

A checkpoint is a directory ``step-000050/`` holding the model and tokenizer in Hugging Face
format (so ``from_pretrained`` and vLLM load it as it is), ``trainer_state.pt`` (scheduler, RNG
states, data position, step) and ``optimizer/``, the optimizer state in ``torch.distributed.checkpoint``
format. A LoRA run's checkpoint holds its adapter instead of the model (peft's ``adapter_config.json`` +
``adapter_model.safetensors``, a few MB), and on request the merged model in ``merged/`` (see :mod:`rlvr.lora`).
It is written under a temporary name and renamed into place, then the ``latest`` file is
replaced atomically: a process killed mid-save leaves the previous checkpoint as the latest, intact.

Data-parallel, the model is gathered from its FSDP shards and written once, by rank 0; each rank writes
its own shard of the optimizer state, keyed by parameter name, so a resume with another number of
ranks (or one process) reads the same checkpoint, resharded.
"""

from __future__ import annotations

import errno
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.distributed.checkpoint.api import CheckpointException

from rlvr import lora
from rlvr.distributed import SINGLE, World, barrier, unwrapped
from rlvr.faults import CheckpointNotWritten

# What a failed save raises: torch.distributed.checkpoint wraps each rank's error (an OSError for a full disk)
# in a CheckpointException, which derives from BaseException.
WRITE_ERRORS = (Exception, CheckpointException)

STATE_FILE = "trainer_state.pt"
OPTIMIZER_DIR = "optimizer"
VALUE_DIR = "value"  # PPO's value model (rlvr.critic): weights, optimizer, schedule
LATEST_FILE = "latest"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def save(
    run_dir: Path, step: int, model, tokenizer, trainer_state: dict[str, Any], keep_last: int = 0,
    optimizer: torch.optim.Optimizer | None = None, world: World = SINGLE, merged: bool = False, critic: Any = None,
) -> Path:
    """Write checkpoint ``step`` atomically and prune older ones beyond ``keep_last`` (0: keep all). ``merged``
    (a LoRA policy, whose checkpoint holds the adapter): also base + adapter as a full model in ``merged/``.
    ``critic`` (PPO's value model, :class:`rlvr.critic.Critic`): its weights, optimizer and schedule in ``value/``.

    Every rank calls it (collectives: gathering the model, writing the optimizer shards); ``run_dir`` must be
    one directory all ranks see (a shared file system across machines)."""
    final = run_dir / f"step-{step:06d}"
    staging = run_dir / f".step-{step:06d}.partial"
    if world.is_main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    barrier(world)
    _save_model(staging, model, world)
    if merged:
        lora.save_merged(model, staging / lora.MERGED_DIR, world)
    if optimizer is not None:
        save_optimizer(staging / OPTIMIZER_DIR, model, optimizer)
    if critic is not None:
        critic.save(staging / VALUE_DIR)
    barrier(world)
    if world.is_main:
        tokenizer.save_pretrained(staging)
        if merged:
            tokenizer.save_pretrained(staging / lora.MERGED_DIR)
        state = {"step": step, "rng": _rng_states(), **trainer_state}
        torch.save(state, staging / STATE_FILE)
        _fsync_tree(staging)
        if final.exists():  # a re-run of the same step after a resume: the new one replaces it
            shutil.rmtree(final)
        os.replace(staging, final)
        _write_atomically(run_dir / LATEST_FILE, final.name)
        if keep_last > 0:
            for old in _complete_checkpoints(run_dir)[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
    barrier(world)
    return final


def _save_model(directory: Path, model, world: World) -> None:
    """The Hugging Face model directory, written by rank 0 (from the gathered full weights when sharded)."""
    if not world.distributed:
        model.save_pretrained(directory)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    module = unwrapped(model)
    full = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if world.is_main:
        # a tied weight (the LM head that is the input embedding) is saved once, as save_pretrained does itself
        tied = ({name for name, _ in module.named_parameters(remove_duplicate=False)}
                - {name for name, _ in module.named_parameters()})
        module.save_pretrained(directory, state_dict={name: value for name, value in full.items() if name not in tied})


def save_optimizer(directory: Path, model, optimizer: torch.optim.Optimizer) -> None:
    """The optimizer state keyed by parameter name, each rank writing its shard (``torch.distributed.checkpoint``)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    dcp.save({"optimizer": get_optimizer_state_dict(unwrapped(model), optimizer)}, checkpoint_id=str(directory))


def load_optimizer(checkpoint_dir: Path, model, optimizer: torch.optim.Optimizer) -> None:
    """Restore the optimizer state saved with a checkpoint, resharded onto this run's ranks."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    directory = checkpoint_dir / OPTIMIZER_DIR
    if not directory.is_dir():
        raise FileNotFoundError(f"{checkpoint_dir} has no {OPTIMIZER_DIR}/ (a checkpoint from an older rlvr?); "
                                "start a new run from its model directory instead of --resume")
    module = unwrapped(model)
    state = {"optimizer": get_optimizer_state_dict(module, optimizer)}
    dcp.load(state, checkpoint_id=str(directory))
    set_optimizer_state_dict(module, optimizer, state["optimizer"])


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint in ``run_dir``, or None."""
    pointer = run_dir / LATEST_FILE
    if pointer.is_file():
        candidate = run_dir / pointer.read_text().strip()
        if (candidate / STATE_FILE).is_file():
            return candidate
    complete = _complete_checkpoints(run_dir)
    return complete[-1] if complete else None


def load_state(checkpoint_dir: Path) -> dict[str, Any]:
    """The trainer state saved with a checkpoint; also restores the RNG states."""
    state = torch.load(checkpoint_dir / STATE_FILE, map_location="cpu", weights_only=False)
    _restore_rng_states(state["rng"])
    return state


def _complete_checkpoints(run_dir: Path) -> list[Path]:
    found = []
    for child in run_dir.glob("step-*"):
        match = _STEP_DIR.match(child.name)
        if match and (child / STATE_FILE).is_file():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def _rng_states() -> dict[str, Any]:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _fsync_tree(directory: Path) -> None:
    """Flush the files to disk before the rename makes them visible (a power cut, not just a kill)."""
    for file in directory.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())


def failed(run_dir: Path, step: int, error: BaseException) -> CheckpointNotWritten:
    """The error to raise when :func:`save` of ``step`` failed (a full disk, a lost mount): its partial
    directory is removed, freeing what it took; the last complete checkpoint was never touched."""
    shutil.rmtree(run_dir / f".step-{step:06d}.partial", ignore_errors=True)
    good = latest(run_dir)
    kept = f"the last good checkpoint is {good}, intact" if good else "no earlier checkpoint exists"
    os_error = _os_error(error)
    cause = "the disk is full" if os_error is not None and os_error.errno == errno.ENOSPC else f"{type(error).__name__}: {error}"
    return CheckpointNotWritten(f"checkpoint step-{step:06d} could not be written to {run_dir} ({cause}); {kept}. "
                                "Free space (or point checkpoint.output_dir elsewhere) and run again with --resume")


def _os_error(error: BaseException | None) -> OSError | None:
    """The OSError behind ``error``: itself, its cause, or (torch.distributed.checkpoint wraps each rank's
    exception in a CheckpointException) one of its ``failures``."""
    while error is not None:
        if isinstance(error, OSError):
            return error
        for failure in getattr(error, "failures", {}).values():
            inner = failure[0] if isinstance(failure, tuple) else failure
            if isinstance(inner, OSError):
                return inner
        error = error.__cause__ or error.__context__
    return None
