"""Claims about BLUE against its base method, from per-record columns: the one rule the notebooks
(06, 07, 09) and the results report use.

The paper's statement: each BLUE variant "consistently outperforms" its base method on efficacy,
generalization and specificity in sequential editing. For one base method, dataset and metric the
evidence is the paired difference BLUE − base over the same records (×100), with a paired bootstrap
interval (:func:`bluebook.metrics.claims.paired_claim`). A live run and a recorded run of the same
comparison are combined with :func:`bluebook.metrics.claims.decide`.
"""
from __future__ import annotations

import json
from pathlib import Path

from bluebook.core.names import split_method
from bluebook.experiments.curves import EQUAL_TOTAL_SUFFIX, equal_total_run, load_run, pair_differences, step_cap
from bluebook.experiments.paper import paper_difference
from bluebook.metrics.claims import claim, decide, difference_verdict, paired_claim, separation_verdict

__all__ = ["METRICS", "BUDGET_RULES", "claim_name", "blue_vs_base", "recorded_blue_vs_base",
           "recorded_sequential_claims", "recorded_comparisons", "comparison_rows", "combined", "step_budget",
           "budget_hparams", "budget_note", "run_caps",
           "method_folders", "dynamic_vs_fixed", "recorded_dynamic_vs_fixed", "chosen_layers"]

METRICS = ("efficacy", "generalization", "specificity")


def claim_name(dataset: str, base: str, metric: str) -> str:
    return f"{dataset}:{base}_blue>{base}:{metric}"


def _statement(dataset: str, base: str, metric: str) -> str:
    return (f"{base}_blue has higher {metric} than {base} after sequential editing "
            f"(paper, 2,000 edits: {paper_difference(dataset, base, metric)})")


def blue_vs_base(columns: dict, dataset: str, evidence: str = "live", note: str = "",
                 metrics=METRICS) -> dict:
    """``columns`` ``{method: {metric: [per-record values in 0..1], "case_id": [...]}}`` →
    ``{claim name: claim}`` for every base method whose BLUE variant is present too."""
    return _paired_columns(columns, lambda base: (f"{base}_blue", base), dataset, metrics,
                           lambda base, m: (claim_name(dataset, base, m), _statement(dataset, base, m)),
                           evidence, note)


def _paired_columns(columns: dict, pair, dataset: str, metrics, describe, evidence: str, note: str) -> dict:
    """For every base method whose pair ``pair(base) = (a, b)`` has both columns: a paired claim
    ``a − b`` (×100) per metric, named and stated by ``describe(base, metric)``."""
    out = {}
    for name in columns:
        try:
            _, base, _ = split_method(name)
        except ValueError:          # "unedited" and other non-method rows
            continue
        first, second = pair(base)
        if name != first or second not in columns:
            continue
        a, b = columns[first], columns[second]
        if a.get("case_id") != b.get("case_id"):
            raise ValueError(f"{first} and {second} were scored on different records")
        for m in metrics:
            if m in a and m in b:
                key, statement = describe(base, m)
                out[key] = paired_claim(statement, a[m], b[m], evidence=evidence, note=note, scale=100.0)
    return out


