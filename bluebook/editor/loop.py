"""The one edit loop: request → keys and targets → solve → apply → (evaluate elsewhere).

For a batch of requests and a method (solver + residual rule + post-processing, see
:mod:`bluebook.core.methods`), :func:`edit` walks the rule's plan of layers ``l_0 < l_1 < …``:

1. where the rule says so, optimise the targets ``Z`` (v*) at its target layer on the current model;
2. read the keys ``K`` at ``l_i`` and the hidden state ``h`` at the rule's measuring layer;
3. the residual ``R = rule(Z − h)``; the solver's update ``Δ_i = solve(K, R)``;
4. add ``Δ_i`` to ``W_out`` of ``l_i`` so the later layers see it.

The weights are restored afterwards; the post-processing step turns the ``Δ_i`` into the updates
returned in an :class:`EditResult`, which applies them when asked (``apply=True``,
``result.apply()``, ``with result:``).
"""
from __future__ import annotations

import functools
import time
import warnings

import torch

from bluebook.core.config import EditConfig, load_preset, long_form_config, merge_dicts, with_overrides
from bluebook.core.keys import read_states
from bluebook.core.longform import column_owners, long_requests, optimize_long_targets, read_long_states
from bluebook.core.methods import Method, parse_method
from bluebook.core.objective import TargetResult
from bluebook.core.presets import preset_for
from bluebook.core.stats import layer_stats
from bluebook.core.templates import context_templates
from bluebook.data import as_requests
from bluebook.editor.result import EditResult
from bluebook.editor.state import SequentialState
from bluebook.editor.targets import optimize_targets
from bluebook.model.contract import check_edit_space
from bluebook.model.device import check_materialized
from bluebook.model.loading import model_fingerprint
from bluebook.model.specs import check_layers, proj_weight, spec_for
from bluebook.model.tokens import check_requests, check_tokenizer
from bluebook.model.weights import add_deltas, preserved_weights, restore_weights

__all__ = ["EditResult", "RunContext", "SequentialState", "critical_and_plan", "edit", "prepare_stats",
           "resolve_config"]


class RunContext:
    """What the strategies of one :func:`edit` call may use (:class:`bluebook.core.methods.EditContext`)."""

    def __init__(self, model, tok, cfg: EditConfig, state: SequentialState, progress: bool):
        self.model, self.tok, self.cfg, self.state, self.progress = model, tok, cfg, state, progress

    def C(self, layer: int) -> torch.Tensor:
        """``C`` at ``layer``: from the run's state, else computed (cached on disk by :func:`layer_stats`)."""
        if layer not in self.state.stats:
            self.ensure_stats([layer])
        return self.state.stats[layer]

    def ensure_stats(self, layers) -> None:
        """Statistics of every missing layer, in one pass over the corpus."""
        missing = [l for l in layers if l not in self.state.stats]
        if missing:
            got = layer_stats(self.model, self.tok, missing, self.cfg.stats, fingerprint=self.state.fingerprint,
                              progress=self.progress)
            for l in missing:
                self.state.stats[l] = got[l].C


def resolve_config(model, method: Method | str, hparams=None, layers=None) -> EditConfig:
    """The :class:`EditConfig` of an edit: ``hparams`` (None: the model's preset; a preset name; an
    ``EditConfig``; or a dict of overrides of the model's preset), with ``layers`` if given."""
    method = parse_method(method)
    if hparams is None:
        cfg = preset_for(model, method.name)
    elif isinstance(hparams, str):
        cfg = load_preset(hparams, method.name)
    elif isinstance(hparams, EditConfig):
        cfg = hparams
    elif isinstance(hparams, dict):
        base = preset_for(model, method.name)
        cfg = with_overrides(base, **hparams)
        if base.long_overrides and "long_overrides" not in hparams:
            # the caller's overrides win over the preset's long-form section too
            cfg = with_overrides(cfg, long_overrides=merge_dicts(base.long_overrides, hparams))
    else:
        raise TypeError(f"hparams must be None, a preset name, an EditConfig or a dict, got {type(hparams).__name__}")
    if layers is not None:
        cfg = with_overrides(cfg, layers=list(layers), blue_layers=None)
    return cfg


def critical_and_plan(model, method: Method, cfg: EditConfig, rule=None) -> tuple[list[int], list[int]]:
    """The critical layers the residual rule works over (its ``window``: BLUE's two boundary layers;
    MEMIT's, or a rule that chooses its layers, :class:`~bluebook.core.distribute.Dynamic`: the whole
    window) and its plan (for a choosing rule, every layer it may update)."""
    rule = rule or method.distribution
    crit = check_layers(model, cfg.layers, field="layers")
    crit = check_layers(model, rule.window(crit, cfg.blue_layers), field="blue_layers")
    return crit, rule.plan(crit)


