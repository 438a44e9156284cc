"""General ability before/after editing, without network access (the paper's §5 "general capability"
and "hidden-state shift" checks, in an offline form).

* :func:`perplexity` on held-out Wikipedia lead sections (:func:`heldout_texts`: documents of the
  offline corpus that are **not** in the layer-statistics subset ``wiki_texts(n=1000, seed=1)``);
* :func:`known_fact_accuracy`: how often the model's top-1 next token after a CounterFact rewrite
  prompt is the first token of the *true* object, on records that were not edited;
* :func:`representation_shift`: per-subject L2 distance between hidden states of unrelated subjects
  at the last critical layer before and after editing (the reference saves these for
  ``known_1000.json`` subjects);
* :func:`run_lm_eval`: a thin wrapper over ``lm_eval.simple_evaluate`` when that optional package is
  installed (GLUE/MMLU-style tasks need downloads, so nothing here depends on it).
"""
from __future__ import annotations

import importlib.util
import math
import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from bluebook.core.keys import read_states
from bluebook.data import WIKI_OFFLINE, as_requests, wiki_texts
from bluebook.model.device import eval_mode, model_device
from bluebook.model.tokens import fit_to_context, pad_id, right_pad

__all__ = ["heldout_texts", "token_nll", "perplexity", "known_fact_hits", "known_fact_accuracy", "Shift",
           "subject_states", "representation_shift", "lm_eval_available", "run_lm_eval"]

STATS_N, STATS_SEED = 1000, 1      # the subset the layer statistics use (StatsConfig defaults)


# --------------------------------------------------------------------------------------------
# held-out text and perplexity
# --------------------------------------------------------------------------------------------

def heldout_texts(n: int = 200, seed: int = 0, stats_n: int = STATS_N, stats_seed: int = STATS_SEED,
                  source: str = WIKI_OFFLINE) -> list[str]:
    """``n`` texts of the offline Wikipedia corpus that the layer statistics never saw.

    The statistics use ``wiki_texts(n=stats_n, seed=stats_seed)``: the first ``stats_n`` indices of
    ``range(N)`` shuffled by ``random.Random(stats_seed)``. The remaining indices (minus any document
    whose text equals a statistics document) are sorted, shuffled by ``random.Random(seed)`` and
    the first ``n`` are returned, so the result is deterministic and disjoint from the statistics.
    """
    texts = wiki_texts(n=None, source=source)
    order = list(range(len(texts)))
    random.Random(stats_seed).shuffle(order)
    used = set(order[:stats_n])
    used_text = {texts[i] for i in used}
    rest = [i for i in range(len(texts)) if i not in used and texts[i] not in used_text]
    if n > len(rest):
        raise ValueError(f"heldout_texts: n={n} requested but only {len(rest)} held-out texts exist")
    random.Random(seed).shuffle(rest)
    return [texts[i] for i in rest[:n]]


@torch.no_grad()
def token_nll(model, tok, texts: Sequence[str], max_len: int = 256, batch_size: int = 8) -> list[torch.Tensor]:
    """Per text, the NLL (nats) of every predicted token (token 2.. of the truncated text; a BOS
    added by the tokenizer is context, never a target). Right padding, built from ids. Texts are
    truncated to ``max_len`` tokens, or to the model's context where that is shorter."""
    dev = model_device(model)
    pad = pad_id(tok)
    max_len = fit_to_context(model, max_len)
    ids = [tok(t, truncation=True, max_length=max_len)["input_ids"] for t in texts]
    out: list[torch.Tensor] = []
    with eval_mode(model):
        for s in range(0, len(ids), batch_size):
            chunk = ids[s:s + batch_size]
            x, mask = right_pad(chunk, pad)
            logits = model(input_ids=x.to(dev), attention_mask=mask.to(dev)).logits.float()
            logp = torch.log_softmax(logits[:, :-1], -1)
            nll = -logp.gather(-1, x[:, 1:].to(dev)[..., None])[..., 0].cpu()
            for r, row in enumerate(chunk):
                out.append(nll[r, :max(0, len(row) - 1)].double())
    return out


