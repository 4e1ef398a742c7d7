#!/usr/bin/env bash
# GPU check of the distributed trainer, for a machine with a CUDA GPU, PyTorch and transformers, and no network.
#
#   scripts/device_check.sh [OUT_DIR]        (from anywhere; PYTHON=... picks the interpreter, WHEELS=DIR
#                                             installs missing packages from a local wheel directory first)
#
# In under 8 minutes it builds a ~70M-parameter Qwen2-architecture model from scratch (no download), then runs
# one torchrun job on one GPU (FSDP2, bf16 mixed precision, NCCL): two GRPO steps sampled by the hf engine on
# CUDA in bf16, checkpoint written from the gathered shards. It prints the sampler/trainer log-prob gap of each
# step (step 2 samples from the weights step 1 trained: a large gap there means the weight sync failed), the peak
# GPU memory of the rank, and the time per step, and leaves metrics and the checkpoint in OUT_DIR.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-/tmp/rlvr-device-check}"
python="${PYTHON:-python3}"
mkdir -p "$out"

if [ -n "${WHEELS:-}" ]; then
    "$python" -m pip install --no-index --find-links "$WHEELS" -q pyyaml numpy safetensors tokenizers
fi
"$python" - <<'EOF'
import importlib.util, sys
missing = [name for name in ("torch", "transformers", "tokenizers", "safetensors", "yaml", "numpy")
           if importlib.util.find_spec(name) is None]
if missing:
    sys.exit(f"device check: missing {missing}; install them (WHEELS=DIR scripts/device_check.sh installs from wheels)")
import torch
if not torch.cuda.is_available():
    sys.exit("device check: torch sees no CUDA GPU")
print(f"device check: torch {torch.__version__}, {torch.cuda.get_device_name(0)}", flush=True)
EOF

cat > "$out/check.py" <<'EOF'
import json, sys, time
from pathlib import Path

import torch

import train_plugins  # noqa: F401  (the test task and verifier: no data set needed)
from rlvr import config
from rlvr.tiny import TinyModelSpec, build_tiny_model
from rlvr.tracking import read_metrics
from rlvr.train_config import TrainConfig
from rlvr.trainer import train

out = Path(sys.argv[1])
model_dir = out / "model"
if not (model_dir / "config.json").is_file():
    build_tiny_model(model_dir, TinyModelSpec(hidden_size=768, intermediate_size=3072, num_layers=8, num_heads=12,
                                              num_kv_heads=4))
overrides = train_plugins.overrides(model_dir, out / "run", engine="hf", steps=2) + [
    "model.dtype=bfloat16", "optim.prompts_per_step=8", "rollout.group_size=8", "rollout.max_new_tokens=64",
    "optim.mini_batch_size=64", "optim.micro_batch_size=16", "optim.lr=1e-5", "distributed.timeout=300",
]
started = time.monotonic()
train(config.load(TrainConfig, None, overrides))
rank_peak = torch.cuda.max_memory_allocated() / 2**30
rows = read_metrics(out / "run")
report = {
    "sampler_logprob_gap": [row.get("sampler_logprob_gap") for row in rows],
    "peak_gpu_memory_gib": round(rank_peak, 3),
    "seconds_per_step": [round(row["time/step"], 2) for row in rows],
    "wall_seconds": round(time.monotonic() - started, 1),
    "device": torch.cuda.get_device_name(0),
}
(out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
print("device check:", json.dumps(report), flush=True)
EOF

cd "$out"
PYTHONPATH="$repo:$repo/tests${PYTHONPATH:+:$PYTHONPATH}" timeout 460 \
    "$python" -m torch.distributed.run --standalone --nproc_per_node 1 "$out/check.py" "$out"
