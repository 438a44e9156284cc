"""Evaluation metrics for CounterFact and zsRE (algorithms.md §9).

Everything here is device-agnostic: inputs go to ``next(model.parameters()).device``, all scoring
runs under ``torch.no_grad()`` and is batched with **right padding** built from token ids (so it
works for any tokenizer, with or without a pad token, with or without a BOS token).

Summary names and the reference keys
------------------------------------
``summarize`` reports friendly names; per-case dicts keep the reference names (without the
``pre_``/``post_`` prefix that ``experiments/summarize.py`` adds for before/after editing).

| bluebook summary key       | reference summary key       | per-case key it averages             |
|----------------------------|-----------------------------|--------------------------------------|
| efficacy (CounterFact)     | post_rewrite_success        | rewrite_success                      |
| generalization (CF)        | post_paraphrase_success     | paraphrase_success                   |
| specificity (CF)           | post_neighborhood_success   | neighborhood_success                 |
| efficacy_magnitude         | post_rewrite_diff           | rewrite_diff                         |
| generalization_magnitude   | post_paraphrase_diff        | paraphrase_diff                      |
| specificity_magnitude      | post_neighborhood_diff      | neighborhood_diff                    |
| score                      | post_score                  | harmonic mean of the three successes |
| fluency                    | post_ngram_entropy          | ngram_entropy                        |
| consistency                | post_reference_score        | reference_score                      |
| efficacy (zsRE)            | post_rewrite_acc            | rewrite_acc                          |
| generalization (zsRE)      | post_paraphrase_acc         | paraphrase_acc                       |
| specificity (zsRE)         | post_neighborhood_acc       | neighborhood_acc                     |

Every summary value is ``round(100 * mean over cases, 2)``; ``<name>_std`` is
``round(100 * std over cases, 2)`` (population std, as ``np.std``). ``score`` is the harmonic mean
of the three already-rounded ×100 success means (as the reference does), rounded to 2 dp.
Per-case values that are ``None`` (for example a case without paraphrase prompts) are left out of
the mean; ``NaN`` values propagate, as in the reference.

Deviations from the reference code (all deliberate, see the docstrings for details)
-----------------------------------------------------------------------------------
* Candidate ids are appended to the prefix ids instead of re-tokenising ``f"{p} {o}"``
  (:func:`continuation_nll`); zsRE uses one teacher-forced forward per (prompt, answer) pair instead
  of one forward per answer token, on ids rather than decoded strings (:func:`evaluate_zsre`).
* BOS is handled generically (``add_special_tokens=False`` for continuations, ``tok(prefix)`` for
  prefixes); there is no "is this Llama?" test on the model path.
* Fluency word tokens come from ``word_tokenize(text, preserve_line=True)`` (no punkt data
  offline); see :func:`ngram_entropy` for the measured effect.
* Generation uses HF ``generate`` with left padding (the reference has its own right-padded
  sampling loop); the sampling distribution, the 100-token total length and the "do not stop at
  EOS" behaviour are the same (:func:`generate_texts`).
* Fluency is computed whenever ``generation=True``; the reference only generates when attribute
  snippets are loaded. Without the snippet/idf/vocab files, consistency is reported as
  unavailable (``None`` plus a note), never as 0.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from bluebook.data import EditRequest, as_requests
from bluebook.model.device import eval_mode, model_device
from bluebook.model.tokens import pad_id, right_pad

__all__ = [
    "continuation_nll",
    "token_accuracy",
    "counterfact_case",
    "evaluate_counterfact",
    "evaluate_zsre",
    "evaluate",
    "summarize",
    "harmonic_mean",
    "ngram_entropy",
    "text_ngram_entropy",
    "fluency_score",
    "generate_texts",
    "ConsistencyResources",
    "tfidf_vector",
    "tfidf_cosine",
    "consistency_score",
    "CONSISTENCY_UNAVAILABLE",
    "joint_tokenization_agrees",
]

CONSISTENCY_UNAVAILABLE = "unavailable: attribute_snippets/idf/tfidf_vocab not supplied"
GENERATION_NOT_RUN = "unavailable: generation was not run (generation=False)"


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------

def _with_space(text: str) -> str:
    """``" " + text`` (one leading space is ensured; targets are stored without it)."""
    return text if text.startswith(" ") else " " + text


def _prefix_ids(tok, prefixes: Sequence[str]) -> list[list[int]]:
    """``tok(p)`` with the tokenizer's normal special tokens (BOS included when it adds one)."""
    if not prefixes:
        return []
    return [list(x) for x in tok(list(prefixes))["input_ids"]]


