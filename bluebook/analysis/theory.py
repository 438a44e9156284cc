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
* ``‖Q‖₂`` itself is **not monotone** in ``C_p``. Numerically (:func:`~bluebook.analysis.toy.sequential_profile`),
  in the well-fitted regime MEMIT runs in (``G ≈ I``, i.e. λC weak against ``KKᵀ``) ``‖Q‖₂`` *grows* with the
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
  :func:`~bluebook.analysis.toy.sequential_profile` exposes it only as an explicit assumption knob
  (``residual_drift``).

Nothing here imports transformers; all computations are float64 on CPU tensors. ``Q`` is always
:func:`bluebook.core.solvers.memit_Q`; the functions taking ``Q`` (:func:`evaluate_bound`,
:func:`gain`) let callers that already hold it reuse it. The random toy problems built on these
quantities are in :mod:`bluebook.analysis.toy`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from bluebook.core.distribute import memit_share
from bluebook.core.solvers import memit_Q

__all__ = [
    "as_f64", "matrix_norm", "check_distance", "distributed_residual", "residual_deviation", "weight_deviation",
    "residual_factor", "theorem41_bound", "theorem41_tight_bound", "BoundCheck", "evaluate_bound", "check_bound",
    "q_matrix", "q_norm", "q_envelope", "gain", "key_gain", "Lemma43Terms", "lemma43_terms",
]


# --------------------------------------------------------------------------------------------
# inputs and norms

