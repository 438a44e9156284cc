"""Labelled text for the zero-shot general-ability probes (:mod:`bluebook.metrics.probes`).

Each probe is one compressed JSON file in ``bluebook/assets/probes/<name>.json.xz``::

    {"name": ..., "task": "sentiment" | "paraphrase" | ..., "description": ...,
     "template": "...{text}..." or "...{text_a}...{text_b}...",
     "label_words": {"<label>": "<word the model should predict>", ...},
     "source": ..., "licence": ..., "substitute_for": null or the paper's task it stands in for,
     "items": [{"text": ..., "label": ...} or {"text_a": ..., "text_b": ..., "label": ...}, ...]}

Where the files come from, and their licences, is in ``bluebook/assets/SOURCES.md``; the script
that builds them is ``scripts/build_probes.py``.
"""
from __future__ import annotations

import functools
import json
import lzma
import string
from dataclasses import dataclass
from pathlib import Path

from bluebook.data.records import ASSETS
from bluebook.data.requests import EditRequest

__all__ = ["PROBES_DIR", "FACT_POOL", "Probe", "available_probes", "load_probe", "load_fact_pool"]

PROBES_DIR = ASSETS / "probes"


@dataclass(frozen=True)
class Probe:
    """A labelled classification set and how to ask the model: ``prompt(item)`` fills ``template``;
    the model's answer is the label whose word it finds most likely next."""
    name: str
    task: str
    template: str
    label_words: dict
    items: tuple
    source: str = ""
    licence: str = ""
    description: str = ""
    substitute_for: str | None = None

    def __post_init__(self):
        fields = {f for _, f, _, _ in string.Formatter().parse(self.template) if f}
        if not fields or not fields <= {"text", "text_a", "text_b"}:
            raise ValueError(f"probe {self.name!r}: template must use {{text}} or {{text_a}}/{{text_b}}, "
                             f"got {self.template!r}")
        if len(self.label_words) < 2:
            raise ValueError(f"probe {self.name!r}: label_words needs at least two labels, got {self.label_words!r}")
        for i, it in enumerate(self.items):
            missing = [f for f in fields if not isinstance(it.get(f), str) or not it[f].strip()]
            if missing:
                raise ValueError(f"probe {self.name!r}: item {i} has no text for {missing}")
            if str(it.get("label")) not in self.label_words:
                raise ValueError(f"probe {self.name!r}: item {i} has label {it.get('label')!r}, "
                                 f"not one of {sorted(self.label_words)}")

    @property
    def labels(self) -> list[str]:
        return list(self.label_words)

    def prompt(self, item: dict) -> str:
        return self.template.format(**{k: v for k, v in item.items() if k != "label"})


def available_probes(folder: str | Path = PROBES_DIR) -> list[str]:
    """Names of the probes shipped in ``folder``."""
    return sorted(p.name[:-len(".json.xz")] for p in Path(folder).glob("*.json.xz"))


@functools.lru_cache(maxsize=16)
def _read(path: Path) -> dict:
    with lzma.open(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def load_probe(name: str, n: int | None = None, folder: str | Path = PROBES_DIR) -> Probe:
    """The shipped probe ``name``, its first ``n`` items (all when None). The files are ordered so
    that any prefix is label-balanced as far as the data allows (see ``scripts/build_probes.py``)."""
    path = Path(folder) / f"{name}.json.xz"
    if not path.exists():
        raise ValueError(f"unknown probe {name!r}; shipped: {available_probes(folder)}")
    d = _read(path)
    items = tuple(d["items"][:n] if n is not None else d["items"])
    return Probe(name=d["name"], task=d["task"], template=d["template"], label_words=dict(d["label_words"]),
                 items=items, source=d.get("source", ""), licence=d.get("licence", ""),
                 description=d.get("description", ""), substitute_for=d.get("substitute_for"))


FACT_POOL = ASSETS / "counterfact_facts_2500_7499.json.xz"
"""Rewrite facts of CounterFact records 2,500–7,499 (never in the shipped edit subset 0–2,499)."""


def load_fact_pool(path: str | Path = FACT_POOL):
    """The held-out CounterFact facts as :class:`~bluebook.data.EditRequest` (prompt, subject,
    target_true, target_new, case_id; no evaluation prompts): the pool of the known-fact probe."""
    with lzma.open(Path(path), "rt", encoding="utf-8") as f:
        rows = json.load(f)
    return [EditRequest(r["prompt"], r["subject"], r["target_new"], r["target_true"], case_id=r["case_id"])
            for r in rows]
