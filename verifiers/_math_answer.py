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


NUMBER_NAMES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
    "eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety"
).split()
NUMBER_WORDS: dict[str, int] = {word: value for value, word in enumerate(NUMBER_NAMES[:21])} | {
    word: 10 * tens for tens, word in enumerate(NUMBER_NAMES[21:], start=3)
}


# a model that runs on past its turn writes the next turn's marker; what follows is not its answer
_TURN_END = re.compile(r"<\|(?:im_start|im_end|endoftext|eot_id|end_of_turn|start_header_id)\|>|</s>")


# the lenient fallbacks read this many characters at the end of the final region, so that their
# regular expressions stay fast on any input
LENIENT_TAIL = 3000


def extract_answers(
    completion: str, require_boxed: bool = False, mode: ExtractionMode = "lenient", *, inside_box: bool = False
) -> Extraction:
    """Every boxed answer of the final region, else the last final-answer statement; in
    "lenient" mode also the last math expression, a completion that is only an answer, or the
    last number of the prose (what other harnesses fall back to)."""
    region = final_region(completion)
    if region is None:
        return Extraction([], False, "unclosed <think>")
    if mode == "lenient":
        region = _before_next_turn(region)
    boxes = boxed_contents(region)
    if mode == "lenient" and not inside_box:
        boxes = [answer for box in boxes for answer in _inside_box(box)]
    if boxes:
        return _alternatives(Extraction(boxes, True, source="box"))
    if not require_boxed:
        statement = last_answer_statement(region)
        if statement:
            return _alternatives(Extraction([statement], False, source="statement"))
        if mode == "lenient" and not _BOX_COMMAND.search(region):  # an empty or cut-off box is no answer
            if answer := bare_answer(region):
                return _alternatives(Extraction([answer], False, source="bare"))
            if found := last_expression(region[-LENIENT_TAIL:]):
                return _alternatives(Extraction(found[1], False, source=found[0]))
    return Extraction([], False, "no boxed answer" if require_boxed else "no answer")


MAX_ANSWER_CHARS = 2000  # longer is no answer (and would make every later step slow)


def _alternatives(extraction: Extraction) -> Extraction:
    answers = [part for answer in extraction.answers for part in split_alternatives(answer)]
    if any(len(answer) > MAX_ANSWER_CHARS for answer in answers):
        return Extraction([], extraction.boxed, f"an answer longer than {MAX_ANSWER_CHARS} characters")
    return Extraction(answers, extraction.boxed, extraction.problem, extraction.source)


def _before_next_turn(region: str) -> str:
    depth, counted = 0, 0
    for marker in _TURN_END.finditer(region):
        between = region[counted : marker.start()]
        depth, counted = depth + between.count("{") - between.count("}"), marker.start()
        if depth <= 0:  # not inside a box that holds the whole text
            return region[: marker.start()]
    return region


_PROSE = re.compile(r"(?:[A-Za-z]{3,}[\s,.;:]+){4}")


def _inside_box(content: str) -> list[str]:
    """A box that holds a sentence with math (or other boxes) is read like a completion; one
    that holds math markup but no answer is no answer."""
    has_markup = bool(_MATH_MARKUP.search(content) or _BOX_COMMAND.search(content))
    if not has_markup and not _PROSE.search(_TEXT_COMMANDS.sub("", content)):
        return [content]
    unwrapped = re.sub(r"(?<!\\)\$", " ", content)  # "12 $ and $13": dollar signs astray in a box
    if not _BOX_COMMAND.search(content) and bare_answer(unwrapped, MAX_ANSWER_CHARS):
        return [unwrapped.strip()]
    inner = extract_answers(content, mode="lenient", inside_box=True)
    if inner.answers:
        return inner.answers
    return [] if has_markup else [content]


_MATH_MARKUP = re.compile(r"(?<!\\)\$|\\\(|\\\[")
# display math may span lines, inline math may not (a lone "$" is often a currency sign)
_MATH_SPAN = re.compile(
    r"\$\$(?P<a>.+?)\$\$|\\\[(?P<b>.+?)\\\]|\\\((?P<c>[^\n]+?)\\\)|(?<![\\$])\$(?P<d>(?:\\\$|[^$\n])+?)(?<!\\)\$",
    re.DOTALL,
)


