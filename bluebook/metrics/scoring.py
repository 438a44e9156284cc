"""Scoring primitives: teacher-forced continuation NLL and per-token accuracy (algorithms.md §9).

Everything here is device-agnostic: inputs go to ``next(model.parameters()).device``, all scoring
runs under ``torch.no_grad()`` and is batched with **right padding** built from token ids (so it
works for any tokenizer, with or without a pad token, with or without a BOS token).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from bluebook.model.device import eval_mode, model_device
from bluebook.model.specs import output_logits
from bluebook.model.tokens import pad_id, right_pad

__all__ = ["continuation_nll", "token_accuracy", "joint_tokenization_agrees", "prefix_ids", "continuation_ids",
           "logits_at"]

GROUPS = ("rewrite", "paraphrase", "neighborhood")
"""The three prompt groups of an evaluated case, in the order of the per-case keys."""


def mean_or_none(xs) -> float | None:
    """``float(np.mean(xs))``, or None for an empty iterable (a group without prompts)."""
    xs = list(xs)
    return float(np.mean(xs)) if xs else None


def _with_space(text: str) -> str:
    """``" " + text`` (one leading space is ensured; targets are stored without it)."""
    return text if text.startswith(" ") else " " + text


def prefix_ids(tok, prefixes: Sequence[str]) -> list[list[int]]:
    """``tok(p)`` with the tokenizer's normal special tokens (BOS included when it adds one)."""
    if not prefixes:
        return []
    return [list(x) for x in tok(list(prefixes))["input_ids"]]


def continuation_ids(tok, continuations: Sequence[str]) -> list[list[int]]:
    """``tok(" " + o, add_special_tokens=False)``: never a BOS inside a continuation.

    One leading space is ensured (a continuation that already starts with one is not given a
    second); each distinct continuation is tokenised once.
    """
    if not continuations:
        return []
    uniq = sorted(set(continuations))
    enc = tok([_with_space(o) for o in uniq], add_special_tokens=False)["input_ids"]
    table = {o: list(ids) for o, ids in zip(uniq, enc)}
    return [table[o] for o in continuations]


