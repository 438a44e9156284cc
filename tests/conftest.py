import os

import pytest


def pytest_configure(config):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smollm2():
    import bluebook
    return bluebook.load_model("smollm2-135m")


@pytest.fixture(params=["tiny-gpt2", "tiny-gptj", "tiny-llama"])
def tiny(request):
    from bluebook.model.loading import tiny_model
    return tiny_model(request.param)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("BLUEBOOK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
