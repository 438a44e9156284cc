"""Checkers for the exercises of notebooks 01-03: key-value memory, locating, closed-form edits."""
from __future__ import annotations

import math

import numpy as np
import torch

from bluebook.core import solvers
from bluebook.exercises.support import F64, answer, assert_close, exercise, generator, randn, rel_error, spd
from bluebook.locate.summary import propose_critical_layers
from bluebook.locate.trace import TraceResult

__all__ = ["check_least_squares", "check_insert_facts", "check_indirect_effect", "check_best_window",
           "check_memit_update", "check_rank_one_update"]


# 01 · key-value memory

@exercise("1.1", "least-squares weights from the normal equations")
def check_least_squares(fn, seed: int = 0) -> str:
    """``fn(K, M)`` must return ``Ŵ = argmin ‖Ŵ K − M‖²`` (d × m); compared with ``torch.linalg.lstsq``."""
    g = generator(seed)
    m, N, d = 12, 60, 5
    K = randn(g, m, N)
    M = randn(g, d, m) @ K + 0.1 * randn(g, d, N)         # values that no W fits exactly
    want = torch.linalg.lstsq(K.T, M.T).solution.T
    got = answer(fn(K.clone(), M.clone()), "Ŵ", (d, m))
    err = assert_close(got, want, "Ŵ against torch.linalg.lstsq", rtol=1e-6, atol=1e-9)
    grad = rel_error((got @ K - M) @ K.T, M @ K.T)
    assert grad < 1e-8, f"the normal equations Ŵ K Kᵀ = M Kᵀ do not hold: relative residual {grad:.3g}"
    return f"Ŵ matches torch.linalg.lstsq (max difference {err:.1e}); normal-equation residual {grad:.1e}"


@exercise("1.2", "keep the old key-value pairs, insert new ones")
def check_insert_facts(fn, seed: int = 0) -> str:
    """``fn(W, K0, K1, M1)`` must return ``argmin ‖Ŵ K0 − W K0‖² + ‖Ŵ K1 − M1‖²``; compared with
    ``torch.linalg.lstsq`` on the stacked system ``Ŵ [K0, K1] ≈ [W K0, M1]``."""
    g = generator(seed)
    m, N0, n1, d = 10, 40, 3, 4
    W, K0, K1 = randn(g, d, m), randn(g, m, N0), randn(g, m, n1)
    M1 = W @ K1 + 3 * randn(g, d, n1)                         # new values: the old ones plus a residual
    want = torch.linalg.lstsq(torch.cat([K0, K1], 1).T, torch.cat([W @ K0, M1], 1).T).solution.T
    got = answer(fn(W.clone(), K0.clone(), K1.clone(), M1.clone()), "Ŵ", (d, m))
    err = assert_close(got, want, "Ŵ against torch.linalg.lstsq of the stacked objective", rtol=1e-6, atol=1e-9)
    before, after = rel_error(W @ K1 - M1, M1), rel_error(got @ K1 - M1, M1)
    moved = rel_error(got @ K0 - W @ K0, W @ K0)
    return (f"Ŵ matches the stacked least-squares solution (max difference {err:.1e}); the new keys' relative "
            f"error fell from {before:.2f} to {after:.2f} while the old values moved by {moved:.2f}")


# 02 · locating

@exercise("2.1", "indirect effect of a restoration")
def check_indirect_effect(fn, seed: int = 0) -> str:
    """``fn(p_corrupted, p_restored)`` with ``p_corrupted`` (S,) and ``p_restored`` (T, L, S) must
    return the indirect effect (T, L); compared with an explicit loop and ``TraceResult.indirect_effect``."""
    rng = np.random.default_rng(seed)
    T, L, S = 6, 8, 3
    p_cor = rng.uniform(0.01, 0.1, S)
    p_res = rng.uniform(0.0, 0.6, (T, L, S))
    p_res[:2] = p_cor                                        # tokens before the subject: nothing to restore
    low = sum(p_cor) / S
    loop = np.array([[sum(p_res[t, j]) / S - low for j in range(L)] for t in range(T)])
    traced = TraceResult(tokens=[f"t{i}" for i in range(T)], subject_range=(2, 3), low=float(p_cor.mean()),
                         high=0.9, scores={"mlp": p_res.mean(-1)}, target="x").indirect_effect("mlp")
    got = answer(fn(p_cor.copy(), p_res.copy()), "indirect effect", (T, L))
    err = assert_close(got, torch.as_tensor(loop), "indirect effect against an explicit loop", rtol=0, atol=1e-12)
    assert_close(got, torch.as_tensor(traced), "indirect effect against TraceResult.indirect_effect",
                 rtol=0, atol=1e-12)
    before = float(got[:2].abs().max())
    return f"matches the explicit loop (max difference {err:.1e}); positions before the subject: {before:.1e}"


