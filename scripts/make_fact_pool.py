"""Build ``bluebook/assets/counterfact_facts_2500_7499.json.xz``: the rewrite facts of CounterFact
records 2,500–7,499 (file order) of the project's CounterFact file, the pool from which the
general-ability suite picks the *known facts* it re-checks along a run (records no default run
edits: the shipped edit subset is records 0–2,499).

Each entry keeps ``case_id``, ``prompt``, ``subject``, ``target_true`` and ``target_new`` of the
record's ``requested_rewrite``, unchanged. Usage: ``python scripts/make_fact_pool.py COUNTERFACT_JSON``.
"""
import json
import lzma
import sys
from pathlib import Path

START, STOP = 2500, 7500
OUT = Path(__file__).resolve().parent.parent / "bluebook" / "assets" / "counterfact_facts_2500_7499.json.xz"


def main(src: str) -> None:
    recs = json.loads(Path(src).read_text())
    rows = []
    for r in recs[START:STOP]:
        rw = r["requested_rewrite"]
        rows.append({"case_id": r["case_id"], "prompt": rw["prompt"], "subject": rw["subject"],
                     "target_true": rw["target_true"]["str"], "target_new": rw["target_new"]["str"]})
    OUT.write_bytes(lzma.compress(json.dumps(rows).encode(), preset=9 | lzma.PRESET_EXTREME))
    print(OUT, len(rows), OUT.stat().st_size)


if __name__ == "__main__":
    main(sys.argv[1])
