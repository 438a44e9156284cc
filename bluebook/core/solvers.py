"""Closed-form updates of locate-then-edit methods: pure linear algebra on tensors.

Notation (docs/notation.md): ``K`` keys ``(m, n)``, ``R`` residuals ``(d, n)``, ``C`` the key second
moment ``E[k kᵀ]`` ``(m, m)``, ``lam`` its weight λ, ``C_p`` the accumulated ``K_p K_pᵀ`` of earlier
batches, ``P`` AlphaEdit's null-space projector. Updates are returned in math layout ``(d, m)`` in
the dtype/device of ``R``. Nothing here imports transformers.
"""
from __future__ import annotations

import warnings

import torch

_COND_WARN = 1e12


def _check_finite(name: str, x: torch.Tensor):
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).sum().item()
        raise ValueError(f"{name} contains {bad} NaN/inf entries")


def _check_KR(K: torch.Tensor, R: torch.Tensor):
    if K.ndim != 2 or R.ndim != 2:
        raise ValueError(f"K and R must be 2-D, got K{tuple(K.shape)} and R{tuple(R.shape)}")
    if K.shape[1] != R.shape[1]:
        raise ValueError(f"K{tuple(K.shape)} and R{tuple(R.shape)} must have the same number of columns (edits)")
    if K.shape[1] == 0:
        raise ValueError("K and R have no columns: empty batch")
    _check_finite("K", K)
    _check_finite("R", R)


def _check_square(name: str, A: torch.Tensor, m: int):
    if A.ndim != 2 or A.shape != (m, m):
        raise ValueError(f"{name} must be ({m}, {m}) to match K, got {tuple(A.shape)}")
    _check_finite(name, A)


def _spd_solve(A: torch.Tensor, B: torch.Tensor, what: str) -> torch.Tensor:
    """Solve ``A X = B`` for symmetric PSD ``A``; warn on ill-conditioning, refuse on failure.

    Cholesky when ``A`` is positive definite (the condition number is estimated from the factor's
    diagonal, which is cheap); a general solve otherwise.
    """
    try:
        L, info = torch.linalg.cholesky_ex(A)
    except RuntimeError as exc:
        raise ValueError(f"{what}: the system matrix is singular ({exc}); increase the regulariser") from exc
    if int(info) != 0:
        # λC (+ C_p) + KKᵀ is PSD by construction, so a failed factorisation means it is singular: a
        # general solve would return one of infinitely many answers, silently. The usual cause is a
        # rank-deficient C, i.e. statistics from fewer tokens than the key dimension.
        raise ValueError(
            f"{what}: the system matrix ({A.shape[0]}×{A.shape[0]}) is singular (not positive definite at "
            f"column {int(info)}): the layer statistics C are rank-deficient or λ is 0. Compute C from more "
            "tokens (stats.n_samples × stats.max_len well above the key dimension) or raise λ.")
    X = torch.cholesky_solve(B, L)
    dg = L.diagonal().abs()
    cond = float((dg.max() / dg.min().clamp_min(1e-300)) ** 2)
    if not torch.isfinite(X).all():
        raise ValueError(f"{what}: the solve produced NaN/inf; the system matrix is singular or ill-conditioned")
    if cond > _COND_WARN:
        warnings.warn(f"{what}: system matrix is ill-conditioned (cond ≈ {cond:.3g}); results may be inaccurate",
                      RuntimeWarning, stacklevel=3)
    return X


