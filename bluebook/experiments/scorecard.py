"""One scorecard of the paper's claims: one verdict per claim, grouped by the paper's argument.

Several notebooks measure the same claim (BLUE against its base on CounterFact is measured live in
06 and 07 and recorded in 09, under two v* budget rules). :func:`scorecard` keeps one verdict per
claim, from the strongest fair evidence, and shows the others beside it as context, never as a
second verdict:

1. a live sample under :data:`~bluebook.metrics.claims.SMALL_SAMPLE` records only where nothing
   larger exists;
2. an equal total v* budget over any other budget rule;
3. the larger ``n``;
4. recorded over live at the same size.

A claim measured on a tiny sample with every value 0 (interval [0, 0]) is *not measured*, not a
verdict. The report (:func:`report_lines`) opens with one screen of counts and headline rows per
group, and keeps each source run's provenance once, in an appendix.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from bluebook.experiments.verdicts import claim_name, recorded_comparisons
from bluebook.metrics.claims import SMALL_SAMPLE

#: the paper's argument, in order: (group, the notebooks whose own claims belong to it)
GROUPS = (
    ("The key–value view and locating", ("01", "02")),
    ("The closed form", ("03",)),
    ("Why distribution fails", ("04",)),
    ("The bound", ("05",)),
    ("Two layers suffice", ("06",)),
    ("Sequential editing outcome", ("07", "09")),
    ("General ability", ("08",)),
    ("Long form", ("11",)),
    ("Beyond the paper", ("10", "12")),
)
NOT_MEASURED = "not measured"
EQUAL_TOTAL, SAME_CAP = "equal total", "same cap"
_SUFFIX = "_equal_total"
#: BLUE against its base on a dataset: "<dataset>:<blue>><base>:<metric>"
_COMPARISON = re.compile(r"^(counterfact|zsre):[a-z0-9_]+>[a-z0-9_]+:(?P<metric>[a-z0-9_]+)$")
_ABILITY_METRICS = {"perplexity", "known_facts", "ability", "probes", "nll"}
_PROVENANCE = (re.compile(r"recorded run (?P<run>[\w.-]+)"), re.compile(r"recorded: (?P<prov>[^;]+)"))
NOTE_WIDTH = 120


@dataclass
class Measurement:
    """One notebook's measurement of a claim (``key`` without the budget suffix)."""
    key: str
    notebook: str
    claim: dict
    budget: str | None

    @property
    def n(self) -> int:
        return int(self.claim.get("n") or 0)

    @property
    def small(self) -> bool:
        return self.claim.get("evidence") == "live" and self.n < SMALL_SAMPLE

    def strength(self) -> tuple:
        return (not self.small, self.budget == EQUAL_TOTAL, self.n, self.claim.get("evidence") == "recorded")


@dataclass
class Row:
    """The scorecard's one row for a claim: the chosen measurement and the others as context."""
    key: str
    group: str
    chosen: Measurement
    verdict: str
    context: list[Measurement] = field(default_factory=list)


def budget_of(key: str, claim: dict) -> str | None:
    """The v* budget rule a comparison was measured under (key suffix, else the note), or None."""
    if key.endswith(_SUFFIX):
        return EQUAL_TOTAL
    note = (claim.get("note") or "").lower()
    if "equal total" in note or "equal_total" in note:
        return EQUAL_TOTAL
    if "same cap" in note or "same_cap" in note:
        return SAME_CAP
    return None


def base_key(key: str) -> str:
    return key[:-len(_SUFFIX)] if key.endswith(_SUFFIX) else key


def not_measured(claim: dict) -> bool:
    """Every value 0 on a small sample: the run could not measure the claim at all."""
    iv = claim.get("interval")
    zero = claim.get("ours") in (0, 0.0) and (iv is None or (iv[0] == 0 and iv[1] == 0))
    return zero and int(claim.get("n") or 0) < SMALL_SAMPLE


def group_of(key: str, notebook: str) -> str:
    m = _COMPARISON.match(key)
    if m:
        return "General ability" if m.group("metric") in _ABILITY_METRICS else "Sequential editing outcome"
    for name, stems in GROUPS:
        if notebook[:2] in stems:
            return name
    return GROUPS[-1][0]


def measurements(index: dict) -> dict[str, list[Measurement]]:
    """``{claim key: [measurement per notebook and budget]}`` from ``{stem: {"metrics": …}}``."""
    out: dict[str, list[Measurement]] = {}
    for stem, info in index.items():
        for key, c in ((info.get("metrics") or {}).get("claims") or {}).items():
            out.setdefault(base_key(key), []).append(Measurement(base_key(key), stem, c, budget_of(key, c)))
    return out