def prepare_stats(model, tok, method: str | Method, hparams=None, state: SequentialState | None = None, *,
                  layers=None, progress: bool = False) -> SequentialState:
    """Fill ``state.stats`` with ``C`` at every layer ``method`` updates, from the model as it is now.

    Call it on the **unedited** model, e.g. before loading the edited weights of a resumed run: the
    statistics of a sequential run always describe the model before its first edit (the cache is
    keyed and checked by that model's fingerprint). Returns the (new or given) state.
    """
    method = parse_method(method)
    cfg = resolve_config(model, method, hparams, layers)
    _, plan = critical_and_plan(model, method, cfg)
    state = _prepare_state(model, method, state)
    RunContext(model, tok, cfg, state, progress).ensure_stats(plan)
    return state


def _prepare_state(model, method: Method, state: SequentialState | None) -> SequentialState:
    if state is None:
        return SequentialState(method=method.name, fingerprint=model_fingerprint(model))
    if state.method is not None and state.method != method.name:
        raise ValueError(f"state belongs to method {state.method!r}, not {method.name!r}")
    state.method = method.name
    if state.fingerprint is None:
        state.fingerprint = model_fingerprint(model)
    return state


def _check_targets(Z: torch.Tensor, layer: int, requests, owners: list[int] | None = None) -> None:
    """A diverged v* optimisation (NaN/inf targets) stops the edit with the requests it concerns
    (``owners[c]``: the request of column ``c``, for long targets edited window by window)."""
    bad = (~torch.isfinite(Z)).any(dim=0)
    if bad.any():
        cols = bad.nonzero()[:, 0].tolist()
        js = sorted({owners[c] for c in cols}) if owners is not None else cols
        ids = [requests[j].case_id if requests[j].case_id is not None else j for j in js]
        raise FloatingPointError(
            f"the v* targets at layer {layer} are not finite (NaN/inf) for requests {ids}: the optimisation "
            "diverged; lower target.lr or load the model in float32. No weight was changed.")


class ShortBatch:
    """Short targets: one (key, v*) column per request, at the subject's last token, averaged over
    the context templates."""

    def __init__(self, model, tok, requests, cfg: EditConfig, templates, progress: bool):
        check_requests(model, tok, requests, templates)
        self.model, self.tok, self.requests, self.cfg, self.templates = model, tok, requests, cfg, templates
        self.progress, self.owners, self.columns = progress, None, len(requests)

    def targets(self, layer: int) -> TargetResult:
        """v* at ``layer`` on the model as it is now."""
        return optimize_targets(self.model, self.tok, self.requests, layer, self.cfg.target, self.templates,
                                progress=self.progress)

    def states(self, key_layers, hidden_layers=()):
        """Keys and current hidden states at the subject's last token."""
        return read_states(self.model, self.tok, self.requests, key_layers=key_layers, hidden_layers=hidden_layers,
                           templates=self.templates)

    def describe(self, diagnostics: dict) -> None:
        pass


class LongBatch(ShortBatch):
    """Long targets, window by window (docs/algorithms.md §7.2): one (key, v*) column per window,
    at its key token; ``owners[c]`` is the request of column ``c``."""

    def __init__(self, model, tok, requests, cfg: EditConfig, templates, progress: bool):
        check_requests(model, tok, requests, ())
        self.model, self.tok, self.requests, self.cfg, self.templates = model, tok, requests, cfg, templates
        self.progress, self.owners = progress, column_owners(tok, requests, cfg.target)
        self.columns = len(self.owners)

    def targets(self, layer: int) -> TargetResult:
        return optimize_long_targets(self.model, self.tok, self.requests, layer, self.cfg.target,
                                     progress=self.progress)

    def states(self, key_layers, hidden_layers=()):
        return read_long_states(self.model, self.tok, self.requests, self.cfg.target.window, key_layers,
                                hidden_layers)

    def describe(self, diagnostics: dict) -> None:
        """Which request each (key, v*) column belongs to."""
        diagnostics["long_form"] = {"window": self.cfg.target.window, "columns": self.owners}


def batch_kind(tok, requests, cfg: EditConfig):
    """The configuration and the measuring strategy of a batch: targets longer than one window run
    window by window (:class:`LongBatch`) with the preset's long-form settings, others as :class:`ShortBatch`."""
    long_cfg = long_form_config(cfg)
    if long_requests(tok, requests, long_cfg.target):
        return long_cfg, LongBatch
    return cfg, ShortBatch


