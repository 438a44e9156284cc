"""CounterFact: one record -> :class:`~bluebook.data.EditRequest` (algorithms.md §9.2, §11), the
shipped subset and full local copies in the ROME/MEMIT format, and :func:`as_requests`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from bluebook.data.records import (
    ASSETS,
    MISSING,
    DatasetFormatError,
    RecordProblem,
    build_request,
    case_id_field,
    get_field,
    json_type,
    open_records,
    problem_message,
    record_case_id,
    record_window,
    str_field,
    str_list_field,
)
from bluebook.data.requests import EditRequest

__all__ = ["SHIPPED_COUNTERFACT", "COUNTERFACT_REQUIRED_FIELDS", "counterfact_record_to_request",
           "load_counterfact", "as_requests"]

SHIPPED_COUNTERFACT = ASSETS / "counterfact_2500.json.xz"
"""The shipped subset: the first 2,500 records of the available CounterFact file."""

COUNTERFACT_REQUIRED_FIELDS = (
    "case_id", "requested_rewrite.prompt", "requested_rewrite.subject", "requested_rewrite.relation_id",
    "requested_rewrite.target_new.str", "requested_rewrite.target_new.id",
    "requested_rewrite.target_true.str", "requested_rewrite.target_true.id",
    "paraphrase_prompts", "neighborhood_prompts", "attribute_prompts", "generation_prompts",
)
"""Fields a CounterFact record must have with ``strict=True`` (``pararel_idx`` is not used)."""


def _convert(rec: Any, strict: bool) -> EditRequest:
    if not isinstance(rec, dict):
        raise RecordProblem(None, f"record must be a JSON object, got {json_type(rec)}")
    if "requested_rewrite" not in rec and "ground_truth" in rec and "prompt" in rec:
        raise RecordProblem("requested_rewrite", "missing field 'requested_rewrite' (this looks like an EasyEdit-"
                            "format record with prompt/ground_truth fields; bluebook reads the ROME/MEMIT format)")
    case_id = case_id_field(rec, strict)
    rr = "requested_rewrite"
    prompt = str_field(rec, f"{rr}.prompt")
    n_slots = prompt.count("{}")
    if n_slots != 1:
        raise RecordProblem(f"{rr}.prompt", f"field '{rr}.prompt' must contain exactly one '{{}}' for the subject "
                            f"(found {n_slots}): {prompt!r}")
    subject = str_field(rec, f"{rr}.subject")
    target_new = str_field(rec, f"{rr}.target_new.str")
    true_obj = get_field(rec, f"{rr}.target_true", strict)
    target_true = None if true_obj is MISSING else str_field(rec, f"{rr}.target_true.str")
    if target_true is not None and target_true.strip() == target_new.strip():
        raise RecordProblem(f"{rr}.target_new.str", f"field '{rr}.target_new.str' {target_new!r} is identical to "
                            f"'{rr}.target_true.str'")
    return build_request(
        prompt=prompt, subject=subject, target_new=target_new, target_true=target_true, case_id=case_id,
        paraphrase_prompts=str_list_field(rec, "paraphrase_prompts", strict),
        neighborhood_prompts=str_list_field(rec, "neighborhood_prompts", strict),
        attribute_prompts=str_list_field(rec, "attribute_prompts", strict),
        generation_prompts=str_list_field(rec, "generation_prompts", strict),
        relation_id=str_field(rec, f"{rr}.relation_id", strict),
        target_new_id=str_field(rec, f"{rr}.target_new.id", strict),
        target_true_id=None if target_true is None else str_field(rec, f"{rr}.target_true.id", strict),
        dataset="counterfact",
    )


def counterfact_record_to_request(rec: dict, *, strict: bool = True) -> EditRequest:
    """One CounterFact record in ROME/MEMIT format -> :class:`EditRequest` (``dataset="counterfact"``).

    The record is ``{case_id, pararel_idx, requested_rewrite: {prompt, relation_id, subject,
    target_new: {str, id}, target_true: {str, id}}, paraphrase_prompts, neighborhood_prompts,
    attribute_prompts, generation_prompts}``. With ``strict=True`` (the default) every field but
    ``pararel_idx`` (unused) must be present; with ``strict=False`` only ``requested_rewrite``'s
    ``prompt``, ``subject`` and ``target_new.str`` are needed and the rest default to empty.
    Problems raise :class:`DatasetFormatError` (a ``ValueError``) naming the field.
    """
    try:
        return _convert(rec, strict)
    except RecordProblem as bad:
        cid = record_case_id(rec)
        raise DatasetFormatError(problem_message("CounterFact record", None, cid, None, bad),
                                 case_id=cid, field=bad.field) from None


def load_counterfact(path: str | Path | None = None, n: int | None = None,
                     offset: int = 0) -> list[EditRequest]:
    """CounterFact edit requests, in file (``case_id``) order.

    ``path=None`` reads the shipped subset (the first 2,500 records of the available
    CounterFact file, ``case_id`` 0 to 2819, see ``bluebook/assets/SOURCES.md``); otherwise a
    local ``counterfact.json`` or ``multi_counterfact.json`` (plain, ``.gz`` or ``.xz``). Records
    ``offset .. offset+n-1`` are returned (all from ``offset`` when ``n`` is None); asking for
    more records than exist raises ``ValueError``. A malformed record raises
    :class:`DatasetFormatError` naming the file, record index, line and field. Duplicate
    ``case_id``\\ s are an error too (results are keyed by ``case_id``).
    """
    recs = open_records(path, SHIPPED_COUNTERFACT)
    out, seen = [], {}
    for i in record_window("load_counterfact", recs, n, offset, path is None, "counterfact.json"):
        try:
            req = _convert(recs.items[i], strict=True)
        except RecordProblem as bad:
            raise recs.error(i, bad) from None
        if req.case_id in seen:
            raise recs.error(i, RecordProblem("case_id", f"duplicate case_id {req.case_id!r} "
                                              f"(also record {seen[req.case_id]})"))
        seen[req.case_id] = i
        out.append(req)
    return out


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
