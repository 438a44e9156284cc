"""Consistency (the reference score): tf-idf cosine between generated text and Wikipedia snippets
about the new object (algorithms.md §9.2).

The snippet/idf/vocab files are not shipped and never downloaded: without them consistency is
reported as unavailable (``None`` plus :data:`CONSISTENCY_UNAVAILABLE`), never as 0.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from bluebook.data import EditRequest

__all__ = ["CONSISTENCY_UNAVAILABLE", "ConsistencyResources", "tfidf_vector", "tfidf_cosine", "consistency_score"]

CONSISTENCY_UNAVAILABLE = "unavailable: attribute_snippets/idf/tfidf_vocab not supplied"
"""The ``consistency_note`` of a summary whose cases have no reference score."""

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
        """The snippets about subjects whose ``relation_id`` object is ``target_id`` (``[]`` if none)."""
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
