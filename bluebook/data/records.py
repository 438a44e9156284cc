"""Reading data files and checking record fields, with errors that say where the problem is.

Every problem with an input file is reported as a :class:`DatasetFormatError` (a ``ValueError``)
whose message names the file, the record index, the JSON line where the record starts (when it
can be found) and the field, e.g.
``counterfact.json: record 17 (case_id 23, line 5): missing field 'requested_rewrite.subject'``.

The record converters of :mod:`bluebook.data.counterfact` and :mod:`bluebook.data.zsre` check
fields with :func:`get_field`, :func:`str_field`, :func:`str_list_field` and
:func:`case_id_field`, which raise :class:`RecordProblem` (the field and what is wrong, not yet
where); the loaders turn it into a :class:`DatasetFormatError` with :meth:`Records.error`.
"""
from __future__ import annotations

import bz2
import functools
import gzip
import json
import lzma
import re
from pathlib import Path
from typing import Any

from bluebook.data.requests import EditRequest

__all__ = ["DatasetFormatError", "read_records"]

ASSETS = Path(__file__).resolve().parent.parent / "assets"
"""The folder of the shipped data files (``bluebook/assets``)."""

MISSING = object()
"""What :func:`get_field` returns for an absent optional field."""


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


class RecordProblem(Exception):
    """What is wrong with one record: the dotted ``field`` (or None) and the ``problem`` text.

    Raised by the field checks and record converters; the caller, who knows the file and the
    record's position, turns it into a :class:`DatasetFormatError`. ``skippable`` marks problems a
    loader may skip with a warning instead of failing (zsRE subjects not found in ``src``).
    """

    def __init__(self, field: str | None, problem: str, skippable: bool = False):
        super().__init__(problem)
        self.field, self.problem, self.skippable = field, problem, skippable


# ----------------------------------------------------------------------------------------------
# field access with precise errors

def json_type(v: Any) -> str:
    """The JSON name of ``v``'s type (``"null"``, ``"boolean"``, ``"number"``, ``"string"``,
    ``"array"``, ``"object"``), for error messages; the Python type name for anything else."""
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


def get_field(rec: dict, path: str, required: bool = True) -> Any:
    """The value at the dotted ``path`` of ``rec``; :data:`MISSING` when absent and not ``required``.

    Raises :class:`RecordProblem` when a required field is absent or a parent is not an object.
    """
    cur: Any = rec
    keys = path.split(".")
    for k, key in enumerate(keys):
        if not isinstance(cur, dict):
            parent = ".".join(keys[:k])
            raise RecordProblem(parent, f"field '{parent}' must be a JSON object, got {json_type(cur)}")
        if key not in cur:
            if required:
                raise RecordProblem(path, f"missing field '{path}'")
            return MISSING
        cur = cur[key]
    return cur


def str_field(rec: dict, path: str, required: bool = True, nonempty: bool = True) -> str | None:
    """The string at ``path`` (None when absent and not ``required``); :class:`RecordProblem` if it
    is not a string, or (with ``nonempty``) is blank."""
    v = get_field(rec, path, required)
    if v is MISSING:
        return None
    if not isinstance(v, str):
        raise RecordProblem(path, f"field '{path}' must be a string, got {json_type(v)} {v!r:.60}")
    if nonempty and not v.strip():
        raise RecordProblem(path, f"field '{path}' must be a non-empty string, got {v!r}")
    return v


def str_list_field(rec: dict, path: str, required: bool = True) -> tuple[str, ...]:
    """The array of strings at ``path`` as a tuple (``()`` when absent and not ``required``)."""
    v = get_field(rec, path, required)
    if v is MISSING:
        return ()
    if not isinstance(v, list):
        raise RecordProblem(path, f"field '{path}' must be an array of strings, got {json_type(v)}")
    for i, s in enumerate(v):
        if not isinstance(s, str):
            raise RecordProblem(f"{path}[{i}]", f"field '{path}[{i}]' must be a string, got {json_type(s)} {s!r:.60}")
    return tuple(v)


