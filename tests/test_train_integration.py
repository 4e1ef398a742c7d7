"""``rlvr train`` end to end on a tiny local model: steps run, weights change and reach the
sampler, metrics and checkpoints are written, and a run killed with SIGKILL resumes exactly."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlvr import config
from rlvr.tracking import read_metrics
from rlvr.train_config import TrainConfig
from rlvr.trainer import train

sys.path.insert(0, str(Path(__file__).parent))
import train_plugins  # noqa: E402  (registers the test task and verifier)

EXPECTED_METRICS = {
    "reward/mean", "accuracy", "accuracy/even-length", "response_length/mean", "response_length/max",
    "response_length/truncated_fraction", "groups/kept_fraction", "loss", "entropy", "clip_frac_low",
    "clip_frac_high", "approx_kl", "ratio_max", "grad_norm", "lr", "tokens_per_second", "time/generate",
    "time/verify", "time/verify_wait", "time/train", "time/weight_sync", "time/step", "verifier/timeouts", "verifier/errors",
}


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(directory / "model.safetensors")


def test_training_steps_on_the_hf_engine(tiny_model_dir, tmp_path):
    evaluation = ["eval.every=3", "eval.tasks=[even-length-prompts]", "eval.limit=4", "eval.n=2"]
    cfg = config.load(TrainConfig, None, train_plugins.overrides(tiny_model_dir, tmp_path / "run") + evaluation)
    final = train(cfg)
    assert final == tmp_path / "run" / "step-000003"
    rows = read_metrics(tmp_path / "run")
    assert [row["step"] for row in rows] == [1, 2, 3]
    # periodic evaluation ran once, at step 3, through the code path of `rlvr eval`
    assert "eval/even-length-prompts/pass@1" not in rows[1]
    assert 0 <= rows[2]["eval/even-length-prompts/pass@2"] <= 1
    saved = json.loads((tmp_path / "run" / "eval" / "step-000003.json").read_text())
    assert saved["even-length-prompts"]["num_problems"] == 4 and saved["even-length-prompts"]["n"] == 2
    for row in rows:
        assert EXPECTED_METRICS <= set(row), EXPECTED_METRICS - set(row)
        assert math.isfinite(row["loss"]) and row["grad_norm"] > 0
        assert 0 < row["reward/mean"] < 1  # the parity reward has variance on an untrained model
    before, after = weights(tiny_model_dir), weights(final)
    assert any(not torch.equal(before[name], after[name]) for name in before)
    assert (tmp_path / "run" / "step-000002" / "trainer_state.pt").is_file()
    assert (tmp_path / "run" / "config.yaml").is_file()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(final)  # the checkpoint is a normal Hugging Face model


def test_a_run_killed_with_sigkill_resumes_exactly(tiny_model_dir, tmp_path):
    """Uninterrupted vs killed mid-step 4 then resumed from step 2: identical weights and rewards."""
    straight = config.load(TrainConfig, None, train_plugins.overrides(tiny_model_dir, tmp_path / "straight", steps=4))
    train(straight)

    interrupted_dir = tmp_path / "interrupted"
    script = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import train_plugins; "
        "from rlvr import config; from rlvr.train_config import TrainConfig; from rlvr.trainer import train; "
        f"train(config.load(TrainConfig, None, train_plugins.overrides({str(tiny_model_dir)!r}, {str(interrupted_dir)!r}, steps=4)))"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while len(read_metrics(interrupted_dir)) < 3:  # step 3 logged: step 4 is under way
        assert process.poll() is None, "the training subprocess ended before it could be killed"
        assert time.monotonic() < deadline, "the training subprocess did not reach step 3"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert (interrupted_dir / "latest").read_text() == "step-000002"

    resumed = config.load(TrainConfig, None, train_plugins.overrides(tiny_model_dir, interrupted_dir, steps=4))
    final = train(resumed, resume=True)
    assert final.name == "step-000004"
    expected, got = weights(tmp_path / "straight" / "step-000004"), weights(final)
    assert all(torch.equal(expected[name], got[name]) for name in expected)
    keys = ("reward/mean", "loss", "response_length/mean")
    assert [[row[k] for k in keys] for row in read_metrics(interrupted_dir)] == [
        [row[k] for k in keys] for row in read_metrics(tmp_path / "straight")
    ]


@pytest.mark.slow
def test_training_steps_on_the_vllm_engine(tiny_model_dir, tmp_path):
    pytest.importorskip("vllm", reason="vLLM is not installed (the `cpu` or `vllm` extra)")
    cfg = config.load(TrainConfig, None, train_plugins.overrides(tiny_model_dir, tmp_path / "run", engine="vllm", steps=2))
    final = train(cfg)
    rows = read_metrics(tmp_path / "run")
    assert [row["step"] for row in rows] == [1, 2]
    assert all(math.isfinite(row["loss"]) for row in rows)
    assert rows[1]["time/weight_sync"] > 0
    before, after = weights(tiny_model_dir), weights(final)
    assert any(not torch.equal(before[name], after[name]) for name in before)
