r"""Theorem 4.1 and Lemma 4.3 on real edits (algorithms.md §10.5).

The quantities of :mod:`bluebook.analysis.theory` on real ``K`` (keys at each critical layer),
``C`` (the layer statistics), ``Q = memit_Q(K, C, λ[, C_p])`` per batch, ``R^{l*}`` (columns ``δ^l``)
and ``R^L`` (columns ``δ^L``) from :func:`~bluebook.analysis.residuals.residuals_per_layer`, with the
index distance ``N_L − 1 − i``. Everything runs on the **unedited** model in float64 on the CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import spearmanr

from bluebook.analysis.residuals import LayerResiduals, residuals_per_layer, resolve_layers, resolve_templates
from bluebook.analysis.theory import BoundCheck, evaluate_bound, gain, matrix_norm, q_envelope, q_matrix
from bluebook.core.config import EditConfig
from bluebook.core.keys import read_states
from bluebook.core.presets import preset_for
from bluebook.core.stats import layer_stats
from bluebook.data import as_requests
from bluebook.editor.loop import edit
from bluebook.editor.state import SequentialState
from bluebook.model.weights import preserved_weights, restore_weights

__all__ = ["BoundTable", "spearman", "bound_checks", "batch_size_sweep", "sequential_sweep", "applied_sequence_sweep"]


@dataclass
class BoundTable:
    """Rows of :func:`bluebook.analysis.theory.check_bound` results with their context (layer, batch, …)."""
    rows: list[dict]

    @property
    def holds_fraction(self) -> float:
        return float(np.mean([r["holds"] for r in self.rows])) if self.rows else float("nan")

    def __len__(self):
        return len(self.rows)


def spearman(x, y) -> float:
    """Spearman rank correlation (``scipy.stats.spearmanr``); nan when either side is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def _stats(model, tok, layers, cfg: EditConfig) -> dict[int, torch.Tensor]:
    got = layer_stats(model, tok, list(layers), cfg.stats, progress=False)
    return {layer: got[layer].C.detach().double().cpu() for layer in layers}


def _sequence_size(requests, earlier, seq_lengths, earlier_batch_size) -> tuple[int, int]:
    """``(batch size of the earlier batches, longest sequence)``, checked against the earlier requests."""
    b = earlier_batch_size or len(requests)
    t_max = max(seq_lengths)
    if t_max * b > len(earlier):
        raise ValueError(f"sequence length {t_max} × batch {b} needs {t_max * b} earlier requests, "
                         f"got {len(earlier)}")
    return b, t_max


def _row(check: BoundCheck, **ctx) -> dict:
    """One table row: the context, the :class:`~bluebook.analysis.BoundCheck` fields and its tightness."""
    row = dict(ctx)
    row.update(check.to_dict())
    row["tightness"] = check.tightness
    return row