class Targets:
    """Where the loop's targets ``Z`` come from: optimised on the model as it is now, kept from a
    choosing rule's :meth:`gap` measurement, or given (``precomputed``, for the first optimisation only)."""

    def __init__(self, batch: ShortBatch, requests, precomputed: dict[int, TargetResult] | None, timings: dict):
        self.batch, self.requests, self.precomputed, self.timings = batch, requests, precomputed or {}, timings
        self.probed: dict[int, TargetResult] = {}
        self.choice: dict[int, dict] = {}

    def gap(self, layer: int) -> float:
        """v* at ``layer`` on the model as it is now (kept for reuse); the remaining relative gap ‖v* − h‖ / ‖h‖."""
        t0 = time.perf_counter()
        tr = self.batch.targets(layer)
        _check_targets(tr.z.T, layer, self.requests, self.batch.owners)
        self.probed[layer] = tr
        g = float((tr.delta.norm(dim=1) / tr.h0.norm(dim=1).clamp_min(1e-12)).mean())
        self.choice[layer] = {"gap": g, "steps": float(sum(tr.steps) / len(tr.steps)),
                              "seconds": time.perf_counter() - t0}
        return g

    def at(self, layer: int, first: bool) -> TargetResult:
        """The targets at ``layer`` for the next update (``first``: the edit's first optimisation)."""
        t0 = time.perf_counter()
        if layer in self.probed:                                          # optimised while choosing
            tr = self.probed.pop(layer)
            self.timings["targets"] += self.choice[layer]["seconds"]
        elif first and layer in self.precomputed:
            tr = self.precomputed[layer]
            if tr.z.shape[0] != self.batch.columns:
                raise ValueError("precomputed_targets do not match the number of requests")
        else:
            tr = self.batch.targets(layer)
        self.timings["targets"] += time.perf_counter() - t0
        _check_targets(tr.z.T, layer, self.requests, self.batch.owners)
        return tr

    def describe(self, diagnostics: dict, rule, chosen: list[int], used) -> None:
        """What a choosing rule measured, and what it cost beyond the targets used."""
        if self.choice:
            diagnostics["timings"]["choice"] = sum(c["seconds"] for l, c in self.choice.items() if l not in used)
            diagnostics["choice"] = {"criterion": rule.criterion, "candidates": self.choice, "chosen": list(chosen)}


def walk(rule, crit: list[int], plan: list[int], gap, updated: list[int]):
    """``(i, l_i)``: the layers ``rule`` updates, in order, each named once the ones before it are
    applied; ``updated`` grows as they are named."""
    i = 0
    while (l := rule.next_layer(i, list(updated), crit, gap)) is not None:
        if l not in plan:
            raise ValueError(f"{rule.name}: chose layer {l}, not among the layers {plan}")
        updated.append(l)
        yield i, l
        i += 1


def _templates(model, tok, cfg: EditConfig, state: SequentialState, templates):
    """The context templates: given, else the run's (sampled once, on the unedited model), else sampled now."""
    if templates is None and cfg.context_templates is None and state.templates is not None:
        templates = state.templates
    return context_templates(model, tok, seed=cfg.template_seed, fixed=templates or cfg.context_templates)


def _warn_half_precision(model, plan: list[int], cfg: EditConfig) -> None:
    wdtype = proj_weight(model, plan[0]).dtype
    if wdtype in (torch.float16, torch.bfloat16):
        warnings.warn(f"the model's weights are {wdtype}: targets are optimised in float32, solves run in "
                      f"{cfg.solve_dtype}, and the updates are cast back to {wdtype} (some precision is lost; "
                      "the reference runs in float32)", RuntimeWarning, stacklevel=3)


def _post_process(method: Method, model, deltas: dict, saved: dict, ctx, per_layer: dict) -> dict:
    """The method's post-processing of the finished updates (RECT, PRUNE), given the pre-edit weights."""
    if method.post is None:
        return deltas
    weights = {l: (saved[l].T if spec_for(model).transposed else saved[l]) for l in deltas}
    deltas = method.post.process(deltas, weights, ctx)
    for l in deltas:
        per_layer[l]["update_norm_post"] = float(deltas[l].norm())
    return deltas


def _commit(method: Method, batch: ShortBatch, plan: list[int], ctx, n_requests: int) -> None:
    """Run once the batch is applied: the solver's persistent state, the run's counters."""
    if method.solver.needs_committed_keys():
        # every layer the rule may update (for a fixed plan, the updated ones): a dynamic rule's
        # later batches may update a layer this one did not, and C_p there must know these keys
        method.solver.commit(batch.states(list(plan)).keys, ctx)
    ctx.state.n_batches += 1
    ctx.state.n_edits += n_requests


