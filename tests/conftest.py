import os

import pytest


def pytest_configure(config):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        # parallel workers (pytest-xdist) share the cores: each worker, and every notebook kernel or
        # subprocess it starts, gets its share instead of all of them (threads would spin-wait on
        # each other). An explicit OMP_NUM_THREADS wins.
        share = str(max(1, (os.cpu_count() or 1) // workers))
        os.environ.setdefault("OMP_NUM_THREADS", share)
        os.environ.setdefault("MKL_NUM_THREADS", os.environ["OMP_NUM_THREADS"])
        import torch
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


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
