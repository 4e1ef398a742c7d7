"""`rlvr sft`: the loss covers target tokens only, training lowers it, the result loads, errors are clear."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rlvr import config
from rlvr.cli import main
from rlvr.config import ConfigError
from rlvr.sft import SFTConfig, SFTExample, completion_nll_sum, lr_factor, micro_batches, train


def write_problems(path, count=48):
    rows = []
    for index in range(count):
        a, b = index % 7 + 1, index % 5 + 2
        rows.append({"problem": f"Compute {a} + {b}.", "answer": str(a + b),
                     "solution": f"{a} + {b} = {a + b}. The answer is \\boxed{{{a + b}}}."})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def sft_config(model_dir, data_path, output_dir, *overrides):
    return config.load(SFTConfig, overrides=[
        f"model.path={model_dir}", "data.task=jsonl", f"data.path={data_path}", f"output.dir={output_dir}",
        "optim.batch_size=8", "optim.micro_batch_size=4", "optim.lr=3e-3", "output.log_every=5", *overrides,
    ])


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def test_loss_is_the_nll_of_target_tokens_only(tiny_model):
    eos = tiny_model.config.eos_token_id
    example = SFTExample(prompt_ids=[40, 41, 42], completion_ids=[43, 44, eos])
    with torch.no_grad():
        nll, count = completion_nll_sum(tiny_model, [example], pad_id=eos)
        logprobs = torch.log_softmax(tiny_model(torch.tensor([[40, 41, 42, 43, 44, eos]])).logits[0], -1)
    # Logits at position t predict token t + 1: targets 43, 44, eos sit at positions 3, 4, 5.
    expected = -(logprobs[2, 43] + logprobs[3, 44] + logprobs[4, eos])
    assert count == 3
    assert nll.item() == pytest.approx(expected.item(), rel=1e-5)
    # A longer prompt and right padding change nothing for the second row's own tokens.
    other = SFTExample(prompt_ids=[50, 51, 52, 53, 54, 55], completion_ids=[56, eos])
    with torch.no_grad():
        both, both_count = completion_nll_sum(tiny_model, [example, other], pad_id=eos)
        alone, _ = completion_nll_sum(tiny_model, [other], pad_id=eos)
    assert both_count == 5
    assert both.item() == pytest.approx(expected.item() + alone.item(), rel=1e-5)


def test_lr_warms_up_linearly_then_decays_by_cosine_to_the_floor():
    # 10 steps, 2 of warm-up, floor 0.1: 0.5, 1.0, then 0.1 + 0.9 * (1 + cos(pi * (s - 2) / 8)) / 2.
    assert lr_factor(0, 10, 2, 0.1) == pytest.approx(0.5)
    assert lr_factor(1, 10, 2, 0.1) == pytest.approx(1.0)
    assert lr_factor(2, 10, 2, 0.1) == pytest.approx(1.0)
    assert lr_factor(6, 10, 2, 0.1) == pytest.approx(0.55)
    assert lr_factor(10, 10, 2, 0.1) == pytest.approx(0.1)
    assert lr_factor(4, 10, 0, 0.0) == pytest.approx((1 + math.cos(math.pi * 0.4)) / 2)


def test_micro_batches_group_examples_of_similar_length():
    lengths = [9, 2, 7, 3, 8, 1]
    batch = [SFTExample([0] * n, [1]) for n in lengths]
    groups = micro_batches(batch, 2)
    assert [[len(e) for e in group] for group in groups] == [[2, 3], [4, 8], [9, 10]]


def test_training_lowers_the_loss_and_saves_a_loadable_model(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = sft_config(tiny_model_dir, write_problems(tmp_path / "train.jsonl"), tmp_path / "out", "optim.steps=12")
    losses = []
    result = train(cfg, on_step=lambda metrics: losses.append(metrics["loss"]))
    assert result.steps == 12 and len(losses) == 12 and result.examples == 48
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert not torch.equal(model.model.embed_tokens.weight, initial.model.embed_tokens.weight)
    output = model.generate(**tokenizer("Compute 1 + 2.", return_tensors="pt"), max_new_tokens=4, do_sample=False)
    assert output.shape[1] > 0
    assert config.load(SFTConfig, tmp_path / "out" / "sft_config.yaml") == cfg
    assert len((tmp_path / "out" / "metrics.jsonl").read_text().splitlines()) == 12


def test_config_errors_name_the_option(tiny_model_dir, tmp_path, capsys):
    data = write_problems(tmp_path / "train.jsonl", count=4)
    with pytest.raises(ConfigError, match=r"optim.micro_batch_size \(16\) is larger than optim.batch_size \(8\)"):
        train(sft_config(tiny_model_dir, data, tmp_path / "out", "optim.micro_batch_size=16"))
    with pytest.raises(ConfigError, match=r"no target text in metadata\['worked'\].*data.target_field"):
        train(sft_config(tiny_model_dir, data, tmp_path / "out", "data.target_field=worked", "optim.steps=1"))
    with pytest.raises(ConfigError, match="raise data.max_tokens"):
        train(sft_config(tiny_model_dir, data, tmp_path / "out", "data.max_tokens=5", "optim.steps=1"))

    assert main(["sft", "--print-config", "optim.lr=0.001"]) == 0
    assert "lr: 0.001  # Peak learning rate of AdamW." in capsys.readouterr().out
    assert main(["sft", "optim.batch_sise=4"]) == 2
    assert "Did you mean 'optim.batch_size'?" in capsys.readouterr().err
    assert main(["sft", f"model.path={tmp_path / 'missing'}", f"data.path={data}", "data.task=jsonl"]) == 2
    assert "does not exist" in capsys.readouterr().err
