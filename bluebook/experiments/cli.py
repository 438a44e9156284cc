"""Command line: ``python -m bluebook {prepare,run-notebooks,record-notebook,replicate,longform}``."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

from bluebook.core.methods import METHODS
from bluebook.data.longform import load_longform
from bluebook.data.probes import available_probes
from bluebook.editor.loop import prepare_stats
from bluebook.experiments.longform import longform_claims, run_longform, summarize_longform
from bluebook.experiments.notebooks import record_notebook, run_all
from bluebook.experiments.replicate import CheckpointMismatch, replicate, results_table
from bluebook.experiments.verdicts import budget_hparams
from bluebook.metrics.consistency import ConsistencyResources
from bluebook.metrics.suite import AbilitySuite
from bluebook.model.loading import GGUF_MODELS, load_model, prepare_gguf_model
from bluebook.runs import append_jsonl, machine_info, source_commit, write_json


def _count(minimum: int):
    """An argparse type: an int of at least ``minimum`` (the message names the value given)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    parse.__name__ = f"int >= {minimum}"
    return parse


def _add_budget_options(p, unit: str) -> None:
    """``--budget`` and ``--budget-steps`` (``unit``: what one optimisation covers, e.g. " per window")."""
    p.add_argument("--budget", default=None, choices=["equal_total", "same_cap"],
                   help=f"v* budget rule for fair BLUE-vs-base runs{unit}: equal_total gives each of BLUE's two "
                        "optimisations --budget-steps and the base's one twice that; same_cap gives every "
                        "optimisation --budget-steps (default: the preset's steps as they are, i.e. same_cap)")
    p.add_argument("--budget-steps", type=_count(1), default=25,
                   help=f"with --budget: the steps of one BLUE optimisation{unit}")


def _suite(args) -> AbilitySuite | None:
    """The general-ability suite the ``--ability`` options ask for (None with ``--ability none``)."""
    if args.ability == "none":
        return None
    probes = available_probes() if args.probes == "all" else [p for p in args.probes.split(",") if p]
    return AbilitySuite(perplexity_texts=args.ppl_texts, known_facts=args.known_facts, probes=tuple(probes),
                        probe_n=args.probe_n)


def _exit_on_sigterm():
    """Turn SIGTERM into ``SystemExit(143)`` so a killed run still records the end of its sitting;
    returns the function that puts the caller's handler back (a command run in-process leaves none)."""
    def _stop(signum, frame):
        raise SystemExit(128 + signum)
    previous = signal.signal(signal.SIGTERM, _stop)
    return lambda: signal.signal(signal.SIGTERM, previous)


