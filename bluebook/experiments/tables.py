"""Tables of a replication folder in the paper's layout (markdown, CSV, JSON)."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from bluebook.core.names import PAPER_ORDER
from bluebook.runs import atomic_write_text, write_json

__all__ = ["COLUMNS", "UNEDITED", "dataset_name", "ordered", "fmt", "results_table", "write_tables"]

#: Columns of the paper's tables, per dataset.
COLUMNS = {"counterfact": ("efficacy", "generalization", "specificity", "fluency", "consistency"),
           "zsre": ("efficacy", "generalization", "specificity")}
UNEDITED = "unedited"


def dataset_name(dataset: str) -> str:
    d = str(dataset).lower()
    if d in ("counterfact", "mcf", "cf", "multi_counterfact"):
        return "counterfact"
    if d == "zsre":
        return "zsre"
    raise ValueError(f"dataset must be 'counterfact' or 'zsre', got {dataset!r}")


def ordered(methods) -> list[str]:
    """``methods`` in the paper's row order (unknown names last, as given)."""
    known = [m for m in PAPER_ORDER if m in methods]
    return known + [m for m in methods if m not in known]


def fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{float(v):.2f}"


def _rows(results: dict) -> list[str]:
    rows = results["methods"]
    return ([UNEDITED] if UNEDITED in rows else []) + ordered([k for k in rows if k != UNEDITED])


def results_table(results: dict, dataset: str | None = None) -> str:
    """A markdown table in the paper's layout (rows: ``unedited`` then :data:`PAPER_ORDER`)."""
    dataset = dataset_name(dataset or results["config"]["dataset"])
    cols = COLUMNS[dataset]
    head = "| Method | " + " | ".join(c.capitalize() for c in cols) + " |"
    lines = [head, "|---|" + "---|" * len(cols)]
    for m in _rows(results):
        s = results["methods"][m]["summary"]
        lines.append(f"| {m} | " + " | ".join(fmt(s.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def write_tables(out: Path, results: dict) -> None:
    """``out/results.json``, ``results.csv`` and ``results.md``."""
    write_json(out / "results.json", results)
    dataset = results["config"]["dataset"]
    cols = ["method"] + list(COLUMNS[dataset]) + (["score"] if dataset == "counterfact" else []) + \
        ["n_cases", "edit_seconds", "eval_seconds"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for m in _rows(results):
        r = results["methods"][m]
        w.writerow([m] + [("" if r["summary"].get(c) is None else r["summary"].get(c)) for c in cols[1:-2]]
                   + [r.get("edit_seconds", ""), r.get("eval_seconds", "")])
    atomic_write_text(out / "results.csv", buf.getvalue())
    c = results["config"]
    title = (f"Sequential batch editing on {dataset}: {c['n']} records in batches of {c['batch']} "
             f"(model {c['model']}; all records evaluated after the last batch; ×100)")
    atomic_write_text(out / "results.md", f"**{title}**\n\n" + results_table(results))