def recorded_blue_vs_base(run, metrics=METRICS) -> dict:
    """The same claims from a recorded sequential run (:func:`bluebook.experiments.curves.load_run`),
    at the largest evaluation point both methods of a pair reached; a pair with no common point yet
    gets an *inconclusive* entry that says so."""
    out = {}
    bases = sorted({split_method(m)[1] for m in run.methods})
    for base in bases:
        blue = f"{base}_blue"
        common = set(run.methods[base].points if base in run.methods else []) & set(
            run.methods[blue].points if blue in run.methods else [])
        if not common:
            done = {m: run.methods[m].edits_done for m in (base, blue) if m in run.methods}
            for m in metrics:
                out[claim_name(run.dataset, base, m)] = claim(
                    _statement(run.dataset, base, m), None, None, None, "inconclusive", "recorded",
                    f"recorded run {run.folder.name}: no evaluation point reached by both yet (edits done: {done})")
            continue
        k = max(common)
        diffs = pair_differences(run, k, metrics)[base]
        spent = budget_note(run.folder, base, blue, method_folders(run))
        lent = (f"; the {blue} column is recorded run {run.borrowed[blue]}'s (the same configuration, "
                "see curves.equal_total_run)") if blue in run.borrowed else ""
        for m, d in diffs.items():
            c = claim(_statement(run.dataset, base, m), d["value"], [d["low"], d["high"]], d["n"],
                      difference_verdict(d["low"], d["high"]),
                      "recorded", f"recorded run {run.folder.name}: paired difference ×100 at {k} edits "
                      f"of {run.config.get('n')} planned" + lent + (f"; {spent}" if spent else ""))
            out[claim_name(run.dataset, base, m)] = c
        ab_blue, ab_base = run.methods[blue].evals[k].get("ability"), run.methods[base].evals[k].get("ability")
        out.update(_ability_claims(run, base, k, ab_blue or {}, ab_base or {}))
    return out


def comparison_rows(same, fair=None) -> list[dict]:
    """The BLUE-versus-base comparisons of one recorded run, one row per budget rule and pair: the
    same-cap run ``same`` (a :class:`~bluebook.experiments.curves.Run`) and, when given, ``fair``
    (its equal-total sibling already paired with it by
    :func:`bluebook.experiments.curves.equal_total_run`) after it. A ``fair`` pair that has not
    reached an evaluation point yet gives no row.

    Each row: ``{"dataset", "run", "same_cap_run"`` (the run both rules' rows belong to)``, "rule",
    "base", "blue", "edits"`` (the largest evaluation point both reached, ``None`` if none yet),
    ``"claims"`` (``{metric: claim}``, from :func:`recorded_blue_vs_base`), ``"budget"``
    (``{method: {"cap", "per_request", "capped"}}``, :func:`step_budget` under the caps the run
    resolved)``}``."""
    rows = []
    for run in [same] + ([fair] if fair is not None else []):
        claims = recorded_blue_vs_base(run)
        folders = method_folders(run)
        for base in sorted({split_method(m)[1] for m in run.methods}):
            blue = f"{base}_blue"
            if base not in run.methods or blue not in run.methods:
                continue
            prefix = f"{run.dataset}:{blue}>{base}:"
            mine = {k[len(prefix):]: c for k, c in claims.items() if k.startswith(prefix)}
            if run is not same and all(c["ours"] is None for c in mine.values()):
                continue                      # the sibling has not reached an evaluation point yet
            common = run.common_points((base, blue))
            caps = run_caps(run.folder, (base, blue), folders)
            rows.append({"dataset": run.dataset, "run": run.folder.name, "same_cap_run": same.folder.name,
                         "rule": budget_rule(caps[base], caps[blue]) if set(caps) == {base, blue} else None,
                         "base": base, "blue": blue, "edits": common[-1] if common else None,
                         "claims": mine, "budget": step_budget(run.folder, (base, blue), caps, folders)})
    return rows


def recorded_comparisons(root, datasets=None, suffix=None) -> list[dict]:
    """Every recorded BLUE-versus-base comparison of the sequential run folders under ``root`` (of
    ``datasets``, default all): :func:`comparison_rows` of each same-cap run ``<name>``, paired
    with its equal-total sibling ``<name><suffix>`` where that folder exists (``suffix`` defaults
    to :data:`bluebook.experiments.curves.EQUAL_TOTAL_SUFFIX`; folders ending in it are read only
    as siblings)."""
    suffix = suffix or EQUAL_TOTAL_SUFFIX
    rows = []
    for folder in sorted(p for p in Path(root).glob("*") if p.is_dir() and not p.name.endswith(suffix)):
        same = load_run(folder)
        if datasets is not None and same.dataset not in datasets:
            continue
        sibling = folder.with_name(folder.name + suffix)
        rows += comparison_rows(same, equal_total_run(load_run(sibling), same) if sibling.is_dir() else None)
    return rows


