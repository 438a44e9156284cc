"""Data: the edit request type and the readers for CounterFact, zsRE and the statistics corpus."""
from bluebook.data.dsets import (SHIPPED_COUNTERFACT, SHIPPED_ZSRE, WIKI_OFFLINE, ZSRE_TARGET_TRUE,
                                 DatasetFormatError, as_requests, corpus_id, counterfact_record_to_request,
                                 load_counterfact, load_zsre, read_records, wiki_texts, zsre_record_to_request)
from bluebook.data.requests import EditRequest

__all__ = ["EditRequest", "as_requests", "DatasetFormatError", "SHIPPED_COUNTERFACT", "SHIPPED_ZSRE",
           "WIKI_OFFLINE", "ZSRE_TARGET_TRUE", "corpus_id", "counterfact_record_to_request", "load_counterfact",
           "load_zsre", "read_records", "wiki_texts", "zsre_record_to_request"]