def as_f64(x, name: str) -> torch.Tensor:
    """``x`` as a finite 2-D float64 CPU tensor (``ValueError`` naming ``name`` otherwise)."""
    x = torch.as_tensor(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(x.shape)}")
    x = x.detach().to(device="cpu", dtype=torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN/inf entries")
    return x


def matrix_norm(X: torch.Tensor, ord=2) -> float:
    """Spectral (``ord=2``, the default; 0 for an empty matrix) or Frobenius (``ord="fro"``) norm."""
    if ord in (2, "2", "spectral"):
        if X.numel() == 0:
            return 0.0
        return float(torch.linalg.matrix_norm(X, ord=2))
    if ord in ("fro", "frobenius"):
        return float(torch.linalg.matrix_norm(X, ord="fro"))
    raise ValueError(f"ord must be 2 (spectral) or 'fro', got {ord!r}")


def check_distance(distance) -> int:
    """``distance = L − l`` as an ``int`` (``ValueError`` unless a non-negative integer)."""
    if isinstance(distance, bool) or int(distance) != distance or distance < 0:
        raise ValueError(f"distance = L − l must be a non-negative integer, got {distance!r}")
    return int(distance)


def _residuals(R_direct, R_last, Q=None):
    Rd, Rl = as_f64(R_direct, "R_direct"), as_f64(R_last, "R_last")
    if Rd.shape != Rl.shape:
        raise ValueError(f"R_direct{tuple(Rd.shape)} and R_last{tuple(Rl.shape)} must have the same shape (d, n)")
    if Q is None:
        return Rd, Rl, None
    Qt = as_f64(Q, "Q")
    if Qt.shape[0] != Rd.shape[1]:
        raise ValueError(f"Q{tuple(Qt.shape)} must have n = {Rd.shape[1]} rows to match R (d, n)")
    return Rd, Rl, Qt


# --------------------------------------------------------------------------------------------
# Theorem 4.1

def distributed_residual(R_last, distance: int) -> torch.Tensor:
    """The distributed residual ``R^l = R^L / (L − l + 1)`` with ``distance = L − l`` (float64)."""
    return memit_share(as_f64(R_last, "R_last"), check_distance(distance))


def residual_deviation(R_direct, R_last, ord=2) -> float:
    """``‖R^{l*} − R^L‖`` (spectral by default, ``ord="fro"`` for Frobenius)."""
    Rd, Rl, _ = _residuals(R_direct, R_last)
    return matrix_norm(Rd - Rl, ord)


def weight_deviation(R_direct, R_last, Q, distance: int, ord=2) -> float:
    """``‖Δ^{l*} − Δ^l‖ = ‖(R^{l*} − R^L/(D+1)) Q‖`` with ``D = distance = L − l``.

    ``Q`` is ``Kᵀ(λC + C_p + KKᵀ)⁻¹`` (:func:`bluebook.core.solvers.memit_Q`). ``ord=2`` gives the
    spectral norm, ``ord="fro"`` the Frobenius norm.
    """
    Rd, Rl, Qt = _residuals(R_direct, R_last, Q)
    D = check_distance(distance)
    return matrix_norm((Rd - memit_share(Rl, D)) @ Qt, ord)


def residual_factor(R_direct, R_last, distance: int, ord=2, tight: bool = False) -> float:
    """The residual factor of Theorem 4.1, ``‖R^{l*} − R^L‖ + c·‖R^L‖`` with ``c = D`` (as
    summarised) or, with ``tight=True``, ``c = D/(D+1)``; the bound is this times ``‖Q‖₂``."""
    Rd, Rl, _ = _residuals(R_direct, R_last)
    D = check_distance(distance)
    coef = D / (D + 1) if tight else float(D)
    return matrix_norm(Rd - Rl, ord) + coef * matrix_norm(Rl, ord)


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
    _, _, Qt = _residuals(R_direct, R_last, Q)
    return residual_factor(R_direct, R_last, distance, ord, tight=False) * matrix_norm(Qt)


def theorem41_tight_bound(R_direct, R_last, Q, distance: int, ord=2) -> float:
    """The sharper form ``(‖R^{l*} − R^L‖ + (L−l)/(L−l+1)·‖R^L‖)·‖Q‖₂`` (≤ :func:`theorem41_bound`).

    Same derivation, stopping before ``D/(D+1) ≤ D``. At ``D = 0`` both coincide.
    """
    _, _, Qt = _residuals(R_direct, R_last, Q)
    return residual_factor(R_direct, R_last, distance, ord, tight=True) * matrix_norm(Qt)


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


def evaluate_bound(Q, R_direct, R_last, distance: int, ord=2, rtol: float = 1e-9) -> BoundCheck:
    """Deviation and both bounds of Theorem 4.1 for a given ``Q`` (e.g. one :func:`q_matrix` reused)."""
    Rd, Rl, Qt = _residuals(R_direct, R_last, Q)
    D = check_distance(distance)
    dev = matrix_norm((Rd - memit_share(Rl, D)) @ Qt, ord)
    qn = matrix_norm(Qt)
    bound = residual_factor(Rd, Rl, D, ord, tight=False) * qn
    tight = residual_factor(Rd, Rl, D, ord, tight=True) * qn
    holds = dev <= tight * (1 + rtol) and tight <= bound * (1 + rtol)
    return BoundCheck(deviation=dev, bound=bound, tight_bound=tight, residual_deviation=matrix_norm(Rd - Rl, ord),
                      distance=D, q_norm=qn, holds=bool(holds))


def check_bound(K, C, lam: float, R_direct, R_last, distance: int, C_p=None, ord=2,
                rtol: float = 1e-9) -> BoundCheck:
    """Compute ``Q = memit_Q(K, C, lam, C_p)`` and evaluate deviation and both bounds of Theorem 4.1."""
    return evaluate_bound(q_matrix(K, C, lam, C_p), R_direct, R_last, distance, ord=ord, rtol=rtol)


# --------------------------------------------------------------------------------------------
# Lemma 4.3 (sequential)

def q_matrix(K, C, lam: float, C_p=None) -> torch.Tensor:
    """``Q = Kᵀ(λC + C_p + KKᵀ)⁻¹`` ``(n, m)``: :func:`bluebook.core.solvers.memit_Q` on float64 CPU inputs."""
    return memit_Q(as_f64(K, "K"), as_f64(C, "C"), lam, None if C_p is None else as_f64(C_p, "C_p"))


def q_norm(K, C, lam: float, C_p=None) -> float:
    """``‖Q‖₂`` with ``Q = Kᵀ(λC + C_p + KKᵀ)⁻¹``."""
    return matrix_norm(q_matrix(K, C, lam, C_p))


def q_envelope(C, lam: float, C_p=None) -> float:
    r"""Universal envelope ``‖Q‖₂ ≤ 1 / (2·sqrt(λ_min(λC + C_p)))``, valid for every ``K`` and batch size.

    With ``B = λC + C_p ≻ 0`` and ``K̃ = B^{-1/2}K``: ``λC + C_p + KKᵀ = B^{1/2}(I + K̃K̃ᵀ)B^{1/2}``, so
    ``Q = K̃ᵀ(I + K̃K̃ᵀ)⁻¹B^{-1/2}``, whose first factor has singular values ``σ/(1+σ²) ≤ 1/2``.
    By Weyl's inequality the envelope is non-increasing when ``C_p ⪰ 0`` is added. Returns ``inf`` if
    ``B`` is singular.
    """
    B = lam * as_f64(C, "C")
    if C_p is not None:
        B = B + as_f64(C_p, "C_p")
    lmin = float(torch.linalg.eigvalsh((B + B.T) / 2)[0])
    return float("inf") if lmin <= 0 else 0.5 / lmin ** 0.5


def gain(Q, K) -> float:
    """``‖G‖₂`` for ``G = Q K`` (``n × n``): the largest eigenvalue of its symmetric part."""
    G = as_f64(Q, "Q") @ as_f64(K, "K")
    return float(torch.linalg.eigvalsh((G + G.T) / 2)[-1])


def key_gain(K, C, lam: float, C_p=None) -> float:
    """``‖G‖₂`` with ``G = Kᵀ(λC + C_p + KKᵀ)⁻¹K = Q K`` (``n × n``), so ``Δ K = R G``.

    ``0 ⪯ G ≺ I`` (eigenvalues ``σ²/(1+σ²)``), and ``G`` is non-increasing in ``C_p`` (Loewner):
    ``A + C_p ⪰ A ⇒ (A + C_p)⁻¹ ⪯ A⁻¹``. ``‖G‖₂ ≈ 1`` means the edits are written (almost) exactly.
    """
    return gain(q_matrix(K, C, lam, C_p), K)


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
    Q, Q0 = q_matrix(K, C, lam, C_p), q_matrix(K, C, lam)
    return Lemma43Terms(
        q_norm=matrix_norm(Q), q_norm_without_cp=matrix_norm(Q0),
        cp_norm=0.0 if C_p is None else matrix_norm(as_f64(C_p, "C_p")),
        q_envelope=q_envelope(C, lam, C_p), q_envelope_without_cp=q_envelope(C, lam),
        key_gain=gain(Q, K), key_gain_without_cp=gain(Q0, K),
    )