def memit_delta(K: torch.Tensor, R: torch.Tensor, C: torch.Tensor, lam: float,
                C_p: torch.Tensor | None = None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """MEMIT: ``Δ = R Kᵀ (λ C + C_p + K Kᵀ)⁻¹ = R Q`` (``d × m``), solved (not inverted) in ``dtype``.

    This minimises ``λ·tr(Δ C Δᵀ) + ‖Δ K − R‖² (+ tr(Δ C_p Δᵀ))``: preserve what ``C`` (and the
    earlier edits ``C_p``) describe while mapping each key ``k_i`` to its residual ``r_i``.
    """
    _check_KR(K, R)
    return (R.to(dtype) @ memit_Q(K, C, lam, C_p, dtype, what="memit_delta")).to(R.dtype)


def memit_Q(K: torch.Tensor, C: torch.Tensor, lam: float, C_p: torch.Tensor | None = None,
            dtype: torch.dtype = torch.float64, *, what: str = "memit_Q") -> torch.Tensor:
    """``Q = Kᵀ (λ C + C_p + K Kᵀ)⁻¹`` (``n × m``), so that MEMIT's update is ``Δ = R Q`` (the theory's ``Q``).

    ``what`` names the caller in error messages."""
    m = K.shape[0]
    _check_square("C", C, m)
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    Kd = K.to(dtype)
    A = lam * C.to(device=K.device, dtype=dtype) + Kd @ Kd.T
    if C_p is not None:
        _check_square("C_p", C_p, m)
        A = A + C_p.to(device=K.device, dtype=dtype)
    return _spd_solve(A, Kd, what).T        # ((λC + C_p + KKᵀ)⁻¹ K)ᵀ, A symmetric


def nullspace_projector(C: torch.Tensor, threshold: float = 2e-2) -> torch.Tensor:
    """AlphaEdit's projector ``P = U₀ U₀ᵀ`` onto the directions of ``C`` with singular value < threshold.

    ``P`` is symmetric and idempotent; ``P C ≈ 0`` up to the threshold. Computed in float64 on the
    input's device, returned in ``C``'s dtype.
    """
    if C.ndim != 2 or C.shape[0] != C.shape[1]:
        raise ValueError(f"C must be square, got {tuple(C.shape)}")
    _check_finite("C", C)
    U, S, _ = torch.linalg.svd(C.to(torch.float64), full_matrices=False)
    U0 = U[:, S < threshold]
    return (U0 @ U0.T).to(C.dtype)


def alphaedit_delta(K: torch.Tensor, R: torch.Tensor, P: torch.Tensor, C_p: torch.Tensor | None = None,
                    alpha: float = 10.0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """AlphaEdit: ``Δ = R Kᵀ P ((K Kᵀ + C_p) P + α I)⁻¹`` (``d × m``).

    Computed as the reference does, ``Xᵀ`` with ``X = solve(P (K Kᵀ + C_p) + α I, P K Rᵀ)``; since
    ``Δ = Δ P``, the update never touches the preserved key directions (``Δ K₀ ≈ 0``).
    The reference solves in float32; float64 is the default here (pass ``dtype=torch.float32`` to match).
    """
    _check_KR(K, R)
    m = K.shape[0]
    _check_square("P", P, m)
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    Kd, Pd = K.to(dtype), P.to(device=K.device, dtype=dtype)
    M = Kd @ Kd.T
    if C_p is not None:
        _check_square("C_p", C_p, m)
        M = M + C_p.to(device=K.device, dtype=dtype)
    A = Pd @ M + alpha * torch.eye(m, dtype=dtype, device=K.device)
    B = Pd @ Kd @ R.to(dtype).T
    try:
        X = torch.linalg.solve(A, B)
    except RuntimeError as exc:
        raise ValueError(f"alphaedit_delta: singular system ({exc})") from exc
    if not torch.isfinite(X).all():
        raise ValueError("alphaedit_delta: the solve produced NaN/inf")
    return X.T.to(R.dtype)


def rect_mask(delta: torch.Tensor, W: torch.Tensor, keep_percent: float = 40.0) -> torch.Tensor:
    """RECT: keep the ``keep_percent`` % entries of ``Δ`` with the largest relative change ``|Δ / W|``.

    Exactly ``numel − ⌊numel·(100 − keep)/100⌋`` entries are kept (ties broken by index). The
    reference thresholds at the k-th smallest value inclusively (``ρ ≥ kthvalue``), which keeps one
    entry more than that; the difference is one entry in a million-entry matrix.
    """
    if delta.shape != W.shape:
        raise ValueError(f"delta{tuple(delta.shape)} and W{tuple(W.shape)} must have the same shape")
    if not 0 < keep_percent <= 100:
        raise ValueError(f"keep_percent must be in (0, 100], got {keep_percent}")
    rho = (delta / (W + 1e-8)).abs().flatten()
    drop = int(rho.numel() * (100 - keep_percent) / 100)
    if drop < 1:
        return delta.clone()
    keep_idx = torch.topk(rho, rho.numel() - drop, sorted=False).indices
    mask = torch.zeros_like(rho, dtype=torch.bool)
    mask[keep_idx] = True
    return delta * mask.reshape(delta.shape)


def prune_restrain(delta: torch.Tensor, sigma_max: float) -> torch.Tensor:
    """PRUNE: replace every singular value ``σ > σ*`` of ``Δ`` by ``ln σ − ln σ* + σ*``.

    ``σ*`` is the largest singular value of the original weight. Past ``σ*`` the restrained values
    grow only logarithmically; they are ``≤ σ`` whenever ``σ* ≥ 1`` (true for the weights of real
    models; for ``σ* < 1`` a value just above ``σ*`` is raised slightly, since the slope of
    ``ln σ`` there is ``1/σ* > 1`` — this is the formula as published, kept unchanged).
    """
    if sigma_max <= 0:
        raise ValueError(f"sigma_max must be > 0, got {sigma_max}")
    D = delta.to(torch.float64)
    U, S, Vh = torch.linalg.svd(D, full_matrices=False)
    big = S > sigma_max
    S2 = torch.where(big, torch.log(S.clamp_min(1e-300)) - torch.log(torch.tensor(sigma_max, dtype=S.dtype))
                     + sigma_max, S)
    return ((U * S2) @ Vh).to(delta.dtype)


def top_singular_value(W: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(W.detach().to(torch.float64), ord=2))
