"""Data: the edit request type and the readers for CounterFact, zsRE and the statistics corpus.

* :mod:`~bluebook.data.requests`: :class:`EditRequest`;
* :mod:`~bluebook.data.records`: file reading (plain, ``.gz``, ``.xz``, ``.bz2``) and
  :class:`DatasetFormatError`, whose message names the file, record index, line and field;
* :mod:`~bluebook.data.counterfact` / :mod:`~bluebook.data.zsre`: one record -> request
  (algorithms.md §9.2, §9.3, §11) and the loaders for the subsets shipped in ``bluebook/assets``
  (the first 2,500 records of each source file, see ``bluebook/assets/SOURCES.md``) or a full
  local copy in the original format;
* :mod:`~bluebook.data.wiki`: :func:`wiki_texts` and :func:`corpus_id` for the layer statistics.
"""
from bluebook.data.counterfact import (
    COUNTERFACT_REQUIRED_FIELDS,
    SHIPPED_COUNTERFACT,
    as_requests,
    counterfact_record_to_request,
    load_counterfact,
)
from bluebook.data.records import DatasetFormatError, read_records
from bluebook.data.requests import EditRequest
from bluebook.data.wiki import WIKI_OFFLINE, corpus_id, wiki_texts
from bluebook.data.zsre import SHIPPED_ZSRE, ZSRE_TARGET_TRUE, load_zsre, zsre_record_to_request

__all__ = ["EditRequest", "as_requests", "DatasetFormatError", "COUNTERFACT_REQUIRED_FIELDS",
           "SHIPPED_COUNTERFACT", "SHIPPED_ZSRE", "WIKI_OFFLINE", "ZSRE_TARGET_TRUE", "corpus_id",
           "counterfact_record_to_request", "load_counterfact", "load_zsre", "read_records", "wiki_texts",
           "zsre_record_to_request"]