def case_id_field(rec: dict, required: bool) -> int | str | None:
    """The record's ``case_id`` (an integer or a string; None when absent and not ``required``)."""
    v = get_field(rec, "case_id", required)
    if v is MISSING:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise RecordProblem("case_id", f"field 'case_id' must be an integer or a string, got {json_type(v)} {v!r:.60}")
    return v


def record_case_id(rec: Any) -> Any:
    """The record's ``case_id`` when it has a usable one, else None (never raises; for messages)."""
    if isinstance(rec, dict):
        v = rec.get("case_id")
        if isinstance(v, (int, str)) and not isinstance(v, bool):
            return v
    return None


def build_request(**kw) -> EditRequest:
    """``EditRequest(**kw)``, with its own checks reported as a :class:`RecordProblem` (always a
    data problem when the fields come from a record)."""
    try:
        return EditRequest(**kw)
    except (ValueError, TypeError) as e:
        raise RecordProblem(None, str(e)) from None


def problem_message(prefix: str, index: int | None, case_id: Any, line: int | None, bad: RecordProblem) -> str:
    """``"<prefix>: record <index> (case_id <id>, line <line>): <problem>"``, leaving out the unknown parts."""
    where = [] if case_id is None else [f"case_id {case_id}"]
    if line is not None:
        where.append(f"line {line}")
    head = prefix if index is None else f"{prefix}: record {index}"
    if where:
        head += f" ({', '.join(where)})"
    return f"{head}: {bad.problem}"


# ----------------------------------------------------------------------------------------------
# files

def read_bytes(path: Path) -> bytes:
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


def decode_text(raw: bytes, name: str) -> str:
    """``raw`` as UTF-8 text (a BOM is dropped); :class:`DatasetFormatError` naming the line otherwise."""
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


class Records:
    """The parsed top-level list of a data file (``items``), with the text kept for locating records.

    ``name`` is how the file is called in error messages.
    """

    def __init__(self, path: Path, name: str):
        self.path, self.name = path, name
        self.text = decode_text(read_bytes(path), name)
        try:
            data = json.loads(self.text)
        except json.JSONDecodeError as e:
            raise DatasetFormatError(f"{name}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}",
                                     source=name, line=e.lineno) from None
        if not isinstance(data, list):
            raise DatasetFormatError(f"{name}: expected a JSON array of records at the top level, "
                                     f"got {json_type(data)}", source=name)
        self.items: list = data

    def error(self, index: int, bad: RecordProblem, case_id: Any = MISSING) -> DatasetFormatError:
        """The :class:`DatasetFormatError` for ``bad`` in record ``index`` (file, index, case_id, line, field).

        ``case_id`` defaults to the record's own ``case_id`` field.
        """
        cid = record_case_id(self.items[index]) if case_id is MISSING else case_id
        line = _element_line(self.text, index)
        return DatasetFormatError(problem_message(self.name, index, cid, line, bad), source=self.name,
                                  index=index, case_id=cid, line=line, field=bad.field)


def read_records(path: str | Path) -> list:
    """The top-level JSON array of a data file (plain, ``.gz``, ``.xz`` or ``.bz2``), unconverted."""
    p = Path(path).expanduser()
    return Records(p, str(path)).items


@functools.lru_cache(maxsize=4)
def shipped_records(path: Path) -> Records:
    """The parsed records of a shipped data file, read once per process.

    ``shipped_records.cache_clear()`` forgets them (the next load reads the file again).
    """
    return Records(path, path.name)


def open_records(path: str | Path | None, shipped: Path) -> Records:
    """The records of the local file ``path``, or of the ``shipped`` file when ``path`` is None."""
    if path is None:
        return shipped_records(shipped)
    return Records(Path(path).expanduser(), str(path))


def record_window(fn: str, recs: Records, n: int | None, offset: int, shipped: bool, what: str) -> range:
    """Indices ``offset .. offset+n-1`` of ``recs`` (to the end when ``n`` is None), checked.

    ``ValueError`` names the loader ``fn`` when ``n``/``offset`` are not non-negative integers or
    ask for more records than exist; for a ``shipped`` subset it suggests a full local copy of
    ``what`` instead.
    """
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