def _continuation_ids(tok, continuations: Sequence[str]) -> list[list[int]]:
    """``tok(" " + o, add_special_tokens=False)``: never a BOS inside a continuation."""
    if not continuations:
        return []
    uniq = sorted(set(continuations))
    enc = tok([_with_space(o) for o in uniq], add_special_tokens=False)["input_ids"]
    table = {o: list(ids) for o, ids in zip(uniq, enc)}
    return [table[o] for o in continuations]


def _mean(xs) -> float | None:
    xs = list(xs)
    return float(np.mean(xs)) if xs else None


def _logits_at(model, ids: torch.Tensor, mask: torch.Tensor, spans) -> list[torch.Tensor]:
    """Logits of each row ``r`` at positions ``start_r .. start_r + len_r - 1`` (a list of tensors).

    The output head runs only at those positions (it is the largest matrix of a small model); models
    whose logits are post-processed beyond the head (soft-capping, scaling) get a full forward.
    """
    cfg = getattr(model, "config", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if (cfg is None or head is None or not hasattr(model, "base_model")
            or getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None)):
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        return [logits[r, a:a + n] for r, (a, n) in enumerate(spans)]
    hidden = model.base_model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    rows = torch.cat([torch.arange(a, a + n) for a, n in spans]).to(hidden.device)
    owner = torch.cat([torch.full((n,), r) for r, (a, n) in enumerate(spans)]).to(hidden.device)
    out = head(hidden[owner, rows])
    return list(out.split([n for _, n in spans]))


