"""What the exercise checkers share: labelling, seeded random inputs, and comparisons whose failure
messages name the quantity and the numbers."""
from __future__ import annotations

import math

import numpy as np
import torch

F64 = torch.float64


def exercise(number: str, title: str):
    """Label a checker with its exercise number and title (read by :func:`bluebook.exercises.run`)."""
    def mark(check):
        check.exercise, check.title = number, title
        return check
    return mark


def generator(seed: int) -> torch.Generator:
    """A private random generator: the checkers never touch torch's global random state."""
    return torch.Generator().manual_seed(int(seed))


def randn(g: torch.Generator, *shape) -> torch.Tensor:
    """Standard normal float64 entries drawn from ``g``."""
    return torch.randn(*shape, generator=g, dtype=F64)


def spd(g: torch.Generator, m: int) -> torch.Tensor:
    """A well-conditioned key second moment ``C = X Xᵀ / N + 0.1 I`` (m × m)."""
    X = randn(g, m, 4 * m)
    return X @ X.T / X.shape[1] + 0.1 * torch.eye(m, dtype=F64)


def answer(value, name: str, shape=None) -> torch.Tensor:
    """The student's answer as a float64 CPU tensor, of the expected shape when ``shape`` is given."""
    try:
        t = value.detach() if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value, dtype=float))
        t = t.to(device="cpu", dtype=F64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise AssertionError(f"{name}: could not read your answer as an array of numbers ({exc})") from exc
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise AssertionError(f"{name}: expected shape {tuple(shape)}, got {tuple(t.shape)}")
    return t


def assert_close(got: torch.Tensor, want: torch.Tensor, what: str, rtol: float = 1e-6, atol: float = 1e-9) -> float:
    """Assert ``got ≈ want`` entrywise and return the largest difference; on failure the message gives
    the largest difference and the entry where the tolerance is exceeded most."""
    want = want.to(F64)
    err = torch.where(torch.isfinite(got), (got - want).abs(), torch.full_like(got, math.inf))
    excess = err - (atol + rtol * want.abs())
    if bool((excess > 0).any()):
        i = int(torch.argmax(excess.flatten()))
        at = tuple(int(j) for j in np.unravel_index(i, tuple(want.shape))) if want.ndim else ()
        raise AssertionError(f"{what}: max |yours − expected| = {float(err.max()):.3g} (expected entries up to "
                             f"{float(want.abs().max()):.3g}); at index {at} yours = {float(got.flatten()[i]):.6g}, "
                             f"expected {float(want.flatten()[i]):.6g}")
    return float(err.max())


def assert_number(got, want: float, what: str, rtol: float = 1e-8, atol: float = 1e-12) -> float:
    """Assert that the scalar ``got`` is close to ``want`` and return it as a float."""
    try:
        got = float(got)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{what}: expected a number, got {got!r}") from exc
    assert math.isclose(got, want, rel_tol=rtol, abs_tol=atol), f"{what}: yours {got:.8g}, expected {want:.8g}"
    return got


def assert_tuple(out, n: int, names: str):
    """Assert that the answer is a tuple (or list) of ``n`` items, named ``names`` in the message."""
    if not isinstance(out, (tuple, list)):
        raise AssertionError(f"return a tuple ({names}), got a {type(out).__name__}")
    assert len(out) == n, f"return a tuple ({names}) of {n} items, got {len(out)} items"
    return out


def rel_error(x: torch.Tensor, y: torch.Tensor) -> float:
    """``‖x‖_F / ‖y‖_F``."""
    return float(torch.linalg.matrix_norm(x) / torch.linalg.matrix_norm(y).clamp_min(1e-300))