def conflicts(index: dict) -> dict[str, dict[str, str]]:
    """Claims that two notebooks give different verdicts: ``{key: {notebook: verdict}}`` (a notebook
    that measures a claim under two budget rules counts once, by its stronger measurement)."""
    out = {}
    for key, ms in measurements(index).items():
        best: dict[str, Measurement] = {}
        for m in ms:
            if m.notebook not in best or m.strength() > best[m.notebook].strength():
                best[m.notebook] = m
        verdicts = {nb: (NOT_MEASURED if not_measured(m.claim) else m.claim["verdict"]) for nb, m in best.items()}
        if len(set(verdicts.values())) > 1:
            out[key] = verdicts
    return out


def choose(ms: list[Measurement]) -> Row:
    """The strongest measurement of one claim (module docstring); the rest become context."""
    ms = sorted(ms, key=lambda m: m.strength(), reverse=True)
    best = ms[0]
    verdict = NOT_MEASURED if not_measured(best.claim) else best.claim["verdict"]
    return Row(best.key, group_of(best.key, best.notebook), best, verdict, ms[1:])


def scorecard(index: dict) -> list[Row]:
    """One row per claim, in the order of :data:`GROUPS`, then of the notebooks."""
    rows = [choose(ms) for ms in measurements(index).values()]
    order = {name: i for i, (name, _) in enumerate(GROUPS)}
    return sorted(rows, key=lambda r: (order[r.group], r.chosen.notebook))


def settle(claims: dict, pool: dict[str, list[Measurement]]) -> dict:
    """A notebook's claims with each one that ``pool`` also measures replaced by the strongest of
    them all, so that every notebook gives a shared claim the same verdict; its own measurement
    then stands in the note as context. ``pool``: :func:`measurements` of the recorded sources."""
    out = {}
    for key, c in claims.items():
        mine = Measurement(base_key(key), "this notebook", c, budget_of(key, c))
        row = choose([mine] + list(pool.get(base_key(key), [])))
        if row.chosen is mine:
            out[key] = c
            continue
        settled = dict(row.chosen.claim)
        settled["note"] = short_note(settled.get("note") or "") + f"; this notebook: {describe(mine)}"
        out[key] = settled
    return out


def recorded_pool(sequential_root) -> dict[str, list[Measurement]]:
    """The recorded BLUE-versus-base measurements of the sequential run folders under
    ``sequential_root`` (both budget rules, each at the largest point both methods reached), as
    :func:`settle` takes them. They are drawn by notebook 09, so they carry its number."""
    pool: dict[str, list[Measurement]] = {}
    for row in recorded_comparisons(sequential_root):
        rule = row.get("rule") or ""
        budget = EQUAL_TOTAL if rule.startswith("equal total") else SAME_CAP if rule.startswith("same cap") else None
        for metric, c in row["claims"].items():
            if c.get("ours") is None:
                continue
            key = claim_name(row["dataset"], row["base"], metric)
            pool.setdefault(key, []).append(Measurement(key, f"09 {row['run']}", c, budget))
    return pool


# --------------------------------------------------------------------------------------------- text
def fmt(v, digits: int = 3) -> str:
    if v is None:
        return "—"
    a = abs(v)
    return f"{v:.1f}" if a >= 100 else f"{v:.2f}" if a >= 1 else f"{v:.{digits}f}"


def ours(claim: dict, key: str = "") -> str:
    """The number in the claim's own terms: a difference carries its sign and says so (a claim of
    one method over another, ``a>b`` or ``a<b`` in its key, is a difference)."""
    q = claim.get("quantity") or ("difference" if (">" in key or "<" in key) else None)
    v = claim.get("ours")
    if v is None:
        return "—"
    if q == "difference":
        return f"Δ {'+' if v >= 0 else ''}{fmt(v)}"
    if q == "correlation":
        return f"ρ {fmt(v)}"
    return fmt(v)


def describe(m: Measurement) -> str:
    c = m.claim
    verdict = NOT_MEASURED if not_measured(c) else c["verdict"]
    what = ", ".join(x for x in (m.budget, c.get("evidence")) if x)
    return f"{m.notebook[:2]} {what}: {ours(c, m.key)}, n={m.n}, {verdict}"


def provenance(note: str) -> str | None:
    """The source run a note names (a recorded sequential run, or a recorded notebook profile)."""
    for pat in _PROVENANCE:
        m = pat.search(note or "")
        if m:
            return next(v for v in m.groupdict().values() if v).strip()
    return None


def short_note(note: str, width: int = NOTE_WIDTH) -> str:
    """The note without its provenance (kept once in the appendix), cut to one line."""
    parts = [p.strip() for p in (note or "").split(";")]
    parts = [p for p in parts if p and not p.startswith(("recorded run ", "recorded: ", "v* budget"))]
    text = "; ".join(parts)
    return text if len(text) <= width else text[:width - 1].rstrip() + "…"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _interval(c: dict) -> str:
    iv = c.get("interval")
    return f"[{fmt(iv[0])}, {fmt(iv[1])}]" if iv else "—"


