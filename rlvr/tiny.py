"""Build a tiny causal LM and tokenizer from scratch, locally, in seconds.

No download: a byte-level BPE tokenizer is trained on a small corpus (by default text about
arithmetic and boxed answers; the demo passes its own), and a Qwen2-architecture model with a few
hundred thousand parameters is initialised at random. The result is a normal Hugging Face
directory that ``transformers`` and ``vllm`` both load. Tests use it as their real model; the
demo trains it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

EOS_TOKEN = "<|endoftext|>"
CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")

# A ChatML template like Qwen's, for tests of the chat prompt path.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of the tiny model. The defaults give about 0.4M parameters."""

    vocab_size: int = 512
    hidden_size: int = 128
    intermediate_size: int = 256
    num_layers: int = 2
    num_heads: int = 4  # head_dim 32: a size vLLM's CPU attention supports
    num_kv_heads: int = 2
    max_position_embeddings: int = 1024
    chat_template: bool = False
    seed: int = 0


def default_corpus(lines: int = 2000, seed: int = 0) -> list[str]:
    """Text with the characters and shapes the tests and the demo use."""
    rng = random.Random(seed)
    words = "the answer is so we have then compute let find what value of sum total each".split()
    corpus = []
    for _ in range(lines):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        op = rng.choice("+-*")
        sentence = " ".join(rng.choices(words, k=rng.randint(3, 8)))
        corpus.append(
            f"Question: {sentence} {a} {op} {b}? <think> {a} {op} {b} = {eval(f'{a}{op}{b}')} </think> "
            f"The answer is \\boxed{{{eval(f'{a}{op}{b}')}}}. Solve for x: {a}x + {b} = 0, x = \\frac{{-{b}}}{{{a}}}"
        )
    return corpus


def build_tokenizer(corpus: Iterable[str], vocab_size: int = 512, chat_template: bool = False,
                    whole_tokens: Sequence[str] = ()):
    """Train a byte-level BPE tokenizer (digits split one by one, as Qwen's) on ``corpus``.

    ``whole_tokens``: strings that are always one token of their own (ordinary, not special: decoding keeps
    them), so that no BPE merge crosses their edges; e.g. the tool-call markers, whose ids are then the same
    whether a text is encoded whole (SFT) or in pieces (a rollout's prompt, turns and observations)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = [EOS_TOKEN, *CHAT_TOKENS]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    tokenizer.add_tokens(list(whole_tokens))
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN)
    if chat_template:
        wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def build_tiny_model(output_dir: str | Path, spec: TinyModelSpec = TinyModelSpec(), corpus: Iterable[str] | None = None,
                     whole_tokens: Sequence[str] = ()) -> Path:
    """Write a randomly initialised tiny Qwen2 model and its tokenizer (see :func:`build_tokenizer`) to ``output_dir``."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    output_dir = Path(output_dir)
    tokenizer = build_tokenizer(
        corpus if corpus is not None else default_corpus(seed=spec.seed), spec.vocab_size, spec.chat_template, whole_tokens
    )
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config.dtype = torch.float32  # vLLM otherwise loads an unannotated checkpoint as bf16
    torch.manual_seed(spec.seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.eos_token_id
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir
