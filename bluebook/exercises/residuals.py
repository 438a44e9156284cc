"""Checkers for the exercises of notebooks 04-06: residual distribution, the bounds, BLUE."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bluebook.analysis import theory
from bluebook.core import distribute, solvers
from bluebook.exercises.support import (
    F64,
    answer,
    assert_close,
    assert_number,
    assert_tuple,
    exercise,
    generator,
    randn,
    rel_error,
    spd,
)

__all__ = ["check_distributed_residuals", "check_residual_measures", "check_theorem41", "check_q_envelope",
           "check_residual_shares", "check_null_space_projector"]


# 04 · residual distribution

@exercise("4.1", "MEMIT's distributed residuals")
def check_distributed_residuals(fn, seed: int = 0) -> str:
    """``fn(delta_L, n_layers)`` must return the shares ``δ^L / (N_L − i)``, one row per critical layer;
    compared with ``distribute.Even`` (MEMIT's rule) and ``theory.distributed_residual``."""
    g = generator(seed)
    d = 7
    for N in (5, 2, 6):
        dL = randn(g, d)
        layers = list(range(4, 4 + N))
        even = torch.stack([distribute.Even().residual(dL[:, None], i, layers, layers)[:, 0] for i in range(N)])
        th = torch.stack([theory.distributed_residual(dL[:, None], N - 1 - i)[:, 0] for i in range(N)])
        name = f"distributed residuals ({N} layers)"
        got = answer(fn(dL.clone(), N), name, (N, d))
        assert_close(got, even, f"{name} against distribute.Even", rtol=1e-12, atol=1e-14)
        assert_close(got, th, f"{name} against theory.distributed_residual", rtol=1e-12, atol=1e-14)
    return "the first layer gets δ^L/N_L, the last δ^L itself, as in MEMIT's loop (checked for 5, 2 and 6 layers)"


@exercise("4.2", "cosine, deviation and distribution error")
def check_residual_measures(fn, seed: int = 0) -> str:
    """``fn(delta_L, direct)`` must return ``(cosine, deviation, distribution_error)``, each of length
    ``N_L``: ``cos(δ^L/(N_L − i), δ^l)``, ``‖δ^l − δ^L‖`` and ``‖δ^L/(N_L − i) − δ^l‖``; compared with
    torch's cosine similarity and ``theory.residual_deviation``."""
    g = generator(seed)
    N, d = 5, 8
    dL = randn(g, d)
    direct = torch.stack([(0.2 + 0.2 * i) * dL + (N - 1 - i) * 0.5 * randn(g, d) for i in range(N)])
    direct[-1] = dL                                          # at L the direct residual is δ^L itself
    share = torch.stack([theory.distributed_residual(dL[:, None], N - 1 - i)[:, 0] for i in range(N)])
    deviation = [theory.residual_deviation(direct[i][:, None], dL[:, None]) for i in range(N)]
    want = {"cosine": F.cosine_similarity(share, direct, dim=1), "deviation": torch.tensor(deviation, dtype=F64),
            "distribution_error": torch.linalg.vector_norm(share - direct, dim=1)}
    out = assert_tuple(fn(dL.clone(), direct.clone()), 3, "cosine, deviation, distribution_error")
    for (name, ref), value in zip(want.items(), out):
        assert_close(answer(value, name, (N,)), ref, name, rtol=1e-9, atol=1e-12)
    cos = ", ".join(f"{c:.2f}" for c in want["cosine"].tolist())
    return f"all three match; cosine per layer = [{cos}] (1 at L, where the share is δ^L itself)"


# 05 · bounds

@exercise("5.1", "Theorem 4.1: deviation and bound")
def check_theorem41(fn, seed: int = 0) -> str:
    """``fn(R_direct, R_last, Q, distance)`` must return ``(deviation, bound)``: ``‖Δ^{l*} − Δ^l‖₂`` and
    ``(‖R^{l*} − R^L‖₂ + D‖R^L‖₂)‖Q‖₂`` with ``D = L − l``. The deviation is compared with the
    difference of two MEMIT solves, the bound with ``theory.theorem41_bound``."""
    g = generator(seed)
    m, d, n, lam = 10, 6, 3, 1.5
    K, C = randn(g, m, n), spd(g, m)
    Q = solvers.memit_Q(K, C, lam)
    ratios = []
    for D in (0, 1, 3):
        R_last = randn(g, d, n)
        R_direct = 0.5 * R_last + randn(g, d, n)
        both = solvers.memit_delta(K, R_direct, C, lam) - solvers.memit_delta(K, R_last / (D + 1), C, lam)
        out = assert_tuple(fn(R_direct.clone(), R_last.clone(), Q.clone(), D), 2, "deviation, bound")
        dev = assert_number(out[0], float(torch.linalg.matrix_norm(both, ord=2)),
                            f"deviation ‖Δ^{{l*}} − Δ^l‖₂ at L − l = {D}")
        bound = assert_number(out[1], theory.theorem41_bound(R_direct, R_last, Q, D), f"bound at L − l = {D}")
        assert dev <= bound * (1 + 1e-9), f"deviation {dev:.6g} exceeds the bound {bound:.6g} at L − l = {D}"
        ratios.append(dev / bound)
    return "deviation and bound match; deviation/bound = " + ", ".join(f"{x:.2f}" for x in ratios) + \
        " at L − l = 0, 1, 3"


@exercise("5.2", "the envelope of ‖Q‖₂ (Lemma 4.3)")
def check_q_envelope(fn, seed: int = 0) -> str:
    """``fn(C, lam, C_p)`` must return ``1 / (2 √λ_min(λC + C_p))`` (``C_p`` may be None); compared with
    ``theory.q_envelope``, and checked to bound ``‖Q‖₂`` for random batches and to be attained by one."""
    g = generator(seed)
    m, lam = 10, 0.7
    C, Kp = spd(g, m), randn(g, m, 4)
    Cp = Kp @ Kp.T
    env = {name: assert_number(fn(C.clone(), lam, None if cp is None else cp.clone()), theory.q_envelope(C, lam, cp),
                               f"envelope {name}")
           for name, cp in (("without C_p", None), ("with C_p", Cp))}
    worst = max(theory.q_norm((0.3 + t / 10) * randn(g, m, 1 + t % 12), C, lam, Cp) for t in range(30))
    w, U = torch.linalg.eigh(lam * C + Cp)
    attained = theory.q_norm(math.sqrt(float(w[0])) * U[:, :1], C, lam, Cp)
    assert worst <= env["with C_p"] * (1 + 1e-9), f"‖Q‖₂ = {worst:.6g} exceeds your envelope {env['with C_p']:.6g}"
    assert math.isclose(attained, env["with C_p"], rel_tol=1e-8), \
        f"the batch k = √λ_min·u_min has ‖Q‖₂ = {attained:.8g}, which should equal the envelope {env['with C_p']:.8g}"
    return (f"envelope {env['without C_p']:.4g} without C_p, {env['with C_p']:.4g} with it; 30 random batches reach "
            f"at most {worst / env['with C_p']:.2f} of it; k = √λ_min·u_min attains it")


# 06 · BLUE

@exercise("6.1", "which layers get which residual: BLUE vs MEMIT")
def check_residual_shares(fn, seed: int = 0) -> str:
    """``fn(n_layers, method)`` (``method`` ``"memit"`` or ``"blue"``) must return, per critical layer, the
    fraction of its current residual that layer is solved for (0: not updated); compared with
    ``distribute.Even`` (MEMIT) and ``distribute.Boundary`` (BLUE)."""
    for N in (2, 3, 5, 6):
        layers = list(range(3, 3 + N))
        for method, rule in (("memit", distribute.Even()), ("blue", distribute.Boundary())):
            plan = rule.plan(layers)
            want = [float(rule.residual(torch.ones(1, 1, dtype=F64), plan.index(x), plan, layers)) if x in plan else 0.0
                    for x in layers]
            name = f"{method} shares for {N} layers"
            assert_close(answer(fn(N, method), name, (N,)), torch.tensor(want, dtype=F64), name, rtol=0, atol=1e-12)
    h5 = sum(1 / (5 - i) for i in range(5))
    return (f"MEMIT gives every layer a share, 1/N_L … 1 (they add up to {h5:.2f} for 5 layers); "
            "BLUE gives the whole residual to the first and last layer only")


@exercise("6.2", "AlphaEdit's null-space projector")
def check_null_space_projector(fn, seed: int = 0) -> str:
    """``fn(C, threshold)`` must return ``P = Û Ûᵀ`` over the eigenvectors of ``C`` with eigenvalue below
    ``threshold``; checked by ``P K₀ ≈ 0``, ``P² = P = Pᵀ``, its rank, ``solvers.nullspace_projector``, and
    ``Δ K₀ ≈ 0`` for the AlphaEdit update built with it."""
    g = generator(seed)
    m, rank, N, d = 20, 8, 30, 5
    U = torch.linalg.qr(randn(g, m, m)).Q[:, :rank]
    V = torch.linalg.qr(randn(g, N, rank)).Q.T
    K0 = U @ torch.diag(torch.linspace(0.7, 2.2, rank, dtype=F64) * math.sqrt(N)) @ V
    C = K0 @ K0.T / N                                        # eigenvalues 0.49 … 4.8, and 12 zeros
    P = answer(fn(C.clone(), 1e-2), "P", (m, m))
    leak = rel_error(P @ K0, K0)
    assert leak < 1e-8, f"P K₀ must vanish: ‖P K₀‖/‖K₀‖ = {leak:.3g}"
    assert_close(P, P.T, "P against Pᵀ (symmetry)", rtol=0, atol=1e-10)
    assert_close(P @ P, P, "P² against P (idempotence)", rtol=0, atol=1e-8)
    trace = float(torch.trace(P))
    assert abs(trace - (m - rank)) < 1e-6, f"P must have rank {m - rank} (the null space of C): trace {trace:.4g}"
    assert_close(P, solvers.nullspace_projector(C, 1e-2), "P against solvers.nullspace_projector", rtol=0, atol=1e-8)
    Delta = solvers.alphaedit_delta(randn(g, m, 3), randn(g, d, 3), P)
    moved = rel_error(Delta @ K0, Delta) / float(torch.linalg.matrix_norm(K0))
    assert moved < 1e-8, f"the AlphaEdit update built with your P moves the preserved keys: relative {moved:.3g}"
    return f"P K₀ ≈ 0 ({leak:.0e}), P is a rank-{m - rank} orthogonal projector, and AlphaEdit's Δ K₀ ≈ 0"