def edit(model, tok, requests, method: str | Method = "memit", *, layers=None, hparams=None,
         state: SequentialState | None = None, apply: bool = False, distribution=None,
         templates=None, progress: bool = True,
         precomputed_targets: dict[int, TargetResult] | None = None) -> EditResult:
    """Compute (and optionally apply) one batch edit with a locate-then-edit method.

    ``method``: one of :data:`bluebook.METHODS` (e.g. ``"memit"``, ``"alphaedit_blue"``).
    ``layers``: critical layers (default: the model's preset); BLUE uses their first and last.
    ``hparams``: a preset name, an :class:`EditConfig`, or a dict of overrides of the model's preset.
    ``state``: a :class:`SequentialState` shared by the batches of one sequential run (created if
    None and returned in ``result.state``). ``apply=True`` applies the edit permanently.
    ``distribution``: override the method's residual rule (analysis only).
    ``templates``: fixed context-template groups (default: sampled once per run on the unedited model).
    ``precomputed_targets``: ``{layer: TargetResult}`` to reuse for the *first* target optimisation
    (only valid when computed for the same requests on the same, unedited model; used by sweeps).

    The model's weights are the same on return as on entry unless ``apply=True`` — also when an
    exception is raised anywhere inside.
    """
    method = parse_method(method)
    requests = as_requests(requests)
    if not requests:
        raise ValueError("requests is empty: give at least one EditRequest")
    spec_for(model)
    check_materialized(model)
    check_tokenizer(model, tok)
    cfg, kind = batch_kind(tok, requests, resolve_config(model, method, hparams, layers))   # short or long targets
    rule = distribution or method.distribution
    crit, plan = critical_and_plan(model, method, cfg, rule)
    check_edit_space(model, plan)         # Δk lands where v* and h are measured (model.contract)
    state = _prepare_state(model, method, state)
    _warn_half_precision(model, plan, cfg)
    templates = _templates(model, tok, cfg, state, templates)
    batch = kind(model, tok, requests, cfg, templates, progress)
    state.templates = templates
    ctx = RunContext(model, tok, cfg, state, progress)
    ctx.ensure_stats(plan)                 # statistics first, all layers in one pass, outside the timings
    method.solver.prepare(plan, ctx)
    if method.post is not None:
        method.post.prepare(plan, ctx)

    timings = {"targets": 0.0, "keys": 0.0, "solve": 0.0}
    deltas, residuals, keys, targets, per_layer = {}, {}, {}, {}, {}
    source, updated, Z = Targets(batch, requests, precomputed_targets, timings), [], None
    with preserved_weights(model, plan) as saved:
        try:
            for i, l in walk(rule, crit, plan, source.gap, updated):     # each layer l_i the rule updates:
                tl = rule.target_layer(i, updated, crit)
                if tl is not None:                                        # 1. targets Z = v*
                    targets[tl] = source.at(tl, first=i == 0)
                    Z = targets[tl].z.T                                   # (d, n)
                ml = rule.measure_layer(i, updated, crit)
                t0 = time.perf_counter()                                  # 2. keys K, current h
                st = batch.states([l], [ml])
                timings["keys"] += time.perf_counter() - t0
                K, h = st.keys[l], st.hidden[ml]
                diff = Z.to(h.device) - h
                R = rule.residual(diff, i, updated, crit)                 # 3. residual and solve
                t0 = time.perf_counter()
                D = method.solver.delta(K, R, l, ctx)
                timings["solve"] += time.perf_counter() - t0
                add_deltas(model, {l: D})                                 # 4. later layers see this edit
                deltas[l], residuals[l], keys[l] = D, R, K
                per_layer[l] = {"target_layer": tl if tl is not None else "reused",
                                "z_error": float(diff.norm(dim=0).mean()),
                                "residual_norm": float(R.norm(dim=0).mean()),
                                "update_norm": float(D.norm()),
                                "weight_norm": float(saved[l].norm())}
        finally:
            restore_weights(model, saved)
        deltas = _post_process(method, model, deltas, saved, ctx, per_layer)

    diagnostics = {"layers": per_layer, "timings": timings, "distribution": rule.name, "config": cfg}
    batch.describe(diagnostics)
    source.describe(diagnostics, rule, updated, targets)
    result = EditResult(method=method.name, layers=list(updated), deltas=deltas, residuals=residuals, keys=keys,
                        targets=targets, diagnostics=diagnostics, state=state, requests=requests, model=model,
                        _commit=functools.partial(_commit, method, batch, plan, ctx, len(requests)),
                        state_layers=list(plan))
    if apply:
        t0 = time.perf_counter()
        result.apply()
        timings["apply"] = time.perf_counter() - t0
    return result
