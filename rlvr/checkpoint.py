"""Checkpoints that survive a crash at any moment.

A checkpoint is a directory ``step-000050/`` holding the model and tokenizer in Hugging Face
format (so ``from_pretrained`` and vLLM load it as it is) and ``trainer_state.pt`` (optimizer,
scheduler, RNG states, data position, step). It is written under a temporary name and renamed into
place, then the ``latest`` file is replaced atomically: a process killed mid-save leaves the
previous checkpoint as the latest, intact.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "trainer_state.pt"
LATEST_FILE = "latest"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def save(
    run_dir: Path, step: int, model, tokenizer, trainer_state: dict[str, Any], keep_last: int = 0
) -> Path:
    """Write checkpoint ``step`` atomically and prune older ones beyond ``keep_last`` (0: keep all)."""
    final = run_dir / f"step-{step:06d}"
    staging = run_dir / f".step-{step:06d}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
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
    return final


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
    for file in directory.iterdir():
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