def bound_checks(model, tok, requests, layers=None, cfg: EditConfig | None = None, *,
                 residuals: LayerResiduals | None = None, templates=None, C: dict | None = None,
                 batch_size: int = 1) -> BoundTable:
    r"""Theorem 4.1 for every (batch, layer): ``‖Δ^{l*} − Δ^l‖₂`` against the bound, on real
    ``K`` (keys at ``l``), ``C`` (:func:`bluebook.core.stats.layer_stats`), ``Q = memit_Q(K, C, λ)`` per batch,
    ``R^{l*}`` (columns ``δ^l``) and ``R^L`` (columns ``δ^L``), with distance ``N_L − 1 − i``.

    ``batch_size=1`` gives one row per (request, layer). Residuals are computed if not given.
    """
    requests = as_requests(requests)
    cfg = cfg or preset_for(model, "memit")
    layers = residuals.layers if residuals is not None else resolve_layers(model, cfg, layers)
    templates = resolve_templates(model, tok, cfg, templates)
    if residuals is None:
        residuals = residuals_per_layer(model, tok, requests, layers, cfg, templates)
    C = C or _stats(model, tok, layers, cfg)
    K = read_states(model, tok, requests, key_layers=layers, templates=templates).keys
    rows = []
    RL = residuals.delta_last.double().T                       # (d, n)
    for layer in layers:
        Kl = K[layer].double().cpu()
        Rd = residuals.delta_direct[layer].double().T
        D = residuals.distance(layer)
        for s in range(0, len(requests) - batch_size + 1, batch_size):
            cols = slice(s, s + batch_size)
            Q = q_matrix(Kl[:, cols], C[layer], cfg.lam)
            rows.append(_row(evaluate_bound(Q, Rd[:, cols], RL[:, cols], D),
                             layer=layer, batch_size=batch_size, batch=s // batch_size,
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
    and Lemma 4.3 do. Each row also holds the :func:`bluebook.analysis.theory.lemma43_terms` quantities
    (``lemma43_*``; the envelope ``1/(2√λ_min(λC + C_p))`` needs an ``m × m`` eigendecomposition
    per row and is added only with ``envelope=True``).

    Approximation, stated: the earlier keys are read on the *unedited* model (the reference
    recomputes them after each applied batch) and the residuals of the current batch are those of
    the unedited model, so only ``C_p`` changes with ``t``.
    """
    requests, earlier = as_requests(requests), as_requests(earlier_requests)
    cfg = cfg or preset_for(model, "memit")
    layers = residuals.layers if residuals is not None else resolve_layers(model, cfg, layers)
    templates = resolve_templates(model, tok, cfg, templates)
    if residuals is None:
        residuals = residuals_per_layer(model, tok, requests, layers, cfg, templates)
    b, t_max = _sequence_size(requests, earlier, seq_lengths, earlier_batch_size)
    C = C or _stats(model, tok, layers, cfg)
    K = read_states(model, tok, requests, key_layers=layers, templates=templates).keys
    Kp = read_states(model, tok, earlier[:t_max * b], key_layers=layers, templates=templates).keys if t_max else {}
    RL = residuals.delta_last.double().T
    rows = []
    for layer in layers:
        Kl = K[layer].double().cpu()
        Rd = residuals.delta_direct[layer].double().T
        D = residuals.distance(layer)
        Q0 = q_matrix(Kl, C[layer], cfg.lam)
        for t in sorted(seq_lengths):
            C_p, cp_norm = None, 0.0
            if t > 0:
                Kpl = Kp[layer][:, :t * b].double().cpu()
                C_p = Kpl @ Kpl.T
                cp_norm = matrix_norm(Kpl.T @ Kpl)  # = ‖K_pK_pᵀ‖₂, from the smaller Gram matrix
            Q = q_matrix(Kl, C[layer], cfg.lam, C_p) if t > 0 else Q0
            row = _row(evaluate_bound(Q, Rd, RL, D), layer=layer, seq_length=t, batch_size=len(requests))
            row.update(lemma43_q_norm=row["q_norm"], lemma43_q_norm_without_cp=matrix_norm(Q0),
                       lemma43_cp_norm=cp_norm, lemma43_key_gain=gain(Q, Kl),
                       lemma43_key_gain_without_cp=gain(Q0, Kl))
            if envelope:
                row["lemma43_q_envelope"] = q_envelope(C[layer], cfg.lam, C_p)
                row["lemma43_q_envelope_without_cp"] = q_envelope(C[layer], cfg.lam)
            rows.append(row)
    return BoundTable(rows)


def applied_sequence_sweep(model, tok, requests, earlier_requests, seq_lengths, layers=None,
                           cfg: EditConfig | None = None, *, templates=None, C: dict | None = None,
                           earlier_batch_size: int | None = None, method: str = "memit_seq") -> BoundTable:
    r"""Deviation and bound for the batch ``requests`` after ``t`` earlier batches were **applied**
    (``t`` in ``seq_lengths``): the earlier batches of ``earlier_requests`` are edited into the model
    one after another with ``method`` (MEMIT-seq: its state accumulates ``C_p = Σ K_pK_pᵀ`` with each
    batch's keys read on the model it was applied to), and at each ``t`` the current batch's
    residuals ``δ^l``, ``δ^L`` (fresh v* on the edited model) and keys are measured on the model as
    it is then. Unlike :func:`sequential_sweep`, everything the edits change can move, so an
    accumulation of error along the sequence can show. The model's weights are restored on return
    (also after an exception). Each row holds ``seq_length``, the deviation, the bounds, ``q_norm``
    and ``lemma43_cp_norm``.
    """
    requests, earlier = as_requests(requests), as_requests(earlier_requests)
    cfg = cfg or preset_for(model, "memit")
    layers = resolve_layers(model, cfg, layers)
    templates = resolve_templates(model, tok, cfg, templates)
    b, t_max = _sequence_size(requests, earlier, seq_lengths, earlier_batch_size)
    C = C or _stats(model, tok, layers, cfg)
    state = SequentialState()
    state.stats = {l: C[l] for l in layers}            # the unedited model's statistics, never recomputed
    rows = []
    with preserved_weights(model, layers) as saved:
        for t in range(t_max + 1):
            if t in seq_lengths:
                res = residuals_per_layer(model, tok, requests, layers, cfg, templates)
                K = read_states(model, tok, requests, key_layers=layers, templates=templates).keys
                RL = res.delta_last.double().T
                for layer in layers:
                    Kl = K[layer].double().cpu()
                    C_p = state.C_p.get(layer)
                    Q = q_matrix(Kl, C[layer], cfg.lam, None if C_p is None else C_p.double())
                    row = _row(evaluate_bound(Q, res.delta_direct[layer].double().T, RL, res.distance(layer)),
                               layer=layer, seq_length=t, batch_size=len(requests), applied=True)
                    row["lemma43_cp_norm"] = 0.0 if C_p is None else matrix_norm(C_p.double())
                    rows.append(row)
            if t < t_max:
                edit(model, tok, earlier[t * b:(t + 1) * b], method, hparams=cfg, layers=layers, state=state,
                     apply=True, templates=templates, progress=False)
        restore_weights(model, saved)
    return BoundTable(rows)
