"""Finding the final answer in a completion and normalising answer strings.

Pure string work in linear time, safe to run in the caller's process without a time bound.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_MATH_DELIMITERS = (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$"))


ExtractionMode = Literal["strict", "lenient"]
EXTRACTION_MODES: tuple[ExtractionMode, ...] = ("strict", "lenient")


@dataclass(frozen=True)
class Extraction:
    """The answers found in a completion's final region."""

    answers: list[str]  # in order of appearance; several only when several boxes were found
    boxed: bool
    problem: str = ""  # "unclosed <think>", "no answer" when ``answers`` is empty
    source: str = ""  # which rule found the answer: box, statement, math, bare, number


def final_region(completion: str) -> str | None:
    """Text after the last ``</think>``; None when a ``<think>`` is never closed."""
    head, closed, tail = completion.rpartition("</think>")
    if closed:
        return tail
    return None if "<think>" in completion else completion


# a model that runs on past its turn writes the next turn's marker; what follows is not its answer
_TURN_END = re.compile(r"<\|(?:im_start|im_end|endoftext|eot_id|end_of_turn|start_header_id)\|>|</s>")


def extract_answers(completion: str, require_boxed: bool = False, mode: ExtractionMode = "lenient") -> Extraction:
    """Every boxed answer of the final region, else the last final-answer statement; in
    "lenient" mode also the last math expression, a completion that is only an answer, or the
    last number of the prose (what other harnesses fall back to)."""
    region = final_region(completion)
    if region is None:
        return Extraction([], False, "unclosed <think>")
    if mode == "lenient":
        region = _TURN_END.split(region, maxsplit=1)[0]
    boxes = boxed_contents(region)
    if mode == "lenient":
        boxes = [answer for box in boxes if (answer := _inside_box(box)) is not None]
    if boxes:
        return Extraction(boxes, True, source="box")
    if not require_boxed:
        statement = last_answer_statement(region)
        if statement:
            return Extraction([statement], False, source="statement")
        if mode == "lenient" and not _BOX_COMMAND.search(region):  # an empty or cut-off box is no answer
            for source, rule in (("math", last_math_expression), ("bare", bare_answer), ("number", last_prose_number)):
                if answer := rule(region):
                    return Extraction([answer], False, source=source)
    return Extraction([], False, "no boxed answer" if require_boxed else "no answer")


def _inside_box(content: str) -> str | None:
    """A box that holds a sentence with math (or another box) is read like a completion."""
    if not _MATH_MARKUP.search(content) and not _BOX_COMMAND.search(content):
        return content
    inner = extract_answers(content, mode="lenient")
    return inner.answers[-1] if inner.answers else None


_MATH_MARKUP = re.compile(r"(?<!\\)\$|\\\(|\\\[")
# display math may span lines, inline math may not (a lone "$" is often a currency sign)
_MATH_SPAN = re.compile(
    r"\$\$(?P<a>.+?)\$\$|\\\[(?P<b>.+?)\\\]|\\\((?P<c>[^\n]+?)\\\)|(?<![\\$])\$(?P<d>[^$\n]+?)(?<!\\)\$",
    re.DOTALL,
)


def last_math_expression(region: str) -> str | None:
    """The content of the last ``$...$``, ``$$...$$``, ``\\(...\\)`` or ``\\[...\\]`` span."""
    last = None
    for match in _MATH_SPAN.finditer(region):
        last = match
    if last is None:
        return None
    content = next(group for group in last.groups() if group is not None).strip()
    return content.rstrip(".,;").strip() or None


_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")


def bare_answer(region: str) -> str | None:
    """The completion itself when it is only an answer: one short line without prose words
    (units and number words are not prose)."""
    text = region.strip().rstrip(".").strip()
    if not text or "\n" in text or len(text) > 120:
        return None
    plain = _TEXT_COMMANDS.sub(lambda m: m.group(1), text)
    words = [w for w in _WORD.findall(plain) if not re.fullmatch(_UNIT_WORDS, w, re.IGNORECASE)]
    one_word = len(plain.split()) == 1  # "odd", "Evelyn"
    return text if not words or one_word or all(w.lower() in NUMBER_WORDS for w in words) else None


_PROSE_NUMBER = re.compile(r"[-+]?(?:\d+(?:[,.]\d+)*|\.\d+)(?:\s*/\s*\d+)?(?:\s*(?:\\?%|percent\b))?")


def last_prose_number(region: str) -> str | None:
    """The last number written in the prose, outside any math markup (math spans were tried
    before): "the number is not 10 which is 1,000.99" gives 1,000.99."""
    prose = re.sub(r"\$[^$]*\$|\\\(.*?\\\)|\\\[.*?\\\]", " ", region, flags=re.DOTALL)
    last = None
    for match in _PROSE_NUMBER.finditer(prose):
        last = match
    return last.group(0).rstrip(",.").strip() if last else None


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
    answer = _answer_of_statement(rest)
    if answer is None or _BOX_COMMAND.search(answer):  # "The answer is within \\boxed{}": an empty box is no answer
        return None
    return answer


def _answer_of_statement(rest: str) -> str | None:
    for left, right in _MATH_DELIMITERS:
        if rest.startswith(left):
            end = rest.find(right, len(left))
            if end > 0:
                return rest[len(left) : end].strip() or None
    sentence = re.split(r"(?<![\d\\])\.(?:\s|$)|\.\s", rest, maxsplit=1)[0]
    sentence = sentence.strip().strip("*").rstrip(".,;:!").strip()
    if re.match(r"[A-Za-z]+\s+[A-Za-z$]", sentence):  # a sentence, not an answer
        if " is " in sentence:  # "Final Answer: The largest $n$ is 34."
            return _answer_of_statement(sentence.rsplit(" is ", 1)[1].strip())
        numbers = _PROSE_NUMBER.findall(sentence)
        if len(numbers) == 1 and "$" not in sentence:  # "Final Answer: Jane started 3 hours ago."
            return numbers[0].strip()
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


_SMALL_NUMBER_NAMES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
    "eighteen nineteen twenty"
).split()
NUMBER_WORDS: dict[str, int] = {word: value for value, word in enumerate(_SMALL_NUMBER_NAMES)} | {
    word: 10 * tens for tens, word in enumerate("thirty forty fifty sixty seventy eighty ninety".split(), start=3)
}


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