def last_expression(region: str) -> tuple[str, list[str]] | None:
    """("math", contents) of the last ``$...$``, ``$$...$$``, ``\\(...\\)`` or ``\\[...\\]`` span, or
    ("number", numbers) when a number written in the prose comes after it: "so $d = 90/n$, and
    there are 12 sequences" gives 12. Expressions joined to the last by "or" or "and" ("either
    $5$ or $6$") come too, as several answers: hedging, unless together they are the answer."""
    spans = list(_MATH_SPAN.finditer(region))
    after = spans[-1].end() if spans else 0
    numbers = [(m.start(), m.end(), m.group(0).rstrip(",.").strip()) for m in _PROSE_NUMBER.finditer(_prose(region[after:]))]
    if numbers:
        return "number", _joined_tail(region[after:], numbers)
    contents = [
        (m.start(), m.end(), next(g for g in m.groups() if g is not None).strip().rstrip(".,;").strip()) for m in spans
    ]
    contents = [item for item in contents if item[2]]
    return ("math", _joined_tail(region, contents)) if contents else None


_JOINER = re.compile(r"\s*,?\s*(?:or|and|\\text\{\s*(?:or|and)\s*\})\s*")


def _joined_tail(text: str, items: list[tuple[int, int, str]]) -> list[str]:
    """The contents of the last item and of those joined to it by "or"/"and", in order."""
    tail = [items[-1]]
    for item in reversed(items[:-1]):
        between = text[item[1] : tail[0][0]]
        if len(between) > 20 or len(tail) >= 20 or not _JOINER.fullmatch(between):
            break
        tail.insert(0, item)
    return [content for _, _, content in tail]


def split_alternatives(answer: str) -> list[str]:
    """``5 \\text{ or } 6`` is two answers (hedging unless together they are the answer)."""
    parts = top_level_items(answer, _OR)
    return parts if len(parts) > 1 and all(parts) else [answer]


_OR = re.compile(r"\s*(?:\\text\{\s*or\s*\}|\bor\b)\s*")


_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")


def bare_answer(region: str, max_chars: int = 120) -> str | None:
    """The completion itself when it is only an answer: one short line without prose words
    (units and number words are not prose)."""
    text = region.strip().rstrip(".").strip()
    if not text or "\n" in text or len(text) > max_chars:
        return None
    plain = _TEXT_COMMANDS.sub(lambda m: m.group(1), text)
    words = [w for w in _WORD.findall(plain) if not re.fullmatch(_UNIT_WORDS, w, re.IGNORECASE)]
    one_word = len(plain.split()) == 1  # "odd", "Evelyn"
    return text if not words or one_word or all(w.lower() in _LIST_WORDS for w in words) else None


_LIST_WORDS = {"and"} | set(NUMBER_NAMES)
_PROSE_NUMBER = re.compile(r"\d{1,2}:\d{2}(?:\s*[ap]\.?m\b\.?)?|[-+]?(?:\d+(?:[,.]\d+)*|\.\d+)(?:\s*/\s*\d+)?(?:\s*(?:\\?%|percent\b))?")


def _prose(region: str) -> str:
    """``region`` with every math span (even one broken across lines) blanked out, same length."""
    return re.sub(r"\$[^$]*\$|\\\(.*?\\\)|\\\[.*?\\\]", lambda m: " " * len(m.group(0)), region, flags=re.DOTALL)


def boxed_contents(text: str) -> list[str]:
    """Contents of the top-level ``\\boxed{...}``, ``\\boxed X`` and ``\\fbox{...}`` of ``text``."""
    return [content for _, _, content in _boxes(text) if content]


def reference_boxes(text: str) -> str | None:
    """The gold answer of a reference written as a solution: its boxes joined when only
    punctuation or an "and" separates them (``\\boxed{2}, \\boxed{3}``), else its last box; None
    without one."""
    boxes = [(start, end, content) for start, end, content in _boxes(text) if content]
    if not boxes:
        return None
    joined = [boxes[-1][2]]
    for (_, end, content), (start, _, _) in zip(reversed(boxes[:-1]), reversed(boxes[1:]), strict=True):
        between = text[end:start]
        if re.search(r"[A-Za-z]", between) and not re.search(r"\band\b", between):  # "\\boxed{1} and \\boxed{2}"
            break
        joined.insert(0, content)
    return ", ".join(joined)


