"""Prompt templates and the subject's last-token index (algorithms.md §0.1)."""
from __future__ import annotations

import warnings

import torch


def check_template(template: str, *, field: str = "prompt") -> str:
    if not isinstance(template, str):
        raise TypeError(f"{field} must be a string, got {type(template).__name__}")
    n = template.count("{}")
    if n != 1:
        raise ValueError(f"{field} {template!r} must contain exactly one '{{}}' for the subject (found {n})")
    return template


def fill(template: str, subject: str) -> str:
    """Insert the subject into a one-``{}`` template (plain replacement: other braces are kept)."""
    check_template(template)
    return template.replace("{}", subject)


def _n_tokens(tok, text: str) -> int:
    return len(tok(text)["input_ids"])


def subject_last_index(tok, template: str, subject: str) -> int:
    """Index of the subject's last token in ``tok(template with subject)``.

    Cumulative method: ``len(tok(prefix + subject)) - 1`` where ``prefix`` is the text before
    ``{}``. This stays right for tokenizers that prepend a BOS token (the original MEMIT
    tokenised the pieces separately and lands one token too far on such tokenizers).
    """
    check_template(template)
    if not isinstance(subject, str) or not subject.strip():
        raise ValueError(f"subject must be a non-empty string, got {subject!r}")
    prefix = template[: template.index("{}")]
    return _n_tokens(tok, prefix + subject) - 1


def subject_in_prompt(prompt: str, subject: str, *, field: str = "prompt") -> str:
    """Turn a filled prompt into a template by replacing the one occurrence of ``subject``."""
    if not subject or not subject.strip():
        raise ValueError(f"subject must be a non-empty string, got {subject!r}")
    n = prompt.count(subject)
    if n == 0:
        raise ValueError(f"subject {subject!r} does not occur in {field} {prompt!r}")
    if n > 1:
        raise ValueError(f"subject {subject!r} occurs {n} times in {field} {prompt!r}; it must occur once")
    return prompt.replace(subject, "{}")


def pad_id(tok) -> int:
    """The token id used for padding: the tokenizer's pad token, else its end-of-text token, else 0.

    bluebook pads on the right and masks padded positions (or, for cached prefixes, masks them
    with the attention mask), so the id is never read; it only has to be a valid token.
    """
    for v in (getattr(tok, "pad_token_id", None), getattr(tok, "eos_token_id", None)):
        if v is not None:
            return int(v)
    return 0


def right_pad(seqs, pad_id: int):
    """Stack token-id lists into ``(ids, mask)`` long tensors, right-padded with ``pad_id``."""

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, :len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[r, :len(s)] = 1
    return ids, mask


def check_tokenizer(model, tok) -> None:
    """Refuse a tokenizer that cannot belong to ``model``: one whose ids run past the model's
    embedding table (a request list tokenized for another model would index out of range or,
    worse, silently read other tokens' embeddings)."""
    emb = model.get_input_embeddings()
    rows = getattr(emb, "num_embeddings", None) or emb.weight.shape[0]
    n_tok = len(tok)
    if n_tok > rows:
        name = getattr(tok, "name_or_path", "") or type(tok).__name__
        model_name = getattr(model.config, "_name_or_path", "") or model.config.model_type
        raise ValueError(f"tokenizer {name!r} has {n_tok} tokens but the model {model_name!r} embeds only {rows}: "
                         "the tokenizer belongs to another model (load both with bluebook.load_model)")


def _gemm_cost(tokens: int) -> float:
    """Relative time of a pass over ``tokens`` positions: matrix products with few rows run below
    peak (measured on 2 CPU cores: ~40 % of peak at 8 rows, ~67 % at 24-40, ~100 % from 256), plus a
    fixed per-pass overhead worth a few tokens."""
    if tokens >= 256:
        eff = 1.0
    elif tokens >= 40:
        eff = 0.67 + 0.33 * (tokens - 40) / 216
    else:
        eff = max(0.4, 0.4 + 0.27 * (tokens - 8) / 32)
    return 4.0 + tokens / eff


def length_groups(lengths: list[int]) -> list[list[int]]:
    """Partition sequences (by length) into right-padded groups of least modelled cost.

    Rows are sorted by length and split into contiguous runs by dynamic programming over the distinct
    lengths: merging trades padding (wasted positions) against larger, faster matrix products.
    """
    order = sorted(range(len(lengths)), key=lambda r: lengths[r])
    buckets: list[list[int]] = []
    for r in order:
        if buckets and lengths[buckets[-1][0]] == lengths[r]:
            buckets[-1].append(r)
        else:
            buckets.append([r])
    B = len(buckets)
    best = [0.0] + [float("inf")] * B
    cut = [0] * (B + 1)
    for j in range(1, B + 1):
        count = 0
        for i in range(j - 1, -1, -1):
            count += len(buckets[i])
            c = best[i] + _gemm_cost(count * lengths[buckets[j - 1][0]])
            if c < best[j]:
                best[j], cut[j] = c, i
    groups, j = [], B
    while j > 0:
        i = cut[j]
        groups.append([r for b in buckets[i:j] for r in b])
        j = i
    return groups[::-1]


def context_limit(model) -> int | None:
    """The model's context length from its config (``max_position_embeddings``, ``n_positions``,
    ``n_ctx``), or None when the config names none."""
    cfg = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        v = getattr(cfg, name, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def fit_to_context(model, max_len: int) -> int:
    """``max_len`` cut to the model's context length where that is shorter (a model with learned
    positions cannot read past it); ``max_len`` itself when the config names no context length."""
    limit = context_limit(model)
    return min(max_len, limit) if limit is not None else max_len


def check_requests(model, tok, requests, templates=()) -> None:
    """Refuse a batch ``bluebook.edit`` cannot edit correctly, naming the field and value: duplicate
    ``case_id`` values, a ``target_new`` that tokenizes to nothing, or a prompt with its target
    (inside the longest context template) longer than the model's context. Warn when a subject's
    last token merges with the text after it (the key is then read at the merged token, as in the
    reference implementations)."""
    seen: dict = {}
    for i, r in enumerate(requests):
        if r.case_id is not None:
            if r.case_id in seen:
                raise ValueError(f"case_id {r.case_id!r} occurs twice in one batch (requests {seen[r.case_id]} and "
                                 f"{i}): give each request its own case_id (or None)")
            seen[r.case_id] = i
    limit = context_limit(model)
    extra = max((_n_tokens(tok, t.replace("{}", "")) for group in templates for t in group), default=0)
    for i, r in enumerate(requests):
        target = tok(" " + r.target_new.strip(), add_special_tokens=False)["input_ids"]
        if not target:
            raise ValueError(f"request {i} (case_id {r.case_id!r}): target_new {r.target_new!r} tokenizes to no tokens")
        text = r.prompt.replace("{}", r.subject)
        ids = tok(text)["input_ids"]
        n = len(ids) + len(target) + extra
        if limit is not None and n > limit:
            raise ValueError(f"request {i} (case_id {r.case_id!r}): the prompt with target_new "
                             f"({r.target_new[:40]!r}..., {len(target)} tokens) and its context template needs "
                             f"{n} positions, more than the model's context of {limit}")
        prefix = r.prompt[: r.prompt.index("{}")]
        head = tok(prefix + r.subject)["input_ids"]
        if ids[:len(head)] != head:
            warnings.warn(f"request {i} (case_id {r.case_id!r}): the last token of subject {r.subject!r} merges with "
                          f"the text after it in {text!r}; its key is read at the merged token", RuntimeWarning,
                          stacklevel=3)
