"""Theorem 4.1 / Lemma 4.3 checks on random tensors (bluebook.theory): pure linear algebra, CPU, fast."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from bluebook.analysis import theory as th
from bluebook.core.solvers import memit_delta, memit_Q

F64 = torch.float64
RTOL = 1e-9


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
        assert th.weight_deviation(R_star, R_L, Q, dist, ord=ord_) == pytest.approx(res.deviation, rel=1e-12, abs=1e-300)
        assert th.theorem41_bound(R_star, R_L, Q, dist, ord=ord_) == pytest.approx(res.bound, rel=1e-12, abs=1e-300)
        assert th.theorem41_tight_bound(R_star, R_L, Q, dist, ord=ord_) == pytest.approx(res.tight_bound, rel=1e-12,
                                                                                         abs=1e-300)
        assert th.residual_deviation(R_star, R_L, ord=ord_) == pytest.approx(res.residual_deviation, rel=1e-12)
    # the Frobenius deviation is never smaller than the spectral one
    assert th.check_bound(K, C, lam, R_star, R_L, dist, C_p=C_p, ord="fro").deviation >= \
        th.check_bound(K, C, lam, R_star, R_L, dist, C_p=C_p).deviation * (1 - RTOL)


@pytest.mark.parametrize("dist", [0, 1, 2, 5, 11])
@pytest.mark.parametrize("ord_", [2, "fro"])
def test_zero_deviation_for_the_distributed_residual(dist, ord_):
    g = torch.Generator().manual_seed(100 + dist)
    d, m, n, lam = 6, 10, 4, 0.5
    K = torch.randn(m, n, generator=g, dtype=F64)
    C = _spd(m, g)
    R_L = torch.randn(d, n, generator=g, dtype=F64)
    R_star = th.distributed_residual(R_L, dist)
    assert torch.equal(R_star, R_L / (dist + 1))
    Q = memit_Q(K, C, lam)
    assert th.weight_deviation(R_star, R_L, Q, dist, ord=ord_) <= 1e-12
    res = th.check_bound(K, C, lam, R_star, R_L, dist, ord=ord_)
    assert res.deviation <= 1e-12 and res.holds
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
    for R in (R_star, R_L, th.distributed_residual(R_L, dist)):
        torch.testing.assert_close(R @ Q, memit_delta(K, R, C, lam, C_p=C_p), rtol=1e-10, atol=1e-12)
    diff = memit_delta(K, R_star, C, lam, C_p=C_p) - memit_delta(K, R_L / (dist + 1), C, lam, C_p=C_p)
    assert th.weight_deviation(R_star, R_L, Q, dist) == pytest.approx(
        float(torch.linalg.matrix_norm(diff, ord=2)), rel=1e-9)
    assert th.weight_deviation(R_star, R_L, Q, dist, ord="fro") == pytest.approx(
        float(torch.linalg.matrix_norm(diff, ord="fro")), rel=1e-9)


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

def test_toy_chain_deviation_grows_with_distance():
    seeds = range(8)
    chains = [th.toy_distribution_error(d=12, m=24, n=6, n_layers=6, seed=s, lam=1.0) for s in seeds]
    dist = chains[0].distance
    assert list(dist) == [5, 4, 3, 2, 1, 0]
    mean_dev = np.mean([c.deviation for c in chains], axis=0)
    rho = spearmanr(dist, mean_dev).correlation
    assert rho > 0.9, (rho, mean_dev)
    for c in chains:
        assert np.all(c.deviation <= c.tight_bound * (1 + RTOL))
        assert np.all(c.tight_bound <= c.bound * (1 + RTOL))
        assert c.deviation[-1] == 0.0            # at L the distributed residual is R^L itself
        assert set(c.to_dict()) >= {"distance", "deviation", "bound", "tight_bound", "q_norm"}


def test_toy_chain_deviation_grows_with_batch_size():
    sizes = [1, 2, 4, 8, 16]
    mean_dev = [np.mean([th.toy_distribution_error(12, 24, n, 4, seed=s).deviation[0] for s in range(6)])
                for n in sizes]
    assert spearmanr(sizes, mean_dev).correlation > 0.9, mean_dev


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
    assert t.q_ratio == pytest.approx(t.q_norm / t.q_norm_without_cp)


def test_q_norm_can_grow_when_cp_is_added():
    # one key k = (1, 1), C = I, small λ; an earlier edit blocks e₁, so k must be written through e₂ alone
    K = torch.tensor([[1.0], [1.0]], dtype=F64)
    C = torch.eye(2, dtype=F64)
    C_p = torch.tensor([[1e4, 0.0], [0.0, 0.0]], dtype=F64)
    t = th.lemma43_terms(K, C, 0.01, C_p)
    assert t.q_norm_without_cp == pytest.approx(2 ** 0.5 / 2.01, rel=1e-9)
    assert t.q_norm > 1.3 * t.q_norm_without_cp            # ‖Q‖ grew by ≈ 1.4×
    assert t.q_envelope <= t.q_envelope_without_cp           # while the envelope did not grow
    assert t.key_gain < t.key_gain_without_cp
    assert th.lemma43_terms(K, C, 0.01, None).cp_norm == 0.0


@pytest.fixture(scope="module")
def profiles():
    # well-fitted regime (small λ): m = 32 keys dims, n = 4 edits per batch, so t·n reaches m at t = 8
    return [th.sequential_profile(d=8, m=32, n=4, n_batches=20, distance=3, seed=s, lam=0.1) for s in range(5)]


def test_sequential_profile_invariants(profiles):
    for p in profiles:
        assert np.all(np.diff(p.cp_norm) > 0) and p.cp_norm[0] == 0.0
        assert np.all(np.diff(p.q_envelope) <= 1e-12)
        assert np.all(p.q_norm <= p.q_envelope * (1 + RTOL))
        assert np.all(p.key_gain <= p.key_gain_without_cp * (1 + RTOL))
        assert np.all(p.deviation <= p.bound * (1 + RTOL))
        assert np.all(p.deviation_without_cp <= p.bound_without_cp * (1 + RTOL))
        assert np.all(p.cumulative_deviation <= p.cumulative_bound * (1 + RTOL))
        assert np.all(p.cumulative_deviation_without_cp <= p.cumulative_bound_without_cp * (1 + RTOL))
        assert p.q_norm[0] == p.q_norm_without_cp[0] and p.deviation[0] == p.deviation_without_cp[0]
        assert len(p.to_dict()["n_prev"]) == 20


def test_sequential_profile_what_grows(profiles):
    mean = {k: np.mean([getattr(p, k) for p in profiles], axis=0)
            for k in ("q_norm", "deviation", "cumulative_deviation", "cumulative_deviation_without_cp",
                      "deviation_without_cp")}
    t = np.arange(20)
    # without C_p the accumulated weight deviation keeps growing with sequence length
    assert spearmanr(t, mean["cumulative_deviation_without_cp"]).correlation > 0.9
    assert mean["cumulative_deviation_without_cp"][-1] > 2.0 * mean["cumulative_deviation_without_cp"][0]
    # with C_p it grows fast while t·n < m (= 32 here, i.e. t < 8), then levels off
    assert spearmanr(t[:9], mean["cumulative_deviation"][:9]).correlation > 0.9
    assert mean["cumulative_deviation"][8] > 3.0 * mean["cumulative_deviation"][0]
    assert mean["cumulative_deviation"][-1] < 1.25 * mean["cumulative_deviation"][10]
    # ‖Q‖ (and the per-batch deviation) is not monotone in C_p: up while t·n < m, down after
    assert mean["q_norm"][6] > 1.2 * mean["q_norm"][0]
    assert mean["deviation"][6] > 1.2 * mean["deviation"][0]
    assert mean["q_norm"][-1] < 0.8 * mean["q_norm"][0]
    assert mean["deviation"][-1] < 0.8 * mean["deviation"][0]
    # without C_p nothing changes with t in distribution
    assert abs(spearmanr(t, mean["deviation_without_cp"]).correlation) < 0.9


def test_strong_regularisation_shrinks_q_with_cp():
    ps = [th.sequential_profile(d=8, m=32, n=4, n_batches=12, seed=s, lam=100.0) for s in range(4)]
    q = np.mean([p.q_norm / p.q_norm_without_cp for p in ps], axis=0)
    assert np.all(q[1:] < 1.0), q


def test_residual_drift_knob():
    p0 = th.sequential_profile(d=6, m=16, n=2, n_batches=6, seed=3, residual_drift=0.0)
    p1 = th.sequential_profile(d=6, m=16, n=2, n_batches=6, seed=3, residual_drift=1.0)
    assert p1.residual_deviation[0] == pytest.approx(p0.residual_deviation[0])
    np.testing.assert_allclose(p1.residual_deviation, p0.residual_deviation * (1 + np.arange(6)), rtol=1e-12)
