r"""The analysis experiments of the BLUE paper on a real model (algorithms.md §10).

Everything here runs on the **unedited** model and leaves it unchanged. Notation as in
``docs/notation.md``: critical layers ``l_0 < … < l_{N_L−1} = L``, ``i`` the index of layer ``l``
in that list, ``δ^l`` the v* delta optimised directly at block ``l`` (a column of ``R^{l*}``),
``δ^L`` the one at the last critical layer (a column of ``R^L``), and the *distributed* residual
``δ^L / (N_L − i)`` that MEMIT writes at layer ``l`` (on the unedited model, where the first
layer's share is exactly this; algorithms.md §4).

* :func:`residuals_per_layer` — ``δ^L``, ``δ^l`` at every critical layer, cosine and distances (§10.2);
* :func:`target_prob` / :func:`contribution_scores` — ``s = P_θ*(o*|p) − P_θ(o*|p)`` with θ* a
  hidden-state intervention (§10.1);
* :func:`single_layer_editing` — update one layer with the distributed or the direct residual (§10.3);
* :func:`bound_checks`, :func:`batch_size_sweep`, :func:`sequential_sweep` — Theorem 4.1 /
  Lemma 4.3 quantities on real keys ``K``, statistics ``C`` and residuals (§10.5); the pure math
  lives in :mod:`bluebook.theory`.

The theorem's distance is taken as the index distance ``D = N_L − 1 − i`` so that ``D + 1 = N_L − i``
is exactly MEMIT's divisor; for the consecutive critical layers of every preset this is ``L − l``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from bluebook.analysis import theory
from bluebook.core.config import EditConfig
from bluebook.data import as_requests
from bluebook.model.hooks import add_to_block
from bluebook.core.keys import read_states
from bluebook.model.specs import check_layers
from bluebook.core.targets import TargetResult, build_rows, optimize_targets
from bluebook.core.templates import context_templates, validate
from bluebook.model.device import model_device

__all__ = [
    "LayerResiduals", "residuals_per_layer", "target_prob", "ContributionScores", "contribution_scores",
    "single_layer_editing", "subset_targets", "BoundTable", "bound_checks", "batch_size_sweep",
    "sequential_sweep", "spearman",
]


def _templates(model, tok, cfg: EditConfig, templates):
    if templates is not None:
        return validate(templates)
    return context_templates(model, tok, seed=cfg.template_seed, fixed=cfg.context_templates)


def _layers(model, cfg: EditConfig, layers) -> list[int]:
    return sorted(check_layers(model, list(layers if layers is not None else cfg.layers), field="layers"))


def subset_targets(tr: TargetResult, idx) -> TargetResult:
    """The rows ``idx`` of a :class:`TargetResult` (to reuse a batched v* run for sub-batches)."""
    idx = list(idx)
    pick = lambda xs: [xs[j] for j in idx] if xs else []
    t = torch.tensor(idx, dtype=torch.long)
    return TargetResult(tr.layer, tr.z[t.to(tr.z.device)], tr.delta[t.to(tr.delta.device)],
                        tr.h0[t.to(tr.h0.device)], pick(tr.steps), pick(tr.loss), pick(tr.nll),
                        pick(tr.kl), pick(tr.wd), pick(tr.prob))


# --------------------------------------------------------------------------------------------
# §10.2 residuals at every critical layer

@dataclass
class LayerResiduals:
    """Direct and distributed residuals per critical layer (tensors ``(n, d)``, arrays ``(n,)``).

    ``delta_last`` = ``δ^L``; ``delta_direct[l]`` = ``δ^l`` (``delta_direct[L] is delta_last``);
    ``distributed[l]`` = ``δ^L / (N_L − i)``; ``cosine[l]`` = ``cos(δ^L/(N_L−i), δ^l)``;
    ``deviation[l]`` = ``‖δ^l − δ^L‖₂`` (the theory's ``‖R^{l*} − R^L‖`` for one request);
    ``distribution_error[l]`` = ``‖δ^L/(N_L−i) − δ^l‖₂``; ``steps[l]`` the v* optimisation steps;
    ``prob[l]`` the final target probability of the direct optimisation; ``targets[l]`` the full
    :class:`~bluebook.targets.TargetResult` (reusable as ``precomputed_targets``).
    """
    layers: list[int]
    case_ids: list
    delta_last: torch.Tensor
    delta_direct: dict[int, torch.Tensor]
    distributed: dict[int, torch.Tensor]
    cosine: dict[int, np.ndarray]
    deviation: dict[int, np.ndarray]
    distribution_error: dict[int, np.ndarray]
    steps: dict[int, np.ndarray]
    prob: dict[int, np.ndarray]
    targets: dict[int, TargetResult] = field(repr=False, default_factory=dict)

    @property
    def last_layer(self) -> int:
        return self.layers[-1]

    def distance(self, layer: int) -> int:
        """``N_L − 1 − i`` (= ``L − l`` for consecutive critical layers)."""
        return len(self.layers) - 1 - self.layers.index(layer)

    def rows(self) -> list[dict]:
        """One dict per (request, layer), e.g. for ``pandas.DataFrame(res.rows())``."""
        out = []
        for l in self.layers:
            for j, cid in enumerate(self.case_ids):
                out.append({"case_id": cid, "layer": l, "distance": self.distance(l),
                            "cosine": float(self.cosine[l][j]), "deviation": float(self.deviation[l][j]),
                            "distribution_error": float(self.distribution_error[l][j]),
                            "norm_direct": float(self.delta_direct[l][j].norm()),
                            "norm_distributed": float(self.distributed[l][j].norm()),
                            "steps": int(self.steps[l][j]), "prob_direct": float(self.prob[l][j])})
        return out

    def select(self, idx) -> "LayerResiduals":
        """The same quantities for the requests ``idx`` only."""
        idx = list(idx)
        t = torch.tensor(idx, dtype=torch.long)
        ten = lambda d: {l: v[t] for l, v in d.items()}
        arr = lambda d: {l: v[idx] for l, v in d.items()}
        return LayerResiduals(self.layers, [self.case_ids[j] for j in idx], self.delta_last[t],
                              ten(self.delta_direct), ten(self.distributed), arr(self.cosine), arr(self.deviation),
                              arr(self.distribution_error), arr(self.steps), arr(self.prob),
                              {l: subset_targets(tr, idx) for l, tr in self.targets.items()})

    def mean(self, name: str) -> dict[int, float]:
        """Per-layer mean of ``cosine``, ``deviation``, ``distribution_error``, ``steps`` or ``prob``."""
        return {l: float(np.mean(getattr(self, name)[l])) for l in self.layers}


def residuals_per_layer(model, tok, requests, layers=None, cfg: EditConfig | None = None, templates=None,
                        *, progress: bool = False) -> LayerResiduals:
    """``δ^L`` and a fresh ``δ^l`` at every critical layer, batched over requests, on the unedited model."""
    from bluebook.core.presets import preset_for
    requests = as_requests(requests)
    if not requests:
        raise ValueError("requests is empty")
    cfg = cfg or preset_for(model, "memit")
    layers = _layers(model, cfg, layers)
    templates = _templates(model, tok, cfg, templates)
    N, L = len(layers), layers[-1]
    targets = {l: optimize_targets(model, tok, requests, l, cfg.target, templates, progress=progress)
               for l in reversed(layers)}
    dL = targets[L].delta.detach().float().cpu()
    direct, dist, cos, dev, derr, steps, prob = {}, {}, {}, {}, {}, {}, {}
    for i, l in enumerate(layers):
        dl = targets[l].delta.detach().float().cpu()
        share = dL / (N - i)
        direct[l], dist[l] = dl, share
        cos[l] = F.cosine_similarity(share, dl, dim=1, eps=1e-12).numpy().astype(np.float64)
        dev[l] = (dl - dL).norm(dim=1).numpy().astype(np.float64)
        derr[l] = (share - dl).norm(dim=1).numpy().astype(np.float64)
        steps[l] = np.asarray(targets[l].steps, dtype=np.int64)
        prob[l] = np.asarray(targets[l].final_prob, dtype=np.float64)
    return LayerResiduals(layers=layers, case_ids=[r.case_id for r in requests], delta_last=dL,
                          delta_direct=direct, distributed=dist, cosine=cos, deviation=dev,
                          distribution_error=derr, steps=steps, prob=prob, targets=targets)


# --------------------------------------------------------------------------------------------
# §10.1 contribution scores

@torch.no_grad()
def target_prob(model, tok, requests, layer: int, vectors=None, templates=(("{}",),),
                batch_size: int = 64) -> np.ndarray:
    """``P(o*|p)`` per request with ``vectors[j]`` added to block ``layer``'s output at the subject's
    last token of every context-prefixed rewriting prompt of request ``j``.

    ``P`` = mean over the prompts of ``exp(mean token log-prob of target_new)``: the same prompts
    (teacher-forced target prefix) and the same quantity that :func:`~bluebook.targets.optimize_targets`
    logs as ``prob``. ``vectors``: ``(n, d)`` or None (no intervention). Returns ``(n,)`` float64.
    """
    requests = as_requests(requests)
    layer = check_layers(model, [layer], field="layer")[0]
    templates = validate(templates)
    rows = build_rows(tok, requests, templates, "{} is a")
    rw = [r for r in range(len(rows.ids)) if rows.kind[r] == "rw"]
    device = model_device(model)
    n = len(requests)
    if vectors is not None:
        vectors = torch.as_tensor(vectors).float()
        d = model.get_input_embeddings().weight.shape[1]
        if vectors.shape != (n, d):
            raise ValueError(f"vectors must be (n, d) = ({n}, {d}), got {tuple(vectors.shape)}")
    pad = pad_id(tok)
    psum = np.zeros(n)
    pcount = np.zeros(n)
    for s in range(0, len(rw), batch_size):
        chunk = rw[s:s + batch_size]
        S = max(len(rows.ids[r]) for r in chunk)
        ids = torch.full((len(chunk), S), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), S), dtype=torch.long)
        for q, r in enumerate(chunk):
            ids[q, :len(rows.ids[r])] = torch.tensor(rows.ids[r])
            mask[q, :len(rows.ids[r])] = 1
        ids, mask = ids.to(device), mask.to(device)
        owner = [rows.req[r] for r in chunk]

        def run():
            return model(input_ids=ids, attention_mask=mask).logits

        if vectors is None:
            logits = run()
        else:
            qs = torch.arange(len(chunk))
            pos = torch.tensor([rows.idx[r] for r in chunk])
            with add_to_block(model, layer, qs, pos, vectors[owner]):
                logits = run()
        for q, r in enumerate(chunk):
            lp = F.log_softmax(logits[q, rows.label_pos[r]].float(), -1)
            tok_lp = lp.gather(1, torch.tensor(rows.labels[r], device=lp.device)[:, None]).squeeze(1)
            psum[owner[q]] += float(torch.exp(tok_lp.mean()))
            pcount[owner[q]] += 1
    return psum / pcount


@dataclass
class ContributionScores:
    """``p0`` ``(n,)`` unedited ``P(o*|p)``; ``p_distributed[l]`` / ``p_direct[l]`` with the intervention;
    ``s_distributed[l] = p_distributed[l] − p0`` and ``s_direct[l] = p_direct[l] − p0``."""
    layers: list[int]
    case_ids: list
    p0: np.ndarray
    p_distributed: dict[int, np.ndarray]
    p_direct: dict[int, np.ndarray]

    @property
    def s_distributed(self) -> dict[int, np.ndarray]:
        return {l: v - self.p0 for l, v in self.p_distributed.items()}

    @property
    def s_direct(self) -> dict[int, np.ndarray]:
        return {l: v - self.p0 for l, v in self.p_direct.items()}

    def mean(self, kind: str) -> dict[int, float]:
        """Per-layer mean contribution, ``kind`` in ``{"distributed", "direct"}``."""
        s = {"distributed": self.s_distributed, "direct": self.s_direct}[kind]
        return {l: float(np.mean(v)) for l, v in s.items()}

    def rows(self) -> list[dict]:
        out = []
        N = len(self.layers)
        for i, l in enumerate(self.layers):
            for kind, s in (("distributed", self.s_distributed[l]), ("direct", self.s_direct[l])):
                for j, cid in enumerate(self.case_ids):
                    out.append({"case_id": cid, "layer": l, "distance": N - 1 - i, "residual": kind,
                                "score": float(s[j]), "p0": float(self.p0[j])})
        return out


def contribution_scores(model, tok, requests, residuals: LayerResiduals, templates=None,
                        cfg: EditConfig | None = None) -> ContributionScores:
    """Contribution ``s = P_θ*(o*|p) − P_θ(o*|p)`` at every critical layer of ``residuals``, with θ*
    the hidden-state intervention adding the distributed ``δ^L/(N_L−i)`` or the direct ``δ^l``.

    At ``l = L`` both vectors are the same tensor, so both scores are identical.
    """
    from bluebook.core.presets import preset_for
    requests = as_requests(requests)
    templates = _templates(model, tok, cfg or preset_for(model, "memit"), templates)
    p0 = target_prob(model, tok, requests, residuals.layers[0], None, templates)
    p_dist, p_dir = {}, {}
    for l in residuals.layers:
        p_dist[l] = target_prob(model, tok, requests, l, residuals.distributed[l], templates)
        if l == residuals.last_layer:
            p_dir[l] = p_dist[l].copy()          # δ^L/(N_L−(N_L−1)) = δ^L: the same intervention
        else:
            p_dir[l] = target_prob(model, tok, requests, l, residuals.delta_direct[l], templates)
    return ContributionScores(residuals.layers, list(residuals.case_ids), p0, p_dist, p_dir)


# --------------------------------------------------------------------------------------------
# §10.3 single-layer editing

def single_layer_editing(model, tok, requests, layers=None, cfg: EditConfig | None = None, layer: int | None = None,
                         *, residuals: LayerResiduals | None = None, templates=None, batch_size: int = 1,
                         method: str = "memit") -> dict:
    """Update only ``layer`` with the distributed (``SingleLayer(layer, direct=False)``) or the direct
    residual (``SingleLayer(layer, direct=True)``) and score CounterFact efficacy/generalization.

    Requests are edited in batches of ``batch_size`` (1: each fact alone, as the paper's analysis),
    each batch evaluated while applied and then undone, so the model is unchanged on return.
    ``residuals`` (from :func:`residuals_per_layer` on the same requests) supplies the v* targets so
    no optimisation is repeated. Returns ``{"distributed": summary, "direct": summary, "unedited":
    summary}`` with :func:`bluebook.metrics.summarize` dicts, plus ``"layer"``.
    """
    from bluebook.editor import edit as _edit
    from bluebook.core.config import with_overrides
    from bluebook.core.distribute import SingleLayer
    from bluebook.metrics import evaluate_counterfact, summarize
    from bluebook.core.presets import preset_for
    requests = as_requests(requests)
    cfg = cfg or preset_for(model, method)
    layers = _layers(model, cfg, layers)
    cfg = with_overrides(cfg, layers=layers, blue_layers=None)
    if layer is None or layer not in layers:
        raise ValueError(f"layer must be one of the critical layers {layers}, got {layer!r}")
    templates = _templates(model, tok, cfg, templates)
    L = layers[-1]
    out = {"layer": layer, "unedited": summarize(evaluate_counterfact(model, tok, requests))}
    for kind, direct in (("distributed", False), ("direct", True)):
        tl = layer if direct else L
        cases = []
        for s in range(0, len(requests), batch_size):
            idx = list(range(s, min(s + batch_size, len(requests))))
            batch = [requests[j] for j in idx]
            pre = None
            if residuals is not None and tl in residuals.targets:
                pre = {tl: subset_targets(residuals.targets[tl], idx)}
            res = _edit(model, tok, batch, method, hparams=cfg, distribution=SingleLayer(layer, direct=direct),
                        templates=templates, precomputed_targets=pre, progress=False)
            with res:
                cases += evaluate_counterfact(model, tok, batch)
        out[kind] = summarize(cases)
    return out


# --------------------------------------------------------------------------------------------
# §10.5 Theorem 4.1 on real edits

@dataclass
class BoundTable:
    """Rows of :func:`bluebook.theory.check_bound` results with their context (layer, batch, …)."""
    rows: list[dict]

    def column(self, name: str) -> np.ndarray:
        return np.asarray([r[name] for r in self.rows], dtype=np.float64)

    @property
    def holds_fraction(self) -> float:
        return float(np.mean([r["holds"] for r in self.rows])) if self.rows else float("nan")

    def __len__(self):
        return len(self.rows)


def spearman(x, y) -> float:
    """Spearman rank correlation (``scipy.stats.spearmanr``); nan when either side is constant."""
    from scipy.stats import spearmanr
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def _stats(model, tok, layers, cfg: EditConfig) -> dict[int, torch.Tensor]:
    from bluebook.core.stats import layer_stats
    got = layer_stats(model, tok, list(layers), cfg.stats, progress=False)
    return {l: got[l].C.detach().double().cpu() for l in layers}


class _QSolver:
    """``Q = Kᵀ(λC + C_p + KKᵀ)⁻¹`` for many small batches ``K`` at one layer.

    One Cholesky factor of ``B = λC + C_p`` is reused, and the push-through identity
    ``(B + KKᵀ)⁻¹K = B⁻¹K(I + KᵀB⁻¹K)⁻¹`` turns each solve into ``n × n`` work. This is the same ``Q``
    as :func:`bluebook.solvers.memit_Q` (the tests check it) without a fresh ``m × m`` solve (and
    condition-number SVD) per batch. float64 on CPU.
    """

    def __init__(self, C: torch.Tensor, lam: float, C_p: torch.Tensor | None = None):
        B = lam * C.double().cpu()
        if C_p is not None:
            B = B + C_p.double().cpu()
        self.L = torch.linalg.cholesky((B + B.T) / 2)

    def Q(self, K: torch.Tensor) -> torch.Tensor:
        K = K.double().cpu()
        X = torch.cholesky_solve(K, self.L)                                  # B⁻¹K  (m, n)
        S = torch.eye(K.shape[1], dtype=torch.float64) + K.T @ X             # I + KᵀB⁻¹K
        return torch.linalg.solve(S, X.T)                                    # (n, m)


def _check(Q, Rd, RL, D, rtol: float = 1e-9, **ctx) -> dict:
    """The fields of :class:`bluebook.theory.BoundCheck` for a given ``Q`` (via the theory functions)."""
    dev = theory.weight_deviation(Rd, RL, Q, D)
    bound = theory.theorem41_bound(Rd, RL, Q, D)
    tight = theory.theorem41_tight_bound(Rd, RL, Q, D)
    bc = theory.BoundCheck(deviation=dev, bound=bound, tight_bound=tight,
                           residual_deviation=theory.residual_deviation(Rd, RL), distance=int(D),
                           q_norm=float(torch.linalg.matrix_norm(Q, ord=2)),
                           holds=bool(dev <= tight * (1 + rtol) and tight <= bound * (1 + rtol)))
    row = dict(ctx)
    row.update(bc.to_dict())
    row["tightness"] = bc.tightness
    return row


def bound_checks(model, tok, requests, layers=None, cfg: EditConfig | None = None, *,
                 residuals: LayerResiduals | None = None, templates=None, C: dict | None = None,
                 batch_size: int = 1) -> BoundTable:
    r"""Theorem 4.1 for every (batch, layer): ``‖Δ^{l*} − Δ^l‖₂`` against the bound, on real
    ``K`` (keys at ``l``), ``C`` (:func:`bluebook.layer_stats`), ``Q = memit_Q(K, C, λ)``,
    ``R^{l*}`` (columns ``δ^l``) and ``R^L`` (columns ``δ^L``), with distance ``N_L − 1 − i``.

    ``batch_size=1`` gives one row per (request, layer). Residuals are computed if not given.
    """
    from bluebook.core.presets import preset_for
    requests = as_requests(requests)
    cfg = cfg or preset_for(model, "memit")
    layers = residuals.layers if residuals is not None else _layers(model, cfg, layers)
    templates = _templates(model, tok, cfg, templates)
    if residuals is None:
        residuals = residuals_per_layer(model, tok, requests, layers, cfg, templates)
    C = C or _stats(model, tok, layers, cfg)
    K = read_states(model, tok, requests, key_layers=layers, templates=templates).keys
    rows = []
    RL = residuals.delta_last.double().T                       # (d, n)
    for l in layers:
        Kl = K[l].double().cpu()
        Rd = residuals.delta_direct[l].double().T
        D = residuals.distance(l)
        solver = _QSolver(C[l], cfg.lam)
        for s in range(0, len(requests) - batch_size + 1, batch_size):
            cols = slice(s, s + batch_size)
            rows.append(_check(solver.Q(Kl[:, cols]), Rd[:, cols], RL[:, cols], D,
                               layer=l, batch_size=batch_size, batch=s // batch_size,
                               case_ids=list(residuals.case_ids[cols])))
    return BoundTable(rows)


def batch_size_sweep(model, tok, requests, batch_sizes, layers=None, cfg: EditConfig | None = None, *,
                     residuals: LayerResiduals | None = None, templates=None, C: dict | None = None) -> BoundTable:
    """:func:`bound_checks` for each batch size (disjoint consecutive batches of the requests;
    batch sizes larger than the number of requests are skipped)."""
    rows = []
    for b in batch_sizes:
        if b > len(requests):
            continue
        rows += bound_checks(model, tok, requests, layers, cfg, residuals=residuals, templates=templates,
                             C=C, batch_size=b).rows
    return BoundTable(rows)


def sequential_sweep(model, tok, requests, earlier_requests, seq_lengths, layers=None,
                     cfg: EditConfig | None = None, *, residuals: LayerResiduals | None = None,
                     templates=None, C: dict | None = None, earlier_batch_size: int | None = None,
                     envelope: bool = False) -> BoundTable:
    r"""Deviation and bound for the batch ``requests`` after ``t`` earlier batches (``t`` in
    ``seq_lengths``): ``C_p = Σ K_pK_pᵀ`` over the keys of ``t`` batches of ``earlier_requests``
    (batch size ``earlier_batch_size``, default ``len(requests)``) folded into ``Q``, as MEMIT-seq
    and Lemma 4.3 do. Each row also holds the :func:`bluebook.theory.lemma43_terms` quantities
    (``lemma43_*``; the envelope ``1/(2√λ_min(λC + C_p))`` needs an ``m × m`` eigendecomposition
    per row and is added only with ``envelope=True``).

    Approximation, stated: the earlier keys are read on the *unedited* model (the reference
    recomputes them after each applied batch) and the residuals of the current batch are those of
    the unedited model, so only ``C_p`` changes with ``t``.
    """
    from bluebook.core.presets import preset_for
    requests, earlier = as_requests(requests), as_requests(earlier_requests)
    cfg = cfg or preset_for(model, "memit")
    layers = residuals.layers if residuals is not None else _layers(model, cfg, layers)
    templates = _templates(model, tok, cfg, templates)
    if residuals is None:
        residuals = residuals_per_layer(model, tok, requests, layers, cfg, templates)
    b = earlier_batch_size or len(requests)
    t_max = max(seq_lengths)
    if t_max * b > len(earlier):
        raise ValueError(f"sequence length {t_max} × batch {b} needs {t_max * b} earlier requests, "
                         f"got {len(earlier)}")
    C = C or _stats(model, tok, layers, cfg)
    K = read_states(model, tok, requests, key_layers=layers, templates=templates).keys
    Kp = read_states(model, tok, earlier[:t_max * b], key_layers=layers, templates=templates).keys if t_max else {}
    RL = residuals.delta_last.double().T
    rows = []
    for l in layers:
        Kl = K[l].double().cpu()
        Rd = residuals.delta_direct[l].double().T
        D = residuals.distance(l)
        Q0 = _QSolver(C[l], cfg.lam).Q(Kl)
        for t in sorted(seq_lengths):
            C_p = None
            if t > 0:
                Kpl = Kp[l][:, :t * b].double().cpu()
                C_p = Kpl @ Kpl.T
            Q = _QSolver(C[l], cfg.lam, C_p).Q(Kl) if t > 0 else Q0
            row = _check(Q, Rd, RL, D, layer=l, seq_length=t, batch_size=len(requests))
            sym_top = lambda G: float(torch.linalg.eigvalsh((G + G.T) / 2)[-1])
            row.update(lemma43_q_norm=row["q_norm"], lemma43_q_norm_without_cp=float(torch.linalg.matrix_norm(Q0, ord=2)),
                       lemma43_cp_norm=0.0 if C_p is None else float(torch.linalg.matrix_norm(Kpl.T @ Kpl, ord=2)),
                       lemma43_key_gain=sym_top(Q @ Kl), lemma43_key_gain_without_cp=sym_top(Q0 @ Kl))
            if envelope:
                row["lemma43_q_envelope"] = theory.q_envelope(C[l], cfg.lam, C_p)
                row["lemma43_q_envelope_without_cp"] = theory.q_envelope(C[l], cfg.lam)
            rows.append(row)
    return BoundTable(rows)
