"""Probe scoring on a tiny model, checked against continuation_nll called directly."""
import numpy as np
import pytest

from bluebook.data.probes import load_probe
from bluebook.metrics.probes import CONTENT_FREE, evaluate_probe, format_prompt, label_nll
from bluebook.metrics.scoring import continuation_nll
from bluebook.metrics.suite import AbilitySuite
from bluebook.model.loading import tiny_model

CHAT = ("{% for m in messages %}<|user|>{{ m['content'] }}<|end|>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.fixture(scope="module")
def model_tok():
    return tiny_model("tiny-llama")


def test_format_prompt_uses_the_chat_template_when_there_is_one(model_tok):
    _, tok = model_tok
    old = getattr(tok, "chat_template", None)
    try:
        tok.chat_template = None
        assert format_prompt(tok, "Q?") == "Q?\nAnswer:"
        tok.chat_template = CHAT
        assert format_prompt(tok, "Q?") == "<|user|>Q?<|end|><|assistant|>"
        assert format_prompt(tok, "Q?", chat=False) == "Q?\nAnswer:"
    finally:
        tok.chat_template = old


@pytest.mark.parametrize("name", ["sentiment", "entailment"])
def test_calibrated_prediction_is_the_argmin_of_the_prior_corrected_nll(model_tok, name):
    model, tok = model_tok
    probe = load_probe(name, n=12)
    words = [probe.label_words[lab] for lab in probe.labels]
    prompts = [format_prompt(tok, probe.prompt(it)) for it in probe.items]
    nll = np.array([[float(continuation_nll(model, tok, [p], [w])[0][0]) for w in words] for p in prompts])
    fields = [k for k in probe.items[0] if k.startswith("text")]
    free = format_prompt(tok, probe.prompt({f: CONTENT_FREE for f in fields}))
    prior = np.array([float(continuation_nll(model, tok, [free], [w])[0][0]) for w in words])
    assert np.allclose(label_nll(model, tok, probe), nll, atol=1e-5)
    got = evaluate_probe(model, tok, probe)
    assert got["predictions"] == (nll - prior).argmin(1).tolist()
    labels = [probe.labels.index(it["label"]) for it in probe.items]
    assert got["accuracy"]["value"] == pytest.approx(np.mean(np.array(labels) == (nll - prior).argmin(1)), abs=1e-4)
    raw = evaluate_probe(model, tok, probe, calibrate=False)
    assert raw["predictions"] == nll.argmin(1).tolist() and "uncalibrated" not in raw


def test_suite_config_changes_with_the_probe_contents():
    a = AbilitySuite(probes=("sentiment",), probe_n=10).config()
    b = AbilitySuite(probes=("sentiment",), probe_n=11).config()
    assert a["probe_digests"]["sentiment"] != b["probe_digests"]["sentiment"]
    with pytest.raises(ValueError, match="unknown probe"):
        AbilitySuite(probes=("nope",))
    with pytest.raises(ValueError, match="perplexity_texts"):
        AbilitySuite(perplexity_texts=-1)
