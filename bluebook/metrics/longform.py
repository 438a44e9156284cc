"""Metrics of long-form editing: how much of a paragraph target a greedy continuation reproduces.

As in the long-form editing literature (AnyEdit, UnKE), a model's greedy continuation of the edit
prompt (and of a question-style paraphrase) is compared with the target paragraph by

* ROUGE-1, ROUGE-2 and ROUGE-L F-measures (``rouge-score``, Google's reference implementation);
* sentence BLEU (``sacrebleu``, with the effective n-gram order for short texts), on a 0–1 scale;
* token F1: the harmonic mean of precision and recall of the lower-cased word multisets;
* a semantic similarity: the cosine of mean-pooled last hidden states of the **unedited** model
  (the literature uses a sentence-embedding model; none ships offline, so the unedited editing
  model is the embedded scorer here, named as such in every table).

Locality is measured on prompts about unrelated subjects: ROUGE-L between the unedited and the
edited model's greedy continuations (1: unchanged), and whether they are identical.
"""
from __future__ import annotations

import copy
import re
from collections import Counter
from typing import Sequence

import sacrebleu
import torch
from rouge_score import rouge_scorer
from transformers import GenerationConfig

from bluebook.metrics.scoring import prefix_ids
from bluebook.model.device import eval_mode, model_device
from bluebook.model.tokens import fit_to_context, pad_id, right_pad

__all__ = ["TEXT_METRICS", "greedy_continuations", "text_scores", "token_f1", "embed_texts", "cosine",
           "locality_scores"]

TEXT_METRICS = ("rouge1", "rouge2", "rougeL", "bleu", "token_f1")

_WORD = re.compile(r"\w+", re.UNICODE)


def token_f1(prediction: str, reference: str) -> float:
    """F1 of the lower-cased word multisets of ``prediction`` and ``reference`` (0 when either is empty)."""
    p, r = _WORD.findall(prediction.lower()), _WORD.findall(reference.lower())
    common = sum((Counter(p) & Counter(r)).values())
    if not p or not r or common == 0:
        return 0.0
    prec, rec = common / len(p), common / len(r)
    return 2 * prec * rec / (prec + rec)


def text_scores(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L F-measures, sentence BLEU (0–1) and token F1 of ``prediction`` against ``reference``."""
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    rs = scorer.score(reference, prediction)
    bleu = sacrebleu.metrics.BLEU(effective_order=True).sentence_score(prediction, [reference]).score / 100
    return {"rouge1": rs["rouge1"].fmeasure, "rouge2": rs["rouge2"].fmeasure, "rougeL": rs["rougeL"].fmeasure,
            "bleu": float(bleu), "token_f1": token_f1(prediction, reference)}


@torch.no_grad()
def greedy_continuations(model, tok, prompts: Sequence[str], max_new_tokens: int | Sequence[int],
                         batch_size: int = 8) -> list[str]:
    """The greedy continuation of each prompt (the new text only, special tokens dropped), stopping
    at the end-of-text token or after ``max_new_tokens`` (one number, or one per prompt).

    Prompts go in batches with left padding built from ids (the tokenizer is not modified)."""
    prompts = list(prompts)
    if not prompts:
        return []
    need = [int(max_new_tokens)] * len(prompts) if isinstance(max_new_tokens, int) else [int(x) for x in max_new_tokens]
    if len(need) != len(prompts) or min(need) < 1:
        raise ValueError(f"max_new_tokens must be a positive number (or one per prompt), got {max_new_tokens!r}")
    dev, pad = model_device(model), pad_id(tok)
    enc = prefix_ids(tok, prompts)
    eos = tok.eos_token_id
    out: list[str] = [""] * len(prompts)
    saved = getattr(model, "generation_config", None)
    order = sorted(range(len(prompts)), key=lambda i: len(enc[i]))
    with eval_mode(model):
        if saved is not None:
            model.generation_config = copy.deepcopy(saved)
        try:
            for s in range(0, len(order), max(1, int(batch_size))):
                chunk = order[s:s + batch_size]
                width = max(len(enc[i]) for i in chunk)
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for r, i in enumerate(chunk):
                    ids[r, width - len(enc[i]):] = torch.tensor(enc[i])
                    mask[r, width - len(enc[i]):] = 1
                cfg = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max(need[i] for i in chunk),
                                       pad_token_id=pad, eos_token_id=eos, top_k=None, top_p=None,
                                       temperature=None)
                gen = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), generation_config=cfg)
                for r, i in enumerate(chunk):
                    new = gen[r, width:width + need[i]].tolist()
                    if eos is not None and eos in new:
                        new = new[:new.index(eos)]
                    out[i] = tok.decode(new, skip_special_tokens=True).strip()
        finally:
            if saved is not None:
                model.generation_config = saved
    return out


@torch.no_grad()
def embed_texts(model, tok, texts: Sequence[str], max_len: int = 512, batch_size: int = 8) -> torch.Tensor:
    """Mean-pooled last hidden states ``(n, d)`` (float32, on the CPU) of ``texts`` under ``model``.
    Pass the **unedited** model: it is the embedded similarity scorer. Texts are truncated to
    ``max_len`` tokens, or to the model's context where that is shorter."""
    dev, pad = model_device(model), pad_id(tok)
    max_len = fit_to_context(model, max_len)
    ids = [tok(t, truncation=True, max_length=max_len)["input_ids"] or [pad] for t in texts]
    out = []
    with eval_mode(model):
        for s in range(0, len(ids), batch_size):
            x, mask = right_pad(ids[s:s + batch_size], pad)
            h = model(input_ids=x.to(dev), attention_mask=mask.to(dev), output_hidden_states=True).hidden_states[-1]
            m = mask.to(dev)[..., None].to(h.dtype)
            out.append(((h * m).sum(1) / m.sum(1)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def cosine(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """Row-wise cosine similarity of two ``(n, d)`` tensors."""
    return torch.nn.functional.cosine_similarity(a, b, dim=1).tolist()


def locality_scores(before: Sequence[str], after: Sequence[str]) -> list[dict]:
    """Per unrelated prompt: ROUGE-L between the unedited and the edited continuation, and whether
    the two are identical."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return [{"rougeL": scorer.score(b, a)["rougeL"].fmeasure if (a.strip() or b.strip()) else 1.0,
             "unchanged": float(a == b)} for b, a in zip(before, after)]
