"""zsRE: one record (MEND/MEMIT format) -> :class:`~bluebook.data.EditRequest` (algorithms.md §9.3),
the shipped subset and full local copies.

zsRE records whose subject does not occur exactly once in ``src`` cannot become a template
(the reference loader's ``src.replace(subject, "{}")`` would give a prompt without ``{}`` or
with several). :func:`zsre_record_to_request` raises for them; :func:`load_zsre` skips them
with a warning that lists their case_ids, so ``case_id`` stays the record's index in the file.
None of the 19,086 records of the available zsRE file has this problem, so nothing is skipped
from the shipped subset.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from bluebook.data.records import (
    ASSETS,
    DatasetFormatError,
    RecordProblem,
    build_request,
    get_field,
    json_type,
    open_records,
    problem_message,
    record_window,
    str_field,
)
from bluebook.data.requests import EditRequest

__all__ = ["SHIPPED_ZSRE", "ZSRE_TARGET_TRUE", "zsre_record_to_request", "load_zsre"]

SHIPPED_ZSRE = ASSETS / "zsre_2500.json.xz"
"""The shipped subset: the first 2,500 records of the available ``zsre_mend_eval.json``."""

ZSRE_TARGET_TRUE = "<|endoftext|>"
"""The dummy ``target_true`` of every zsRE request (as in the reference loader)."""

_LOC_MARK = "nq question: "


def _convert(rec: Any, case_id: int | str | None) -> EditRequest:
    if not isinstance(rec, dict):
        raise RecordProblem(None, f"record must be a JSON object, got {json_type(rec)}")
    subject = str_field(rec, "subject")
    src = str_field(rec, "src")
    answers = get_field(rec, "answers")
    if not isinstance(answers, list) or not answers:
        raise RecordProblem("answers", f"field 'answers' must be a non-empty array of strings, got {answers!r:.60}")
    target_new = answers[0]
    if not isinstance(target_new, str) or not target_new.strip():
        raise RecordProblem("answers[0]", f"field 'answers[0]' must be a non-empty string, got {target_new!r:.60}")
    rephrase = str_field(rec, "rephrase")
    loc = str_field(rec, "loc")
    if _LOC_MARK not in loc:
        raise RecordProblem("loc", f"field 'loc' must contain {_LOC_MARK!r} (the reference loader asserts this), "
                            f"got {loc!r}")
    loc_ans = str_field(rec, "loc_ans")
    n = src.count(subject)
    if n != 1:
        what = "does not occur" if n == 0 else f"occurs {n} times"
        raise RecordProblem("src", f"subject {subject!r} {what} in field 'src' {src!r}; the prompt template needs "
                            "it exactly once", skippable=True)
    if "{}" in src:
        raise RecordProblem("src", f"field 'src' {src!r} already contains '{{}}'")
    return build_request(
        prompt=src.replace(subject, "{}"), subject=subject, target_new=target_new,
        target_true=ZSRE_TARGET_TRUE, case_id=case_id, paraphrase_prompts=(rephrase,),
        neighborhood_prompts=(loc,), neighborhood_answer=loc_ans, dataset="zsre",
    )


def zsre_record_to_request(rec: dict, case_id: int | str | None) -> EditRequest:
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
        return _convert(rec, case_id)
    except RecordProblem as bad:
        raise DatasetFormatError(problem_message("zsRE record", None, case_id, None, bad),
                                 case_id=case_id, field=bad.field) from None


def load_zsre(path: str | Path | None = None, n: int | None = None, offset: int = 0) -> list[EditRequest]:
    """zsRE edit requests; ``case_id`` is the record's index in the file (the reference convention).

    ``path=None`` reads the shipped subset (the first 2,500 records of the available, reordered
    ``zsre_mend_eval.json``; see the order caveat in ``bluebook/assets/SOURCES.md``); otherwise a
    local ``zsre_mend_eval.json`` (plain, ``.gz`` or ``.xz``). ``n`` and ``offset`` count records
    of the file, as the reference's ``size`` does. Records whose subject does not occur exactly
    once in ``src`` are skipped with a warning listing their case_ids (none in the shipped data),
    so the list can be shorter than ``n``; every other problem raises :class:`DatasetFormatError`.
    """
    recs = open_records(path, SHIPPED_ZSRE)
    out, skipped = [], []
    window = record_window("load_zsre", recs, n, offset, path is None, "zsre_mend_eval.json")
    for i in window:
        try:
            out.append(_convert(recs.items[i], i))
        except RecordProblem as bad:
            if bad.skippable:
                skipped.append(i)
                continue
            raise recs.error(i, bad, case_id=i) from None
    if skipped:
        shown = ", ".join(map(str, skipped[:50])) + (", ..." if len(skipped) > 50 else "")
        warnings.warn(f"load_zsre: skipped {len(skipped)} of {len(window)} records of {recs.name} whose subject "
                      f"does not occur exactly once in 'src' (case_ids {shown})", UserWarning, stacklevel=2)
    return out