def recorded_sequential_claims(root, datasets=None) -> dict:
    """The recorded BLUE-versus-base claims of every sequential run folder under ``root`` (of
    ``datasets``, default all): the recorded tier of notebook 07. Where a run ``<name>`` has an
    equal-total sibling ``<name>_equal_total`` (its base methods again with twice the cap,
    :func:`bluebook.experiments.curves.equal_total_run`), each claim that sibling has measured is
    the equal-total one, the budget rule the live notebooks use; the same-cap claim otherwise (its
    note names the budget either way). Built from :func:`recorded_comparisons`."""
    out = {}
    for row in recorded_comparisons(root, datasets):     # same cap first, then its equal-total sibling
        for m, c in row["claims"].items():
            name = f"{row['dataset']}:{row['blue']}>{row['base']}:{m}"
            if name not in out or c["ours"] is not None:
                out[name] = c
    return out


def method_folders(run) -> dict:
    """``{method: the folder of its files}`` of a loaded run (borrowed columns live elsewhere)."""
    return {m: mr.folder for m, mr in run.methods.items() if mr.folder is not None}


def _ability_claims(run, base: str, k: int, ab_blue: dict, ab_base: dict) -> dict:
    """General ability at ``k`` edits, BLUE against its base: paired over texts and facts where the
    evaluation kept per-item values, else the two unpaired intervals must not overlap."""
    blue, where, out = f"{base}_blue", f"recorded run {run.folder.name} at {k} edits", {}
    pb, pa = ab_blue.get("perplexity"), ab_base.get("perplexity")
    if pb and pa:
        name, statement = f"{run.dataset}:{blue}>{base}:perplexity", (
            f"{blue} preserves general ability better than {base} (lower held-out perplexity)")
        if "text_mean_nll" in pb and "text_mean_nll" in pa and len(pb["text_mean_nll"]) == len(pa["text_mean_nll"]):
            out[name] = paired_claim(statement, pb["text_mean_nll"], pa["text_mean_nll"], direction=-1,
                                     evidence="recorded", note=f"{where}; paired over texts, mean token NLL (nats); "
                                     f"perplexity {pb['value']:.2f} vs {pa['value']:.2f}")
        else:
            out[name] = claim(statement, round(pb["value"] - pa["value"], 3), None, pb["n_texts"],
                              separation_verdict(pb, pa, direction=-1), "recorded",
                              f"{where}; {blue} {pb['value']:.2f} [{pb['low']:.2f}, {pb['high']:.2f}] vs {base} "
                              f"{pa['value']:.2f} [{pa['low']:.2f}, {pa['high']:.2f}] (unpaired intervals)")
    kb, ka = ab_blue.get("known_facts"), ab_base.get("known_facts")
    if kb and ka:
        name, statement = (f"{run.dataset}:{blue}>{base}:known_facts",
                           f"{blue} keeps more of the facts the unedited model knew than {base}")
        if "hits" in kb and "hits" in ka and kb.get("case_ids") == ka.get("case_ids"):
            out[name] = paired_claim(statement, kb["hits"], ka["hits"], evidence="recorded", scale=100.0,
                                     note=f"{where}; paired over facts; kept {100 * kb['value']:.0f} % vs "
                                          f"{100 * ka['value']:.0f} %")
        else:
            out[name] = claim(statement, round(100 * (kb["value"] - ka["value"]), 2), None, kb["n"],
                              separation_verdict(kb, ka), "recorded",
                              f"{where}; kept {100 * kb['value']:.0f} % [{100 * kb['low']:.0f}, {100 * kb['high']:.0f}]"
                              f" vs {100 * ka['value']:.0f} % [{100 * ka['low']:.0f}, {100 * ka['high']:.0f}] "
                              "(unpaired Wilson intervals)")
    return out


def combined(live: dict, recorded: dict) -> dict:
    """Every claim of either tier, each decided by :func:`bluebook.metrics.claims.decide`."""
    return {k: decide(live.get(k), recorded.get(k)) for k in list(live) + [k for k in recorded if k not in live]}


