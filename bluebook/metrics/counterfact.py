"""CounterFact metrics per case (algorithms.md §9.2): efficacy, generalization, specificity, and
with ``generation=True`` fluency and consistency."""
from __future__ import annotations

import math

from bluebook.data import EditRequest, as_requests
from bluebook.metrics.consistency import ConsistencyResources, consistency_score
from bluebook.metrics.fluency import generate_texts, ngram_entropy
from bluebook.metrics.scoring import GROUPS, continuation_nll, mean_or_none

__all__ = ["evaluate_counterfact", "counterfact_case", "add_generation_metrics"]


def _cf_prompt_sets(req: EditRequest) -> dict[str, list[str]]:
    return {"rewrite": [req.text], "paraphrase": list(req.paraphrase_prompts),
            "neighborhood": list(req.neighborhood_prompts)}


def evaluate_counterfact(model, tok, requests, batch_size: int = 64, generation: bool = False,  # noqa: C901 - the CounterFact metrics, one branch per prompt kind
                         resources: ConsistencyResources | None = None, max_out_len: int = 100,
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
        for g in GROUPS:
            case[f"{g}_prompts_probs"] = probs[g]
        for g in GROUPS:
            case[f"{g}_prompts_correct"] = correct[g]
        for g in GROUPS:
            if g == "neighborhood":
                case[f"{g}_success"] = mean_or_none(float(x["target_true"] < x["target_new"]) for x in probs[g])
            else:
                case[f"{g}_success"] = mean_or_none(float(x["target_true"] > x["target_new"]) for x in probs[g])
        for g in GROUPS:
            ps = probs[g]
            if g == "neighborhood":
                case[f"{g}_diff"] = mean_or_none(math.exp(-x["target_true"]) - math.exp(-x["target_new"]) for x in ps)
            else:
                case[f"{g}_diff"] = mean_or_none(math.exp(-x["target_new"]) - math.exp(-x["target_true"]) for x in ps)
        for g in GROUPS:
            case[f"{g}_acc"] = mean_or_none(float(c) for c in correct[g])
        cases.append(case)

    if generation:
        add_generation_metrics(model, tok, reqs, cases, resources, max_out_len=max_out_len, top_k=top_k, seed=seed,
                               gen_batch_size=gen_batch_size)
    return cases


def add_generation_metrics(model, tok, requests, cases, resources: ConsistencyResources | None = None,
                           max_out_len: int = 100, top_k: int = 5, seed: int = 0, gen_batch_size: int = 32) -> None:
    """Generate one sample per ``generation_prompts`` entry of each request (all prompts of all
    requests batched together) and write ``text``, ``ngram_entropy`` and ``reference_score`` into
    the matching case dicts (``cases[i]`` belongs to ``requests[i]``)."""
    flat = [p for r in requests for p in r.generation_prompts]
    texts = generate_texts(model, tok, flat, max_out_len=max_out_len, top_k=top_k, seed=seed,
                           batch_size=gen_batch_size) if flat else []
    pos = 0
    for r, case in zip(requests, cases):
        mine = texts[pos:pos + len(r.generation_prompts)]
        pos += len(r.generation_prompts)
        case["text"] = mine
        case["ngram_entropy"] = ngram_entropy(mine) if mine else None
        case["reference_score"] = consistency_score(mine, r, resources) if mine else None


def counterfact_case(model, tok, req, **kw) -> dict:
    """:func:`evaluate_counterfact` for one request."""
    return evaluate_counterfact(model, tok, [req], **kw)[0]
