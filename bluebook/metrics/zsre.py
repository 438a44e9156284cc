"""zsRE metrics per case (algorithms.md §9.3): teacher-forced token accuracy on the rewrite,
paraphrase and neighbourhood prompts."""
from __future__ import annotations

from bluebook.data import as_requests
from bluebook.metrics.scoring import GROUPS, mean_or_none, token_accuracy

__all__ = ["evaluate_zsre", "zsre_neighborhood_prompt"]


def zsre_neighborhood_prompt(loc: str) -> str:
    """The neighbourhood prompt of a zsRE request: the ``loc`` question with a ``"?"`` appended (not a second one)."""
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
            prompts.append(zsre_neighborhood_prompt(r.neighborhood_prompts[0]))
            answers.append(r.neighborhood_answer)
            where.append((ci, "neighborhood"))
    acc = token_accuracy(model, tok, prompts, answers, batch_size=batch_size)
    per = [dict() for _ in reqs]
    for (ci, g), hits in zip(where, acc):
        per[ci][g] = hits
    cases = []
    for r, got in zip(reqs, per):
        case: dict = {"case_id": r.case_id}
        for g in GROUPS:
            case[f"{g}_prompts_correct"] = got.get(g, [])
        for g in GROUPS:
            case[f"{g}_acc"] = mean_or_none(got[g]) if g in got else None
        cases.append(case)
    return cases