@torch.no_grad()
def _teacher_forced(model, prefix_ids: Sequence[Sequence[int]], cont_ids: Sequence[Sequence[int]],
                    pad_id: int, batch_size: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One forward per ``prefix + continuation`` sequence (right padded, batched).

    Returns, per pair, ``(logprobs, hits)`` over the continuation tokens: ``logprobs[j]`` is
    ``log p(c_j | prefix, c_<j)`` and ``hits[j]`` whether the argmax at that position is ``c_j``.
    Pairs are processed longest-first in chunks of ``batch_size`` (less padding) and returned in
    the input order.
    """
    n = len(prefix_ids)
    if n != len(cont_ids):
        raise ValueError(f"{n} prefixes but {len(cont_ids)} continuations")
    for i, (p, c) in enumerate(zip(prefix_ids, cont_ids)):
        if len(p) == 0:
            raise ValueError(f"pair {i}: the prefix has no tokens, so its first continuation token has "
                             "nothing to be predicted from (use a non-empty prefix or a BOS-adding tokenizer)")
        if len(c) == 0:
            raise ValueError(f"pair {i}: the continuation has no tokens")
    batch_size = max(1, int(batch_size))
    dev = model_device(model)
    order = sorted(range(n), key=lambda i: -(len(prefix_ids[i]) + len(cont_ids[i])))
    out: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n
    with eval_mode(model):
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            ids, mask = right_pad([list(prefix_ids[i]) + list(cont_ids[i]) for i in idx], pad_id)
            # the logits at position t predict token t + 1: only the positions before each
            # continuation token go through the output head
            spans = [(len(prefix_ids[i]) - 1, len(cont_ids[i])) for i in idx]
            logits = _logits_at(model, ids.to(dev), mask.to(dev), spans)
            for r, i in enumerate(idx):
                rows = logits[r].float()
                target = torch.tensor(cont_ids[i], dtype=torch.long, device=rows.device)
                lp = torch.log_softmax(rows, dim=-1).gather(1, target[:, None])[:, 0]
                hits = rows.argmax(dim=-1) == target
                out[i] = (lp.double().cpu(), hits.cpu())
    return out  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# scoring primitives
# --------------------------------------------------------------------------------------------

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
    mismatched positions, whereas concatenation always scores exactly the candidate ids. The reference also calls ``tok(" " + o)`` with
    special tokens and, on Llama, strips one BOS by a model-path test; here the continuation simply
    never gets special tokens.
    """
    prefixes, continuations = list(prefixes), list(continuations)
    if len(prefixes) != len(continuations):
        raise ValueError(f"{len(prefixes)} prefixes but {len(continuations)} continuations")
    if not prefixes:
        return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.bool)
    uniq = sorted(set(prefixes))
    ptable = dict(zip(uniq, _prefix_ids(tok, uniq)))
    res = _teacher_forced(model, [ptable[p] for p in prefixes], _continuation_ids(tok, continuations),
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
    res = _teacher_forced(model, _prefix_ids(tok, prompts), _continuation_ids(tok, answers),
                          pad_id(tok), batch_size)
    return [[int(x) for x in h.tolist()] for _, h in res]


def joint_tokenization_agrees(tok, prefix: str, continuation: str) -> bool:
    """True when ``tok(p) + tok(" " + o, add_special_tokens=False) == tok(f"{p} {o}")``.

    That is the condition under which :func:`continuation_nll` (concatenated ids) and the reference
    (joint tokenisation) score the very same token sequence.
    """
    joined = list(tok(prefix + _with_space(continuation))["input_ids"])
    concat = _prefix_ids(tok, [prefix])[0] + _continuation_ids(tok, [continuation])[0]
    return joined == concat


# --------------------------------------------------------------------------------------------
# CounterFact
# --------------------------------------------------------------------------------------------

_GROUPS = ("rewrite", "paraphrase", "neighborhood")


def _cf_prompt_sets(req: EditRequest) -> dict[str, list[str]]:
    return {"rewrite": [req.text], "paraphrase": list(req.paraphrase_prompts),
            "neighborhood": list(req.neighborhood_prompts)}


def evaluate_counterfact(model, tok, requests, batch_size: int = 64, generation: bool = False,
                         resources: "ConsistencyResources | None" = None, max_out_len: int = 100,
                         top_k: int = 5, seed: int = 0, gen_batch_size: int = 32) -> list[dict]:
    """CounterFact metrics per case (algorithms.md §9.2), all prompts of all cases batched together.

    Every (prefix, candidate) pair of every case goes into one flat list scored by
    :func:`continuation_nll` in chunks of ``batch_size``. Per case the dict holds the reference
    keys

    * ``rewrite_prompts_probs``, ``paraphrase_prompts_probs``, ``neighborhood_prompts_probs``:
      lists of ``{"target_new": NLL_new, "target_true": NLL_true}`` (mean token NLLs, not
      probabilities, despite the name);
    * ``rewrite_prompts_correct``, ``paraphrase_prompts_correct`` (greedy reproduces
      ``target_new``) and ``neighborhood_prompts_correct`` (greedy reproduces ``target_true``);

    and the per-case quantities that ``experiments/summarize.py`` derives from them:

    * ``rewrite_success`` / ``paraphrase_success`` = mean over the prompts of
      ``[NLL_true > NLL_new]`` (the new target is more likely);
      ``neighborhood_success`` = mean of ``[NLL_true < NLL_new]`` (the truth is kept);
    * ``rewrite_diff`` / ``paraphrase_diff`` = mean of ``e^{−NLL_new} − e^{−NLL_true}``;
      ``neighborhood_diff`` = mean of ``e^{−NLL_true} − e^{−NLL_new}``. The sign convention is the
      reference's: positive always means "good" (new target preferred on rewrite/paraphrase
      prompts, true target preferred on neighbourhood prompts). ``e^{−NLL}`` is the geometric mean
      per-token probability;
    * ``rewrite_acc`` / ``paraphrase_acc`` / ``neighborhood_acc`` = mean of the ``*_correct`` flags.

    A group without prompts gets ``[]`` lists and ``None`` means (left out of :func:`summarize`).

    With ``generation=True`` each case also gets ``text`` (one sample per ``generation_prompts``
    entry, :func:`generate_texts`), ``ngram_entropy`` (:func:`ngram_entropy`; ``None`` when the
    case has no generation prompts) and ``reference_score`` (:func:`consistency_score`; ``None``
    when ``resources`` is not given or the request has no ``relation_id``/``target_new_id``).
    """
    reqs = as_requests(requests)
    prefixes: list[str] = []
    conts: list[str] = []
    layout = []  # per case: {group: (start, n_prompts)}
    for r in reqs:
        if r.target_true is None:
            raise ValueError(f"CounterFact evaluation needs target_true (case_id={r.case_id})")
        spans = {}
        for g, prompts in _cf_prompt_sets(r).items():
            spans[g] = (len(prefixes), len(prompts))
            for p in prompts:
                prefixes += [p, p]
                conts += [r.target_new, r.target_true]
        layout.append(spans)
    nll, corr = continuation_nll(model, tok, prefixes, conts, batch_size=batch_size)
    nll_l, corr_l = nll.tolist(), corr.tolist()

    cases = []
    for r, spans in zip(reqs, layout):
        case: dict = {"case_id": r.case_id}
        probs, correct = {}, {}
        for g, (start, k) in spans.items():
            pairs = [(nll_l[start + 2 * j], nll_l[start + 2 * j + 1]) for j in range(k)]
            probs[g] = [{"target_new": a, "target_true": b} for a, b in pairs]
            # the "correct" candidate: target_new (index 0) for rewrite/paraphrase, target_true for neighbourhood
            which = 1 if g == "neighborhood" else 0
            correct[g] = [bool(corr_l[start + 2 * j + which]) for j in range(k)]
        for g in _GROUPS:
            case[f"{g}_prompts_probs"] = probs[g]
        for g in _GROUPS:
            case[f"{g}_prompts_correct"] = correct[g]
        for g in _GROUPS:
            if g == "neighborhood":
                case[f"{g}_success"] = _mean(float(x["target_true"] < x["target_new"]) for x in probs[g])
            else:
                case[f"{g}_success"] = _mean(float(x["target_true"] > x["target_new"]) for x in probs[g])
        for g in _GROUPS:
            if g == "neighborhood":
                case[f"{g}_diff"] = _mean(math.exp(-x["target_true"]) - math.exp(-x["target_new"]) for x in probs[g])
            else:
                case[f"{g}_diff"] = _mean(math.exp(-x["target_new"]) - math.exp(-x["target_true"]) for x in probs[g])
        for g in _GROUPS:
            case[f"{g}_acc"] = _mean(float(c) for c in correct[g])
        cases.append(case)

    if generation:
        flat = [p for r in reqs for p in r.generation_prompts]
        texts = generate_texts(model, tok, flat, max_out_len=max_out_len, top_k=top_k, seed=seed,
                               batch_size=gen_batch_size) if flat else []
        pos = 0
        for r, case in zip(reqs, cases):
            mine = texts[pos:pos + len(r.generation_prompts)]
            pos += len(r.generation_prompts)
            case["text"] = mine
            case["ngram_entropy"] = ngram_entropy(mine) if mine else None
            case["reference_score"] = consistency_score(mine, r, resources) if mine else None
    return cases


def counterfact_case(model, tok, req, **kw) -> dict:
    """:func:`evaluate_counterfact` for one request."""
    return evaluate_counterfact(model, tok, [req], **kw)[0]


# --------------------------------------------------------------------------------------------
# zsRE
# --------------------------------------------------------------------------------------------

def _zsre_neighborhood_prompt(loc: str) -> str:
    return loc if loc.endswith("?") else loc + "?"


def evaluate_zsre(model, tok, requests, batch_size: int = 64) -> list[dict]:
    """zsRE token-level top-1 accuracy under teacher forcing (algorithms.md §9.3).

    Per case (all pairs of all cases are batched together, :func:`token_accuracy`):

    * rewrite: the filled prompt with ``target_new``;
    * paraphrase: ``paraphrase_prompts[0]`` with ``target_new``;
    * neighbourhood: ``neighborhood_prompts[0] + "?"`` (the raw ``loc`` question; no second "?" is
      added if it already ends with one) with ``neighborhood_answer``.

    Keys: ``rewrite_prompts_correct``, ``paraphrase_prompts_correct``,
    ``neighborhood_prompts_correct`` (per-token 0/1 lists, the reference keys) and
    ``rewrite_acc``, ``paraphrase_acc``, ``neighborhood_acc`` (their means; ``None`` when the
    request lacks that prompt).

    **Tokenisation vs the reference.** The reference builds one *string* per answer token,
    ``prompt + decode(answer_ids[:i])`` (neighbourhood: ``loc + "?" + decode(ans[:i])``),
    re-tokenises it, and compares the argmax with the first id of ``tok(decode(answer_ids[i]))``.
    Here the ids are used directly: ``tok(prompt) + answer_ids`` with the target ``answer_ids[i]``.
    For byte-level BPE the two agree whenever decoding and re-tokenising a piece gives the same
    ids back (the usual case, since the answer starts with a space and so never merges with the
    prompt); they can differ for pieces that BPE would not produce on their own (for example a
    fragment of a multi-byte character). The reference also tokenises ``" " + loc_ans`` *with*
    special tokens, so on BOS-adding tokenizers its first neighbourhood "token" is the BOS, and it
    detects Llama from the model path to drop BOS elsewhere; here answers never get special
    tokens, for every tokenizer.
    """
    reqs = as_requests(requests)
    prompts, answers, where = [], [], []
    for ci, r in enumerate(reqs):
        prompts.append(r.text)
        answers.append(r.target_new)
        where.append((ci, "rewrite"))
        if r.paraphrase_prompts:
            prompts.append(r.paraphrase_prompts[0])
            answers.append(r.target_new)
            where.append((ci, "paraphrase"))
        if r.neighborhood_prompts and r.neighborhood_answer:
            prompts.append(_zsre_neighborhood_prompt(r.neighborhood_prompts[0]))
            answers.append(r.neighborhood_answer)
            where.append((ci, "neighborhood"))
    acc = token_accuracy(model, tok, prompts, answers, batch_size=batch_size)
    per = [dict() for _ in reqs]
    for (ci, g), hits in zip(where, acc):
        per[ci][g] = hits
    cases = []
    for r, got in zip(reqs, per):
        case: dict = {"case_id": r.case_id}
        for g in _GROUPS:
            case[f"{g}_prompts_correct"] = got.get(g, [])
        for g in _GROUPS:
            case[f"{g}_acc"] = _mean(got[g]) if g in got else None
        cases.append(case)
    return cases


# --------------------------------------------------------------------------------------------
# summaries
# --------------------------------------------------------------------------------------------

def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean; 0 when any value is 0 (the limit, as ``scipy.stats.hmean`` returns)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("harmonic mean of an empty list")
    if any(v < 0 for v in vals):
        raise ValueError(f"harmonic mean needs non-negative values, got {vals}")
    if any(v == 0 for v in vals):
        return 0.0
    return len(vals) / sum(1.0 / v for v in vals)


def _agg(cases: Sequence[dict], key: str) -> tuple[float, float] | None:
    vals = [c[key] for c in cases if c.get(key) is not None]
    if not vals:
        return None
    arr = np.asarray(vals, dtype=np.float64)
    return round(float(arr.mean()) * 100, 2), round(float(arr.std()) * 100, 2)


def summarize(cases: Sequence[dict], dataset: str = "counterfact") -> dict:
    """Table numbers: ``round(100 × mean over cases, 2)`` and ``<name>_std``.

    CounterFact: ``efficacy``, ``generalization``, ``specificity`` (success rates),
    ``efficacy_magnitude``, ``generalization_magnitude``, ``specificity_magnitude`` (``*_diff``),
    ``score`` (harmonic mean of the three success rates), ``fluency`` and ``consistency``.
    zsRE: ``efficacy``, ``generalization``, ``specificity`` are the token accuracies.
    See the module docstring for the mapping to the reference keys.

    Generation metrics that were not computed are ``None`` with a ``<name>_note`` saying why:
    ``"consistency": None, "consistency_note": CONSISTENCY_UNAVAILABLE`` when the snippet/idf/vocab
    files were not supplied (never 0).
    """
    dataset = dataset.lower()
    if dataset in ("mcf", "cf", "multi_counterfact"):
        dataset = "counterfact"
    if dataset not in ("counterfact", "zsre"):
        raise ValueError(f"dataset must be 'counterfact' or 'zsre', got {dataset!r}")
    cases = list(cases)
    out: dict = {"dataset": dataset, "n_cases": len(cases)}

    def put(name, key):
        got = _agg(cases, key)
        out[name] = None if got is None else got[0]
        out[f"{name}_std"] = None if got is None else got[1]

    if dataset == "zsre":
        for name, key in (("efficacy", "rewrite_acc"), ("generalization", "paraphrase_acc"),
                          ("specificity", "neighborhood_acc")):
            put(name, key)
        return out

    for name, key in (("efficacy", "rewrite_success"), ("generalization", "paraphrase_success"),
                      ("specificity", "neighborhood_success"), ("efficacy_magnitude", "rewrite_diff"),
                      ("generalization_magnitude", "paraphrase_diff"),
                      ("specificity_magnitude", "neighborhood_diff")):
        put(name, key)
    three = [out["efficacy"], out["generalization"], out["specificity"]]
    out["score"] = None if any(v is None for v in three) else round(harmonic_mean(three), 2)

    generated = any("ngram_entropy" in c for c in cases)
    if not generated:
        out.update(fluency=None, fluency_note=GENERATION_NOT_RUN,
                   consistency=None, consistency_note=GENERATION_NOT_RUN)
        return out
    put("fluency", "ngram_entropy")
    if out["fluency"] is None:
        out["fluency_note"] = "unavailable: no case had generation_prompts"
    put("consistency", "reference_score")
    if out["consistency"] is None:
        out["consistency_note"] = CONSISTENCY_UNAVAILABLE
    return out


# --------------------------------------------------------------------------------------------
# fluency
# --------------------------------------------------------------------------------------------

def _word_tokens(text: str, sentence_splitter: Callable[[str], list[str]] | None = None) -> list[str]:
    from nltk.tokenize import word_tokenize

    if sentence_splitter is None:
        return word_tokenize(text, preserve_line=True)
    return [w for s in sentence_splitter(text) for w in word_tokenize(s, preserve_line=True)]


def _entropy_bits(tokens: list[str], n: int) -> float:
    counts = Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
    total = sum(counts.values())
    if total == 0:
        return 0.0
    f = np.array(list(counts.values()), dtype=np.float64) / total
    return float(-(f * np.log2(f)).sum())


def text_ngram_entropy(text: str, sentence_splitter: Callable[[str], list[str]] | None = None) -> float:
    """``ent(text) = mean(2/3·H_2, 4/3·H_3)`` with ``H_n = −Σ f log2 f`` over n-gram frequencies.

    A text with fewer than ``n`` word tokens has ``H_n = 0`` (as in the reference).
    """
    toks = _word_tokens(text, sentence_splitter)
    return float(np.mean([2 / 3 * _entropy_bits(toks, 2), 4 / 3 * _entropy_bits(toks, 3)]))


def ngram_entropy(texts: Sequence[str], sentence_splitter: Callable[[str], list[str]] | None = None) -> float:
    """Fluency of one record: the arithmetic mean of :func:`text_ngram_entropy` over its texts.

    Word tokens come from ``nltk.tokenize.word_tokenize(text, preserve_line=True)``. The reference
    calls ``nltk.word_tokenize(text)``, which first splits sentences with the Punkt model; that
    needs the ``punkt_tab`` data, which is not available offline. The difference: without the
    split, the Treebank tokenizer only detaches the *final* period of the whole text, so an
    internal "Paris. It" gives the token ``"Paris."`` instead of ``"Paris", "."``. Pass
    ``sentence_splitter=nltk.sent_tokenize`` (when the data is installed) to follow the reference
    exactly. Measured with an untrained ``nltk.tokenize.punkt.PunktSentenceTokenizer()`` as the
    splitter, on two 100-token SmolLM2 samples and two hand-written texts: per-text entropy rose by
    0.03 and 0.08 bits on the SmolLM2 samples (+0.4 % and +1.4 %, i.e. 3 and 8 points on the ×100
    fluency scale) and by 0.16 bits (+3.4 %) on a text of five short sentences, because detached
    periods add distinct n-grams; a one-sentence text was unchanged. (The untrained splitter also
    breaks after abbreviations such as "Mr.", which the English Punkt model would not, so these
    figures are if anything a little high.) Compare fluency numbers only between runs that
    tokenise the same way.
    """
    texts = list(texts)
    if not texts:
        raise ValueError("ngram_entropy needs at least one text")
    return float(np.mean([text_ngram_entropy(t, sentence_splitter) for t in texts]))


def fluency_score(records: Iterable[Sequence[str]],
                  sentence_splitter: Callable[[str], list[str]] | None = None) -> float:
    """Table value of Fluency: ``100 × mean over records of ngram_entropy(record texts)`` (unrounded)."""
    vals = [ngram_entropy(texts, sentence_splitter) for texts in records]
    if not vals:
        raise ValueError("fluency_score needs at least one record")
    return 100.0 * float(np.mean(vals))


# --------------------------------------------------------------------------------------------
# generation
# --------------------------------------------------------------------------------------------

def _clean(text: str) -> str:
    return unicodedata.normalize("NFKD", text).replace("\n\n", " ").replace("<|endoftext|>", "")


@torch.no_grad()
def generate_texts(model, tok, prompts: Sequence[str], max_out_len: int = 100, top_k: int = 5,
                   seed: int = 0, batch_size: int = 32, do_sample: bool = True) -> list[str]:
    """One sampled continuation per prompt, as the reference's ``generate_fast``.

    * top-k sampling with ``k = top_k`` at temperature 1, no top-p (HF's top-k warper followed by
      a softmax is the reference's renormalised top-k distribution);
    * ``max_out_len`` counts **all** tokens including the prompt (and its BOS): each prompt gets
      ``max_out_len − len(tok(prompt))`` new tokens, never fewer than 0;
    * sampling does not stop at EOS (the reference loop ignores EOS); EOS and other special tokens
      are dropped when decoding (``skip_special_tokens=True``, as in the BLUE fork);
    * the text includes the prompt, is NFKD-normalised, ``"\\n\\n"`` becomes ``" "`` and
      ``"<|endoftext|>"`` is removed.

    Prompts are batched with LEFT padding built from ids (the tokenizer itself is not modified,
    so its padding side stays as it was). Rows of a batch are generated to the longest need and
    each is cut to its own length: sampling is sequential, so the cut sequence has exactly the
    distribution of a shorter generation. The random stream is seeded with ``seed`` inside
    ``torch.random.fork_rng`` (the global RNG is untouched), so a fixed seed, batch size and
    prompt list reproduce the same texts. ``do_sample=False`` gives greedy decoding (for tests).
    """
    from transformers import GenerationConfig

    prompts = list(prompts)
    if not prompts:
        return []
    dev = model_device(model)
    pad = pad_id(tok)
    enc = _prefix_ids(tok, prompts)
    texts: list[str | None] = [None] * len(prompts)
    # generation_config.eos_token_id would make HF stop at EOS; the reference never stops early
    saved_gc = getattr(model, "generation_config", None)
    # fork every visible GPU's RNG too (torch.manual_seed seeds them all; a model may span several)
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with eval_mode(model), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if saved_gc is not None:
            gc_model = copy.deepcopy(saved_gc)
            gc_model.eos_token_id = None
            model.generation_config = gc_model
        try:
            for start in range(0, len(prompts), max(1, int(batch_size))):
                chunk = list(range(start, min(start + batch_size, len(prompts))))
                need = {i: max(0, max_out_len - len(enc[i])) for i in chunk}
                width = max(len(enc[i]) for i in chunk)
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for r, i in enumerate(chunk):
                    ids[r, width - len(enc[i]):] = torch.tensor(enc[i], dtype=torch.long)
                    mask[r, width - len(enc[i]):] = 1
                n_new = max(need.values())
                new = torch.zeros((len(chunk), 0), dtype=torch.long)
                if n_new > 0:
                    cfg = GenerationConfig(do_sample=do_sample, top_k=top_k if do_sample else None,
                                           top_p=1.0 if do_sample else None,
                                           temperature=1.0 if do_sample else None,
                                           max_new_tokens=n_new, min_new_tokens=0, num_beams=1,
                                           pad_token_id=pad, eos_token_id=None)
                    out = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev),
                                         generation_config=cfg)
                    new = out[:, width:].cpu()
                for r, i in enumerate(chunk):
                    full = list(enc[i]) + new[r, :need[i]].tolist()
                    texts[i] = _clean(tok.decode(full, skip_special_tokens=True))
        finally:
            if saved_gc is not None:
                model.generation_config = saved_gc
    return texts  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# consistency (reference score)