def _progress_file(run_folder, method: str, folders: dict | None):
    return Path((folders or {}).get(method) or Path(run_folder) / method) / "progress.json"


def step_budget(run_folder, methods, budget, folders: dict | None = None) -> dict:
    """How much of the v* budget each method of a replicate run folder used, from its
    ``<method>/progress.json``: ``{method: {"layers": {layer: mean steps}, "per_request": mean total
    steps over the layers optimised for a request, "capped": share of optimisations that used the
    whole budget}}``. BLUE optimises twice (first and last layer), its base once; a fair comparison
    gives both a budget most requests stop early within, and this table shows whether they did.
    ``budget``: the cap of one optimisation, one int or ``{method: int}``; ``folders``: ``{method:
    its folder}`` where a method's files are elsewhere (a column borrowed from another run)."""
    out = {}
    for m in methods:
        p = _progress_file(run_folder, m, folders)
        if not p.exists():
            continue
        cap = budget[m] if isinstance(budget, dict) else budget
        per_layer, totals, capped, count = {}, [], 0, 0
        for b in json.loads(p.read_text()).get("batches", []):
            steps = b.get("target_steps", {})
            for layer, s in steps.items():
                per_layer.setdefault(int(layer), []).extend(s)
                capped += sum(int(x) >= cap for x in s)
                count += len(s)
            if steps:
                totals.extend(sum(col) for col in zip(*steps.values()))
        out[m] = {"cap": cap, "layers": {layer: round(sum(v) / len(v), 2) for layer, v in sorted(per_layer.items())},
                  "per_request": round(sum(totals) / len(totals), 2) if totals else None,
                  "capped": round(capped / count, 3) if count else None}
    return out


def run_caps(run_folder, methods, folders: dict | None = None) -> dict:
    """``{method: v* step cap of one optimisation}`` as a replicate run folder resolved it."""
    out = {}
    for m in methods:
        p = _progress_file(run_folder, m, folders)
        if p.exists():
            cap = step_cap(json.loads(p.read_text()).get("config", {}))
            if cap is not None:
                out[m] = cap
    return out


def budget_rule(base_cap: int, blue_cap: int, per: str = "request") -> str:
    """Which budget rule a base/BLUE pair's step caps of one optimisation amount to (BLUE optimises
    twice per ``per``, its base once)."""
    return ("same cap per optimisation" if base_cap == blue_cap else
            f"equal total per {per}" if base_cap == 2 * blue_cap else "caps differ")


def budget_note(run_folder, base: str, blue: str, folders: dict | None = None) -> str:
    """How much v* optimisation each side of a recorded pair had and used, for the claims' notes:
    the caps per optimisation, the mean total steps per request, and how often each hit its cap."""
    caps = run_caps(run_folder, (base, blue), folders)
    if set(caps) != {base, blue}:
        return ""
    used = step_budget(run_folder, (base, blue), caps, folders)
    if set(used) != {base, blue} or used[base]["per_request"] is None or used[blue]["per_request"] is None:
        return ""
    rule = budget_rule(caps[base], caps[blue])
    return (f"v* budget: {rule} (caps {blue} {caps[blue]}, {base} {caps[base]}); over the batches run, "
            f"steps per request {blue} {used[blue]['per_request']:.1f}, {base} {used[base]['per_request']:.1f}; "
            f"at the cap {100 * used[blue]['capped']:.0f} % / {100 * used[base]['capped']:.0f} % of optimisations")


BUDGET_RULES = ("equal_total", "same_cap")


