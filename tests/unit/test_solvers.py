"""The closed-form solvers against independent formulations, on random tensors."""
import pytest
import torch

from bluebook.core import solvers
from bluebook.core.stats import SecondMoment


def _rand(seed, d=6, m=9, n=4):
    g = torch.Generator().manual_seed(seed)
    K = torch.randn(m, n, generator=g, dtype=torch.float64)
    R = torch.randn(d, n, generator=g, dtype=torch.float64)
    X = torch.randn(50, m, generator=g, dtype=torch.float64)
    C = X.T @ X / 50
    return K, R, C


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("lam", [0.1, 1.0, 20.0])
def test_memit_delta_is_least_squares_solution(seed, lam):
    K, R, C = _rand(seed)
    D = solvers.memit_delta(K, R, C, lam)
    # objective: lam * ||Δ C^{1/2}||² + ||Δ K − R||²  ->  stacked least squares in Δᵀ
    evals, evecs = torch.linalg.eigh(C)
    C_half = evecs @ torch.diag(evals.clamp_min(0).sqrt()) @ evecs.T
    A = torch.cat([K.T, (lam ** 0.5) * C_half.T], 0)            # (n+m, m)
    B = torch.cat([R.T, torch.zeros(C.shape[0], R.shape[0], dtype=R.dtype)], 0)
    Dt = torch.linalg.lstsq(A, B).solution
    torch.testing.assert_close(D, Dt.T, atol=1e-8, rtol=1e-8)


def test_memit_delta_with_accumulated_keys_matches_stacked_objective():
    K, R, C = _rand(3)
    Kp = torch.randn(9, 5, dtype=torch.float64)
    D = solvers.memit_delta(K, R, C, 2.0, C_p=Kp @ Kp.T)
    direct = R @ K.T @ torch.linalg.inv(2.0 * C + Kp @ Kp.T + K @ K.T)
    torch.testing.assert_close(D, direct, atol=1e-8, rtol=1e-8)


def test_memit_lambda_to_zero_maps_keys_to_residuals():
    K, R, C = _rand(1, d=5, m=8, n=3)
    D = solvers.memit_delta(K, R, C, 1e-9)
    torch.testing.assert_close(D @ K, R, atol=1e-5, rtol=1e-5)


def test_solver_dtype_follows_residuals():
    K, R, C = _rand(0)
    D = solvers.memit_delta(K.float(), R.float(), C.float(), 1.0)
    assert D.dtype == torch.float32


@pytest.mark.parametrize("bad", ["shape_K", "shape_C", "nan_C", "inf_R", "empty"])
def test_solver_bad_input_errors(bad):
    K, R, C = _rand(0)
    if bad == "shape_K":
        K = K[:, :3]
    if bad == "shape_C":
        C = C[:5, :5]
    if bad == "nan_C":
        C = C.clone()
        C[0, 0] = float("nan")
    if bad == "inf_R":
        R = R.clone()
        R[0, 0] = float("inf")
    if bad == "empty":
        K, R = K[:, :0], R[:, :0]
    with pytest.raises(ValueError):
        solvers.memit_delta(K, R, C, 1.0)


def test_singular_system_refused_not_nan():
    K = torch.zeros(4, 2, dtype=torch.float64)
    R = torch.ones(3, 2, dtype=torch.float64)
    C = torch.zeros(4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="singular|NaN"):
        solvers.memit_delta(K, R, C, 1.0)


@pytest.mark.parametrize("seed", range(3))
def test_nullspace_projector_properties(seed):
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    S = torch.tensor([5.0, 2.0, 1.0, 0.5, 0.1, 0.05, 1e-3, 1e-4, 1e-5, 1e-6, 0.0, 0.0], dtype=torch.float64)
    C = U @ torch.diag(S) @ U.T
    P = solvers.nullspace_projector(C, threshold=2e-2)
    torch.testing.assert_close(P, P.T)
    torch.testing.assert_close(P @ P, P, atol=1e-10, rtol=0)
    big = U[:, S >= 2e-2]
    assert (P @ big).abs().max() < 1e-10          # annihilates the kept directions
    small = U[:, S < 2e-2]
    torch.testing.assert_close(P @ small, small, atol=1e-10, rtol=0)
    assert int(round(float(torch.trace(P)))) == int((S < 2e-2).sum())


def test_alphaedit_update_leaves_preserved_keys_alone():
    g = torch.Generator().manual_seed(0)
    m, d = 16, 6
    K0 = torch.randn(m, 10, generator=g, dtype=torch.float64)     # preserved knowledge spans 10 dims
    C = K0 @ K0.T / 10
    P = solvers.nullspace_projector(C, threshold=1e-8)
    K = torch.randn(m, 3, generator=g, dtype=torch.float64)
    R = torch.randn(d, 3, generator=g, dtype=torch.float64)
    D = solvers.alphaedit_delta(K, R, P, alpha=1e-3)
    assert (D @ K0).norm() < 1e-8 * D.norm()
    torch.testing.assert_close(D @ P, D, atol=1e-10, rtol=0)      # Δ lies in range(P)
    # and it still writes the new keys' residuals in the free directions
    assert ((D @ K) - R).norm() < 0.5 * R.norm()


def test_alphaedit_matches_paper_form():
    K, R, C = _rand(2, m=8)
    P = solvers.nullspace_projector(C, threshold=0.5)
    Kp = torch.randn(8, 3, dtype=torch.float64)
    D = solvers.alphaedit_delta(K, R, P, C_p=Kp @ Kp.T, alpha=3.0)
    paper = R @ K.T @ P @ torch.linalg.inv(Kp @ Kp.T @ P + K @ K.T @ P + 3.0 * torch.eye(8, dtype=torch.float64))
    torch.testing.assert_close(D, paper, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("keep", [10.0, 25.0, 40.0, 100.0])
def test_rect_keeps_requested_fraction(keep):
    g = torch.Generator().manual_seed(1)
    D = torch.randn(20, 50, generator=g)
    W = torch.randn(20, 50, generator=g)
    out = solvers.rect_mask(D, W, keep)
    kept = int((out != 0).sum())
    assert kept == D.numel() - int(D.numel() * (100 - keep) / 100)
    rho = (D / W).abs()
    assert rho[out != 0].min() >= rho[out == 0].max() if kept < D.numel() else True


def test_prune_bounds_singular_values():
    g = torch.Generator().manual_seed(0)
    D = torch.randn(30, 40, generator=g, dtype=torch.float64) * 5
    smax = 3.0
    out = solvers.prune_restrain(D, smax)
    s_in = torch.linalg.svdvals(D)
    s_out = torch.linalg.svdvals(out)
    bound = torch.where(s_in > smax, torch.log(s_in) - torch.log(torch.tensor(smax, dtype=torch.float64)) + smax, s_in)
    torch.testing.assert_close(s_out, bound, atol=1e-8, rtol=1e-8)
    assert (s_out <= s_in + 1e-9).all()
    small = D / torch.linalg.matrix_norm(D, 2) * 0.5          # all below σ*: unchanged
    torch.testing.assert_close(solvers.prune_restrain(small, smax), small)


def test_streaming_second_moment_equals_batch():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(1000, 7, generator=g, dtype=torch.float64)
    sm = SecondMoment(7, torch.float64)
    for chunk in X.split(137):
        sm.add(chunk)
    torch.testing.assert_close(sm.moment(), X.T @ X / 1000)
    assert sm.count == 1000
    with pytest.raises(ValueError):
        sm.add(torch.randn(3, 5))
