"""Inputs shared by the reference and bluebook (not under test) and the comparison measure."""
from __future__ import annotations

import torch

from reference import proj_name


class _Enough(Exception):
    pass


@torch.no_grad()
def second_moments(model, layers, input_ids, attention_mask=None):
    """C = Σ k kᵀ / N over every non-padding token (float64), k = the edited projection's input."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    got = {}

    def keep(mod, args, l):
        got[l] = args[0]
        if len(got) == len(layers):
            raise _Enough        # nothing above the deepest layer is needed

    hooks = [model.get_submodule(proj_name(model, l)).register_forward_pre_hook(
        lambda mod, args, l=l: keep(mod, args, l)) for l in layers]
    try:
        model(input_ids=input_ids, attention_mask=attention_mask)
    except _Enough:
        pass
    finally:
        for h in hooks:
            h.remove()
    mask = attention_mask.bool()
    out = {}
    for l in layers:
        k = got[l][mask].double()
        out[l] = k.T @ k / k.shape[0]
    return out


def family_model(family, n_layers=5):
    """``(model, tok)``: a shipped tiny model (``"tiny-gpt2"``, ...) or a small random model of a
    ``config.model_type`` (``"mistral"``, ``"gemma3_text"``, ...) with the shipped tiny tokenizer."""
    from bluebook.model.loading import tiny_model
    from bluebook.model.tiny import tiny_family_with_tokenizer

    if family.startswith("tiny-"):
        return tiny_model(family, n_layers=n_layers)
    return tiny_family_with_tokenizer(family, n_layers=n_layers)


def random_token_moments(model, layers, n_seq=8, n_tok=64, seed=0):
    """C from random token sequences: enough tokens (n_seq·n_tok > m) for a full-rank C."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, model.config.vocab_size, (n_seq, n_tok), generator=g)
    return second_moments(model, layers, ids)


def text_moments(model, tok, layers, texts, max_len=128):
    enc = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_len)
    return second_moments(model, layers, enc["input_ids"], enc["attention_mask"])


def rel(a, b):
    """‖a − b‖ / ‖b‖ in float64 (b is the reference)."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())
