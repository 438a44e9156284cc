r"""Random toy problems for the weight-deviation theory (:mod:`bluebook.analysis.theory`), for teaching.

* :class:`KeyModel` / :func:`random_key_model` — keys with an exactly known second moment ``C``;
* :func:`toy_distribution_error` — one batch, a chain of critical layers whose directly computed
  residual drifts away from ``R^L`` with the distance (Theorem 4.1 per layer);
* :func:`sequential_profile` — one layer over a sequence of batches, with and without the
  accumulated ``C_p`` (Lemma 4.3, measured).

Every ``Q`` is :func:`bluebook.analysis.theory.q_matrix` (i.e. :func:`bluebook.core.solvers.memit_Q`);
all tensors are float64 on the CPU, drawn from a ``torch.Generator`` seeded with ``seed``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from bluebook.analysis.theory import (
    check_distance,
    evaluate_bound,
    gain,
    matrix_norm,
    q_envelope,
    q_matrix,
    residual_factor,
)
from bluebook.core.distribute import memit_share

__all__ = ["KeyModel", "random_key_model", "ToyChain", "toy_distribution_error", "SequentialProfile",
           "sequential_profile"]


@dataclass(frozen=True)
class KeyModel:
    """Keys ``k = U diag(√s) g`` with ``g ~ N(0, I_m)``, so that ``C = E[kkᵀ] = U diag(s) Uᵀ`` exactly."""
    U: torch.Tensor
    s: torch.Tensor

    @property
    def m(self) -> int:
        return self.U.shape[0]

    @property
    def C(self) -> torch.Tensor:
        return (self.U * self.s) @ self.U.T

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        g = torch.randn(self.m, n, generator=generator, dtype=torch.float64)
        return (self.U * self.s.sqrt()) @ g


def random_key_model(m: int, generator: torch.Generator, decay: float = 2.0) -> KeyModel:
    """Random orthonormal ``U`` and a log-spaced spectrum ``s`` from 1 down to ``10^-decay``."""
    U, _ = torch.linalg.qr(torch.randn(m, m, generator=generator, dtype=torch.float64))
    s = torch.logspace(0, -decay, m, dtype=torch.float64)
    return KeyModel(U=U, s=s)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


# --------------------------------------------------------------------------------------------
# toy residual chain

@dataclass(frozen=True)
class ToyChain:
    """Per-layer results of :func:`toy_distribution_error`, ordered from the first critical layer to ``L``.

    ``distance[i] = L − l_i``; the other arrays are ``‖Δ^{l*} − Δ^l‖₂``, both bounds,
    ``‖R^{l*} − R^L‖₂`` at that layer; ``q_norm`` is the (shared) ``‖Q‖₂``.
    """
    distance: np.ndarray
    deviation: np.ndarray
    bound: np.ndarray
    tight_bound: np.ndarray
    residual_deviation: np.ndarray
    q_norm: float
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Column-wise dict (one row per layer), e.g. for ``pandas.DataFrame(chain.to_dict())``."""
        return {"distance": self.distance, "deviation": self.deviation, "bound": self.bound,
                "tight_bound": self.tight_bound, "residual_deviation": self.residual_deviation,
                "q_norm": np.full(len(self.distance), self.q_norm)}