@contextmanager
def _recorded_invocation(out: Path):
    """The provenance of one invocation of a recording command, appended to ``<out>/invocations.jsonl``:
    on entry the command, source commit, machine and start time; on exit the wall time and status.

    Yields a dict whose ``"status"`` the caller sets to its exit code on success; an exception leaves
    ``"error"``, and SIGTERM (turned into ``SystemExit`` while inside) or Ctrl-C records
    ``"stopped (...)"``, so a killed sitting still says how it ended. The caller's SIGTERM handler is
    put back on the way out."""
    log = Path(out) / "invocations.jsonl"
    start = time.time()
    entry = {"pid": os.getpid(), "command": "python -m bluebook " + " ".join(sys.argv[1:]),
             "commit": source_commit(), "machine": machine_info(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    append_jsonl(log, {**entry, "event": "start"})
    restore = _exit_on_sigterm()
    outcome = {"status": "error"}
    try:
        yield outcome
    except SystemExit as exc:
        outcome["status"] = f"stopped (exit {exc.code})"
        raise
    except KeyboardInterrupt:
        outcome["status"] = "stopped (interrupted)"
        raise
    finally:
        restore()
        append_jsonl(log, {"pid": entry["pid"], "event": "end", "status": outcome["status"],
                           "ended": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "wall_s": round(time.time() - start, 1)})


def run_replicate(args) -> int:
    """``python -m bluebook replicate``: run, print the table, exit 2 on a checkpoint mismatch.

    Every invocation appends its provenance to ``<out>/invocations.jsonl``
    (:func:`_recorded_invocation`)."""
    with _recorded_invocation(Path(args.out)) as outcome:
        code = _replicate(args)
        outcome["status"] = str(code)
        return code


def _resources(folder):
    """Consistency resources from a folder with the reference's three files (None without one)."""
    if not folder:
        return None

    d = Path(folder)
    missing = [f for f in ("attribute_snippets.json", "idf.npy", "tfidf_vocab.json") if not (d / f).exists()]
    if missing:
        raise ValueError(f"--snippets {folder}: missing {', '.join(missing)}")
    return ConsistencyResources.from_files(d / "attribute_snippets.json", d / "idf.npy", d / "tfidf_vocab.json")


def _hparams(args):
    """``--hparams``, or with ``--budget`` the model's preset with the v* step caps of that budget rule
    (``bluebook.experiments.verdicts.budget_hparams``: BLUE and its base get the same total per request)."""
    if not args.budget:
        return args.hparams
    if args.hparams is not None:
        raise ValueError("--budget sets the v* steps of the model's preset; it cannot be combined "
                         "with --hparams (give per-method target steps in the hparams file instead)")

    # "none" (the unedited baseline alone) edits nothing, so it has no v* budget
    methods = [m.strip() for m in args.methods.split(",") if m.strip() and m.strip() != "none"]
    return budget_hparams(methods, args.budget_steps, args.budget)


def _replicate(args) -> int:
    try:
        results = replicate(args.model, dataset=args.dataset, methods=args.methods, n=args.n, batch=args.batch,
                            out=args.out, hparams=_hparams(args), device=args.device, generation=args.generation,
                            resume=not args.no_resume, progress=not args.quiet, data_path=args.data,
                            load_kwargs={"device_map": args.device_map} if args.device_map else None,
                            seed=args.seed, model_name=args.model, eval_every=args.eval_every,
                            ability=_suite(args), fluency_records=args.fluency_records,
                            fluency_prompts=args.fluency_prompts, resources=_resources(args.snippets))
    except CheckpointMismatch as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(results_table(results))
    print(f"wrote {Path(args.out) / 'results.json'}, results.csv, results.md")
    return 0


def add_cli(subparsers) -> None:
    """Register ``python -m bluebook replicate``."""
    p = subparsers.add_parser("replicate", help="sequential batch editing + evaluation (paper tables)",
                              description=replicate.__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m", help="model name or local folder")
    p.add_argument("--dataset", default="counterfact", choices=["counterfact", "zsre"])
    p.add_argument("--methods", default="memit,memit_blue", help=f"comma-separated, from {', '.join(METHODS)} "
                   "(and, beyond the paper, <base>_blue_dynamic)")
    p.add_argument("--n", type=_count(1), default=100, help="number of records (the first n)")
    p.add_argument("--batch", type=_count(1), default=20, help="edits per sequential batch")
    p.add_argument("--out", default="replication", help="output folder (checkpoints and results)")
    p.add_argument("--hparams", default=None, help="preset name or YAML path (default: the model's preset)")
    p.add_argument("--device", default="auto")
    p.add_argument("--device-map", default=None, help="e.g. 'auto' to spread a large model over GPUs")
    p.add_argument("--generation", action="store_true", help="also generate text for fluency/consistency")
    p.add_argument("--no-resume", action="store_true", help="discard existing checkpoints in --out")
    p.add_argument("--data", default=None, help="a full local counterfact/zsre JSON file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=_count(1), default=None,
                   help="also evaluate the records edited so far after every N edits (a multiple of --batch)")
    p.add_argument("--fluency-records", type=_count(1), default=None,
                   help="with --generation: fluency from the first N records only (default: all)")
    p.add_argument("--fluency-prompts", type=_count(1), default=None,
                   help="with --generation: the first K generation prompts of each record (default: all)")
    p.add_argument("--snippets", default=None,
                   help="with --generation: folder with attribute_snippets.json, idf.npy, tfidf_vocab.json "
                        "(the reference's files) for consistency")
    p.add_argument("--ability", default="none", choices=["none", "suite"],
                   help="general ability before any edit and at every evaluation point")
    p.add_argument("--probes", default="all", help="with --ability suite: classification probes ('all' or names)")
    p.add_argument("--probe-n", type=_count(1), default=200, help="examples per probe")
    p.add_argument("--ppl-texts", type=_count(0), default=100, help="held-out texts for perplexity")
    p.add_argument("--known-facts", type=_count(0), default=100, help="known facts (records not edited) to re-check")
    _add_budget_options(p, "")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_replicate)


def run_longform_cli(args) -> int:
    """``python -m bluebook longform``: the long-form comparison on the shipped set (or a local copy),
    resumable, with its provenance in ``<out>/invocations.jsonl`` and a ``summary.json``."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with _recorded_invocation(out) as outcome:
        model, tok = load_model(args.model, device=args.device, progress=not args.quiet)
        reqs = load_longform(path=args.data)[args.start:]
        reqs = reqs[:args.n] if args.n is not None else reqs
        try:
            hp = json.loads(args.hparams) if args.hparams and args.hparams.lstrip().startswith("{") else args.hparams
        except json.JSONDecodeError as exc:
            raise ValueError(f"--hparams {args.hparams!r} is not a valid JSON object ({exc})") from None
        if args.budget:                          # the step caps of the rule, over the JSON overrides if any
            if hp is not None and not isinstance(hp, dict):
                raise ValueError(f"--budget combines only with a JSON object of overrides in --hparams, got {hp!r}")
            hp = budget_hparams([m for m in args.methods.split(",") if m], args.budget_steps, args.budget,
                                overrides=hp)
        rows = run_longform(model, tok, reqs, [m for m in args.methods.split(",") if m], out=out, hparams=hp,
                            max_new_tokens=args.max_new_tokens, resume=not args.no_resume, progress=not args.quiet)
        summary = summarize_longform(rows)
        write_json(out / "summary.json", {"summary": summary, "claims": longform_claims(rows, "recorded")})
        for m, d in summary["methods"].items():
            print(f"{m:16s} ROUGE-L prompt {d['prompt.rougeL']['value']:.3f}  paraphrase "
                  f"{d['paraphrase.rougeL']['value']:.3f}  (n={summary['n_records']})")
        outcome["status"] = "0"
        return 0


def add_longform_cli(subparsers) -> None:
    """Register ``python -m bluebook longform``."""
    p = subparsers.add_parser("longform", help="long-form editing: one paragraph-long edit at a time, scored "
                                               "with ROUGE/BLEU/token F1/similarity (notebook 11)")
    p.add_argument("--model", default="smollm2-135m", help="model name or local folder")
    p.add_argument("--methods", default="memit,memit_blue,alphaedit,alphaedit_blue")
    p.add_argument("--n", type=_count(1), default=None, help="n records of the set from --start on (default: all)")
    p.add_argument("--start", type=_count(0), default=0, help="the first record to edit (0-based)")
    p.add_argument("--data", default=None, help="a local long-form set in the shipped format")
    p.add_argument("--out", default="longform", help="output folder (rows.jsonl, config.json, summary.json)")
    p.add_argument("--hparams", default=None, help="preset name, YAML path, or a JSON object of overrides")
    p.add_argument("--max-new-tokens", type=_count(1), default=None,
                   help="greedy budget (default: the target's own length in tokens)")
    _add_budget_options(p, " per window")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-resume", action="store_true", help="discard the rows already in --out")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_longform_cli)


def _params(pairs) -> dict:
    """``["n=50", "methods=[memit, memit_blue]"]`` → ``{"n": 50, "methods": ["memit", "memit_blue"]}``."""
    out = {}
    for item in pairs:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"--param must be NAME=VALUE, got {item!r}")
        out[name.strip()] = yaml.safe_load(value)
    return out


def _prepare_preset_stats(name: str = "smollm2-135m") -> None:
    """A model's layer statistics ``C`` at every layer its preset edits, computed once on the unedited
    model into the cache (about 2 minutes on 2 cores for the embedded one), so the notebooks only read them."""
    model, tok = load_model(name, progress=False)
    t0 = time.perf_counter()
    state = prepare_stats(model, tok, "memit", progress=True)
    print(f"layer statistics for layers {sorted(state.stats)} ready ({time.perf_counter() - t0:.0f} s)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bluebook", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("prepare", help="convert the embedded model once and compute its preset layer statistics "
                                        "into the cache (idempotent: a second call only checks them)")
    sp.add_argument("--force", action="store_true", help="convert the model again")
    sp.add_argument("--no-stats", action="store_true", help="only convert the model")
    sp.add_argument("--model", default="smollm2-135m", choices=sorted(GGUF_MODELS),
                    help="which wheel-shipped model (gemma3-270m needs its optional wheels; the error says how)")
    sr = sub.add_parser("run-notebooks", help="execute every notebook into an output folder")
    sr.add_argument("--out", default="outputs")
    sr.add_argument("--profile", default="ci", choices=["ci", "full"])
    sr.add_argument("--only", nargs="*", default=None, help="notebook stems or numbers, e.g. 00 03")
    sn = sub.add_parser("record-notebook", help="run one notebook's full profile into results/notebooks/ "
                                                "(its recorded tier of evidence, with provenance)")
    sn.add_argument("name", help="notebook stem or number, e.g. 04")
    sn.add_argument("--profile", default="full", choices=["ci", "full"])
    sn.add_argument("--root", default=None, help="folder (default: results/notebooks in the checkout)")
    sn.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                    help="override one notebook parameter (VALUE read as YAML), e.g. -p n_requests=50")
    add_cli(sub)
    add_longform_cli(sub)
    args = p.parse_args(argv)
    if args.cmd == "prepare":
        try:
            print(prepare_gguf_model(args.model, force=args.force))
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if not args.no_stats:
            _prepare_preset_stats(args.model)
    elif args.cmd == "run-notebooks":
        run_all(args.out, args.only, args.profile)
    elif args.cmd == "record-notebook":
        print(record_notebook(args.name, args.root, args.profile, _params(args.param)))
    else:
        try:
            return args.func(args)
        except (ValueError, OSError) as exc:     # bad input, or an unwritable/full output folder: its message
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return 0
