"""Property-based checks of the solvers on random shapes and scales."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bluebook.core import solvers

dims = st.integers(min_value=1, max_value=12)


@settings(max_examples=60, deadline=None)
@given(d=dims, m=dims, n=dims, lam=st.floats(1e-3, 1e4), seed=st.integers(0, 10_000))
def test_memit_delta_satisfies_normal_equations(d, m, n, lam, seed):
    g = torch.Generator().manual_seed(seed)
    K = torch.randn(m, n, generator=g, dtype=torch.float64)
    R = torch.randn(d, n, generator=g, dtype=torch.float64)
    X = torch.randn(m + 3, m, generator=g, dtype=torch.float64)
    C = X.T @ X / (m + 3) + 1e-3 * torch.eye(m, dtype=torch.float64)
    D = solvers.memit_delta(K, R, C, lam)
    assert D.shape == (d, m) and torch.isfinite(D).all()
    # gradient of λ tr(Δ C Δᵀ) + ‖Δ K − R‖² vanishes
    grad = lam * D @ C + (D @ K - R) @ K.T
    assert grad.abs().max() <= 1e-6 * (1 + R.abs().max() * K.abs().max() * (1 + lam))


@settings(max_examples=40, deadline=None)
@given(m=st.integers(2, 12), seed=st.integers(0, 10_000), tau=st.floats(1e-4, 1.0))
def test_projector_is_orthogonal_projection(m, seed, tau):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(m, m, generator=g, dtype=torch.float64)
    C = X @ X.T / m
    P = solvers.nullspace_projector(C, tau)
    assert torch.allclose(P, P.T, atol=1e-10)
    assert torch.allclose(P @ P, P, atol=1e-9)
    assert (P @ C).abs().max() <= tau * 1.0001 + 1e-9


@settings(max_examples=40, deadline=None)
@given(r=st.integers(1, 10), c=st.integers(1, 10), scale=st.floats(0.01, 100), smax=st.floats(1.0, 10),
       seed=st.integers(0, 10_000))
def test_prune_never_increases_singular_values(r, c, scale, smax, seed):
    """ln σ − ln σ* + σ* ≤ σ for σ > σ* holds when σ* ≥ 1 (weights of real models); for σ* < 1 the
    formula can raise a value slightly above σ* (see solvers.prune_restrain)."""
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(r, c, generator=g, dtype=torch.float64) * scale
    out = solvers.prune_restrain(D, smax)
    s_in, s_out = torch.linalg.svdvals(D), torch.linalg.svdvals(out)
    assert (s_out <= s_in + 1e-9 * (1 + s_in)).all()
    small = s_in <= smax
    if small.any():      # values below σ* are untouched
        assert (s_out[small] - s_in[small]).abs().max() < 1e-9 * (1 + scale)
