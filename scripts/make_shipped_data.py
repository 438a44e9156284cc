#!/usr/bin/env python
"""Regenerate the CounterFact and zsRE subsets shipped in ``bluebook/assets``.

Usage::

    python scripts/make_shipped_data.py DATA_DIR [--n 2500] [--out bluebook/assets]

``DATA_DIR`` must contain ``counterfact/counterfact_subset.json`` (ROME/MEMIT record format,
sorted by ``case_id``) and ``zsre/zsre_mend_eval_shuffled.json`` (MEND/MEMIT zsRE format).
The first ``n`` records of each file, in file order, are written unchanged (same keys, same
key order, same ``json.dump`` serialisation) as xz-compressed JSON. The output is
byte-for-byte reproducible: xz with a fixed preset and no timestamps. The script prints the
sha256 of every input and output file, which is what ``bluebook/assets/SOURCES.md`` records.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import lzma
from pathlib import Path

FILES = {
    # output name -> path of the source file inside DATA_DIR
    "counterfact_{n}.json.xz": Path("counterfact") / "counterfact_subset.json",
    "zsre_{n}.json.xz": Path("zsre") / "zsre_mend_eval_shuffled.json",
}
XZ_PRESET = 9 | lzma.PRESET_EXTREME


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_dir", type=Path, help="folder holding counterfact/ and zsre/")
    ap.add_argument("--n", type=int, default=2500, help="records to keep from the start of each file")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "bluebook" / "assets")
    args = ap.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    for out_name, rel in FILES.items():
        src = args.data_dir / rel
        with open(src, "rb") as f:
            records = json.load(f)
        if not isinstance(records, list) or len(records) < args.n:
            raise SystemExit(f"{src}: expected a JSON list with at least {args.n} records")
        subset = records[: args.n]
        if "case_id" in subset[0]:
            ids = [r["case_id"] for r in subset]
            if ids != sorted(ids):
                raise SystemExit(f"{src}: records are not in case_id order")
        # json.dump defaults (ASCII escapes, ", " and ": " separators) as in the source files.
        payload = json.dumps(subset).encode("ascii")
        dest = args.out / out_name.format(n=args.n)
        dest.write_bytes(lzma.compress(payload, format=lzma.FORMAT_XZ, preset=XZ_PRESET))
        print(f"{dest.name}: {len(subset)} records from {rel} "
              f"(source sha256 {sha256(src)}; uncompressed {len(payload):,} bytes, "
              f"shipped {dest.stat().st_size:,} bytes, sha256 {sha256(dest)})")


if __name__ == "__main__":
    main()
