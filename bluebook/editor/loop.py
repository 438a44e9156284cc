"""The one edit loop, its result object, and the state that persists across sequential batches."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bluebook.core.config import EditConfig, load_preset, with_overrides
from bluebook.data import EditRequest, as_requests
from bluebook.core.distribute import Even
from bluebook.model.hooks import preserved_weights
from bluebook.core.keys import read_states
from bluebook.core.methods import Method, parse_method
from bluebook.runs import atomic_write_bytes
from bluebook.model.specs import check_layers, math_weight, proj_weight, spec_for, to_storage
from bluebook.core.targets import TargetResult, optimize_targets
from bluebook.core.templates import context_templates
from bluebook.model.tokens import check_tokenizer


# --------------------------------------------------------------------------------------------
@dataclass
class SequentialState:
    """What persists across batches of one sequential-editing run (never module globals).

    ``C_p[l]``: accumulated ``K_p K_pᵀ`` of applied batches (MEMIT-seq, AlphaEdit);
    ``W0[l]``: original weights (PRUNE, math layout, CPU); ``stats``/``projectors``: the layer
    statistics ``C`` and AlphaEdit projectors ``P`` of the unedited model, kept so a run never
    recomputes them on the edited model; ``fingerprint``: the unedited model's fingerprint.
    """
    method: str | None = None
    fingerprint: str | None = None
    C_p: dict[int, torch.Tensor] = field(default_factory=dict)
    W0: dict[int, torch.Tensor] = field(default_factory=dict)
    stats: dict[int, torch.Tensor] = field(default_factory=dict)
    projectors: dict[int, torch.Tensor] = field(default_factory=dict)
    n_batches: int = 0
    n_edits: int = 0
    finalized: bool = False
    prune_reference: bool = False
    templates: tuple | None = None

    def save(self, path: str | Path) -> Path:
        """Write the state (C_p, W0 and counters; C and P are recomputable caches) atomically."""
        from safetensors.torch import save
        tensors = {f"C_p.{l}": t.contiguous().cpu() for l, t in self.C_p.items()}
        tensors.update({f"W0.{l}": t.contiguous().cpu() for l, t in self.W0.items()})
        meta = {"bluebook_state": json.dumps({"method": self.method, "fingerprint": self.fingerprint,
                                              "n_batches": self.n_batches, "n_edits": self.n_edits,
                                              "finalized": self.finalized,
                                              "prune_reference": self.prune_reference,
                                              "templates": self.templates})}
        if not tensors:
            tensors = {"_empty": torch.zeros(1)}
        return atomic_write_bytes(path, save(tensors, metadata=meta))

    @classmethod
    def load(cls, path: str | Path) -> "SequentialState":
        from safetensors import safe_open
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {})["bluebook_state"])
                if meta.get("templates") is not None:
                    meta["templates"] = tuple(tuple(g) for g in meta["templates"])
                st = cls(**meta)
                for k in f.keys():
                    kind, _, l = k.partition(".")
                    if kind == "C_p":
                        st.C_p[int(l)] = f.get_tensor(k)
                    elif kind == "W0":
                        st.W0[int(l)] = f.get_tensor(k)
        except Exception as exc:
            raise ValueError(f"cannot read sequential state {path}: {exc}") from exc
        return st

    def finalize(self, model) -> dict[int, torch.Tensor]:
        """Reference-form PRUNE only (``prune_reference=True``): once after the last batch,
        ``W ← W + restrain(W − W₀)``. A no-op for every other method, and for PRUNE's paper form,
        which restrains after every batch."""
        from bluebook.core import solvers
        applied = {}
        if self.finalized or not self.W0 or not self.prune_reference:
            return applied
        with torch.no_grad():
            for l, W0 in self.W0.items():
                W = math_weight(model, l).detach().to(torch.float64)
                W0d = W0.to(W.device, torch.float64)
                d = solvers.prune_restrain(W - W0d, solvers.top_singular_value(W0d))
                proj_weight(model, l).add_(to_storage(d.to(torch.float32), model, l))
                applied[l] = d
        self.finalized = True
        return applied


# --------------------------------------------------------------------------------------------
@dataclass
class EditResult:
    """Per-layer updates of one batch (math layout ``d × m``) with everything that produced them.

    ``apply()`` makes the edit permanent (and updates the sequential state), ``undo()`` restores the
    exact previous weights, and ``with result:`` applies it only inside the block.
    """
    method: str
    layers: list[int]
    deltas: dict[int, torch.Tensor]
    residuals: dict[int, torch.Tensor]
    keys: dict[int, torch.Tensor]
    targets: dict[int, TargetResult]
    diagnostics: dict
    state: SequentialState
    requests: list[EditRequest]
    model: object = field(repr=False, default=None)
    _commit: object = field(repr=False, default=None)
    _saved: dict | None = field(repr=False, default=None)
    _saved_cp: dict | None = field(repr=False, default=None)

    @property
    def applied(self) -> bool:
        return self._saved is not None

    def apply(self) -> "EditResult":
        if self.applied:
            raise RuntimeError("this edit is already applied")
        model = self.model
        saved = {l: proj_weight(model, l).detach().clone() for l in self.deltas}
        try:
            with torch.no_grad():
                for l, d in self.deltas.items():
                    proj_weight(model, l).add_(to_storage(d, model, l))
            self._saved = saved
            self._saved_cp = {l: (t.clone() if t is not None else None)
                              for l, t in ((l, self.state.C_p.get(l)) for l in self.deltas)}
            if self._commit is not None:
                self._commit()
        except BaseException:
            with torch.no_grad():
                for l, w in saved.items():
                    proj_weight(model, l).copy_(w)
            self._saved = None
            raise
        return self

    def undo(self) -> "EditResult":
        if not self.applied:
            raise RuntimeError("this edit is not applied")
        with torch.no_grad():
            for l, w in self._saved.items():
                proj_weight(self.model, l).copy_(w)
        for l, t in (self._saved_cp or {}).items():
            if t is None:
                self.state.C_p.pop(l, None)
            else:
                self.state.C_p[l] = t
        if self._commit is not None:
            self.state.n_batches -= 1
            self.state.n_edits -= len(self.requests)
        self._saved = self._saved_cp = None
        return self

    def __enter__(self):
        self.apply()
        return self

    def __exit__(self, *exc):
        self.undo()
        return False

    def changed_layers(self) -> list[int]:
        return sorted(l for l, d in self.deltas.items() if bool((d != 0).any()))


# --------------------------------------------------------------------------------------------
class _Context:
    def __init__(self, model, tok, cfg: EditConfig, method: Method, state: SequentialState, progress: bool):
        self.model, self.tok, self.cfg, self.method, self.state, self.progress = model, tok, cfg, method, state, progress

    def C(self, layer: int) -> torch.Tensor:
        if layer not in self.state.stats:
            from bluebook.core.stats import layer_stats
            got = layer_stats(self.model, self.tok, [layer], self.cfg.stats, fingerprint=self.state.fingerprint,
                              progress=self.progress)
            self.state.stats[layer] = got[layer].C
        return self.state.stats[layer]

    def P(self, layer: int) -> torch.Tensor:
        if layer not in self.state.projectors:
            from bluebook.core.solvers import nullspace_projector
            self.state.projectors[layer] = nullspace_projector(self.C(layer).to(torch.float64),
                                                               self.cfg.nullspace_threshold).float()
        return self.state.projectors[layer]


def _resolve_config(model, method: Method, hparams, layers) -> EditConfig:
    if hparams is None:
        from bluebook.core.presets import preset_for
        cfg = preset_for(model, method.name)
    elif isinstance(hparams, str):
        cfg = load_preset(hparams, method.name)
    elif isinstance(hparams, EditConfig):
        cfg = hparams
    elif isinstance(hparams, dict):
        from bluebook.core.presets import preset_for
        cfg = with_overrides(preset_for(model, method.name), **hparams)
    else:
        raise TypeError(f"hparams must be None, a preset name, an EditConfig or a dict, got {type(hparams).__name__}")
    if layers is not None:
        cfg = with_overrides(cfg, layers=list(layers), blue_layers=None)
    return cfg


def edit(model, tok, requests, method: str | Method = "memit", *, layers=None, hparams=None,
         state: SequentialState | None = None, apply: bool = False, distribution=None,
         templates=None, progress: bool = True,
         precomputed_targets: dict[int, TargetResult] | None = None) -> EditResult:
    """Compute (and optionally apply) one batch edit with a locate-then-edit method.

    ``method``: one of :data:`bluebook.methods.METHODS` (e.g. ``"memit"``, ``"alphaedit_blue"``).
    ``layers``: critical layers (default: the model's preset); BLUE uses their first and last.
    ``hparams``: a preset name, an :class:`EditConfig`, or a dict of overrides of the model's preset.
    ``state``: a :class:`SequentialState` shared by the batches of one sequential run (created if
    None and returned in ``result.state``). ``apply=True`` applies the edit permanently.
    ``distribution``: override the method's residual-distribution strategy (analysis only).
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
    check_tokenizer(model, tok)
    cfg = _resolve_config(model, method, hparams, layers)
    crit = check_layers(model, cfg.layers, field="layers")
    if method.blue:
        crit_for_plan = list(cfg.boundary_layers())
        check_layers(model, crit_for_plan, field="blue_layers")
    else:
        crit_for_plan = crit
    dist = distribution or method.distribution
    plan = dist.plan(crit_for_plan)
    if state is None:
        from bluebook.model.loading import model_fingerprint
        state = SequentialState(method=method.name, fingerprint=model_fingerprint(model))
    elif state.method is not None and state.method != method.name:
        raise ValueError(f"state belongs to method {state.method!r}, not {method.name!r}")
    state.method = method.name
    if state.fingerprint is None:
        from bluebook.model.loading import model_fingerprint
        state.fingerprint = model_fingerprint(model)
    wdtype = proj_weight(model, plan[0]).dtype
    if wdtype in (torch.float16, torch.bfloat16):
        import warnings
        warnings.warn(f"the model's weights are {wdtype}: targets are optimised in float32, solves run in "
                      f"{cfg.solve_dtype}, and the updates are cast back to {wdtype} (some precision is lost; "
                      "the reference runs in float32)", RuntimeWarning, stacklevel=2)
    ctx = _Context(model, tok, cfg, method, state, progress)
    if templates is None and cfg.context_templates is None and state.templates is not None:
        templates = state.templates        # sampled once per run, on the unedited model
    templates = context_templates(model, tok, seed=cfg.template_seed, fixed=templates or cfg.context_templates)
    state.templates = templates
    if method.base == "prune":
        state.prune_reference = cfg.prune_reference
    if method.post is not None and getattr(method.post, "needs_w0", False):
        for l in plan:
            if l not in state.W0:
                state.W0[l] = math_weight(model, l).detach().to("cpu", torch.float32).clone()
    missing = [l for l in plan if l not in state.stats]
    if missing:      # statistics first, all layers in one pass, outside the timed loop
        from bluebook.core.stats import layer_stats
        got = layer_stats(model, tok, missing, cfg.stats, fingerprint=state.fingerprint, progress=progress)
        for l in missing:
            state.stats[l] = got[l].C
    for l in plan:
        ctx.P(l) if method.base == "alphaedit" else ctx.C(l)

    timings = {"targets": 0.0, "keys": 0.0, "solve": 0.0}
    deltas, residuals, keys, targets, per_layer = {}, {}, {}, {}, {}
    Z = None
    with preserved_weights(model, plan) as saved:
        try:
            for i, l in enumerate(plan):
                tl = dist.target_layer(i, plan, crit_for_plan)
                if tl is not None:
                    t0 = time.perf_counter()
                    if i == 0 and precomputed_targets and tl in precomputed_targets:
                        tr = precomputed_targets[tl]
                        if tr.z.shape[0] != len(requests):
                            raise ValueError("precomputed_targets do not match the number of requests")
                    else:
                        tr = optimize_targets(model, tok, requests, tl, cfg.target, templates,
                                              progress=progress)
                    timings["targets"] += time.perf_counter() - t0
                    targets[tl] = tr
                    Z = tr.z.T                                           # (d, n)
                ml = dist.measure_layer(i, plan, crit_for_plan)
                t0 = time.perf_counter()
                st = read_states(model, tok, requests, key_layers=[l], hidden_layers=[ml], templates=templates)
                timings["keys"] += time.perf_counter() - t0
                K, cur = st.keys[l], st.hidden[ml]
                diff = Z.to(cur.device) - cur
                R = dist.residual(diff, i, plan, crit_for_plan)
                t0 = time.perf_counter()
                D = method.solver.delta(K, R, l, ctx)
                timings["solve"] += time.perf_counter() - t0
                with torch.no_grad():
                    proj_weight(model, l).add_(to_storage(D, model, l))  # later layers see this edit
                deltas[l], residuals[l], keys[l] = D, R, K
                per_layer[l] = {"target_layer": tl if tl is not None else "reused",
                                "z_error": float(diff.norm(dim=0).mean()),
                                "residual_norm": float(R.norm(dim=0).mean()),
                                "update_norm": float(D.norm()),
                                "weight_norm": float(saved[l].norm())}
        finally:
            with torch.no_grad():
                for l, w in saved.items():
                    proj_weight(model, l).copy_(w)
        if method.post is not None:
            weights = {l: (saved[l].T if spec_for(model).transposed else saved[l]) for l in deltas}
            deltas = method.post.post(deltas, weights, ctx)
            for l in deltas:
                per_layer[l]["update_norm_post"] = float(deltas[l].norm())

    def commit():
        if getattr(method.solver, "accumulates", False):
            Kp = read_states(model, tok, requests, key_layers=list(deltas), templates=templates).keys
            for l, Kl in Kp.items():
                add = (Kl.double() @ Kl.double().T).cpu()
                state.C_p[l] = add if l not in state.C_p else state.C_p[l] + add
        state.n_batches += 1
        state.n_edits += len(requests)

    result = EditResult(method=method.name, layers=plan, deltas=deltas, residuals=residuals, keys=keys,
                        targets=targets, diagnostics={"layers": per_layer, "timings": timings,
                                                      "distribution": dist.name, "config": cfg},
                        state=state, requests=requests, model=model, _commit=commit)
    if apply:
        t0 = time.perf_counter()
        result.apply()
        timings["apply"] = time.perf_counter() - t0
    return result