@exercise("2.2", "the window of critical layers")
def check_best_window(fn, seed: int = 0) -> str:
    """``fn(curve, width, min_layer)`` must return the ``width`` consecutive layers (all ``≥ min_layer``)
    with the largest summed effect, the earliest on ties; compared with a brute-force search and
    ``bluebook.locate.propose_critical_layers``."""
    rng = np.random.default_rng(seed)
    cases = [(rng.uniform(0, 1, int(rng.integers(12, 31))), int(rng.integers(1, 7)), int(rng.integers(0, 3)))
             for _ in range(8)]
    cases += [(np.array([0.0, 1, 1, 0, 1, 1, 0]), 2, 0),                   # a tie: the earliest window wins
              (np.r_[5.0, rng.uniform(0, 0.1, 11)], 5, 1)]                 # a spike at layer 0, searched past
    for i, (curve, width, lo) in enumerate(cases):
        sums = [sum(curve[s:s + width]) for s in range(lo, len(curve) - width + 1)]
        best = lo + max(range(len(sums)), key=lambda s: (sums[s], -s))
        want = list(range(best, best + width))
        assert want == propose_critical_layers(curve, width=width, min_layer=lo), "checker bug: references disagree"
        got = fn(curve.copy(), width, lo)
        try:
            got = [int(x) for x in got]
        except (TypeError, ValueError) as exc:
            raise AssertionError(f"return a list of layer indices, got {got!r}") from exc
        if got != want:
            ok = len(got) == width and got == list(range(got[0], got[0] + width)) \
                and got[0] >= lo and got[-1] < len(curve)
            yours = f"sum {sum(curve[got[0]:got[0] + width]):.4f}" if ok else \
                f"not {width} consecutive layers from min_layer {lo} to {len(curve) - 1}"
            raise AssertionError(f"case {i} (width {width}, min_layer {lo}, {len(curve)} layers): yours {got} "
                                 f"({yours}), expected {want} (sum {sums[best - lo]:.4f})")
    return f"all {len(cases)} curves give the expected window, ties and min_layer included"


# 03 · closed-form edits

@exercise("3.1", "MEMIT's closed-form update")
def check_memit_update(fn, seed: int = 0) -> str:
    """``fn(K, R, C, lam)`` must return ``Δ = R Kᵀ (λC + K Kᵀ)⁻¹`` (d × m); compared with the stacked
    least-squares problem ``Δ [√λ L_C, K] ≈ [0, R]`` (``C = L_C L_Cᵀ``) and ``solvers.memit_delta``."""
    g = generator(seed)
    m, d = 16, 6
    fits = []
    for n, lam in ((4, 2.0), (1, 0.5), (5, 1e-4)):
        K, R, C = randn(g, m, n), randn(g, d, n), spd(g, m)
        X = torch.cat([math.sqrt(lam) * torch.linalg.cholesky(C), K], 1)
        Y = torch.cat([torch.zeros(d, m, dtype=F64), R], 1)
        want = torch.linalg.lstsq(X.T, Y.T).solution.T
        name = f"Δ (n = {n}, λ = {lam:g})"
        got = answer(fn(K.clone(), R.clone(), C.clone(), lam), name, (d, m))
        assert_close(got, want, f"{name} against the stacked least-squares problem", rtol=1e-6, atol=1e-9)
        assert_close(got, solvers.memit_delta(K, R, C, lam), f"{name} against solvers.memit_delta",
                     rtol=1e-6, atol=1e-9)
        fits.append(rel_error(got @ K - R, R))
    assert fits[-1] < 1e-3, ("with λ = 1e-4 the update should map the keys to the residuals: "
                             f"‖ΔK − R‖/‖R‖ = {fits[-1]:.3g}")
    return ("Δ matches the stacked least squares and solvers.memit_delta; ‖ΔK − R‖/‖R‖ = "
            + ", ".join(f"{f:.1e}" for f in fits) + " for λ = 2, 0.5, 1e-4")


@exercise("3.2", "the rank-one (ROME-style) update")
def check_rank_one_update(fn, seed: int = 0) -> str:
    """``fn(k, r, C)`` must return the rank-one ``Δ = r uᵀ / (uᵀ k)``, ``u = C⁻¹k / ‖C⁻¹k‖``; checked by
    ``Δ k = r``, rank one, and against MEMIT's one-key update rescaled by ``(λ + kᵀC⁻¹k) / kᵀC⁻¹k``
    (Sherman–Morrison), which is the update with the least ``tr(Δ C Δᵀ)`` among those with ``Δ k = r``."""
    g = generator(seed)
    m, d = 12, 5
    k, r, C = randn(g, m), randn(g, d), spd(g, m)
    got = answer(fn(k.clone(), r.clone(), C.clone()), "Δ", (d, m))
    assert_close(got @ k, r, "Δ k (must equal r)", rtol=1e-8, atol=1e-10)
    s = torch.linalg.svdvals(got)
    assert s[1] <= 1e-9 * s[0], f"Δ must have rank one: singular values {s[0]:.3g}, {s[1]:.3g}, ..."
    kCk, lam = float(k @ torch.linalg.solve(C, k)), 1.0
    want = solvers.memit_delta(k[:, None], r[:, None], C, lam) * (lam + kCk) / kCk
    energy = lambda D: float(torch.trace(D @ C @ D.T))
    if not torch.allclose(got, want, rtol=1e-6, atol=1e-10):
        raise AssertionError(f"Δ k = r holds, but Δ is not the update that disturbs other keys least as measured "
                             f"by C: tr(Δ C Δᵀ) = {energy(got):.6g}, the minimum is {energy(want):.6g}")
    return f"Δ k = r, rank one, and tr(Δ C Δᵀ) = {energy(got):.4g} is the minimum (MEMIT's one-key update rescaled)"