def toy_distribution_error(d: int, m: int, n: int, n_layers: int, seed: int = 0, lam: float = 1.0,
                           eps: float = 0.3, decay: float = 2.0, n_prev_batches: int = 0) -> ToyChain:
    r"""A toy residual chain on random tensors, for teaching.

    * keys: ``C = U diag(s) Uᵀ`` (log-spaced spectrum, see :func:`random_key_model`) and a batch
      ``K`` of ``n`` keys drawn with exactly that second moment; one ``Q = memit_Q(K, C, lam, C_p)``
      is shared by all layers, so only the residuals change from layer to layer;
    * ``C_p`` = sum of ``KₛKₛᵀ`` over ``n_prev_batches`` earlier batches from the same distribution
      (``None`` when 0);
    * residuals: ``R^L ~ N(0, 1)^{d×n}``, and at distance ``D = L − l`` the directly computed residual
      drifts away linearly, ``R^{l*} = R^L + eps·D·Ξ_l`` with fresh ``Ξ_l ~ N(0, 1)^{d×n}``;
    * per layer: deviation ``‖(R^{l*} − R^L/(D+1))Q‖₂`` and both bounds of Theorem 4.1.

    Qualitatively the deviation grows with the distance (both terms of ``E`` grow with ``D``) and with
    the batch size ``n``. It does *not* simply grow with ``n_prev_batches`` (see :mod:`bluebook.analysis.theory`;
    use :func:`sequential_profile` for the sequence-length picture).
    """
    for name, v in (("d", d), ("m", m), ("n", n), ("n_layers", n_layers)):
        if int(v) < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if lam <= 0:
        raise ValueError(f"lam must be > 0, got {lam}")
    g = _gen(seed)
    km = random_key_model(m, g, decay)
    C = km.C
    C_p = None
    if n_prev_batches > 0:
        C_p = torch.zeros(m, m, dtype=torch.float64)
        for _ in range(n_prev_batches):
            Ks = km.sample(n, g)
            C_p += Ks @ Ks.T
    K = km.sample(n, g)
    Q = q_matrix(K, C, lam, C_p)
    qn = matrix_norm(Q)
    R_L = torch.randn(d, n, generator=g, dtype=torch.float64)
    dist = np.arange(n_layers - 1, -1, -1)
    dev, bnd, tb, rdev = (np.empty(n_layers) for _ in range(4))
    for i, D in enumerate(dist):
        R_star = R_L + eps * float(D) * torch.randn(d, n, generator=g, dtype=torch.float64)
        b = evaluate_bound(Q, R_star, R_L, int(D))
        dev[i], bnd[i], tb[i], rdev[i] = b.deviation, b.bound, b.tight_bound, b.residual_deviation
    return ToyChain(distance=dist, deviation=dev, bound=bnd, tight_bound=tb, residual_deviation=rdev,
                    q_norm=qn, params=dict(d=d, m=m, n=n, n_layers=n_layers, seed=seed, lam=lam, eps=eps,
                                           decay=decay, n_prev_batches=n_prev_batches))


# --------------------------------------------------------------------------------------------
# sequence-length profile (Lemma 4.3, measured)