def budget_hparams(methods, steps: int, rule: str = "equal_total", overrides: dict | None = None) -> dict:
    """``{method: hparams}`` that give BLUE and its base the same v* budget.

    BLUE optimises two targets per request (first and last layer), its base one. ``"equal_total"``
    caps the *total* per request at ``2·steps`` for both: each of BLUE's optimisations gets ``steps``,
    the base's single one ``2·steps`` (early stopping still applies). ``"same_cap"`` gives every
    optimisation ``steps``, which hands BLUE up to twice the total wherever the base hits the cap.
    ``overrides`` (other hparams) are kept for every method."""
    if rule not in BUDGET_RULES:
        raise ValueError(f"rule must be one of {BUDGET_RULES}, got {rule!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    out = {}
    for m in methods:
        blue = split_method(m)[2]
        s = steps if (blue or rule == "same_cap") else 2 * steps
        hp = dict(overrides or {})
        hp["target"] = {**(hp.get("target") or {}), "steps": s}
        out[m] = hp
    return out


# --------------------------------------------------------------------------------------------
# beyond the paper: BLUE with its second layer chosen per batch against fixed BLUE

DYNAMIC_QUESTION = ("the paper leaves open whether BLUE's two layers should be chosen dynamically; "
                    "hypothesis: choosing the second per batch ({dyn}) gives higher {metric} than the "
                    "fixed boundary ({fixed})")


def dynamic_claim_name(dataset: str, base: str, metric: str) -> str:
    return f"{dataset}:{base}_blue_dynamic>{base}_blue:{metric}"


def dynamic_vs_fixed(columns: dict, dataset: str, evidence: str = "live", note: str = "",
                     metrics=METRICS) -> dict:
    """``{claim name: claim}``: ``<base>_blue_dynamic`` − ``<base>_blue`` on the same records (×100,
    paired bootstrap) for every base with both columns. *agrees* means the dynamic choice is better,
    *disagrees* that it is worse, *inconclusive* that the interval covers 0: no better than the boundary."""
    return _paired_columns(
        columns, lambda base: (f"{base}_blue_dynamic", f"{base}_blue"), dataset, metrics,
        lambda base, m: (dynamic_claim_name(dataset, base, m),
                         DYNAMIC_QUESTION.format(dyn=f"{base}_blue_dynamic", fixed=f"{base}_blue", metric=m)),
        evidence, note)


def recorded_dynamic_vs_fixed(run, metrics=METRICS) -> dict:
    """The same claims from a recorded sequential run, at the largest evaluation point both methods
    of a pair reached (an *inconclusive* "not measured yet" entry where there is none)."""
    out = {}
    for name in run.methods:
        _, base, _ = split_method(name)
        fixed = f"{base}_blue"
        if name != f"{base}_blue_dynamic":
            continue
        common = set(run.methods[name].points) & set(run.methods[fixed].points if fixed in run.methods else [])
        if not common:
            for m in metrics:
                out[dynamic_claim_name(run.dataset, base, m)] = claim(
                    DYNAMIC_QUESTION.format(dyn=name, fixed=fixed, metric=m), None, None, None, "inconclusive",
                    "recorded", f"recorded run {run.folder.name}: no evaluation point reached by both yet")
            continue
        k = max(common)
        cols = {n: run.methods[n].evals[k]["columns"] for n in (name, fixed)}
        got = dynamic_vs_fixed(cols, run.dataset, evidence="recorded",
                               note=f"recorded run {run.folder.name}: paired difference ×100 at {k} edits "
                                    f"of {run.config.get('n')} planned", metrics=metrics)
        out.update(got)
    return out


def largest_sample(*claim_sets: dict) -> dict:
    """One claim per name from several recorded runs that measure the same question (a long run
    and a shorter one of its own, say): the one measured on the most records; a measured claim
    beats one with no value yet, and on a tie the earlier set wins."""
    out = {}
    for claims in claim_sets:
        for name, c in claims.items():
            old = out.get(name)
            if old is None or (c["ours"] is not None and (old["ours"] is None or (c["n"] or 0) > (old["n"] or 0))):
                out[name] = c
    return out


def chosen_layers(run_folder, method: str) -> list[list[int]]:
    """The layers ``method`` updated in each batch of a replicate run folder (``progress.json``)."""
    p = Path(run_folder) / method / "progress.json"
    if not p.exists():
        return []
    return [list(b.get("layers", [])) for b in json.loads(p.read_text()).get("batches", [])]