# --------------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"(?u)\b\w\w+\b")


def tfidf_vector(text: str, vocab: dict[str, int], idf: np.ndarray) -> dict[int, float]:
    """Sparse tf-idf vector of ``text`` as sklearn's ``TfidfVectorizer`` with a fixed vocabulary.

    Defaults reproduced: lowercase, ``token_pattern=r"(?u)\\b\\w\\w+\\b"``, unigrams, words outside
    the vocabulary ignored, raw counts × ``idf``, l2 normalisation (a zero vector stays zero).
    Returns ``{vocabulary index: weight}``.
    """
    counts = Counter(vocab[w] for w in _TOKEN_RE.findall(text.lower()) if w in vocab)
    vec = {j: c * float(idf[j]) for j, c in counts.items()}
    norm = math.sqrt(sum(v * v for v in vec.values()))
    return {j: v / norm for j, v in vec.items()} if norm > 0 else vec


def tfidf_cosine(text_a: str, text_b: str, vocab: dict[str, int], idf: np.ndarray) -> float:
    """Cosine of the two tf-idf vectors; NaN when either has no vocabulary word (as the reference's 0/0)."""
    a, b = tfidf_vector(text_a, vocab, idf), tfidf_vector(text_b, vocab, idf)
    na = math.sqrt(sum(v * v for v in a.values()))
    nb = math.sqrt(sum(v * v for v in b.values()))
    if na == 0 or nb == 0:
        return float("nan")
    return sum(v * b.get(j, 0.0) for j, v in a.items()) / (na * nb)