@dataclass(frozen=True)
class SequentialProfile:
    """Per-batch arrays of :func:`sequential_profile`, indexed by ``t = n_prev`` earlier batches.

    With ``C_p`` (MEMIT-seq style) and without (plain sequential MEMIT) on the *same* keys/residuals:

    * ``cp_norm`` ``‖C_p‖₂``; ``q_norm`` / ``q_norm_without_cp`` ``‖Q‖₂``; ``q_envelope``
      ``1/(2√λ_min(λC + C_p))``; ``key_gain`` / ``key_gain_without_cp`` ``‖KᵀA⁻¹K‖₂``;
    * ``residual_deviation`` ``‖R^{l*}_t − R^L_t‖₂``;
    * ``deviation`` / ``deviation_without_cp`` the per-batch ``‖Δ^{l*}_t − Δ^l_t‖₂`` and ``bound`` /
      ``bound_without_cp`` its Theorem 4.1 bound;
    * ``cumulative_deviation`` / ``cumulative_deviation_without_cp`` ``‖Σ_{s≤t}(Δ^{l*}_s − Δ^l_s)‖₂``,
      the deviation accumulated in the weight when every batch is applied permanently, and
      ``cumulative_bound`` / ``cumulative_bound_without_cp`` ``Σ_{s≤t} bound_s`` (a valid bound on it).
    """
    n_prev: np.ndarray
    cp_norm: np.ndarray
    q_norm: np.ndarray
    q_norm_without_cp: np.ndarray
    q_envelope: np.ndarray
    key_gain: np.ndarray
    key_gain_without_cp: np.ndarray
    residual_deviation: np.ndarray
    deviation: np.ndarray
    deviation_without_cp: np.ndarray
    bound: np.ndarray
    bound_without_cp: np.ndarray
    cumulative_deviation: np.ndarray
    cumulative_deviation_without_cp: np.ndarray
    cumulative_bound: np.ndarray
    cumulative_bound_without_cp: np.ndarray
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Column-wise dict (one row per batch), e.g. for ``pandas.DataFrame(profile.to_dict())``."""
        return {k: v for k, v in asdict(self).items() if k != "params"}


def sequential_profile(d: int, m: int, n: int, n_batches: int, distance: int = 3, seed: int = 0,
                       lam: float = 1.0, eps: float = 0.3, decay: float = 2.0,
                       residual_drift: float = 0.0) -> SequentialProfile:
    r"""Deviation and bound at one layer as functions of the number of earlier batches folded into ``C_p``.

    Batch ``t`` (``t = 0 … n_batches−1``) draws fresh keys ``K_t`` (same distribution as ``C``, see
    :func:`random_key_model`) and residuals ``R^L_t ~ N(0,1)``, ``R^{l*}_t = R^L_t + eps·D·(1 +
    residual_drift·t)·Ξ_t``; it is solved with ``C_p = Σ_{s<t} K_sK_sᵀ`` and, for comparison, without.
    ``residual_drift`` (default 0) is an explicit *assumption* that the directly computed residual
    drifts further from ``R^L`` as the edited model drifts; with 0 nothing but ``C_p`` changes with ``t``.
    The toy keeps the keys' distribution fixed (the reference recomputes keys on the edited model).
    """
    D = check_distance(distance)
    if n_batches < 1:
        raise ValueError(f"n_batches must be >= 1, got {n_batches}")
    if lam <= 0:
        raise ValueError(f"lam must be > 0, got {lam}")
    g = _gen(seed)
    km = random_key_model(m, g, decay)
    C = km.C
    C_p = torch.zeros(m, m, dtype=torch.float64)
    acc = torch.zeros(d, m, dtype=torch.float64)
    acc0 = torch.zeros(d, m, dtype=torch.float64)
    cols = {k: np.empty(n_batches) for k in (
        "cp_norm", "q_norm", "q_norm_without_cp", "q_envelope", "key_gain", "key_gain_without_cp",
        "residual_deviation", "deviation", "deviation_without_cp", "bound", "bound_without_cp",
        "cumulative_deviation", "cumulative_deviation_without_cp")}
    for t in range(n_batches):
        K = km.sample(n, g)
        R_L = torch.randn(d, n, generator=g, dtype=torch.float64)
        R_star = R_L + eps * D * (1.0 + residual_drift * t) * torch.randn(d, n, generator=g, dtype=torch.float64)
        E = R_star - memit_share(R_L, D)
        Q = q_matrix(K, C, lam, C_p if t > 0 else None)
        Q0 = q_matrix(K, C, lam) if t > 0 else Q
        fac = residual_factor(R_star, R_L, D)
        dQ, dQ0 = E @ Q, E @ Q0
        acc += dQ
        acc0 += dQ0
        row = dict(
            cp_norm=matrix_norm(C_p), q_norm=matrix_norm(Q), q_norm_without_cp=matrix_norm(Q0),
            q_envelope=q_envelope(C, lam, C_p), key_gain=gain(Q, K), key_gain_without_cp=gain(Q0, K),
            residual_deviation=matrix_norm(R_star - R_L), deviation=matrix_norm(dQ),
            deviation_without_cp=matrix_norm(dQ0), cumulative_deviation=matrix_norm(acc),
            cumulative_deviation_without_cp=matrix_norm(acc0))
        row["bound"] = fac * row["q_norm"]
        row["bound_without_cp"] = fac * row["q_norm_without_cp"]
        for k, v in row.items():
            cols[k][t] = v
        C_p = C_p + K @ K.T
    return SequentialProfile(
        n_prev=np.arange(n_batches), **cols,
        cumulative_bound=np.cumsum(cols["bound"]), cumulative_bound_without_cp=np.cumsum(cols["bound_without_cp"]),
        params=dict(d=d, m=m, n=n, n_batches=n_batches, distance=D, seed=seed, lam=lam, eps=eps, decay=decay,
                    residual_drift=residual_drift))
