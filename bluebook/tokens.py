"""Prompt templates and the subject's last-token index (algorithms.md §0.1)."""
from __future__ import annotations


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


def right_pad(seqs, pad_id: int):
    """Stack token-id lists into ``(ids, mask)`` long tensors, right-padded with ``pad_id``."""
    import torch

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
