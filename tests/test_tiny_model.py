"""The tiny-model helper gives a real model that transformers and vLLM both load and run."""

import json

import pytest
import torch


def test_tiny_model_shape_and_tokenizer(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    params = sum(p.numel() for p in model.parameters())
    assert 100_000 < params < 1_000_000
    assert json.loads((tiny_model_dir / "config.json").read_text())["model_type"] == "qwen2"
    text = "The answer is \\boxed{123}. <think> 4 + 5 = 9 </think>"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text  # byte-level: lossless
    assert tokenizer.tokenize("2024") == ["2", "0", "2", "4"]  # digits split one by one
    assert tokenizer.chat_template is None


def test_tiny_chat_model_has_a_chat_template(tiny_chat_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model_dir)
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.slow
def test_transformers_and_vllm_load_and_agree(tiny_model_dir):
    """Greedy decoding from the same weights gives the same tokens in both engines."""
    vllm = pytest.importorskip("vllm", reason="vLLM is not installed (the `cpu` or `vllm` extra)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompt = "Question: what is 12 + 5?"
    input_ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hf_tokens = model.generate(input_ids, max_new_tokens=12, do_sample=False)[0, input_ids.shape[1] :].tolist()

    llm = vllm.LLM(model=str(tiny_model_dir), kv_cache_memory_bytes=2**28, max_model_len=256, seed=0, enforce_eager=True)
    try:
        output = llm.generate([prompt], vllm.SamplingParams(max_tokens=12, temperature=0.0), use_tqdm=False)
        vllm_tokens = list(output[0].outputs[0].token_ids)
    finally:
        del llm
    assert len(vllm_tokens) == 12
    assert vllm_tokens == hf_tokens
