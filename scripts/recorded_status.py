"""Print the status section of ``results/sequential/README.md`` for the recorded sequential runs there:
how far each method got, time and memory per batch, every evaluation point reached (with 95 %
intervals) and the unedited model's baseline. Regenerate it after exporting a sitting's runs:

    python scripts/recorded_status.py > status.md      # then paste between the markers
    python scripts/recorded_status.py --write          # or replace the section in place
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bluebook.experiments import curves, verdicts  # noqa: E402
from bluebook.experiments.tables import COLUMNS  # noqa: E402

START, END = "<!-- recorded-status:start -->", "<!-- recorded-status:end -->"
HEAD_START, HEAD_END = "<!-- headline:start -->", "<!-- headline:end -->"
FIGURE = ROOT / "docs" / "figures" / "headline_forest.png"
NAMES = {"counterfact": "CounterFact", "zsre": "zsRE"}


def _iv(d: dict, digits: int = 2) -> str:
    return f"{d['value']:.{digits}f} [{d['low']:.{digits}f}, {d['high']:.{digits}f}]"


def status(root: Path) -> str:  # noqa: C901 - a report script, one branch per run state
    lines = ["Status when last committed (runs continue from their checkpoints in later sittings; numbers are",
             "only ever shown up to the last evaluation point reached):", "",
             "| run | method | batches done | evaluated at (edits) | edit hours | batch seconds (median) "
             "| peak RSS first→last batch (MB) |", "|---|---|---|---|---|---|---|"]
    runs = {p.name: curves.load_run(p) for p in sorted(root.iterdir()) if p.is_dir()}
    for name, run in runs.items():
        label = f"{NAMES.get(run.dataset, run.dataset)}, {run.config.get('n')} × batches of {run.config.get('batch')}"
        if name.endswith("_equal_total"):
            label += ", equal total v* budget"
        for m, r in run.methods.items():
            secs = [b["seconds"] for b in r.batches]
            mem = [b.get("memory", {}).get("peak_rss_mb") for b in r.batches if b.get("memory")]
            lines.append(f"| {label} | {m} | {r.batches_done}/{r.n_batches} | {', '.join(map(str, r.points)) or '—'} "
                         f"| {sum(secs) / 3600:.2f} | {statistics.median(secs):.0f} | "
                         f"{f'{mem[0]:.0f} → {mem[-1]:.0f}' if mem else '—'} |")
    lines += ["", "| run folder | size (kB) | processes started "
              "| wall hours (sum over processes that recorded an end) | first start → last end |",
              "|---|---:|---:|---:|---|"]
    for name, run in runs.items():
        size = sum(f.stat().st_size for f in (root / name).rglob("*") if f.is_file())
        starts = [i for i in run.invocations if i.get("event") == "start"]
        ends = [i for i in run.invocations if i.get("event") == "end"]
        wall = sum(i.get("wall_s", 0) for i in ends)
        span = f"{starts[0]['started']} → {ends[-1]['ended']}" if starts and ends else "—"
        lines.append(f"| `{name}` | {size / 1000:.0f} | {len(starts)} | {wall / 3600:.2f} | {span} |")
    for name, run in runs.items():
        cols = [c for c in COLUMNS[run.dataset] if c != "consistency"]
        rows = []
        for m, r in run.methods.items():
            for k in r.points:
                ev = r.evals[k]
                ab = ev.get("ability") or {}
                cells = [_iv(ev["intervals"][c]) if c in ev.get("intervals", {}) else "—" for c in cols]
                ppl = _iv(ab["perplexity"]) if "perplexity" in ab else "—"
                kf = f"{100 * ab['known_facts']['value']:.0f} %" if "known_facts" in ab else "—"
                rows.append(f"| {m} | {k} | " + " | ".join(cells) + f" | {ppl} | {kf} |")
        base_rows = [r for r in curves.curve_rows(run) if r["method"] == "unedited"]
        for k in sorted({r["edits"] for r in base_rows if r["edits"] > 0}, reverse=True):
            at = {r["metric"]: r for r in base_rows if r["edits"] == k}
            cells = [_iv(at[c]) if c in at else "—" for c in cols]
            rows.insert(0, f"| unedited, same {k} records | 0 | " + " | ".join(cells) + " | — | — |")
        if run.unedited is not None:
            u = run.unedited
            cells = [_iv(u["intervals"][c]) if c in u.get("intervals", {}) else "—" for c in cols]
            ab = u.get("ability") or {}
            ppl = _iv(ab["perplexity"]) if "perplexity" in ab else "—"
            rows.insert(0, f"| unedited (all {run.config.get('n')} records) | 0 | " + " | ".join(cells)
                        + f" | {ppl} | {'100 %' if 'known_facts' in ab else '—'} |")
        if rows:
            lines += ["", f"{NAMES.get(run.dataset, run.dataset)} ({name}), ×100 with 95 % intervals, on the records "
                      "edited so far; perplexity on 100 held-out texts; known facts chosen on the unedited model:", "",
                      "| method | edits | " + " | ".join(cols) + " | perplexity | known facts kept |",
                      "|---|---:|" + "---|" * (len(cols) + 2)] + rows
    return "\n".join(lines + [""] + comparisons(root))


_SIGN = {"agrees": "agrees", "disagrees": "**disagrees**", "inconclusive": "inconclusive"}


def _claim_cell(c: dict | None, digits: int, unpaired: str = "") -> str:
    """One claim as ``value [low, high] verdict``; a claim decided from two unpaired intervals (an
    evaluation that kept no per-item values) has no interval of its own and says so (``unpaired``
    names its unit where that differs from the paired one)."""
    if c is None or c["ours"] is None:
        return "—"
    if c["interval"] is None:
        return f"{c['ours']:+.{max(digits, 1)}f}{unpaired} (unpaired) {_SIGN.get(c['verdict'], c['verdict'])}"
    lo, hi = c["interval"]
    return f"{c['ours']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}] {_SIGN.get(c['verdict'], c['verdict'])}"


def comparisons(root: Path) -> list[str]:
    """The paired BLUE − base table of every recorded run (``verdicts.recorded_comparisons``)."""
    rows = verdicts.recorded_comparisons(root)
    if not rows:
        return []
    lines = ["Paired BLUE − base on the same records at the largest evaluation point both reached (95 % "
             "bootstrap intervals; the verdict is against the paper's claim that BLUE is better). Edit metrics "
             "×100; held-out perplexity as mean token NLL in nats over 100 texts (lower is better, so a negative "
             "difference agrees); known facts kept, in points over the facts chosen on the unedited model. "
             "v* budget: the rule, then the mean total steps per request and the share of optimisations "
             "that hit the cap (BLUE / base):", "",
             "| dataset | pair | v* budget | edits | efficacy | generalization | specificity "
             "| perplexity (NLL) | known facts |", "|---|---|---|---:|---|---|---|---|---|"]
    for r in rows:
        used = r["budget"]
        blue, base = used.get(r["blue"], {}), used.get(r["base"], {})
        if blue.get("per_request") is not None and base.get("per_request") is not None:
            budget = (f"{r['rule']} ({blue['cap']} / {base['cap']}): {blue['per_request']:.1f} / "
                      f"{base['per_request']:.1f} steps, capped {100 * blue['capped']:.0f} % / "
                      f"{100 * base['capped']:.0f} %")
        else:
            budget = r["rule"] or "—"
        c = r["claims"]
        lines.append(f"| {NAMES.get(r['dataset'], r['dataset'])} | {r['blue']} − {r['base']} | {budget} "
                     f"| {r['edits'] or '—'} | {_claim_cell(c.get('efficacy'), 1)} "
                     f"| {_claim_cell(c.get('generalization'), 1)} | {_claim_cell(c.get('specificity'), 1)} "
                     f"| {_claim_cell(c.get('perplexity'), 3, ' perplexity')} "
                     f"| {_claim_cell(c.get('known_facts'), 0)} |")
    return lines


def headline(results: Path) -> str:
    """The top-level README's headline rows: the scorecard of the committed recorded evidence."""
    from bluebook.experiments.notebooks import recorded_index
    from bluebook.experiments.scorecard import headline_lines

    return "\n".join(headline_lines(recorded_index(results)))


def draw_headline(results: Path, target: Path = FIGURE) -> Path:
    """The README's headline figure: every recorded paired BLUE − base difference, both budget rules."""
    from bluebook.plots.curves import paired_forest

    fig = paired_forest(verdicts.recorded_comparisons(results / "sequential"),
                        title="BLUE − base on the same records (recorded runs, SmolLM2-135M)")
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=110)
    return target


def replace_section(path: Path, start: str, end: str, text: str) -> None:
    s = path.read_text()
    if start not in s or end not in s:
        raise SystemExit(f"{path} has no {start} ... {end} markers")
    head, rest = s.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(head + start + "\n" + text + "\n" + end + tail)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=ROOT / "results" / "sequential")
    ap.add_argument("--write", action="store_true",
                    help="replace the sections between the markers of results/sequential/README.md and of the "
                         "top-level README (headline rows), and redraw the headline figure")
    args = ap.parse_args(argv)
    text = status(args.root)
    if not args.write:
        print(text)
        return 0
    replace_section(ROOT / "results" / "sequential" / "README.md", START, END, text)
    replace_section(ROOT / "README.md", HEAD_START, HEAD_END, headline(args.root.parent))
    draw_headline(args.root.parent)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
