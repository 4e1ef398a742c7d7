"""Prompt templates: how an :class:`~tasks.Example` becomes the text a model continues.

- ``base``: R1-Zero style for base models; reasoning inside ``<think> </think>``, answer in ``\\boxed{}``.
- ``base-short``: ``base`` without the preamble, for tiny models trained from scratch.
- ``chat``: the tokenizer's own chat template around the problem and an instruction to box the answer.
- ``code``: asks for one fenced Python block; shows starter code, the function name, and how input
  arrives. Wrapped in the chat template when the tokenizer has one.
- ``tool``: tells the model it may run Python between ``<code>`` and ``</code>`` and reads the output between
  ``<output>`` and ``</output>`` (multi-turn tool use, ``rollout.tools.name=python``, ``rlvr eval --tools
  python``); the answer in ``\\boxed{}``. Wrapped in the chat template when the tokenizer has one.
- ``tool-fence``: ``tool`` with the call in a fenced ```python block and the output in a fenced ```output block,
  as chat models write code (pair it with ``rollout.tools.format=fence``, ``rlvr eval --tool-format fence``).
- ``tool-short``: ``tool`` in one line, for tiny models trained from scratch (the tool demo).
- ``auto``: ``code`` for code tasks, else ``chat`` when the tokenizer has a chat template, else ``base``.

Add one with ``@tasks.register_template("name")`` on a function ``(example, tokenizer) -> str``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rlvr.registry import Registry

if TYPE_CHECKING:
    from tasks._core import Example

Template = Callable[["Example", Any], str]
_templates: Registry[Template] = Registry("prompt template", package="tasks", entry_point_group="rlvr.templates")
register_template = _templates.register

BOX_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
BASE_PREAMBLE = (
    "A conversation between User and Assistant. The User asks a question, and the Assistant solves it. "
    "The Assistant first thinks about the reasoning process and then gives the answer. The reasoning is "
    "enclosed in <think> </think> tags and the final answer in \\boxed{}, i.e., <think> reasoning here "
    "</think> The answer is \\boxed{answer here}."
)
TOOL_INSTRUCTION = (
    "You may run Python: write code between <code> and </code> and its output comes back between <output> and "
    "</output>; variables persist from one call to the next. Put your final answer within \\boxed{}."
)
FENCE_TOOL_INSTRUCTION = (
    "You may run Python: write code in a ```python block and its output comes back in a ```output block; "
    "variables persist from one call to the next. Put your final answer within \\boxed{}."
)
CODE_INSTRUCTION = "Write your solution as one fenced Python code block (```python ... ```) and nothing else after it."


def render_prompt(example: Example, tokenizer: Any = None, template: str = "auto") -> str:
    """The prompt text for ``example``. ``tokenizer`` (a Hugging Face tokenizer) is needed by the
    ``chat`` template and, for ``auto``/``code``, decides whether the chat template is used."""
    return _templates.get(template)(example, tokenizer)


def encode_prompt(example: Example, tokenizer: Any, template: str = "auto") -> list[int]:
    """The prompt's token ids: rendered, then tokenized without added special tokens (a chat template
    already holds any it needs), with the BOS token put first, once, when the tokenizer wants one and the
    template did not write it (Gemma writes garbage without it). Training, SFT and evaluation all encode
    prompts through here, so what the model is trained on and evaluated on cannot drift apart."""
    ids = tokenizer(render_prompt(example, tokenizer, template), add_special_tokens=False)["input_ids"]
    bos = getattr(tokenizer, "bos_token_id", None)
    # Asked of the tokenizer's behaviour, not its add_bos_token attribute: transformers 5 keeps that flag only
    # in the post-processor of tokenizer.json and reports False after a reload.
    if bos is not None and ids[:1] != [bos] and tokenizer("")["input_ids"][:1] == [bos]:
        ids = [bos, *ids]
    return ids


def available_templates() -> list[str]:
    """Names of every registered prompt template."""
    return _templates.available()


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _chat(tokenizer: Any, content: str) -> str:
    if not has_chat_template(tokenizer):
        raise ValueError(
            "template 'chat' needs a tokenizer with a chat template; this one has none "
            "(use template 'base' for base models, or 'auto' to choose)"
        )
    messages = [{"role": "user", "content": content}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@register_template("base")
def base(example: Example, tokenizer: Any = None) -> str:
    return f"{BASE_PREAMBLE}\nUser: {example.problem.strip()}\nAssistant: <think>"


@register_template("base-short")
def base_short(example: Example, tokenizer: Any = None) -> str:
    """``base`` without its preamble, for tiny models trained from scratch (the demo), where the
    preamble would be most of every forward pass and means nothing to the model."""
    return f"User: {example.problem.strip()}\nAssistant: <think>"


@register_template("chat")
def chat(example: Example, tokenizer: Any = None) -> str:
    return _chat(tokenizer, f"{example.problem.strip()}\n\n{BOX_INSTRUCTION}")


@register_template("code")
def code(example: Example, tokenizer: Any = None) -> str:
    problem = example.problem.strip()
    parts = [problem]
    starter = (example.metadata.get("starter_code") or "").strip()
    if starter and starter not in problem:
        parts.append(f"Start from this code:\n```python\n{starter}\n```")
    function = example.metadata.get("fn_name")
    if function and function not in starter and function not in problem:
        parts.append(f"The function must be named `{function}`.")
    if _reads_stdin(example.reference):
        parts.append("Read the input from standard input and print the answer to standard output.")
    parts.append(CODE_INSTRUCTION)
    content = "\n\n".join(parts)
    if has_chat_template(tokenizer):
        return _chat(tokenizer, content)
    return f"User: {content}\nAssistant:"


@register_template("tool")
def tool(example: Example, tokenizer: Any = None) -> str:
    return _tool_prompt(example, tokenizer, TOOL_INSTRUCTION)


@register_template("tool-fence")
def tool_fence(example: Example, tokenizer: Any = None) -> str:
    return _tool_prompt(example, tokenizer, FENCE_TOOL_INSTRUCTION)


def _tool_prompt(example: Example, tokenizer: Any, instruction: str) -> str:
    content = f"{example.problem.strip()}\n\n{instruction}"
    if has_chat_template(tokenizer):
        return _chat(tokenizer, content) + _transcript(example)
    return f"User: {content}\nAssistant:{_transcript(example)}"


def _transcript(example: Example) -> str:
    """What the assistant's turn already holds: ``metadata["transcript"]``, for SFT examples that continue a
    tool-use transcript (a call and its output in the prompt, the answer as the target). Empty otherwise."""
    return str(example.metadata.get("transcript") or "")


@register_template("tool-short")
def tool_short(example: Example, tokenizer: Any = None) -> str:
    """``tool`` without its paragraph, for tiny models trained from scratch, where a long instruction would be
    most of every forward pass and means nothing to the model. The problem comes last, next to the answer,
    so that a call copies its numbers from a few tokens back."""
    return f"User: (Python: <code>) {example.problem.strip()}\nAssistant:{_transcript(example)}"


@register_template("auto")
def auto(example: Example, tokenizer: Any = None) -> str:
    if example.verifier == "code":
        return code(example, tokenizer)
    return chat(example, tokenizer) if has_chat_template(tokenizer) else base(example, tokenizer)


def _reads_stdin(reference: Any) -> bool:
    tests = reference.get("tests") if isinstance(reference, dict) else None
    return bool(tests) and all(isinstance(t, dict) and t.get("testtype", "stdin") == "stdin" for t in tests)
