r"""Weight-deviation error of residual distribution (Theorem 4.1, Lemma 4.3): pure linear algebra.

Notation (``docs/notation.md``): ``K`` keys ``(m, n)``, ``C`` the key second moment ``(m, m)``,
``lam`` its weight λ (so ``K₀K₀ᵀ ≡ λC``), ``C_p`` the accumulated ``K_pK_pᵀ`` of earlier batches,
``Q = Kᵀ(λC + C_p + KKᵀ)⁻¹`` ``(n, m)``, so that every MEMIT-style update is ``Δ = R Q``.
At a critical layer ``l`` with *distance* ``D = L − l`` to the last critical layer ``L``:

* ``R_last``   = ``R^L``, the residual computed at ``L`` ``(d, n)``;
* ``R_direct`` = ``R^{l*}``, the residual computed directly at ``l`` ``(d, n)``;
* the *distributed* residual is ``R^l = R^L / (D + 1)`` (the paper's ``R^L/(L−l+1)``);
* ``Δ^{l*} = R^{l*} Q`` and ``Δ^l = R^l Q``.

Theorem 4.1 (as summarised by a secondary source; the paper's exact constant is **not verified**).
Write ``E = R^{l*} − R^L/(D+1)``. Adding and subtracting ``R^L``,

    E = (R^{l*} − R^L) + R^L · D/(D+1),

so by the triangle inequality and ``D/(D+1) ≤ D``,

    ‖E‖ ≤ ‖R^{l*} − R^L‖ + D/(D+1)·‖R^L‖ ≤ ‖R^{l*} − R^L‖ + D·‖R^L‖,

and by submultiplicativity ``‖Δ^{l*} − Δ^l‖₂ = ‖E Q‖₂ ≤ ‖E‖₂ ‖Q‖₂``. This gives two bounds, both
checked by the tests: the *tight* one with ``D/(D+1)`` (:func:`theorem41_tight_bound`) and the one
with ``D = L − l`` as summarised (:func:`theorem41_bound`). With ``ord="fro"`` the same argument
runs with Frobenius norms on the residuals and ``‖E Q‖_F ≤ ‖E‖_F ‖Q‖₂``.

Lemma 4.3 (sequential batch editing; secondary source). The summary says that ``Q`` contains the
accumulated ``K_pK_pᵀ`` and that the bound grows with ``‖K_pK_pᵀ‖₂``. What the algebra supports:

* ``C_p`` enters ``Q`` only inside the inverse, as extra regularisation. Two things provably do
  **not increase** when a PSD ``C_p`` is added: the envelope ``‖Q‖₂ ≤ 1 / (2·sqrt(λ_min(λC + C_p)))``
  (:func:`q_envelope`, valid for every ``K`` and every batch size) and the *key gain*
  ``G = Kᵀ(λC + C_p + KKᵀ)⁻¹K`` with ``0 ⪯ G ≺ I`` (:func:`key_gain`, Loewner order; ``Δ K = R G`` is
  the part of the residual actually written). Once ``C_p`` is full rank and large, ``‖Q‖₂ → 0``, so a
  bound that increases with ``‖C_p‖₂`` becomes arbitrarily loose; and ``‖C_p‖₂`` alone does not
  determine ``‖Q‖₂`` (the span of ``C_p`` matters, not only its norm).
* ``‖Q‖₂`` itself is **not monotone** in ``C_p``. Numerically (:func:`sequential_profile`), in the
  well-fitted regime MEMIT runs in (``G ≈ I``, i.e. λC weak against ``KKᵀ``) ``‖Q‖₂`` *grows* with the
  number ``t`` of earlier batches while ``t·n`` is below the key dimension ``m``: the earlier keys block
  their own directions and the current batch must be written through what is left, where its keys
  are weaker. Once the earlier keys span the key space (``t·n ≳ m``) ``C_p`` acts as a ridge and
  ``‖Q‖₂`` (hence the per-batch deviation and bound) *decays* roughly like ``1/t``, while ``G`` falls
  below ``I`` (edits are no longer fully written). With strong regularisation (large λ) ``‖Q‖₂``
  shrinks from the start.
* What grows with sequence length: ``‖C_p‖₂`` (linearly, trivially) and the *accumulated* weight
  deviation ``‖Σ_s (Δ^{l*}_s − Δ^l_s)‖₂`` when every batch is applied permanently (bounded by the sum
  of the per-batch bounds). Without ``C_p`` (plain sequential MEMIT) it keeps growing (about like
  ``√t`` for independent batches). With ``C_p`` it grows fast while ``t·n < m`` and then levels off,
  because the later per-batch deviations shrink. Growth of the per-batch residual deviation as the
  model drifts is plausible but is an empirical matter, not a consequence of ``C_p``;
  :func:`sequential_profile` exposes it only as an explicit assumption knob (``residual_drift``).

Nothing here imports transformers; all computations are float64 on CPU tensors.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from bluebook.core.solvers import memit_Q

__all__ = [
    "distributed_residual", "residual_deviation", "weight_deviation",
    "theorem41_bound", "theorem41_tight_bound", "BoundCheck", "check_bound",
    "q_norm", "q_envelope", "key_gain", "Lemma43Terms", "lemma43_terms",
    "KeyModel", "random_key_model", "SequentialProfile", "sequential_profile",
    "ToyChain", "toy_distribution_error",
]

_F64 = torch.float64


# --------------------------------------------------------------------------------------------
# helpers

def _t(x, name: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(x.shape)}")
    x = x.detach().to(device="cpu", dtype=_F64)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN/inf entries")
    return x


def _norm(X: torch.Tensor, ord) -> float:
    if ord in (2, "2", "spectral"):
        if X.numel() == 0:
            return 0.0
        return float(torch.linalg.matrix_norm(X, ord=2))
    if ord in ("fro", "frobenius"):
        return float(torch.linalg.matrix_norm(X, ord="fro"))
    raise ValueError(f"ord must be 2 (spectral) or 'fro', got {ord!r}")


def _check_distance(distance) -> int:
    if isinstance(distance, bool) or int(distance) != distance or distance < 0:
        raise ValueError(f"distance = L − l must be a non-negative integer, got {distance!r}")
    return int(distance)


def _residuals(R_direct, R_last, Q=None):
    Rd, Rl = _t(R_direct, "R_direct"), _t(R_last, "R_last")
    if Rd.shape != Rl.shape:
        raise ValueError(f"R_direct{tuple(Rd.shape)} and R_last{tuple(Rl.shape)} must have the same shape (d, n)")
    if Q is None:
        return Rd, Rl, None
    Qt = _t(Q, "Q")
    if Qt.shape[0] != Rd.shape[1]:
        raise ValueError(f"Q{tuple(Qt.shape)} must have n = {Rd.shape[1]} rows to match R (d, n)")
    return Rd, Rl, Qt


# --------------------------------------------------------------------------------------------
# Theorem 4.1

def distributed_residual(R_last, distance: int) -> torch.Tensor:
    """The distributed residual ``R^l = R^L / (L − l + 1)`` with ``distance = L − l`` (float64)."""
    D = _check_distance(distance)
    return _t(R_last, "R_last") / (D + 1)


def residual_deviation(R_direct, R_last, ord=2) -> float:
    """``‖R^{l*} − R^L‖`` (spectral by default, ``ord="fro"`` for Frobenius)."""
    Rd, Rl, _ = _residuals(R_direct, R_last)
    return _norm(Rd - Rl, ord)


def weight_deviation(R_direct, R_last, Q, distance: int, ord=2) -> float:
    """``‖Δ^{l*} − Δ^l‖ = ‖(R^{l*} − R^L/(D+1)) Q‖`` with ``D = distance = L − l``.

    ``Q`` is ``Kᵀ(λC + C_p + KKᵀ)⁻¹`` (:func:`bluebook.solvers.memit_Q`). ``ord=2`` gives the spectral
    norm, ``ord="fro"`` the Frobenius norm.
    """
    Rd, Rl, Qt = _residuals(R_direct, R_last, Q)
    D = _check_distance(distance)
    return _norm((Rd - Rl / (D + 1)) @ Qt, ord)


def _residual_factor(Rd, Rl, D, ord, tight: bool) -> float:
    coef = D / (D + 1) if tight else float(D)
    return _norm(Rd - Rl, ord) + coef * _norm(Rl, ord)


def theorem41_bound(R_direct, R_last, Q, distance: int, ord=2) -> float:
    r"""Theorem 4.1 as summarised: ``(‖R^{l*} − R^L‖ + (L−l)‖R^L‖)·‖Q‖₂``.

    Derivation (valid for any residuals and any ``Q``): with ``D = L − l``,
    ``R^{l*} − R^L/(D+1) = (R^{l*} − R^L) + R^L·D/(D+1)``; the triangle inequality gives
    ``‖·‖ ≤ ‖R^{l*} − R^L‖ + D/(D+1)‖R^L‖ ≤ ‖R^{l*} − R^L‖ + D‖R^L‖`` and submultiplicativity
    ``‖E Q‖ ≤ ‖E‖‖Q‖₂`` finishes it. The constant ``D`` (rather than ``D/(D+1)``) is the one reported
    by a secondary summary of the paper; the paper's exact statement is unverified. See
    :func:`theorem41_tight_bound` for the sharper factor. With ``ord="fro"`` the residual norms are
    Frobenius and ``‖Q‖`` stays spectral (``‖EQ‖_F ≤ ‖E‖_F‖Q‖₂``), so it bounds the Frobenius deviation.
    """
    Rd, Rl, Qt = _residuals(R_direct, R_last, Q)
    D = _check_distance(distance)
    return _residual_factor(Rd, Rl, D, ord, tight=False) * _norm(Qt, 2)


def theorem41_tight_bound(R_direct, R_last, Q, distance: int, ord=2) -> float:
    """The sharper form ``(‖R^{l*} − R^L‖ + (L−l)/(L−l+1)·‖R^L‖)·‖Q‖₂`` (≤ :func:`theorem41_bound`).

    Same derivation, stopping before ``D/(D+1) ≤ D``. At ``D = 0`` both coincide.
    """
    Rd, Rl, Qt = _residuals(R_direct, R_last, Q)
    D = _check_distance(distance)
    return _residual_factor(Rd, Rl, D, ord, tight=True) * _norm(Qt, 2)


@dataclass(frozen=True)
class BoundCheck:
    """One evaluation of Theorem 4.1.

    ``deviation`` = ``‖Δ^{l*} − Δ^l‖``; ``bound``/``tight_bound`` as in :func:`theorem41_bound` and
    :func:`theorem41_tight_bound`; ``residual_deviation`` = ``‖R^{l*} − R^L‖``; ``distance`` = ``L − l``;
    ``q_norm`` = ``‖Q‖₂``; ``holds`` = ``deviation ≤ tight_bound ≤ bound`` up to the relative tolerance.
    """
    deviation: float
    bound: float
    tight_bound: float
    residual_deviation: float
    distance: int
    q_norm: float
    holds: bool

    @property
    def tightness(self) -> float:
        """``deviation / tight_bound`` in ``[0, 1]`` when the bound holds (nan if the bound is 0)."""
        return self.deviation / self.tight_bound if self.tight_bound > 0 else float("nan")

    def to_dict(self) -> dict:
        return asdict(self)


def check_bound(K, C, lam: float, R_direct, R_last, distance: int, C_p=None, ord=2,
                rtol: float = 1e-9) -> BoundCheck:
    """Compute ``Q = memit_Q(K, C, lam, C_p)`` and evaluate deviation and both bounds of Theorem 4.1."""
    Q = memit_Q(_t(K, "K"), _t(C, "C"), lam, None if C_p is None else _t(C_p, "C_p"))
    Rd, Rl, Qt = _residuals(R_direct, R_last, Q)
    D = _check_distance(distance)
    dev = _norm((Rd - Rl / (D + 1)) @ Qt, ord)
    qn = _norm(Qt, 2)
    bound = _residual_factor(Rd, Rl, D, ord, tight=False) * qn
    tight = _residual_factor(Rd, Rl, D, ord, tight=True) * qn
    holds = dev <= tight * (1 + rtol) and tight <= bound * (1 + rtol)
    return BoundCheck(deviation=dev, bound=bound, tight_bound=tight,
                      residual_deviation=_norm(Rd - Rl, ord), distance=D, q_norm=qn, holds=bool(holds))


# --------------------------------------------------------------------------------------------
# Lemma 4.3 (sequential)

def q_norm(K, C, lam: float, C_p=None) -> float:
    """``‖Q‖₂`` with ``Q = Kᵀ(λC + C_p + KKᵀ)⁻¹``."""
    return _norm(memit_Q(_t(K, "K"), _t(C, "C"), lam, None if C_p is None else _t(C_p, "C_p")), 2)


def q_envelope(C, lam: float, C_p=None) -> float:
    r"""Universal envelope ``‖Q‖₂ ≤ 1 / (2·sqrt(λ_min(λC + C_p)))``, valid for every ``K`` and batch size.

    With ``B = λC + C_p ≻ 0`` and ``K̃ = B^{-1/2}K``: ``λC + C_p + KKᵀ = B^{1/2}(I + K̃K̃ᵀ)B^{1/2}``, so
    ``Q = K̃ᵀ(I + K̃K̃ᵀ)⁻¹B^{-1/2}``, whose first factor has singular values ``σ/(1+σ²) ≤ 1/2``.
    By Weyl's inequality the envelope is non-increasing when ``C_p ⪰ 0`` is added. Returns ``inf`` if
    ``B`` is singular.
    """
    B = lam * _t(C, "C")
    if C_p is not None:
        B = B + _t(C_p, "C_p")
    lmin = float(torch.linalg.eigvalsh((B + B.T) / 2)[0])
    return float("inf") if lmin <= 0 else 0.5 / lmin ** 0.5


def key_gain(K, C, lam: float, C_p=None) -> float:
    """``‖G‖₂`` with ``G = Kᵀ(λC + C_p + KKᵀ)⁻¹K = Q K`` (``n × n``), so ``Δ K = R G``.

    ``0 ⪯ G ≺ I`` (eigenvalues ``σ²/(1+σ²)``), and ``G`` is non-increasing in ``C_p`` (Loewner):
    ``A + C_p ⪰ A ⇒ (A + C_p)⁻¹ ⪯ A⁻¹``. ``‖G‖₂ ≈ 1`` means the edits are written (almost) exactly.
    """
    Kt = _t(K, "K")
    Q = memit_Q(Kt, _t(C, "C"), lam, None if C_p is None else _t(C_p, "C_p"))
    G = Q @ Kt
    return float(torch.linalg.eigvalsh((G + G.T) / 2)[-1])


@dataclass(frozen=True)
class Lemma43Terms:
    """``‖Q‖₂`` with and without ``C_p``, ``‖C_p‖₂``, and the provably monotone companions."""
    q_norm: float
    q_norm_without_cp: float
    cp_norm: float
    q_envelope: float
    q_envelope_without_cp: float
    key_gain: float
    key_gain_without_cp: float

    @property
    def q_ratio(self) -> float:
        """``‖Q(C_p)‖₂ / ‖Q(0)‖₂``: > 1 means folding in the earlier batches *increased* ``‖Q‖₂``."""
        return self.q_norm / self.q_norm_without_cp if self.q_norm_without_cp > 0 else float("nan")

    def to_dict(self) -> dict:
        return asdict(self)


def lemma43_terms(K, C, lam: float, C_p) -> Lemma43Terms:
    """The quantities behind Lemma 4.3 for one batch ``K`` after earlier batches ``C_p = Σ K_sK_sᵀ``.

    Provable: ``q_envelope ≤ q_envelope_without_cp`` and ``key_gain ≤ key_gain_without_cp``.
    Not provable, and false in general: ``q_norm`` vs ``q_norm_without_cp`` can go either way (see the
    module docstring and ``docs/notation.md``).
    """
    Kt, Ct = _t(K, "K"), _t(C, "C")
    Cp = None if C_p is None else _t(C_p, "C_p")
    return Lemma43Terms(
        q_norm=q_norm(Kt, Ct, lam, Cp), q_norm_without_cp=q_norm(Kt, Ct, lam),
        cp_norm=0.0 if Cp is None else _norm(Cp, 2),
        q_envelope=q_envelope(Ct, lam, Cp), q_envelope_without_cp=q_envelope(Ct, lam),
        key_gain=key_gain(Kt, Ct, lam, Cp), key_gain_without_cp=key_gain(Kt, Ct, lam),
    )


# --------------------------------------------------------------------------------------------
# random problems for the toy experiments

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
        g = torch.randn(self.m, n, generator=generator, dtype=_F64)
        return (self.U * self.s.sqrt()) @ g


def random_key_model(m: int, generator: torch.Generator, decay: float = 2.0) -> KeyModel:
    """Random orthonormal ``U`` and a log-spaced spectrum ``s`` from 1 down to ``10^-decay``."""
    U, _ = torch.linalg.qr(torch.randn(m, m, generator=generator, dtype=_F64))
    s = torch.logspace(0, -decay, m, dtype=_F64)
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
    the batch size ``n``. It does *not* simply grow with ``n_prev_batches`` (see the module docstring;
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
        C_p = torch.zeros(m, m, dtype=_F64)
        for _ in range(n_prev_batches):
            Ks = km.sample(n, g)
            C_p += Ks @ Ks.T
    K = km.sample(n, g)
    Q = memit_Q(K, C, lam, C_p)
    qn = _norm(Q, 2)
    R_L = torch.randn(d, n, generator=g, dtype=_F64)
    dist = np.arange(n_layers - 1, -1, -1)
    dev, bnd, tb, rdev = (np.empty(n_layers) for _ in range(4))
    for i, D in enumerate(dist):
        R_star = R_L + eps * float(D) * torch.randn(d, n, generator=g, dtype=_F64)
        dev[i] = _norm((R_star - R_L / (D + 1)) @ Q, 2)
        bnd[i] = _residual_factor(R_star, R_L, int(D), 2, tight=False) * qn
        tb[i] = _residual_factor(R_star, R_L, int(D), 2, tight=True) * qn
        rdev[i] = _norm(R_star - R_L, 2)
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
    D = _check_distance(distance)
    if n_batches < 1:
        raise ValueError(f"n_batches must be >= 1, got {n_batches}")
    if lam <= 0:
        raise ValueError(f"lam must be > 0, got {lam}")
    g = _gen(seed)
    km = random_key_model(m, g, decay)
    C = km.C
    C_p = torch.zeros(m, m, dtype=_F64)
    acc = torch.zeros(d, m, dtype=_F64)
    acc0 = torch.zeros(d, m, dtype=_F64)
    cols = {k: np.empty(n_batches) for k in (
        "cp_norm", "q_norm", "q_norm_without_cp", "q_envelope", "key_gain", "key_gain_without_cp",
        "residual_deviation", "deviation", "deviation_without_cp", "bound", "bound_without_cp",
        "cumulative_deviation", "cumulative_deviation_without_cp")}
    for t in range(n_batches):
        K = km.sample(n, g)
        R_L = torch.randn(d, n, generator=g, dtype=_F64)
        R_star = R_L + eps * D * (1.0 + residual_drift * t) * torch.randn(d, n, generator=g, dtype=_F64)
        E = R_star - R_L / (D + 1)
        Q = memit_Q(K, C, lam, C_p if t > 0 else None)
        Q0 = memit_Q(K, C, lam)
        fac = _residual_factor(R_star, R_L, D, 2, tight=False)
        dQ, dQ0 = E @ Q, E @ Q0
        acc += dQ
        acc0 += dQ0
        row = dict(
            cp_norm=_norm(C_p, 2), q_norm=_norm(Q, 2), q_norm_without_cp=_norm(Q0, 2),
            q_envelope=q_envelope(C, lam, C_p), key_gain=_sym_top(Q @ K), key_gain_without_cp=_sym_top(Q0 @ K),
            residual_deviation=_norm(R_star - R_L, 2), deviation=_norm(dQ, 2), deviation_without_cp=_norm(dQ0, 2),
            cumulative_deviation=_norm(acc, 2), cumulative_deviation_without_cp=_norm(acc0, 2))
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


def _sym_top(G: torch.Tensor) -> float:
    return float(torch.linalg.eigvalsh((G + G.T) / 2)[-1])
