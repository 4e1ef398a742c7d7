"""Finding the final answer in a completion and normalising answer strings.

Pure string work in linear time, safe to run in the caller's process without a time bound.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_MATH_DELIMITERS = (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$"))


@dataclass(frozen=True)
class Extraction:
    """The answers found in a completion's final region."""

    answers: list[str]  # in order of appearance; several only when several boxes were found
    boxed: bool
    problem: str = ""  # "unclosed <think>", "no answer" when ``answers`` is empty


def final_region(completion: str) -> str | None:
    """Text after the last ``</think>``; None when a ``<think>`` is never closed."""
    head, closed, tail = completion.rpartition("</think>")
    if closed:
        return tail
    return None if "<think>" in completion else completion


def extract_answers(completion: str, require_boxed: bool = False) -> Extraction:
    """Every boxed answer of the final region, else the last final-answer statement."""
    region = final_region(completion)
    if region is None:
        return Extraction([], False, "unclosed <think>")
    boxes = boxed_contents(region)
    if boxes:
        return Extraction(boxes, True)
    if not require_boxed:
        statement = last_answer_statement(region)
        if statement:
            return Extraction([statement], False)
    return Extraction([], False, "no boxed answer" if require_boxed else "no answer")


def boxed_contents(text: str) -> list[str]:
    """Contents of the top-level ``\\boxed{...}``, ``\\boxed X`` and ``\\fbox{...}`` of ``text``."""
    found: list[str] = []
    position = 0
    while match := _BOX_COMMAND.search(text, position):
        start = match.end()
        while start < len(text) and text[start] == " ":
            start += 1
        if start < len(text) and text[start] == "{":
            end = _closing_brace(text, start)
            if end is None:  # unbalanced: the completion was cut off inside the box
                position = start + 1
                continue
            found.append(text[start + 1 : end].strip())
            position = end + 1
        else:
            token = re.match(r"[^\s$]+", text[start:])
            if token and start > match.end():
                found.append(token.group(0))
                position = start + token.end()
            else:
                position = start
    return [answer for answer in found if answer]


def _closing_brace(text: str, start: int) -> int | None:
    depth = 0
    index = start
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2  # \{ and \} are literal braces (sets), not grouping
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    return None


_STATEMENT = re.compile(
    r"(?:####|\bfinal answer\s*(?:is|:|=)|\banswer\s*(?:is|:|=)|\bAnswer\s*[:=])\s*:?\s*(?P<rest>[^\n]*)",
    re.IGNORECASE,
)


def last_answer_statement(region: str) -> str | None:
    """The answer of the last "The answer is X" / "Answer: X" / "#### X" statement."""
    last = None
    for match in _STATEMENT.finditer(region):
        last = match
    if last is None:
        return None
    rest = last.group("rest").strip().lstrip("*").strip()
    while inner := list(_STATEMENT.finditer(rest)):  # "Final Answer: The final answer is X"
        rest = inner[-1].group("rest").strip()
    if re.match(r"[A-Za-z]+\s+[A-Za-z$]", rest) and " is " in rest:  # "Final Answer: The largest $n$ is 34."
        rest = rest.rsplit(" is ", 1)[1].strip()
    for left, right in _MATH_DELIMITERS:
        if rest.startswith(left):
            end = rest.find(right, len(left))
            if end > 0:
                return rest[len(left) : end].strip() or None
    sentence = re.split(r"(?<![\d\\])\.(?:\s|$)|\.\s", rest, maxsplit=1)[0]
    sentence = sentence.strip().strip("*").rstrip(".,;:!").strip()
    return sentence or None


# ---------------------------------------------------------------- normalisation


@dataclass(frozen=True)
class Normalized:
    """An answer string cleaned for comparison."""

    latex: str  # for the SymPy parser
    key: str  # whitespace-free form for exact comparison
    percent: bool
    text: str | None  # lower-cased words when the answer is plain text
    choice: str | None  # "A".."J" when the answer is a multiple-choice letter