@dataclass
class ConsistencyResources:
    """The ROME consistency files: attribute snippets, idf weights and the tf-idf vocabulary.

    ``snippets[relation_id][target_id]`` lists the snippet texts of Wikipedia articles about
    subjects whose ``relation_id`` object really is ``target_id``. The files are not shipped and
    are never downloaded; pass local copies.
    """

    snippets: dict[str, dict[str, list[str]]]
    vocab: dict[str, int]
    idf: np.ndarray = field(repr=False)

    def __post_init__(self):
        self.idf = np.asarray(self.idf, dtype=np.float64).reshape(-1)
        if self.vocab and max(self.vocab.values()) >= len(self.idf):
            raise ValueError(f"tf-idf vocabulary indexes up to {max(self.vocab.values())} but idf has "
                             f"{len(self.idf)} entries")

    @classmethod
    def from_files(cls, attribute_snippets: str | Path, idf: str | Path,
                   tfidf_vocab: str | Path) -> "ConsistencyResources":
        """Read ``attribute_snippets.json`` (a list of ``{relation_id, target_id, samples: [{name,
        text}]}``), ``idf.npy`` and ``tfidf_vocab.json`` (``{word: column}``)."""
        raw = json.loads(Path(attribute_snippets).read_text(encoding="utf-8"))
        snips: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        for el in raw:
            for s in el["samples"]:
                snips[el["relation_id"]][el["target_id"]].append(s["text"])
        vocab = {str(k): int(v) for k, v in json.loads(Path(tfidf_vocab).read_text(encoding="utf-8")).items()}
        plain = {r: dict(d) for r, d in snips.items()}
        return cls(snippets=plain, vocab=vocab, idf=np.load(idf))

    def snippet_texts(self, relation_id: str, target_id: str) -> list[str]:
        return list(self.snippets.get(relation_id, {}).get(target_id, []))


