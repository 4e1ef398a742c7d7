"""Shared fixtures: a real tiny model (built once per test session) and the shared data folder."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny Qwen2 model + BPE tokenizer, no chat template, saved in Hugging Face format."""
    from rlvr.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_chat_model_dir(tmp_path_factory) -> Path:
    """Same as ``tiny_model_dir`` but the tokenizer carries a ChatML chat template."""
    from rlvr.tiny import TinyModelSpec, build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-chat-model"), TinyModelSpec(chat_template=True))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that need the real data sets skip when it is absent (a user's machine)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present beside the project")
    return SHARED_DATA
