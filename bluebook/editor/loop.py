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
    """The critical layers the residual rule works over (BLUE: the two boundary layers; a rule that
    chooses its layers, :class:`~bluebook.core.distribute.Dynamic`: the whole window) and its plan
    (for a choosing rule, every layer it may update)."""
    rule = rule or method.distribution
    crit = check_layers(model, cfg.layers, field="layers")
    if method.blue and not hasattr(rule, "choose"):
        crit = check_layers(model, list(cfg.boundary_layers()), field="blue_layers")
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
    cfg = resolve_config(model, method, hparams, layers)
    long_cfg = long_form_config(cfg)                  # the preset's long-form settings, if it has any
    long = long_requests(tok, requests, long_cfg.target)   # targets longer than a window: window by window
    if long:
        cfg = long_cfg
    rule = distribution or method.distribution
    crit, plan = critical_and_plan(model, method, cfg, rule)
    state = _prepare_state(model, method, state)
    wdtype = proj_weight(model, plan[0]).dtype
    if wdtype in (torch.float16, torch.bfloat16):
        warnings.warn(f"the model's weights are {wdtype}: targets are optimised in float32, solves run in "
                      f"{cfg.solve_dtype}, and the updates are cast back to {wdtype} (some precision is lost; "
                      "the reference runs in float32)", RuntimeWarning, stacklevel=2)
    if templates is None and cfg.context_templates is None and state.templates is not None:
        templates = state.templates        # sampled once per run, on the unedited model
    templates = context_templates(model, tok, seed=cfg.template_seed, fixed=templates or cfg.context_templates)
    check_requests(model, tok, requests, () if long else templates)
    state.templates = templates
    owners = column_owners(tok, requests, cfg.target) if long else None

    def optimize(layer: int) -> TargetResult:
        """v* at ``layer`` on the model as it is now: one column per request, or per window of a long target."""
        if long:
            return optimize_long_targets(model, tok, requests, layer, cfg.target, progress=progress)
        return optimize_targets(model, tok, requests, layer, cfg.target, templates, progress=progress)

    def states(key_layers, hidden_layers=()):
        """Keys and current hidden states, at the subject's last token or at each window's key token."""
        if long:
            return read_long_states(model, tok, requests, cfg.target.window, key_layers, hidden_layers)
        return read_states(model, tok, requests, key_layers=key_layers, hidden_layers=hidden_layers,
                           templates=templates)

    ctx = RunContext(model, tok, cfg, state, progress)
    ctx.ensure_stats(plan)                 # statistics first, all layers in one pass, outside the timings
    method.solver.prepare(plan, ctx)
    if method.post is not None:
        method.post.prepare(plan, ctx)

    timings = {"targets": 0.0, "keys": 0.0, "solve": 0.0}
    deltas, residuals, keys, targets, per_layer = {}, {}, {}, {}, {}
    chooser = getattr(rule, "choose", None)   # a rule that picks its layers as the edit goes (Dynamic)
    probed, choice = {}, {}

    def gap(layer: int) -> float:
        """v* at ``layer`` on the model as it is now; the remaining relative gap ‖v* − h‖ / ‖h‖."""
        t0 = time.perf_counter()
        tr = optimize(layer)
        _check_targets(tr.z.T, layer, requests, owners)
        probed[layer] = tr
        g = float((tr.delta.norm(dim=1) / tr.h0.norm(dim=1).clamp_min(1e-12)).mean())
        choice[layer] = {"gap": g, "steps": float(sum(tr.steps) / len(tr.steps)),
                         "seconds": time.perf_counter() - t0}
        return g

    updated: list[int] = []
    Z = None
    with preserved_weights(model, plan) as saved:
        try:
            i = 0
            while True:
                if chooser is None:
                    if i == len(plan):
                        break
                    l = plan[i]
                else:
                    l = chooser(i, list(updated), crit, gap)
                    if l is None:
                        break
                    if l not in plan:
                        raise ValueError(f"{rule.name}: chose layer {l}, not among the layers {plan}")
                updated.append(l)
                order = plan if chooser is None else updated
                tl = rule.target_layer(i, order, crit)
                if tl is not None:                                        # 1. targets Z = v*
                    t0 = time.perf_counter()
                    if tl in probed:                                      # optimised while choosing
                        tr = probed.pop(tl)
                        timings["targets"] += choice[tl]["seconds"]
                    elif i == 0 and precomputed_targets and tl in precomputed_targets:
                        tr = precomputed_targets[tl]
                        if tr.z.shape[0] != (len(owners) if long else len(requests)):
                            raise ValueError("precomputed_targets do not match the number of requests")
                    else:
                        tr = optimize(tl)
                    timings["targets"] += time.perf_counter() - t0
                    targets[tl] = tr
                    Z = tr.z.T                                            # (d, n)
                    _check_targets(Z, tl, requests, owners)
                ml = rule.measure_layer(i, order, crit)
                t0 = time.perf_counter()                                  # 2. keys K, current h
                st = states([l], [ml])
                timings["keys"] += time.perf_counter() - t0
                K, h = st.keys[l], st.hidden[ml]
                diff = Z.to(h.device) - h
                R = rule.residual(diff, i, order, crit)                   # 3. residual and solve
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
                i += 1
        finally:
            restore_weights(model, saved)
        if method.post is not None:
            weights = {l: (saved[l].T if spec_for(model).transposed else saved[l]) for l in deltas}
            deltas = method.post.process(deltas, weights, ctx)
            for l in deltas:
                per_layer[l]["update_norm_post"] = float(deltas[l].norm())

    def commit():
        """Run once the batch is applied: the solver's persistent state, the run's counters."""
        if method.solver.needs_committed_keys():
            # every layer the rule may update (for a fixed plan, the updated ones): a dynamic rule's
            # later batches may update a layer this one did not, and C_p there must know these keys
            method.solver.commit(states(list(plan)).keys, ctx)
        state.n_batches += 1
        state.n_edits += len(requests)

    diagnostics = {"layers": per_layer, "timings": timings, "distribution": rule.name, "config": cfg}
    if long:                           # which request each (key, v*) column belongs to
        diagnostics["long_form"] = {"window": cfg.target.window, "columns": owners}
    if chooser is not None:            # what the choice measured, and what it cost beyond the targets used
        timings["choice"] = sum(c["seconds"] for l, c in choice.items() if l not in targets)
        diagnostics["choice"] = {"criterion": getattr(rule, "criterion", rule.name), "candidates": choice,
                                 "chosen": list(updated)}
    result = EditResult(method=method.name, layers=list(updated), deltas=deltas, residuals=residuals, keys=keys,
                        targets=targets, diagnostics=diagnostics,
                        state=state, requests=requests, model=model, _commit=commit, state_layers=list(plan))
    if apply:
        t0 = time.perf_counter()
        result.apply()
        timings["apply"] = time.perf_counter() - t0
    return result