_TEXT_COMMANDS = re.compile(r"\\(?:text|textbf|textit|textrm|mbox|mathrm|mathbf|operatorname)\s*\{([^{}]*)\}")
_UNIT_WORDS = (
    r"(?:cm|mm|km|m|meters?|metres?|centimeters?|inch(?:es)?|in|feet|foot|ft|yards?|miles?|units?|"
    r"square|sq|cubic|hours?|hrs?|minutes?|mins?|seconds?|secs?|days?|weeks?|months?|years?|"
    r"dollars?|cents?|degrees?|pct|percentage|pounds?|lbs?|ounces?|oz|grams?|g|kg|liters?|litres?|ml|gallons?|"
    r"points?|people|students|cups?|pieces?|apples|cookies|books|marbles|mph|kph|percent)"
)
_TRAILING_UNITS = re.compile(r"(?<=[\d}.])\s*(?:" + _UNIT_WORDS + r"\b(?:\^?\{?[23]\}?)?\s*)+$", re.IGNORECASE)
_TEXT_UNIT = re.compile(r"\\(?:text|mbox|mathrm)\s*\{\s*[A-Za-z][A-Za-z .]*\}(?:\^\{?[23]\}?)?")
_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(?:(?:,|\{,\}|\\,| )\d{3})+(?:\.\d+)?$")
_CHOICE = re.compile(r"^\(?([A-J])\)?(?:[.:)]?\s.*)?$")
_ASSIGNMENT = re.compile(r"^\\?[A-Za-z]+(?:_\{?\w+\}?)?\s*=\s*(?P<rhs>[^=<>]+)$")
_NUMBER = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)$")
_FRACTION = re.compile(r"^(?P<sign>[-+]?)\\frac\{(?P<num>[-+]?\d+)\}\{(?P<den>[-+]?\d+)\}$|^(?P<p>[-+]?\d+)/(?P<q>\d+)$")


def normalize(answer: str, *, strip_assignment: bool = True) -> Normalized:
    """Clean an answer: delimiters, ``\\dfrac``, ``\\left``, units, degrees, percent, dollars,
    thousands separators, trailing punctuation, a leading ``x =``."""
    s = answer.strip()
    for left, right in _MATH_DELIMITERS:
        if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
            s = s[len(left) : len(s) - len(right)].strip()
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\cfrac", "\\frac")
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"(\d),\\!\s*(?=\d)|(\d)\{,\}(?=\d)", r"\1\2,", s)
    s = re.sub(r"(?<=\S)\s*(?:\\text\{\s*and\s*\}|\\quad|\band\b)\s*(?=\S)", ", ", s) if re.search(r"\d", s) else s
    s = re.sub(r"\\(?:left|right|big|Big|bigg|Bigg)(?![A-Za-z])", "", s)
    s = re.sub(r"(?<!\\)\\[,;:! ]|~", " ", s)
    s = s.replace("\\displaystyle", "").replace("\u2212", "-")
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree|\\circ$", "", s)
    percent = bool(re.search(r"(?:\\?%|\s(?:pct|percent|percentage))\s*$", s))
    s = re.sub(r"\\?%", "", s)
    s = s.replace("\\$", "").replace("$", "")
    s = s.strip().rstrip(".,;").strip()

    plain = _TEXT_COMMANDS.sub(lambda m: m.group(1), s).strip()
    choice_match = _CHOICE.match(plain)
    choice = choice_match.group(1) if choice_match else None
    text = None
    if re.fullmatch(r"[A-Za-z][A-Za-z\s'\-,]*", plain) and re.search(r"[A-Za-z]{3}", plain):
        text = " ".join(plain.lower().replace(",", " , ").split())
        if "\\" not in s and not re.search(r"[A-Za-z]{3}", s.replace("\\text", "")):
            text = None  # letters only in a command name, e.g. \pi
    if text is None:
        s = _TEXT_UNIT.sub("", s).strip() or s
        s = _TRAILING_UNITS.sub("", s).strip() or s
        s = _TEXT_COMMANDS.sub(lambda m: m.group(1), s)
    if _THOUSANDS.match(s):
        s = re.sub(r"\{,\}|\\,|,| ", "", s)
    if strip_assignment and (assignment := _ASSIGNMENT.match(s)):
        s = assignment.group("rhs").strip()
    s = re.sub(r"^([-+]?)0+(?=\d)", r"\1", s)
    s = s.rstrip(".").strip()
    return Normalized(latex=s, key="".join(s.split()), percent=percent, text=text, choice=choice)


def simple_number(latex: str) -> Fraction | None:
    """The exact value of a plain decimal or integer fraction, else None (SymPy's job).

    Lengths are capped so that no input can make this slow."""
    if len(latex) > 60:
        return None
    compact = "".join(latex.split())
    if _NUMBER.match(compact):
        return Fraction(compact)
    if match := _FRACTION.match(compact):
        if match.group("num") is not None:
            numerator, denominator = int(match.group("num")), int(match.group("den"))
            if match.group("sign") == "-":
                numerator = -numerator
        else:
            numerator, denominator = int(match.group("p")), int(match.group("q"))
        if denominator != 0:
            return Fraction(numerator, denominator)
    return None


def close(a: Fraction | complex | float, b: Fraction | complex | float, rel_tol: float) -> bool:
    """Equal within ``rel_tol`` of the larger magnitude (exactly equal when it is 0)."""
    if a == b:
        return True
    return abs(a - b) <= rel_tol * max(abs(a), abs(b))