def _boxes(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of each top-level box."""
    found: list[tuple[int, int, str]] = []
    position = 0
    closing: dict[int, int] | None = None
    while match := _BOX_COMMAND.search(text, position):
        start = match.end()
        while start < len(text) and text[start] == " ":
            start += 1
        if start < len(text) and text[start] == "{":
            closing = _closing_braces(text) if closing is None else closing
            end = closing.get(start)
            if end is None:  # unbalanced: the completion was cut off inside the box
                position = start + 1
                continue
            found.append((match.start(), end + 1, text[start + 1 : end].strip()))
            position = end + 1
        else:
            token = re.match(r"[^\s$]+", text[start:])
            if token and start > match.end():
                found.append((match.start(), start + token.end(), token.group(0)))
                position = start + token.end()
            else:
                position = start
    return found


def _closing_braces(text: str) -> dict[int, int]:
    """The index of the ``}`` that closes each ``{`` of ``text``, in one pass."""
    pairs: dict[int, int] = {}
    opened: list[int] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2  # \{ and \} are literal braces (sets), not grouping
            continue
        if char == "{":
            opened.append(index)
        elif char == "}" and opened:
            pairs[opened.pop()] = index
        index += 1
    return pairs


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
    rest = rest.strip("\"'\u201c\u201d ")
    for left, right in _MATH_DELIMITERS:
        if rest.startswith(left):
            answer, parts = "", 0
            while parts < 20 and rest.startswith(left) and (end := rest.find(right, len(left))) > 0:
                parts += 1
                answer += rest[len(left) : end].strip()
                # "$12$ and $13$" is one answer, "$5$ or $6$" two
                joiner = re.match(r"\s*,?\s*(and|or|,)\s*(?=\$|\\\(|\\\[)", rest[end + len(right) :])
                if not joiner:
                    break
                answer += " or " if joiner.group(1) == "or" else ", "
                rest = rest[end + len(right) + joiner.end() :]
            return answer.strip(" ,") or None
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
    raw: str = ""  # ``latex`` before a leading ``x =`` was taken off
    assigned: str | None = None  # the variable of ``x = 5`` (whitespace-free), when that was taken off


_TEXT_COMMANDS = re.compile(r"\\(?:text|textbf|textit|textrm|mbox|mathrm|mathbf|operatorname)\s*\{([^{}]*)\}")
_UNIT_WORDS = (
    r"(?:cm|mm|km|m|meters?|metres?|centimeters?|inch(?:es)?|in|feet|foot|ft|yards?|miles?|units?|"
    r"square|sq|cubic|hours?|hrs?|minutes?|mins?|seconds?|secs?|days?|weeks?|months?|years?|"
    r"dollars?|cents?|degrees?|pct|percentage|pounds?|lbs?|ounces?|oz|grams?|g|kg|liters?|litres?|ml|gallons?|"
    r"points?|people|students|cups?|pieces?|apples|cookies|books|marbles|mph|kph|percent)"
)
_TRAILING_UNITS = re.compile(r"(?<=[\d}.])\s*(?:" + _UNIT_WORDS + r"\b(?:\^?\{?[23]\}?)?\s*)+$", re.IGNORECASE)
_TEXT_UNIT = re.compile(r"\\(?:text|mbox|mathrm)\s*\{\s*[A-Za-z][A-Za-z .]*\}(?:\^\{?[23]\}?)?")
_THOUSANDS = re.compile(r"^[-+]?[1-9]\d{0,2}(?:(?:,|\{,\}|\\,| )\d{3})+(?:\.\d+)?$")
_CHOICE = re.compile(r"^\(?([A-J])\)?(?:[.:)]?\s.*)?$")
_NAME = r"\\?[A-Za-z]+(?:_\{?\w+\}?)?"
_VARIABLE = re.compile(rf"{_NAME}(?:\([a-z]\))?|\(\s*{_NAME}(?:\s*,\s*{_NAME})+\s*\)")  # x, a_{37}, f(x), (x, y)
_EQUALS = re.compile(r"(?<![<>!=\\])=(?!=)")
_EMPTY_SET = re.compile(r"^(?:\\emptyset|\\varnothing|\\O|\u2205|\\\{\s*\\\}|\{\s*\})$")
_NUMBER = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)$")
_FRACTION = re.compile(r"^(?P<sign>[-+]?)\\frac\{(?P<num>[-+]?\d+)\}\{(?P<den>[-+]?\d+)\}$|^(?P<p>[-+]?\d+)/(?P<q>\d+)$")


def normalize(answer: str, *, strip_assignment: bool = True) -> Normalized:
    """Clean an answer: delimiters, ``\\dfrac``, ``\\left``, units, degrees, percent, dollars,
    thousands separators, trailing punctuation, a leading ``x =``."""
    s = answer.strip()
    for left, right in _MATH_DELIMITERS:
        if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
            s = s[len(left) : len(s) - len(right)].strip()
    s = re.sub(r"(\d:\d\d)\s*(?:\\(?:text|mathrm)\s*\{\s*)?([AaPp])\.?\s*[Mm]\b\.?\s*\}?", r"\1\2m", s)  # 3:45 p.m.
    s = re.sub(r"\\(?:ldots|cdots|dots[cb]?)(?![A-Za-z])|\.\.\.|\u2026", r"\\ldots", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\cfrac", "\\frac")
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"(\d),\\!\s*(?=\d)|(\d)\{,\}(?=\d)", r"\1\2,", s)
    if re.search(r"\d", s):  # "1 and 2", "1 \quad 2"
        s = re.sub(r"(?<=\S)(?:\s*(?:\\text\{\s*and\s*\}|\\q?quad|\band\b))+\s*(?=\S)", ", ", s)
    s = re.sub(r"\\(?:left|right|big|Big|bigg|Bigg)(?![A-Za-z])", "", s)
    s = re.sub(r"(?<!\\)\\[,;:! ]|~", " ", s)
    s = s.replace("\\displaystyle", "").replace("\u2212", "-")
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree|\\circ$", "", s)
    percent = bool(re.search(r"(?:\\?%|\s(?:pct|percent|percentage))\s*$", s))
    s = re.sub(r"\\?%", "", s)
    s = s.replace("\\$", "").replace("$", "")
    s = s.strip().rstrip(".,;").strip()
    s = re.sub(r",(?:\s*,)+", ",", s)  # "21, 36, and 82"
    if _EMPTY_SET.match(s):
        s = "\\emptyset"

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
    if text in NUMBER_WORDS:  # \\text{five}
        s, text = str(NUMBER_WORDS[text]), None
    raw = s
    assigned = None
    if strip_assignment:
        s, assigned = _value_of(s)
    s = re.sub(r"^([-+]?)0+(?=\d)", r"\1", s)
    s = s.rstrip(".").strip()
    return Normalized(s, "".join(s.split()), percent, text, choice, raw, assigned)


def _value_of(latex: str) -> tuple[str, str | None]:
    """The value an answer states, and the variable it is assigned to: ``x = 5`` is 5 (of x),
    ``x = 2 + 3 = 5`` is 5, ``x \\approx 11`` is 11, ``x = 1/3 \\approx 0.33`` is 1/3; an equation
    such as ``2x + 4y = 3`` stays whole."""
    if "\\approx" in latex:
        before, _, after = latex.partition("\\approx")
        latex = after.strip() if _VARIABLE.fullmatch(before.strip()) else before.strip()
    sides = top_level_items(latex, _EQUALS)
    if len(sides) == 1 or not all(sides) or re.search(r"[<>]|\\[lg]e", sides[-1]):
        return latex, None
    variable = "".join(sides[0].split()) if _VARIABLE.fullmatch(sides[0]) else None
    if len(top_level_items(latex)) > 1:  # "k = 45, n = 2" is a list of assignments
        return (sides[1], variable) if variable and len(sides) == 2 else (latex, None)
    if variable or len(sides) > 2 or not any(_has_letters(side) for side in sides):  # "\\frac12 = 0.5"
        return sides[-1], variable
    return latex, None


def _has_letters(latex: str) -> bool:
    return bool(re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", latex)))


def top_level_items(latex: str, separator: re.Pattern[str] = re.compile(",")) -> list[str]:
    """``latex`` split at the separators outside any brackets (``(1, 2), [3, 4)`` is two items)."""
    items, depth, start = [], 0, 0
    for index, char in enumerate(latex):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0 and index >= start and (match := separator.match(latex, index)):
            items.append(latex[start:index].strip())
            start = match.end()
    items.append(latex[start:].strip())
    return items


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