def counts(rows: list[Row]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        g = out.setdefault(r.group, {})
        g[r.verdict] = g.get(r.verdict, 0) + 1
    return out


def _clearness(r: Row) -> float:
    """How far the interval sits from zero, in interval widths (0 when it covers zero or is missing)."""
    iv = r.chosen.claim.get("interval")
    if not iv or iv[0] <= 0 <= iv[1]:
        return 0.0
    return min(abs(iv[0]), abs(iv[1])) / max(iv[1] - iv[0], 1e-12)


def headline(rows: list[Row], per_group: int = 2) -> list[Row]:
    """Per group, its decided claims with the most records, the clearest first (at most ``per_group``)."""
    out = []
    for name, _ in GROUPS:
        mine = [r for r in rows if r.group == name and r.verdict in ("agrees", "disagrees")]
        out += sorted(mine, key=lambda r: (-r.chosen.n, -_clearness(r)))[:per_group]
    return out


def _tier(m: Measurement) -> str:
    return ", ".join(x for x in (m.budget, m.claim.get("evidence")) if x)


def headline_lines(index: dict, per_group: int = 2, ref=None) -> list[str]:
    """The headline rows as a markdown table: per group, the decided claims with the most records."""
    ref = ref or (lambda m: m.notebook[:2])
    lines = ["| claim | the paper says | ours [95 % interval] | n | verdict | evidence |",
             "|---|---|---|---:|---|---|"]
    for r in headline(scorecard(index), per_group):
        c = r.chosen.claim
        lines.append(f"| `{_cell(r.key)}` | {_cell(c['paper'])} | {ours(c, r.key)} {_interval(c)} | {r.chosen.n} | "
                     f"**{r.verdict}** | {ref(r.chosen)} {_tier(r.chosen)} |")
    return lines


def report_lines(index: dict, figures: dict[str, list[str]] | None = None) -> list[str]:
    """The scorecard as markdown: one screen of counts and headline rows, a figure per group, the
    full table (one row per claim), then the provenance of each source run once."""
    rows = scorecard(index)
    sources: dict[str, int] = {}

    def ref(m: Measurement) -> str:
        p = provenance(m.claim.get("note") or "")
        if p is None:
            return m.notebook[:2]
        return f"{m.notebook[:2]} [{sources.setdefault(p, len(sources) + 1)}]"

    verdicts = ("agrees", "disagrees", "inconclusive", NOT_MEASURED)
    total = {v: sum(1 for r in rows if r.verdict == v) for v in verdicts}
    lines = [f"{len(rows)} distinct claims, one verdict each: " + ", ".join(f"{n} {v}" for v, n in total.items()) + ".",
             "", "| group | " + " | ".join(verdicts) + " |", "|---|" + "---:|" * len(verdicts)]
    per = counts(rows)
    for name, _ in GROUPS:
        if name in per:
            lines.append(f"| {name} | " + " | ".join(str(per[name].get(v, 0)) for v in verdicts) + " |")
    lines += ["", "Headline claims (the decided ones with the most records per group):", ""]
    lines += headline_lines(index, ref=ref)
    for name, _ in GROUPS:
        mine = [r for r in rows if r.group == name]
        if not mine:
            continue
        lines += ["", f"## {name}", ""]
        for fig in (figures or {}).get(name, [])[:1]:
            lines += [f"![{name}]({fig})", ""]
        lines += ["| claim | ours [95 % interval] | n | verdict | evidence | other measurements | note |",
                  "|---|---|---:|---|---|---|---|"]
        for r in mine:
            c = r.chosen.claim
            ctx = "; ".join(describe(m) for m in r.context)
            lines.append(f"| `{_cell(r.key)}` | {ours(c, r.key)} {_interval(c)} | {r.chosen.n} | **{r.verdict}** | "
                         f"{ref(r.chosen)} {_tier(r.chosen)} | "
                         f"{_cell(ctx) or '—'} | {_cell(short_note(c.get('note') or ''))} |")
    if sources:
        lines += ["", "## Sources", "",
                  "Each recorded run a verdict above comes from, once (folders under `results/`):", ""]
        lines += [f"{i}. {_cell(p)}" for p, i in sources.items()]
    return lines


def notebook_table(claims: dict):
    """A notebook's own claims in the scorecard's short form (pandas), for its closing cell."""
    import pandas as pd  # heavy third-party import, needed only where a notebook shows the table

    rows = []
    for key, c in claims.items():
        verdict = NOT_MEASURED if not_measured(c) else c["verdict"]
        rows.append({"claim": key, "the paper says": c["paper"], "ours": ours(c, key), "95 % interval": _interval(c),
                     "n": c.get("n"), "verdict": verdict,
                     "evidence": ", ".join(x for x in (budget_of(key, c), c.get("evidence")) if x),
                     "note": short_note(c.get("note") or "")})
    return pd.DataFrame(rows).set_index("claim") if rows else pd.DataFrame()
