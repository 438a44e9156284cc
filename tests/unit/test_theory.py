"""Theorem 4.1 / Lemma 4.3 (bluebook.analysis.theory) and the toy problems (bluebook.analysis.toy):
pure linear algebra, CPU, fast.

Checked against hand-computed cases, against properties any correct implementation has (the
bounds, their sharpness, the envelope being attained), against MEMIT updates solved separately
(:func:`memit_delta`), and, for the random toys, against claims about means over many seeds that
must clear ``Z`` standard errors (the seeds are fixed, so the tests are deterministic).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bluebook.analysis import theory as th
from bluebook.analysis import toy
from bluebook.core.solvers import memit_delta, memit_Q

F64 = torch.float64
RTOL = 1e-9
Z = 5.0  # a claimed difference of means must exceed Z standard errors


def _mean_se(values) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, dtype=float)
    return v.mean(axis=0), v.std(axis=0, ddof=1) / np.sqrt(len(v))


def _assert_above(values, than, z=Z):
    """The mean of ``values`` (over the first axis) exceeds ``than`` by ``z`` standard errors."""
    m, se = _mean_se(values)
    assert np.all(m - z * se > than), (m, se, than)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    # tiny matrices: thread start-up dominates and contends with anything else running on the box
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _spd(m: int, g: torch.Generator) -> torch.Tensor:
    B = torch.randn(m, m, generator=g, dtype=F64)
    return B @ B.T / m + 1e-2 * torch.eye(m, dtype=F64)


def _make_cases(count: int = 240, seed: int = 20250214):
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(count):
        d = int(rng.integers(1, 25))
        m = int(rng.integers(1, 33))
        n = int(rng.integers(1, 2 * m + 3))
        lam = float(10 ** rng.uniform(-3, 3))
        dist = int(rng.integers(0, 9))
        cp = bool(i % 3 == 2)
        mode = ("random", "near", "distributed_plus_noise", "scaled")[i % 4]
        s = int(rng.integers(0, 10_000))
        cid = f"d{d}-m{m}-n{n}-L{dist}-lam{lam:.3g}-{mode}{'-cp' if cp else ''}-s{s}"
        cases.append(pytest.param(d, m, n, lam, dist, cp, mode, s, id=cid))
    return cases


def _problem(d, m, n, lam, dist, cp, mode, s):
    g = torch.Generator().manual_seed(s)
    K = torch.randn(m, n, generator=g, dtype=F64) * (10 ** (2 * torch.rand(1, generator=g, dtype=F64).item() - 1))
    C = _spd(m, g)
    C_p = None
    if cp:
        Kp = torch.randn(m, int(torch.randint(1, 3 * m + 1, (1,), generator=g)), generator=g, dtype=F64)
        C_p = Kp @ Kp.T
    R_L = torch.randn(d, n, generator=g, dtype=F64)
    noise = torch.randn(d, n, generator=g, dtype=F64)
    if mode == "random":
        R_star = noise
    elif mode == "near":
        R_star = R_L + 0.1 * dist * noise
    elif mode == "distributed_plus_noise":
        R_star = R_L / (dist + 1) + 1e-3 * noise
    else:
        R_star = -3.0 * R_L
    return K, C, C_p, R_star, R_L


@pytest.mark.parametrize("d,m,n,lam,dist,cp,mode,s", _make_cases())
def test_theorem41_bounds_hold(d, m, n, lam, dist, cp, mode, s):
    K, C, C_p, R_star, R_L = _problem(d, m, n, lam, dist, cp, mode, s)
    for ord_ in (2, "fro"):
        res = th.check_bound(K, C, lam, R_star, R_L, dist, C_p=C_p, ord=ord_)
        assert res.deviation <= res.tight_bound * (1 + RTOL), res
        assert res.deviation <= res.bound * (1 + RTOL), res
        assert res.tight_bound <= res.bound * (1 + RTOL), res
        assert res.holds and res.distance == dist
        if dist == 0:
            assert res.tight_bound == pytest.approx(res.bound, rel=1e-12)
        # the stand-alone functions agree with check_bound
        Q = memit_Q(K, C, lam, C_p)
        assert th.weight_deviation(R_star, R_L, Q, dist, ord=ord_) == pytest.approx(res.deviation, rel=1e-12,
                                                                                    abs=1e-300)
        assert th.theorem41_bound(R_star, R_L, Q, dist, ord=ord_) == pytest.approx(res.bound, rel=1e-12, abs=1e-300)
        assert th.theorem41_tight_bound(R_star, R_L, Q, dist, ord=ord_) == pytest.approx(res.tight_bound, rel=1e-12,
                                                                                         abs=1e-300)
        assert th.residual_deviation(R_star, R_L, ord=ord_) == pytest.approx(res.residual_deviation, rel=1e-12)
    # the Frobenius deviation is never smaller than the spectral one
    assert th.check_bound(K, C, lam, R_star, R_L, dist, C_p=C_p, ord="fro").deviation >= \
        th.check_bound(K, C, lam, R_star, R_L, dist, C_p=C_p).deviation * (1 - RTOL)


def test_distributed_residual_and_weight_deviation_by_hand():
    """``R^L / (D + 1)`` and ``‖(R* − R^L/(D+1)) Q‖`` on numbers small enough to check by hand."""
    R_L = torch.tensor([[3.0, 6.0], [0.0, -9.0]], dtype=F64)
    assert torch.equal(th.distributed_residual(R_L, 2), torch.tensor([[1.0, 2.0], [0.0, -3.0]], dtype=F64))
    assert torch.equal(th.distributed_residual(R_L, 0), R_L)
    Q = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=F64)            # n × m
    R_L = torch.tensor([[3.0, 6.0]], dtype=F64)                        # its share at D = 2: [[1, 2]]
    # R* − [[1, 2]] = [[1, 0]], times Q = [[1, 0]]; = [[0, 2]], times Q = [[0, 4]]
    assert th.weight_deviation(torch.tensor([[2.0, 2.0]], dtype=F64), R_L, Q, 2) == pytest.approx(1.0, abs=1e-15)
    assert th.weight_deviation(torch.tensor([[1.0, 4.0]], dtype=F64), R_L, Q, 2, ord="fro") == pytest.approx(
        4.0, abs=1e-15)
    assert th.weight_deviation(torch.tensor([[1.0, 2.0]], dtype=F64), R_L, Q, 2) == 0.0


@pytest.mark.parametrize("dist", [0, 1, 2, 5, 11])
@pytest.mark.parametrize("ord_", [2, "fro"])
def test_zero_deviation_for_the_distributed_residual(dist, ord_):
    """A direct residual equal to the last layer's share, written out here as ``R^L / (D + 1)``,
    deviates by nothing; one off by a step of the divisor deviates visibly."""
    g = torch.Generator().manual_seed(100 + dist)
    d, m, n, lam = 6, 10, 4, 0.5
    K = torch.randn(m, n, generator=g, dtype=F64)
    C = _spd(m, g)
    R_L = torch.randn(d, n, generator=g, dtype=F64)
    R_star = R_L / (dist + 1)
    Q = memit_Q(K, C, lam)
    assert th.weight_deviation(R_star, R_L, Q, dist, ord=ord_) <= 1e-12
    res = th.check_bound(K, C, lam, R_star, R_L, dist, ord=ord_)
    assert res.deviation <= 1e-12 and res.holds
    assert th.weight_deviation(R_L / (dist + 2), R_L, Q, dist, ord=ord_) > 1e-3
    # distance 0: the direct residual at L is R^L itself
    assert th.weight_deviation(R_L, R_L, Q, 0, ord=ord_) <= 1e-12
    res0 = th.check_bound(K, C, lam, R_L, R_L, 0, ord=ord_)
    assert res0.deviation <= 1e-12 and res0.bound <= 1e-12 and res0.residual_deviation == 0.0


@pytest.mark.parametrize("cp", [False, True], ids=["no-cp", "cp"])
@pytest.mark.parametrize("seed", range(6))
def test_delta_is_R_times_Q_and_matches_solvers(seed, cp):
    g = torch.Generator().manual_seed(seed)
    d, m, n, lam, dist = 5, 12, 3 + seed, 10.0 ** (seed - 3), seed % 4
    K = torch.randn(m, n, generator=g, dtype=F64)
    C = _spd(m, g)
    C_p = None
    if cp:
        Kp = torch.randn(m, 7, generator=g, dtype=F64)
        C_p = Kp @ Kp.T
    R_L = torch.randn(d, n, generator=g, dtype=F64)
    R_star = R_L + 0.2 * torch.randn(d, n, generator=g, dtype=F64)
    Q = memit_Q(K, C, lam, C_p)
    # Q (and so every Δ = R Q) against a separate solve: Δ minimises λ tr(ΔCΔᵀ) + tr(ΔC_pΔᵀ) + ‖ΔK − R‖²,
    # a least-squares problem in the rows of Δ: ‖Δ [K, √λ C^½, C_p^½] − [R, 0, 0]‖² (numpy's lstsq)
    half = lambda A: (lambda w, V: V @ np.diag(np.sqrt(np.clip(w, 0, None))) @ V.T)(*np.linalg.eigh(A))  # noqa: E731
    blocks = [K.numpy(), np.sqrt(lam) * half(C.numpy())] + ([half(C_p.numpy())] if cp else [])
    A = np.concatenate(blocks, axis=1)                                  # m × (n + m [+ m])
    for R in (R_star, R_L, R_L / (dist + 1)):
        B = np.concatenate([R.numpy(), np.zeros((d, A.shape[1] - n))], axis=1)
        delta = np.linalg.lstsq(A.T, B.T, rcond=None)[0].T               # d × m
        np.testing.assert_allclose((R @ Q).numpy(), delta, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(memit_delta(K, R, C, lam, C_p=C_p).numpy(), delta, rtol=1e-7, atol=1e-9)
    diff = memit_delta(K, R_star, C, lam, C_p=C_p) - memit_delta(K, R_L / (dist + 1), C, lam, C_p=C_p)
    assert th.weight_deviation(R_star, R_L, Q, dist) == pytest.approx(
        float(torch.linalg.matrix_norm(diff, ord=2)), rel=1e-9)
    assert th.weight_deviation(R_star, R_L, Q, dist, ord="fro") == pytest.approx(
        float(torch.linalg.matrix_norm(diff, ord="fro")), rel=1e-9)


def test_distributed_residual_hand_computed():
    R = torch.tensor([[3.0, -6.0], [1.5, 0.0]], dtype=F64)
    assert torch.equal(th.distributed_residual(R, 0), R)
    assert torch.equal(th.distributed_residual(R, 2), torch.tensor([[1.0, -2.0], [0.5, 0.0]], dtype=F64))


def test_theorem41_hand_computed_scalar():
    # m = n = d = 1: K = 2, C = 1, λ = 1 gives Q = 2 / (1 + 4) = 0.4; R^L = 3, R^{l*} = 2, D = 2
    res = th.check_bound([[2.0]], [[1.0]], 1.0, [[2.0]], [[3.0]], 2)
    assert res.q_norm == pytest.approx(0.4)
    assert res.deviation == pytest.approx(abs(2 - 3 / 3) * 0.4)              # 0.4
    assert res.tight_bound == pytest.approx((abs(2 - 3) + 2 / 3 * 3) * 0.4)   # 1.2
    assert res.bound == pytest.approx((abs(2 - 3) + 2 * 3) * 0.4)             # 2.8
    assert res.residual_deviation == pytest.approx(1.0) and res.holds
    # d = n = m = 2: K = diag(2, 1), C = I, λ = 1 gives Q = diag(2/5, 1/2); D = 1
    K, C = torch.diag(torch.tensor([2.0, 1.0], dtype=F64)), torch.eye(2, dtype=F64)
    Q = memit_Q(K, C, 1.0)
    torch.testing.assert_close(Q, torch.diag(torch.tensor([0.4, 0.5], dtype=F64)))
    R_L = torch.tensor([[3.0, 0.0], [0.0, 2.0]], dtype=F64)
    R_star = torch.tensor([[0.0, 4.0], [1.0, 0.0]], dtype=F64)
    # E = R^{l*} − R^L/2 = [[-1.5, 4], [1, -1]], EQ = [[-0.6, 2], [0.4, -0.5]]: Σ entries² = 4.77, det = −0.5
    fro2, det = 4.77, -0.5
    spectral = ((fro2 + (fro2 ** 2 - 4 * det ** 2) ** 0.5) / 2) ** 0.5
    assert th.weight_deviation(R_star, R_L, Q, 1) == pytest.approx(spectral, rel=1e-12)
    assert th.weight_deviation(R_star, R_L, Q, 1, ord="fro") == pytest.approx(fro2 ** 0.5, rel=1e-12)


@pytest.mark.parametrize("dist", [0, 1, 3, 7])
@pytest.mark.parametrize("alpha", [1.0, 1.7, 4.0])
def test_tight_bound_is_attained(dist, alpha):
    """One edit (n = 1) and R^{l*} = α·R^L with α ≥ 1: ``E = (α − 1/(D+1))R^L`` and every inequality in
    the derivation is an equality, so the deviation equals the tight bound (not only ≤)."""
    g = torch.Generator().manual_seed(7 + dist)
    K, C = torch.randn(9, 1, generator=g, dtype=F64), _spd(9, g)
    R_L = torch.randn(5, 1, generator=g, dtype=F64)
    res = th.check_bound(K, C, 0.3, alpha * R_L, R_L, dist)
    assert res.deviation == pytest.approx(res.tight_bound, rel=1e-12)
    want = (alpha - 1 / (dist + 1)) * float(R_L.norm()) * th.q_norm(K, C, 0.3)
    assert res.deviation == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("lmin", [0.05, 1.0, 30.0])
def test_q_envelope_is_attained(lmin):
    """With ``K = B^{1/2}v`` for the unit eigenvector ``v`` of ``B = λC`` at ``λ_min``:
    ``Q = vᵀB^{-1/2}/2``, so ``‖Q‖₂ = 1/(2√λ_min)`` exactly."""
    g = torch.Generator().manual_seed(3)
    U, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=F64))
    s = torch.tensor([lmin, 2 * lmin + 1, 5.0 + lmin, 7.0 + lmin, 9.0 + lmin, 40.0 + lmin], dtype=F64)
    C = (U * s) @ U.T
    K = U[:, :1] * lmin ** 0.5
    assert th.q_envelope(C, 1.0) == pytest.approx(0.5 / lmin ** 0.5, rel=1e-10)
    assert th.q_norm(K, C, 1.0) == pytest.approx(th.q_envelope(C, 1.0), rel=1e-9)


def test_input_validation():
    R = torch.zeros(3, 2, dtype=F64)
    Q = torch.zeros(2, 4, dtype=F64)
    with pytest.raises(ValueError):
        th.weight_deviation(R, R, Q, -1)
    with pytest.raises(ValueError):
        th.weight_deviation(R, R, Q, 1.5)
    with pytest.raises(ValueError):
        th.weight_deviation(R, torch.zeros(3, 3), Q, 1)
    with pytest.raises(ValueError):
        th.weight_deviation(R, R, torch.zeros(3, 4), 1)
    with pytest.raises(ValueError):
        th.weight_deviation(R, R, Q, 1, ord=1)
    # numpy input and numpy integer distance are accepted
    assert th.weight_deviation(np.ones((3, 2)), np.ones((3, 2)), np.ones((2, 4)), np.int64(0)) == 0.0


# ---------------------------------------------------------------------------------- toy chain

@pytest.mark.parametrize("n", [1, 5])
def test_toy_chain_without_drift_is_exact(n):
    """``eps = 0``: ``R^{l*} = R^L`` at every distance, so ``E = R^L·D/(D+1)`` and the deviation is
    ``D/(D+1)·‖R^L Q‖₂``: the ratios to the ``D = 1`` layer are ``2D/(D+1)`` whatever the seed."""
    for seed in range(3):
        c = toy.toy_distribution_error(d=7, m=11, n=n, n_layers=5, seed=seed, eps=0.0)
        assert list(c.distance) == [4, 3, 2, 1, 0]
        np.testing.assert_allclose(c.deviation[:-1] / c.deviation[-2], [8 / 5, 6 / 4, 4 / 3, 1.0], rtol=1e-12)
        assert c.deviation[-1] == 0.0 and np.all(c.residual_deviation == 0.0)
        np.testing.assert_allclose(c.bound[:-1] / c.tight_bound[:-1], c.distance[:-1] + 1, rtol=1e-12)
        if n == 1:  # one edit: the tight bound is attained
            np.testing.assert_allclose(c.deviation, c.tight_bound, rtol=1e-12)


def test_toy_chain_bounds_and_drift():
    for s in range(8):
        c = toy.toy_distribution_error(d=12, m=24, n=6, n_layers=6, seed=s, lam=1.0)
        assert np.all(c.deviation <= c.tight_bound * (1 + RTOL))
        assert np.all(c.tight_bound <= c.bound * (1 + RTOL))
        assert c.deviation[-1] == 0.0            # at L the distributed residual is R^L itself
        assert set(c.to_dict()) >= {"distance", "deviation", "bound", "tight_bound", "q_norm"}
        # the drift R^{l*} − R^L = eps·D·Ξ is linear in eps (the same draws for the same seed)
        c2 = toy.toy_distribution_error(d=12, m=24, n=6, n_layers=6, seed=s, lam=1.0, eps=0.6)
        np.testing.assert_allclose(c2.residual_deviation, 2 * c.residual_deviation, rtol=1e-12)


def test_toy_chain_deviation_grows_with_distance():
    dev = [toy.toy_distribution_error(d=12, m=24, n=6, n_layers=6, seed=s).deviation for s in range(200)]
    steps = np.diff(np.asarray(dev)[:, ::-1], axis=1)           # D → D + 1, per seed
    _assert_above(steps, 0.0)


def test_toy_chain_deviation_grows_with_batch_size():
    sizes = [1, 2, 4, 8, 16]
    dev = np.array([[toy.toy_distribution_error(12, 24, n, 4, seed=s).deviation[0] for n in sizes]
                    for s in range(200)])
    _assert_above(np.diff(dev, axis=1), 0.0)


# ---------------------------------------------------------------------------------- Lemma 4.3

@pytest.mark.parametrize("seed", range(40))
def test_lemma43_provable_parts(seed):
    g = torch.Generator().manual_seed(1000 + seed)
    m = int(torch.randint(2, 20, (1,), generator=g))
    n = int(torch.randint(1, 2 * m, (1,), generator=g))
    lam = 10 ** (4 * torch.rand(1, generator=g).item() - 2)
    K = torch.randn(m, n, generator=g, dtype=F64)
    C = _spd(m, g)
    Kp = torch.randn(m, int(torch.randint(1, 3 * m, (1,), generator=g)), generator=g, dtype=F64)
    C_p = Kp @ Kp.T * 10 ** (2 * torch.rand(1, generator=g).item())
    t = th.lemma43_terms(K, C, lam, C_p)
    assert t.cp_norm == pytest.approx(float(torch.linalg.matrix_norm(C_p, ord=2)), rel=1e-12)
    # universal envelope, non-increasing in C_p
    assert t.q_norm <= t.q_envelope * (1 + RTOL)
    assert t.q_norm_without_cp <= t.q_envelope_without_cp * (1 + RTOL)
    assert t.q_envelope <= t.q_envelope_without_cp * (1 + RTOL)
    # key gain G = Kᵀ A⁻¹ K: in [0, 1) and non-increasing in C_p
    assert 0.0 <= t.key_gain <= t.key_gain_without_cp * (1 + RTOL) < 1.0 + RTOL


def test_q_norm_can_grow_when_cp_is_added():
    # one key k = (1, 1), C = I, small λ; an earlier edit blocks e₁, so k must be written through e₂ alone
    K = torch.tensor([[1.0], [1.0]], dtype=F64)
    C = torch.eye(2, dtype=F64)
    C_p = torch.tensor([[1e4, 0.0], [0.0, 0.0]], dtype=F64)
    t = th.lemma43_terms(K, C, 0.01, C_p)
    assert t.q_norm_without_cp == pytest.approx(2 ** 0.5 / 2.01, rel=1e-9)
    # by hand: A = [[10001.01, 1], [1, 1.01]], det A = 10100.0201, Q = Kᵀ A⁻¹ = (0.01, 10000.01) / det A
    q = float(np.hypot(0.01, 10000.01)) / 10100.0201
    assert t.q_norm == pytest.approx(q, rel=1e-9)
    assert t.q_ratio == pytest.approx(q * 2.01 / 2 ** 0.5, rel=1e-9)      # ≈ 1.407: ‖Q‖ grew
    assert t.cp_norm == 1e4
    assert t.q_envelope <= t.q_envelope_without_cp           # while the envelope did not grow
    assert t.key_gain < t.key_gain_without_cp
    assert th.lemma43_terms(K, C, 0.01, None).cp_norm == 0.0


def test_q_norm_decays_like_a_ridge_once_cp_spans_the_keys():
    # C = I, one key k, C_p = c·I: Q = kᵀ / (λ + c + ‖k‖²), so ‖Q‖₂ = ‖k‖ / (λ + c + ‖k‖²) → 0 like 1/c
    k = torch.tensor([[3.0], [4.0]], dtype=F64)
    for c in (0.0, 10.0, 1e3, 1e6):
        t = th.lemma43_terms(k, torch.eye(2, dtype=F64), 0.5, c * torch.eye(2, dtype=F64))
        assert t.q_norm == pytest.approx(5.0 / (0.5 + c + 25.0), rel=1e-10)
        assert t.key_gain == pytest.approx(25.0 / (0.5 + c + 25.0), rel=1e-10)


def _brute_profile(d, m, n, n_batches, distance, seed, lam, eps=0.3, decay=2.0, residual_drift=0.0):
    """The profile by its definition, with every update solved by ``memit_delta`` and ‖Q‖ from an
    explicit inverse (the draws in the documented order: the key model, then per batch K, R^L, Ξ)."""
    g = torch.Generator().manual_seed(seed)
    km = toy.random_key_model(m, g, decay)
    C, C_p = km.C, torch.zeros(m, m, dtype=F64)
    acc, acc0, rows = torch.zeros(d, m, dtype=F64), torch.zeros(d, m, dtype=F64), []
    for t in range(n_batches):
        K = km.sample(n, g)
        R_L = torch.randn(d, n, generator=g, dtype=F64)
        R_star = R_L + eps * distance * (1 + residual_drift * t) * torch.randn(d, n, generator=g, dtype=F64)
        out = {}
        for tag, cp in (("", C_p), ("_without_cp", None)):
            diff = memit_delta(K, R_star, C, lam, C_p=cp) - memit_delta(K, R_L / (distance + 1), C, lam, C_p=cp)
            A = lam * C + K @ K.T + (0 if cp is None else cp)
            q = float(torch.linalg.matrix_norm(K.T @ torch.linalg.inv(A), ord=2))
            fac = float(torch.linalg.matrix_norm(R_star - R_L, ord=2)) + distance * float(
                torch.linalg.matrix_norm(R_L, ord=2))
            out.update({"deviation" + tag: float(torch.linalg.matrix_norm(diff, ord=2)), "q_norm" + tag: q,
                        "bound" + tag: fac * q})
            if cp is None:
                acc0 += diff
            else:
                acc += diff
        out.update(cumulative_deviation=float(torch.linalg.matrix_norm(acc, ord=2)),
                   cumulative_deviation_without_cp=float(torch.linalg.matrix_norm(acc0, ord=2)),
                   cp_norm=float(torch.linalg.matrix_norm(C_p, ord=2)))
        rows.append(out)
        C_p = C_p + K @ K.T
    return {k: np.array([r[k] for r in rows]) for k in rows[0]}


@pytest.mark.parametrize("lam,drift", [(0.1, 0.0), (10.0, 0.5)])
def test_sequential_profile_matches_brute_force(lam, drift):
    p = toy.sequential_profile(d=5, m=12, n=3, n_batches=7, distance=2, seed=11, lam=lam, residual_drift=drift)
    want = _brute_profile(5, 12, 3, 7, 2, 11, lam, residual_drift=drift)
    for k, v in want.items():
        np.testing.assert_allclose(getattr(p, k), v, rtol=1e-7, atol=1e-12, err_msg=k)
    np.testing.assert_allclose(p.cumulative_bound, np.cumsum(want["bound"]), rtol=1e-7)
    assert len(p.to_dict()["n_prev"]) == 7


def test_sequential_profile_invariants():
    for s in range(5):
        p = toy.sequential_profile(d=8, m=32, n=4, n_batches=20, distance=3, seed=s, lam=0.1)
        assert np.all(np.diff(p.cp_norm) > 0) and p.cp_norm[0] == 0.0
        assert np.all(np.diff(p.q_envelope) <= 1e-12)
        assert np.all(p.q_norm <= p.q_envelope * (1 + RTOL))
        assert np.all(p.key_gain <= p.key_gain_without_cp * (1 + RTOL))
        assert np.all(p.deviation <= p.bound * (1 + RTOL))
        assert np.all(p.deviation_without_cp <= p.bound_without_cp * (1 + RTOL))
        assert np.all(p.cumulative_deviation <= p.cumulative_bound * (1 + RTOL))
        assert np.all(p.cumulative_deviation_without_cp <= p.cumulative_bound_without_cp * (1 + RTOL))


def test_sequential_profile_what_grows():
    """The claims of the theory module's docstring, as means over 60 seeds (m = 32, n = 4: t·n reaches m at t = 8)."""
    ps = [toy.sequential_profile(d=8, m=32, n=4, n_batches=20, distance=3, seed=1000 + s, lam=0.1) for s in range(60)]

    def col(name):
        return np.array([getattr(p, name) for p in ps])
    q, dev = col("q_norm"), col("deviation")
    cum, cum0 = col("cumulative_deviation"), col("cumulative_deviation_without_cp")
    # ‖Q‖ and the per-batch deviation rise while t·n < m and fall once the earlier keys span the space
    _assert_above(q[:, 6] / q[:, 0], 1.0)
    _assert_above(dev[:, 6] / dev[:, 0], 1.0)
    _assert_above(1.0 - q[:, -1] / q[:, 0], 0.0)
    # without C_p the accumulated deviation keeps growing; with it, it levels off: it grows less over
    # the last ten batches than over the first nine
    _assert_above(cum0[:, -1] / cum0[:, 10], 1.0)
    _assert_above(cum[:, 8] / cum[:, 0] - cum[:, -1] / cum[:, 10], 0.0)
    # without C_p nothing changes with t in distribution: the first and the last batch have the same mean
    m, se = _mean_se(col("deviation_without_cp")[:, -1] - col("deviation_without_cp")[:, 0])
    assert abs(m) < Z * se


def test_strong_regularisation_shrinks_q_with_cp():
    ps = [toy.sequential_profile(d=8, m=32, n=4, n_batches=12, seed=2000 + s, lam=100.0) for s in range(60)]
    _assert_above(1.0 - np.array([p.q_norm[1:] / p.q_norm_without_cp[1:] for p in ps]), 0.0)


def test_residual_drift_knob():
    p0 = toy.sequential_profile(d=6, m=16, n=2, n_batches=6, seed=3, residual_drift=0.0)
    p1 = toy.sequential_profile(d=6, m=16, n=2, n_batches=6, seed=3, residual_drift=1.0)
    assert p1.residual_deviation[0] == pytest.approx(p0.residual_deviation[0])
    np.testing.assert_allclose(p1.residual_deviation, p0.residual_deviation * (1 + np.arange(6)), rtol=1e-12)