def perplexity(model, tok, texts: Sequence[str], max_len: int = 256, batch_size: int = 8) -> float:
    """``exp(mean NLL over every predicted token of every text)`` (token-weighted, natural log)."""
    nll = token_nll(model, tok, texts, max_len=max_len, batch_size=batch_size)
    allv = torch.cat(nll) if nll else torch.zeros(0)
    if allv.numel() == 0:
        raise ValueError("perplexity: no predicted tokens (every text has fewer than 2 tokens)")
    return float(math.exp(float(allv.mean())))


# --------------------------------------------------------------------------------------------
# known facts
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def known_fact_hits(model, tok, requests, batch_size: int = 64) -> list[bool]:
    """Per request: is the first token of ``" " + target_true`` the top-1 next token after the
    filled rewrite prompt?"""
    reqs = as_requests(requests)
    dev = model_device(model)
    pad = pad_id(tok)
    prompts, firsts = [], []
    for r in reqs:
        if r.target_true is None:
            raise ValueError(f"known_fact_accuracy needs target_true (case_id={r.case_id})")
        prompts.append(tok(r.text)["input_ids"])
        firsts.append(tok(" " + r.target_true, add_special_tokens=False)["input_ids"][0])
    hits: list[bool] = []
    for s in range(0, len(prompts), batch_size):
        chunk = prompts[s:s + batch_size]
        x, mask = right_pad(chunk, pad)
        logits = model(input_ids=x.to(dev), attention_mask=mask.to(dev)).logits
        last = torch.tensor([len(row) - 1 for row in chunk], device=logits.device)
        top = logits[torch.arange(len(chunk), device=logits.device), last].argmax(-1).cpu().tolist()
        hits += [t == f for t, f in zip(top, firsts[s:s + batch_size])]
    return hits


def known_fact_accuracy(model, tok, requests, batch_size: int = 64) -> float:
    """Fraction (0..1) of requests whose true object's first token is the greedy next token."""
    hits = known_fact_hits(model, tok, requests, batch_size=batch_size)
    if not hits:
        raise ValueError("known_fact_accuracy: requests is empty")
    return float(np.mean(hits))


# --------------------------------------------------------------------------------------------
# representation shift
# --------------------------------------------------------------------------------------------

@dataclass
class Shift:
    """Per-subject distances between two sets of hidden states (columns = subjects)."""
    l2: np.ndarray           # ‖h_after − h_before‖₂
    relative: np.ndarray     # ‖h_after − h_before‖₂ / ‖h_before‖₂
    cosine: np.ndarray       # cos(h_before, h_after)

    @property
    def mean_l2(self) -> float:
        return float(self.l2.mean())

    @property
    def mean_relative(self) -> float:
        return float(self.relative.mean())


def subject_states(model, tok, requests, layer: int) -> torch.Tensor:
    """Block ``layer``'s output at each subject's last token: ``(d, n)`` on the CPU."""
    return read_states(model, tok, as_requests(requests), hidden_layers=[layer]).hidden[layer].detach().cpu()


def representation_shift(model_before_states, model_after_states) -> Shift:
    """Distances between matching columns of two ``(d, n)`` state matrices (before vs after editing)."""
    a = torch.as_tensor(model_before_states).detach().cpu().double()
    b = torch.as_tensor(model_after_states).detach().cpu().double()
    if a.shape != b.shape:
        raise ValueError(f"state shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.ndim == 1:
        a, b = a[:, None], b[:, None]
    diff = (b - a).norm(dim=0)
    base = a.norm(dim=0).clamp_min(1e-12)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=0)
    return Shift(diff.numpy(), (diff / base).numpy(), cos.numpy())


# --------------------------------------------------------------------------------------------
# optional: lm-evaluation-harness
# --------------------------------------------------------------------------------------------

def lm_eval_available() -> bool:
    """True when the optional ``lm_eval`` package (lm-evaluation-harness) can be imported."""
    return importlib.util.find_spec("lm_eval") is not None


def run_lm_eval(model, tok, tasks: Sequence[str], limit: int | None = 100, batch_size: int = 8, **kw) -> dict:
    """``lm_eval.simple_evaluate`` on an already loaded (possibly edited) model; returns its
    ``results`` dict. Needs the optional package and usually network access for the task data."""
    if not lm_eval_available():
        raise ImportError("run_lm_eval needs the optional 'lm_eval' package (pip install lm-eval)")
    import lm_eval  # deferred: an optional package
    from lm_eval.models.huggingface import HFLM
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size)
    got = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), limit=limit, **kw)
    return got.get("results", got)
