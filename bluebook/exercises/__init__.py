"""Checkers for the exercises at the end of notebooks 01-07.

Each ``check_*`` function takes the student's function, calls it on fresh random inputs (seeded, so
every run sees the same problems), compares the answer with an independent computation (bluebook's
own implementation, another formulation of the same problem, or a property the answer must have)
and returns a one-line verdict. A wrong answer raises ``AssertionError`` naming the quantity that
differs and the numbers.

In a notebook, call a checker through :func:`run`::

    import bluebook.exercises
    bluebook.exercises.run(bluebook.exercises.check_memit_update, memit_update)

It prints the verdict. A stub that still raises ``NotImplementedError`` is reported as "not
attempted yet" and ``run`` returns False, so a notebook with untouched stubs still runs from top to
bottom. Nothing here changes torch's or numpy's global random state.

=========  =================================================  ===================================
exercise   checker                                            the student writes
=========  =================================================  ===================================
1.1        :func:`check_least_squares`                        ``Ŵ = M Kᵀ (K Kᵀ)⁻¹``
1.2        :func:`check_insert_facts`                         keep ``(K₀, W K₀)``, add ``(K₁, M₁)``
2.1        :func:`check_indirect_effect`                      restored minus corrupted probability
2.2        :func:`check_best_window`                          the best window of layers
3.1        :func:`check_memit_update`                         ``Δ = R Kᵀ (λC + K Kᵀ)⁻¹``
3.2        :func:`check_rank_one_update`                      ``Δ = r uᵀ / (uᵀ k)``
4.1        :func:`check_distributed_residuals`                ``δ^L / (N_L − i)``
4.2        :func:`check_residual_measures`                    cosine, deviation, distribution error
5.1        :func:`check_theorem41`                            Theorem 4.1's deviation and bound
5.2        :func:`check_q_envelope`                           ``1 / (2 √λ_min(λC + C_p))``
6.1        :func:`check_residual_shares`                      BLUE's and MEMIT's residual shares
6.2        :func:`check_null_space_projector`                 AlphaEdit's ``P = Û Ûᵀ``
7.1        :func:`check_efficacy`                             CounterFact efficacy
7.2        :func:`check_wilson_interval`                      the Wilson interval
7.3        :func:`check_paired_bootstrap`                     a paired bootstrap interval
=========  =================================================  ===================================
"""
from __future__ import annotations

from bluebook.exercises.evaluation import check_efficacy, check_paired_bootstrap, check_wilson_interval
from bluebook.exercises.foundations import (
    check_best_window,
    check_indirect_effect,
    check_insert_facts,
    check_least_squares,
    check_memit_update,
    check_rank_one_update,
)
from bluebook.exercises.residuals import (
    check_distributed_residuals,
    check_null_space_projector,
    check_q_envelope,
    check_residual_measures,
    check_residual_shares,
    check_theorem41,
)

__all__ = [
    "run", "CHECKS",
    "check_least_squares", "check_insert_facts", "check_indirect_effect", "check_best_window",
    "check_memit_update", "check_rank_one_update", "check_distributed_residuals", "check_residual_measures",
    "check_theorem41", "check_q_envelope", "check_residual_shares", "check_null_space_projector",
    "check_efficacy", "check_wilson_interval", "check_paired_bootstrap",
]

CHECKS = (check_least_squares, check_insert_facts, check_indirect_effect, check_best_window, check_memit_update,
          check_rank_one_update, check_distributed_residuals, check_residual_measures, check_theorem41,
          check_q_envelope, check_residual_shares, check_null_space_projector, check_efficacy,
          check_wilson_interval, check_paired_bootstrap)
"""Every checker, in exercise order."""


def run(check, fn, **kwargs) -> bool:
    """Run ``check(fn, **kwargs)`` and print one line.

    Returns True when the answer is correct, and False (after printing "not attempted yet") when
    ``fn`` raises ``NotImplementedError``. A wrong answer raises ``AssertionError`` with the
    exercise number in front of the checker's message.
    """
    label = f"Exercise {check.exercise}"
    try:
        verdict = check(fn, **kwargs)
    except NotImplementedError:
        print(f"{label}: not attempted yet — fill in `{getattr(fn, '__name__', fn)}` above")
        return False
    except AssertionError as exc:
        raise AssertionError(f"{label} ({check.title}): {exc}") from exc
    print(f"{label} ({check.title}): correct — {verdict}")
    return True
