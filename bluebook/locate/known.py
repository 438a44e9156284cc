"""Which facts does the model know? The rank of the target's first token in the clean prediction.

Tracing only makes sense for facts the model predicts (ROME traces "known facts": the target is
the argmax), so :func:`filter_known` is the usual first step before :func:`~bluebook.locate.trace_many`.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch

from bluebook.locate.prompts import as_triple, target_token_id, token_ids
from bluebook.model.device import model_device
from bluebook.model.tokens import pad_id, right_pad


def _last_token_logits(model, tok, batch_ids: list[list[int]]) -> torch.Tensor:
    """Next-token logits after each of several prompts, ``(len(batch_ids), vocab)``, in one forward.

    Right padding (:func:`~bluebook.model.tokens.pad_id`) with an attention mask; only the needed
    positions go through the output head (``logits_to_keep`` with a tensor of positions).
    """
    device = model_device(model)
    ids, mask = right_pad(batch_ids, pad_id(tok))
    ids, mask = ids.to(device), mask.to(device)
    last = torch.tensor([len(x) - 1 for x in batch_ids], device=device)
    keep = torch.unique(last)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits
    return logits[torch.arange(len(batch_ids), device=device), torch.searchsorted(keep, last)].float()


def known_ranks(model, tok, items: Sequence, batch_size: int = 32) -> list[int]:
    """Rank (0 = argmax) of each item's target first token in the clean next-token distribution."""
    ranks = []
    for b0 in range(0, len(items), batch_size):
        prompts, tids = [], []
        for item in items[b0: b0 + batch_size]:
            t, s, y = as_triple(item)
            prompt = t.replace("{}", s)
            prompts.append(token_ids(tok, prompt))
            tids.append(target_token_id(tok, prompt, y))
        logits = _last_token_logits(model, tok, prompts)
        tgt = logits[torch.arange(len(tids)), torch.tensor(tids, device=logits.device)]
        ranks += (logits > tgt[:, None]).sum(dim=1).tolist()
    return [int(r) for r in ranks]


def known_rank(model, tok, template: str, subject: str, target) -> int:
    """Rank (0 = argmax) of the target's first token in the clean next-token distribution."""
    return known_ranks(model, tok, [(template, subject, target)])[0]


def filter_known(model, tok, items: Iterable, top_k: int = 1, limit: int | None = None,
                 batch_size: int = 32) -> list:
    """Keep the items whose target's first token is in the top ``top_k`` of the clean prediction.

    ``top_k=1``: the target must be the argmax (ROME's "known facts"). Items keep their original
    form and order; ``limit`` stops after that many kept items (items are read in order, checked
    ``batch_size`` prompts per forward pass).
    """
    if int(top_k) < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    items = list(items)
    kept = []
    for b0 in range(0, len(items), batch_size):
        batch = items[b0: b0 + batch_size]
        for item, rank in zip(batch, known_ranks(model, tok, batch, batch_size)):
            if rank < top_k:
                kept.append(item)
                if limit is not None and len(kept) >= limit:
                    return kept
    return kept
