"""Context templates: short generated prefixes that make keys and targets robust to context.

Structure (algorithms.md §0.2): ``[["{}"], [g + ". {}" for g in G]]`` with ``G`` one sampled
continuation (top-k 5, 10 tokens in total) of each seed word. Generated once per model and seed,
then cached on disk so runs are reproducible.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from bluebook.model.device import model_device
from bluebook.model.loading import model_fingerprint
from bluebook.runs import atomic_write_text, cache_root

SEED_WORDS = ("The", "Therefore", "Because", "I", "You")
Templates = tuple[tuple[str, ...], ...]


def flatten(templates: Templates) -> list[str]:
    return [t for group in templates for t in group]


def group_index(templates: Templates) -> list[int]:
    return [gi for gi, group in enumerate(templates) for _ in group]


def validate(templates) -> Templates:
    out = tuple(tuple(g) for g in templates)
    if not out or not all(out):
        raise ValueError("context templates must be a non-empty list of non-empty groups")
    for t in flatten(out):
        if t.count("{}") != 1:
            raise ValueError(f"context template {t!r} must contain exactly one '{{}}'")
    return out


@torch.no_grad()
def sample_templates(model, tok, seed: int = 0, max_len: int = 10, top_k: int = 5) -> Templates:
    """Sample one continuation per seed word (seeded, top-k) and build the two template groups."""
    device = model_device(model)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    texts = []
    for word in SEED_WORDS:
        ids = tok(word, return_tensors="pt")["input_ids"].to(device)
        n_special = len(ids[0]) - len(tok(word, add_special_tokens=False)["input_ids"])
        while ids.shape[1] < max_len:
            logits = model(input_ids=ids).logits[0, -1].float().cpu()
            top = torch.topk(logits, top_k)
            probs = torch.softmax(top.values, -1)
            choice = top.indices[torch.multinomial(probs, 1, generator=gen)]
            ids = torch.cat([ids, choice.view(1, 1).to(device)], 1)
        text = tok.decode(ids[0, n_special:], skip_special_tokens=True)
        texts.append(text.replace("{", " ").replace("}", " "))
    return (("{}",), tuple(t + ". {}" for t in texts))


def context_templates(model, tok, seed: int = 0, fixed=None, cache: bool = True) -> Templates:
    """Fixed templates if given; else the cached (or freshly sampled) templates for (model, seed)."""
    if fixed is not None:
        return validate(fixed)

    path = Path(cache_root()) / "templates" / f"{model_fingerprint(model)}-seed{seed}.json"
    if cache and path.exists():
        try:
            return validate(json.loads(path.read_text()))
        except (ValueError, json.JSONDecodeError):
            path.unlink(missing_ok=True)   # corrupt cache: resample
    t = sample_templates(model, tok, seed=seed)
    if cache:
        atomic_write_text(path, json.dumps([list(g) for g in t]))
    return t
