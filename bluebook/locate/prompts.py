"""What causal tracing needs to know about one prompt: its template, the subject's token range,
the target's token id, and the noise that corrupts the subject.

Items to trace come in several forms (``(template, subject, target)`` tuples, edit requests,
CounterFact records); :func:`as_triple` reads all of them.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from bluebook.model.specs import get_module, spec_for
from bluebook.model.tokens import check_template, subject_in_prompt, subject_last_index


def token_ids(tok, text: str) -> list[int]:
    """``tok(text)``'s input ids as a plain list."""
    return list(tok(text)["input_ids"])


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def as_template(prompt: str, subject: str) -> str:
    """A one-``{}`` template, from a template or from a filled prompt that contains ``subject``.

    Raises ``ValueError`` when the subject is empty or does not occur (exactly once) in a filled prompt.
    """
    if not isinstance(subject, str) or not subject.strip():
        raise ValueError(f"subject must be a non-empty string, got {subject!r}")
    if "{}" in prompt:
        return check_template(prompt)
    return subject_in_prompt(prompt, subject)


def subject_range(tok, template: str, subject: str) -> tuple[int, int]:
    """``(first, last)`` token indices (inclusive) of the subject in ``tok(template with subject)``.

    Cumulative tokenisation: ``last = len(tok(prefix + subject)) - 1`` (see
    :func:`bluebook.model.tokens.subject_last_index`) and ``first`` = the number of leading tokens the
    full prompt shares with ``tok(prefix)``, where ``prefix`` is the text before ``{}``. The shared
    count handles a BOS token and a prefix whose trailing space is merged into the subject's first
    token (``"of "`` + ``"Danielle"`` gives ``" of"``, ``" Dan"...``).
    """
    template = check_template(template)
    last = subject_last_index(tok, template, subject)
    prefix = template[: template.index("{}")]
    full = token_ids(tok, template.replace("{}", subject))
    first = min(_common_prefix(full, token_ids(tok, prefix)), last)
    if last >= len(full):  # pragma: no cover - tokenizer inconsistency
        raise ValueError(f"could not locate subject {subject!r} in the tokenised prompt")
    return first, last


def target_token_id(tok, prompt: str, target: str | int) -> int:
    """First token id of ``target`` as a continuation of the filled ``prompt``.

    ``target`` is given without its leading space (CounterFact's convention); one space is
    prepended unless it already starts with whitespace. The id is taken cumulatively: the first
    token of ``tok(prompt + " " + target)`` after the tokens it shares with ``tok(prompt)``. An
    ``int`` is taken as the token id itself.
    """
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        return int(target)
    if not isinstance(target, str) or not target.strip():
        raise ValueError(f"target must be a non-empty string or a token id, got {target!r}")
    text = target if target[:1].isspace() else " " + target
    full = token_ids(tok, prompt + text)
    k = _common_prefix(full, token_ids(tok, prompt))
    if k >= len(full):  # pragma: no cover - target tokenised to nothing
        raise ValueError(f"target {target!r} adds no token to {prompt!r}")
    return int(full[k])


def embedding_noise_scale(model, factor: float = 3.0) -> float:
    """``factor ×`` the std of the input-embedding matrix (ROME's default noise is 3 × a subject-embedding std).

    Models whose embedding module scales its output (``embed_scale``, e.g. Gemma) get the same scale.
    """
    emb = get_module(model, spec_for(model).embed)
    std = float(emb.weight.detach().float().std())
    scale = getattr(emb, "embed_scale", 1.0)
    scale = float(scale.float().mean()) if isinstance(scale, torch.Tensor) else float(scale)
    return factor * std * scale


def subject_noise(n_samples: int, n_subject_tokens: int, dim: int, noise: float, seed: int) -> torch.Tensor:
    """The ``(n_samples, n_subject_tokens, dim)`` noise added to the subject's embeddings.

    Drawn on the CPU from a ``torch.Generator`` seeded with ``seed`` (device-independent and
    reproducible), then scaled by ``noise``.
    """
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(n_samples, n_subject_tokens, dim, generator=gen, dtype=torch.float32) * float(noise)


def as_triple(item) -> tuple[str, str, str | int]:
    """``(template, subject, target)`` from a tuple, an EditRequest, a bluebook dict or a CounterFact record.

    For edit requests and CounterFact records the traced target is the *true* object
    (``target_true``): tracing asks where the model's existing knowledge lives.
    """
    if isinstance(item, (tuple, list)):
        if len(item) != 3:
            raise ValueError(f"expected (template, subject, target), got {item!r}")
        t, s, y = item
        return as_template(t, s), s, y
    if isinstance(item, dict):
        rec = item.get("requested_rewrite", item)
        if isinstance(rec, list):
            rec = rec[0]
        t, s = rec["prompt"], rec["subject"]
        y = rec.get("target_true", rec.get("target"))
        if isinstance(y, dict):
            y = y["str"]
        if y is None:
            raise ValueError(f"record has no target_true / target: {item!r}")
        return as_template(t, s), s, y
    if hasattr(item, "prompt") and hasattr(item, "subject"):
        y = getattr(item, "target_true", None)
        if y is None:
            raise ValueError(f"request {item!r} has no target_true to trace")
        return as_template(item.prompt, item.subject), item.subject, y
    raise TypeError(f"cannot read (template, subject, target) from {type(item).__name__}")