def consistency_score(gen_texts: Sequence[str], req: EditRequest,
                      resources: ConsistencyResources | None) -> float | None:
    """Reference score: tf-idf cosine between ``" ".join(gen_texts)`` and the joined snippets of
    ``snips[req.relation_id][req.target_new_id]``.

    ``None`` (metric unavailable, never 0) when ``resources`` is None or the request has no
    ``relation_id``/``target_new_id``. Raises ``ValueError`` when the ids are known but there are no
    snippets for them (the reference asserts the same).
    """
    if resources is None or req.relation_id is None or req.target_new_id is None:
        return None
    snips = resources.snippet_texts(req.relation_id, req.target_new_id)
    if not snips:
        raise ValueError(f"no attribute snippets for relation {req.relation_id!r}, target "
                         f"{req.target_new_id!r} (case_id={req.case_id})")
    return tfidf_cosine(" ".join(gen_texts), " ".join(snips), resources.vocab, resources.idf)


# --------------------------------------------------------------------------------------------
# convenience
# --------------------------------------------------------------------------------------------

def evaluate(model, tok, requests, dataset: str = "counterfact", **kw) -> tuple[list[dict], dict]:
    """Evaluate ``requests`` on ``model`` as it is now; returns ``(cases, summary)``.

    ``dataset="counterfact"`` uses :func:`evaluate_counterfact` (keyword arguments such as
    ``batch_size``, ``generation``, ``resources`` are passed on); ``"zsre"`` uses
    :func:`evaluate_zsre`.
    """
    d = dataset.lower()
    if d in ("counterfact", "mcf", "cf", "multi_counterfact"):
        cases = evaluate_counterfact(model, tok, requests, **kw)
        return cases, summarize(cases, "counterfact")
    if d == "zsre":
        cases = evaluate_zsre(model, tok, requests, **kw)
        return cases, summarize(cases, "zsre")
    raise ValueError(f"dataset must be 'counterfact' or 'zsre', got {dataset!r}")