def logits_at(model, ids: torch.Tensor, mask: torch.Tensor, spans) -> list[torch.Tensor]:
    """Logits of each row ``r`` at positions ``start_r .. start_r + len_r - 1`` (a list of tensors).

    ``spans`` holds one ``(start_r, len_r)`` per row of ``ids``. The output head runs only at those
    positions (it is the largest matrix of a small model); models whose logits are post-processed
    beyond the head in a way :func:`~bluebook.model.specs.output_logits` does not repeat (a logit
    scale) get a full forward.
    """
    cfg = getattr(model, "config", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if cfg is None or head is None or not hasattr(model, "base_model") or getattr(cfg, "logit_scale", None):
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        return [logits[r, a:a + n] for r, (a, n) in enumerate(spans)]
    hidden = model.base_model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    rows = torch.cat([torch.arange(a, a + n) for a, n in spans]).to(hidden.device)
    owner = torch.cat([torch.full((n,), r) for r, (a, n) in enumerate(spans)]).to(hidden.device)
    out = output_logits(model, hidden[owner, rows])
    return list(out.split([n for _, n in spans]))


@torch.no_grad()
def _teacher_forced(model, prefix_seqs: Sequence[Sequence[int]], cont_seqs: Sequence[Sequence[int]],
                    pad: int, batch_size: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One forward per ``prefix + continuation`` sequence (right padded, batched).

    Returns, per pair, ``(logprobs, hits)`` over the continuation tokens: ``logprobs[j]`` is
    ``log p(c_j | prefix, c_<j)`` and ``hits[j]`` whether the argmax at that position is ``c_j``.
    Pairs are processed longest-first in chunks of ``batch_size`` (less padding) and returned in
    the input order.
    """
    n = len(prefix_seqs)
    if n != len(cont_seqs):
        raise ValueError(f"{n} prefixes but {len(cont_seqs)} continuations")
    for i, (p, c) in enumerate(zip(prefix_seqs, cont_seqs)):
        if len(p) == 0:
            raise ValueError(f"pair {i}: the prefix has no tokens, so its first continuation token has "
                             "nothing to be predicted from (use a non-empty prefix or a BOS-adding tokenizer)")
        if len(c) == 0:
            raise ValueError(f"pair {i}: the continuation has no tokens")
    batch_size = max(1, int(batch_size))
    dev = model_device(model)
    order = sorted(range(n), key=lambda i: -(len(prefix_seqs[i]) + len(cont_seqs[i])))
    out: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n
    with eval_mode(model):
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            ids, mask = right_pad([list(prefix_seqs[i]) + list(cont_seqs[i]) for i in idx], pad)
            # the logits at position t predict token t + 1: only the positions before each
            # continuation token go through the output head
            spans = [(len(prefix_seqs[i]) - 1, len(cont_seqs[i])) for i in idx]
            logits = logits_at(model, ids.to(dev), mask.to(dev), spans)
            for r, i in enumerate(idx):
                rows = logits[r].float()
                target = torch.tensor(cont_seqs[i], dtype=torch.long, device=rows.device)
                lp = torch.log_softmax(rows, dim=-1).gather(1, target[:, None])[:, 0]
                hits = rows.argmax(dim=-1) == target
                out[i] = (lp.double().cpu(), hits.cpu())
    return out  # type: ignore[return-value]


def continuation_nll(model, tok, prefixes: Sequence[str], continuations: Sequence[str],
                     batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean per-token NLL of ``" " + o`` after ``p``, and whether greedy decoding reproduces it.

    For each pair ``(p, o)``: prefix ids = ``tok(p)`` (BOS included if the tokenizer adds one);
    candidate ids ``c = tok(" " + o, add_special_tokens=False)`` (a single leading space is ensured,
    so pass targets without it, as :class:`~bluebook.data.EditRequest` stores them). The model reads
    ``prefix_ids + c`` (right padded, positions from the left) and

    * ``nll = mean_j −log p(c_j | prefix, c_<j)``;
    * ``correct`` = the argmax at every candidate position equals ``c_j``.

    Returns ``(nll, correct)``: a float64 tensor ``[n]`` and a bool tensor ``[n]`` (on CPU).
    ``batch_size`` bounds memory: a chunk's logits hold ``batch × length × vocab`` floats.

    **Concatenating ids vs the reference.** The reference scores ``tok(f"{p} {o}")`` (the joined
    string tokenised jointly) and reads the candidate positions off ``len(tok(p))`` and
    ``tok(" " + o)``. For byte-level BPE tokenizers with a GPT-2 style pre-tokenizer (GPT-2, GPT-J,
    SmolLM2, the tiny test tokenizer; Llama-3's pattern behaves the same way at a space) the space
    before ``o`` always starts a new pre-token, so no BPE merge crosses the boundary and the two
    agree token for token. Checked
    with :func:`joint_tokenization_agrees` on the tiny tokenizer (with and without BOS) and on
    SmolLM2 for plain words, numbers, quotes, "$5", accented and CJK text, a newline-ending prefix
    and a prefix ending in a space: all agree (the integration tests repeat the check on their
    prompts). Where they would *not* agree (SentencePiece tokenizers such as Llama-2's, where
    ``tok(" Paris")`` may start with a lone ``"▁"`` piece) the reference silently scores
    mismatched positions, whereas concatenation always scores exactly the candidate ids. The
    reference also calls ``tok(" " + o)`` with special tokens and, on Llama, strips one BOS by a
    model-path test; here the continuation simply never gets special tokens.
    """
    prefixes, continuations = list(prefixes), list(continuations)
    if len(prefixes) != len(continuations):
        raise ValueError(f"{len(prefixes)} prefixes but {len(continuations)} continuations")
    if not prefixes:
        return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.bool)
    uniq = sorted(set(prefixes))
    ptable = dict(zip(uniq, prefix_ids(tok, uniq)))
    res = _teacher_forced(model, [ptable[p] for p in prefixes], continuation_ids(tok, continuations),
                          pad_id(tok), batch_size)
    nll = torch.tensor([float(-lp.mean()) for lp, _ in res], dtype=torch.float64)
    correct = torch.tensor([bool(h.all()) for _, h in res], dtype=torch.bool)
    return nll, correct


def token_accuracy(model, tok, prompts: Sequence[str], answers: Sequence[str],
                   batch_size: int = 64) -> list[list[int]]:
    """Teacher-forced top-1 accuracy per answer token (zsRE, algorithms.md §9.3).

    For each pair, answer ids ``a = tok(" " + answer, add_special_tokens=False)`` and prompt ids
    ``tok(prompt)``. Token ``i`` is correct iff the argmax after ``prompt_ids + a[:i]`` is ``a[i]``.
    All ``i`` are read from ONE forward over ``prompt_ids + a``: with causal attention the logits
    at position ``len(prompt_ids) + i − 1`` depend only on ``prompt_ids + a[:i]``, so they are
    exactly the logits the reference gets from its ``i``-th separate input (up to float
    round-off from different padding). Returns a list of per-token 0/1 lists.
    """
    prompts, answers = list(prompts), list(answers)
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    if not prompts:
        return []
    res = _teacher_forced(model, prefix_ids(tok, prompts), continuation_ids(tok, answers),
                          pad_id(tok), batch_size)
    return [[int(x) for x in h.tolist()] for _, h in res]


def joint_tokenization_agrees(tok, prefix: str, continuation: str) -> bool:
    """True when ``tok(p) + tok(" " + o, add_special_tokens=False) == tok(f"{p} {o}")``.

    That is the condition under which :func:`continuation_nll` (concatenated ids) and the reference
    (joint tokenisation) score the very same token sequence.
    """
    joined = list(tok(prefix + _with_space(continuation))["input_ids"])
    concat = prefix_ids(tok, [prefix])[0] + continuation_ids(tok, [continuation])[0]
    return joined == concat
