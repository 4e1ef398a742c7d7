"""Gold-answer normalisation done once at load time, so verifiers see one clean answer string."""

from __future__ import annotations

import re
from typing import Any

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``, or ``\\boxed 5``) in ``text``, with
    nested braces kept whole; None when there is none or its braces never close."""
    matches = list(_BOXED.finditer(text))
    for match in reversed(matches):
        start = match.end()
        if start < len(text) and text[start] == "{":
            depth = 0
            for position in range(start, len(text)):
                if text[position] == "{":
                    depth += 1
                elif text[position] == "}":
                    depth -= 1
                    if depth == 0:
                        return text[start + 1 : position].strip()
        elif match.group(0).endswith(" "):  # "\boxed 5": the answer runs to the next space or "$"
            word = re.match(r"[^\s$]+", text[start:])
            if word:
                return word.group(0)
    return None


def after_hashes(text: str) -> tuple[str, str]:
    """GSM8K: ``"...reasoning\\n#### 1,234"`` -> ``("...reasoning", "1234")``."""
    reasoning, _, final = text.rpartition("####")
    return reasoning.strip(), final.strip().replace(",", "")


def clean_answer(value: Any) -> str:
    """One answer string: list-valued answers joined (OlympiadBench's several answers) or first kept by
    the caller, ``$`` delimiters dropped, surrounding whitespace trimmed; numbers as written."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(clean_answer(part) for part in value)
    return _UNESCAPED_DOLLAR.sub("", str(value)).strip()
