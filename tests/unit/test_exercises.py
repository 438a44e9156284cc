"""The exercises at the end of notebooks 01-07: the checkers in ``bluebook.exercises``, the solutions
in ``notebooks/solutions/`` and the exercise cells that end each notebook (from its ``## Exercises``
markdown cell to the end).

* every solution passes its checker (and quickly);
* for every checker, deliberately wrong answers (a sign flip, a missing term, a swapped output, an
  unpaired resample, ...) fail with ``AssertionError``, so the checker can fail;
* an untouched stub (``raise NotImplementedError``) makes ``run`` print "not attempted yet" and
  return False without raising;
* the exercise cells name existing checkers, each exercise there has a solution with the same
  signature, the cells run on their own, and they are the notebook's last cells.
"""
from __future__ import annotations

import ast
import inspect
import math
import re
import runpy
import time
from pathlib import Path
from statistics import NormalDist

import jupytext
import numpy as np
import pytest
import torch
from jupytext.config import find_jupytext_configuration_file, load_jupytext_configuration_file

import bluebook.exercises as ex

ROOT = Path(__file__).resolve().parents[2]
NB_DIR = ROOT / "notebooks"
SOL_DIR = NB_DIR / "solutions"
EXERCISES_MARK = "# %% [markdown]\n# ## Exercises\n"
SOLUTIONS = sorted(SOL_DIR.glob("[0-9][0-9]_*_solutions.py"))
RUN_CALL = re.compile(r"bluebook\.exercises\.run\(bluebook\.exercises\.(check_\w+), (\w+)\)")
FORBIDDEN = ("sys.path", "%cd", "os.chdir", "autoreload", "../shared", ".cuda()")   # the notebook hygiene rules


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    # tiny matrices: thread start-up dominates and contends with anything else running on the machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def solutions() -> dict[str, dict]:
    """Each solutions file executed once (its check cells run too): ``{stem: namespace}``."""
    return {p.stem.removesuffix("_solutions"): runpy.run_path(str(p)) for p in SOLUTIONS}


def split_notebook(stem: str) -> tuple[str, str]:
    """A notebook's source before its exercises, and its exercise cells (the ``## Exercises``
    markdown cell to the end of the file)."""
    source = (NB_DIR / f"{stem}.py").read_text()
    assert source.count(EXERCISES_MARK) == 1, f"{stem}: expected one '## Exercises' section"
    head, tail = source.split(EXERCISES_MARK)
    return head, EXERCISES_MARK + tail


def staged_blocks() -> dict[str, str]:
    """``{notebook stem: its exercise cells}`` for every notebook that has a solutions file."""
    return {p.stem.removesuffix("_solutions"): split_notebook(p.stem.removesuffix("_solutions"))[1]
            for p in SOLUTIONS}


def pairs(text: str) -> list[tuple[str, str]]:
    """The ``(checker, function)`` pairs of every ``bluebook.exercises.run`` call in ``text``."""
    return RUN_CALL.findall(text)


def solution_pairs() -> list[tuple[str, str, str]]:
    return [(p.stem.removesuffix("_solutions"), c, f) for p in SOLUTIONS for c, f in pairs(p.read_text())]


# --------------------------------------------------------------------------------------------
# (a) the solutions pass

def test_there_is_a_solutions_file_for_notebooks_01_to_07():
    stems = [p.stem.removesuffix("_solutions") for p in SOLUTIONS]
    assert [s[:2] for s in stems] == [f"{i:02d}" for i in range(1, 8)], stems
    for s in stems:
        assert (NB_DIR / f"{s}.py").exists(), f"{s}_solutions.py names no notebook"


def test_every_checker_is_solved_exactly_once():
    named = [c for _, c, _ in solution_pairs()]
    assert sorted(named) == sorted(c.__name__ for c in ex.CHECKS), named
    assert all(getattr(ex, c) in ex.CHECKS for c in named)
    assert {n for n in dir(ex) if n.startswith("check_")} == {c.__name__ for c in ex.CHECKS}
    numbers = [c.exercise for c in ex.CHECKS]
    assert len(set(numbers)) == len(numbers) and all(re.fullmatch(r"[1-7]\.[1-3]", n) for n in numbers), numbers


@pytest.mark.parametrize("stem,check,fn", solution_pairs(), ids=lambda x: str(x))
def test_solution_passes_its_checker(solutions, stem, check, fn, capsys):
    checker = getattr(ex, check)
    assert checker.exercise.startswith(str(int(stem[:2])) + "."), (stem, checker.exercise)
    t0 = time.perf_counter()
    verdict = checker(solutions[stem][fn])
    assert time.perf_counter() - t0 < 10, "a check must take well under 10 s"
    assert isinstance(verdict, str) and verdict and "\n" not in verdict
    capsys.readouterr()
    assert ex.run(checker, solutions[stem][fn]) is True
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"Exercise {checker.exercise} (") and "correct" in line, line


@pytest.mark.parametrize("check", ex.CHECKS, ids=lambda c: c.__name__)
def test_checkers_leave_the_global_random_state_alone(solutions, check):
    fn = next(solutions[s][f] for s, c, f in solution_pairs() if c == check.__name__)
    t_state, np_state = torch.get_rng_state(), np.random.get_state()
    check(fn, seed=3)                                        # another seed works as well
    assert torch.equal(t_state, torch.get_rng_state())
    assert np.array_equal(np_state[1], np.random.get_state()[1]) and np_state[2] == np.random.get_state()[2]


# --------------------------------------------------------------------------------------------
# (b) wrong answers fail

def _memit(K, R, C, lam):
    return torch.linalg.solve(lam * C + K @ K.T, K @ R.T).T


def _wald(k, n, conf=0.95):
    z, p = NormalDist().inv_cdf(0.5 + conf / 2), k / n
    h = z * math.sqrt(p * (1 - p) / n)
    return p - h, p + h


def _bootstrap(a, b, n_resamples=2000, confidence=0.95, seed=0, paired=True):
    a, b = np.asarray(a, float), np.asarray(b, float)
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, a.size, (n_resamples, a.size))
    ib = ia if paired else rng.integers(0, a.size, (n_resamples, a.size))
    means = a[ia].mean(1) - b[ib].mean(1)
    lo, hi = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(np.mean(a - b)), float(lo), float(hi)


def _window(curve, width, min_layer=0, ties_late=False):
    sums = [(sum(curve[s:s + width]), s) for s in range(min_layer, len(curve) - width + 1)]
    start = max(sums, key=lambda t: (t[0], t[1] if ties_late else -t[1]))[1]
    return list(range(start, start + width))


def _eig_projector(C, threshold, keep_small=True):
    w, U = torch.linalg.eigh(C)
    U0 = U[:, w < threshold] if keep_small else U[:, w >= threshold]
    return U0 @ U0.T


def _measures(dL, direct, swap=False):
    n = direct.shape[0]
    share = torch.stack([dL / (n - i) for i in range(n)])
    cos = torch.nn.functional.cosine_similarity(share, direct, dim=1)
    dev, err = (direct - dL).norm(dim=1), (share - direct).norm(dim=1)
    return (cos, err, dev) if swap else (cos, dev, err)


def _spec(X):
    return float(torch.linalg.matrix_norm(X, ord=2))


WRONG = {
    "check_least_squares": [
        lambda K, M: M @ K.T / K.shape[1],                                   # C in place of K Kᵀ, no solve
        lambda K, M: torch.linalg.solve(K @ K.T, K @ M.T),                   # forgot the transpose
        lambda K, M: -torch.linalg.solve(K @ K.T, K @ M.T).T,                # sign flip
    ],
    "check_insert_facts": [
        lambda W, K0, K1, M1: torch.linalg.solve(K0 @ K0.T + K1 @ K1.T, K1 @ (M1 - W @ K1).T).T,  # Δ, not Ŵ
        lambda W, K0, K1, M1: W + (M1 - W @ K1) @ torch.linalg.pinv(K1),     # old keys ignored
    ],
    "check_indirect_effect": [
        lambda pc, pr: pr.mean(-1),                                          # corrupted run not subtracted
        lambda pc, pr: pr.mean(-1) - pc.min(),                               # wrong baseline
        lambda pc, pr: (pr.mean(-1) - pc.mean()).T,                          # transposed
    ],
    "check_best_window": [
        lambda c, w, lo: _window(c, w, 0),                                   # min_layer ignored
        lambda c, w, lo: _window(c, w, lo, ties_late=True),                  # latest window on ties
        lambda c, w, lo: _window(c, w, lo)[1:] + [_window(c, w, lo)[-1] + 1],  # off by one
    ],
    "check_memit_update": [
        lambda K, R, C, lam: torch.linalg.solve(lam * C, K @ R.T).T,         # K Kᵀ missing
        lambda K, R, C, lam: -_memit(K, R, C, lam),                          # sign flip
        lambda K, R, C, lam: torch.linalg.solve(C + K @ K.T, K @ R.T).T,     # λ forgotten
    ],
    "check_rank_one_update": [
        lambda k, r, C: torch.outer(r, k) / (k @ k),                         # u = k/‖k‖: Δk = r, but not C-optimal
        lambda k, r, C: torch.outer(r, torch.linalg.solve(C, k) / torch.linalg.solve(C, k).norm()),  # no 1/(uᵀk)
        lambda k, r, C: torch.outer(r, torch.linalg.solve(C, k)) / (1.0 + k @ torch.linalg.solve(C, k)),  # λ = 1
    ],
    "check_distributed_residuals": [
        lambda dL, n: torch.stack([dL / (i + 1) for i in range(n)]),          # reversed
        lambda dL, n: torch.stack([dL / n for _ in range(n)]),                # an even 1/N_L split
        lambda dL, n: torch.stack([dL / (n - i + 1) for i in range(n)]),      # off by one
    ],
    "check_residual_measures": [
        lambda dL, direct: _measures(dL, direct, swap=True),                  # deviation and error swapped
        lambda dL, direct: _measures(dL, direct)[:2],                         # a missing output
        lambda dL, direct: (1 - _measures(dL, direct)[0],) + _measures(dL, direct)[1:],  # a distance, not a cosine
    ],
    "check_theorem41": [
        lambda Rd, Rl, Q, D: (float(torch.linalg.matrix_norm((Rd - Rl / (D + 1)) @ Q)),       # Frobenius norms
                              (float(torch.linalg.matrix_norm(Rd - Rl)) + D * float(torch.linalg.matrix_norm(Rl)))
                              * float(torch.linalg.matrix_norm(Q))),
        lambda Rd, Rl, Q, D: (_spec((Rd - Rl / (D + 1)) @ Q),                                  # D/(D+1), not D
                              (_spec(Rd - Rl) + D / (D + 1) * _spec(Rl)) * _spec(Q)),
        lambda Rd, Rl, Q, D: (_spec((Rd - Rl) @ Q), (_spec(Rd - Rl) + D * _spec(Rl)) * _spec(Q)),  # undistributed
    ],
    "check_q_envelope": [
        lambda C, lam, Cp: 1 / math.sqrt(float(torch.linalg.eigvalsh(lam * C + (0 if Cp is None else Cp))[0])),
        lambda C, lam, Cp: 0.5 / math.sqrt(float(torch.linalg.eigvalsh(lam * C + (0 if Cp is None else Cp))[-1])),
        lambda C, lam, Cp: 0.5 / math.sqrt(float(torch.linalg.eigvalsh(lam * C)[0])),          # C_p ignored
    ],
    "check_residual_shares": [
        lambda n, m: [1 / (n - i) for i in range(n)] if m == "memit" else [0.5] + [0.0] * (n - 2) + [0.5],
        lambda n, m: [1 / n] * n if m == "memit" else [1.0] + [0.0] * (n - 2) + [1.0],
        lambda n, m: [1 / (i + 1) for i in range(n)] if m == "memit" else [1.0] + [0.0] * (n - 2) + [1.0],
    ],
    "check_null_space_projector": [
        lambda C, t: _eig_projector(C, t, keep_small=False),                  # the range, not the null space
        lambda C, t: torch.eye(C.shape[0], dtype=C.dtype),                    # no projection at all
        lambda C, t: torch.linalg.eigh(C)[1][:, torch.linalg.eigh(C)[0] < t],  # Û, not Û Ûᵀ
    ],
    "check_efficacy": [
        lambda pn, pt: 100 * float(np.mean([a > b for x, y in zip(pn, pt) for a, b in zip(x, y)])),  # flat mean
        lambda pn, pt: 100 * float(np.mean([np.mean([a >= b for a, b in zip(x, y)]) for x, y in zip(pn, pt)])),
        lambda pn, pt: float(np.mean([np.mean([a > b for a, b in zip(x, y)]) for x, y in zip(pn, pt)])),  # no ×100
    ],
    "check_wilson_interval": [
        _wald,
        lambda k, n, conf=0.95: _wald(k + 2, n + 4, conf),                    # Agresti–Coull-like shortcut
        lambda k, n, conf=0.95: tuple(np.clip(_wald(k, n, conf), 0, 1)),
    ],
    "check_paired_bootstrap": [
        lambda a, b, n, c, s: _bootstrap(a, b, n, c, s, paired=False),        # a and b resampled separately
        lambda a, b, n, c, s: (float(np.mean(b - a)),) + _bootstrap(a, b, n, c, s)[1:],  # b − a
        lambda a, b, n, c, s: _bootstrap(a, b, n, c, s)[:1] + (-0.01, 0.3),   # an interval made up
    ],
}


def test_every_checker_has_wrong_answers():
    assert set(WRONG) == {c.__name__ for c in ex.CHECKS}


@pytest.mark.parametrize("name,i", [(n, i) for n, fns in WRONG.items() for i in range(len(fns))],
                         ids=lambda x: str(x))
def test_a_wrong_answer_fails_the_checker(name, i):
    check = getattr(ex, name)
    with pytest.raises(AssertionError) as err:
        check(WRONG[name][i])
    assert str(err.value), "the failure must say what differs"
    with pytest.raises(AssertionError, match=rf"^Exercise {re.escape(check.exercise)} \("):
        ex.run(check, WRONG[name][i])


def test_failure_messages_give_the_numbers():
    with pytest.raises(AssertionError, match=r"Δ .*stacked least-squares.*max \|yours − expected\| = [0-9.e+-]+"):
        ex.check_memit_update(WRONG["check_memit_update"][1])
    with pytest.raises(AssertionError, match=r"high end for 0/10 at 95%: yours 0, expected 0\.27"):
        ex.check_wilson_interval(_wald)
    with pytest.raises(AssertionError, match=r"expected shape \(5, 12\), got \(12, 5\)"):
        ex.check_least_squares(WRONG["check_least_squares"][1])


# --------------------------------------------------------------------------------------------
# (c) an untouched stub is "not attempted yet"

@pytest.mark.parametrize("check", ex.CHECKS, ids=lambda c: c.__name__)
def test_a_stub_is_not_attempted_yet(check, capsys):
    def my_fn(*args, **kwargs):
        raise NotImplementedError

    assert ex.run(check, my_fn) is False
    out = capsys.readouterr().out.strip()
    assert out == f"Exercise {check.exercise}: not attempted yet — fill in `my_fn` above", out


# --------------------------------------------------------------------------------------------
# (d) the staged cells

def test_the_staged_cells_cover_notebooks_01_to_07_and_every_checker():
    blocks = staged_blocks()
    assert list(blocks) == [p.stem.removesuffix("_solutions") for p in SOLUTIONS], list(blocks)
    named = [c for code in blocks.values() for c, _ in pairs(code)]
    assert sorted(named) == sorted(c.__name__ for c in ex.CHECKS), named
    used = {n for code in blocks.values() for n in re.findall(r"bluebook\.exercises\.(\w+)", code)}
    assert used <= set(ex.__all__), used - set(ex.__all__)


@pytest.mark.parametrize("stem", sorted(staged_blocks()), ids=str)
def test_staged_cells_match_the_solutions(stem, solutions):
    code = staged_blocks()[stem]
    sol = (SOL_DIR / f"{stem}_solutions.py").read_text()
    assert pairs(code) == pairs(sol), f"{stem}: the notebook's exercises and the solutions check different functions"
    ns = solutions[stem]
    stubs = {n.name: n for n in ast.parse(code).body if isinstance(n, ast.FunctionDef)}
    assert sorted(stubs) == sorted(f for _, f in pairs(code)), f"{stem}: every check needs exactly one stub"
    for name, node in stubs.items():
        assert name in ns, f"{stem}: exercise function {name} has no solution"
        stub_args = [a.arg for a in node.args.args]
        assert stub_args == list(inspect.signature(ns[name]).parameters), f"{stem}: {name} signatures differ"
        body = [b for b in node.body if not (isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant))]
        assert len(body) == 1 and isinstance(body[0], ast.Raise) and "NotImplementedError" in ast.unparse(body[0])
        assert ast.get_docstring(node), f"{stem}: the stub {name} needs a docstring saying what to return"


@pytest.mark.parametrize("stem", sorted(staged_blocks()), ids=str)
def test_staged_cells_run_on_their_own(stem, capsys):
    """Executed with nothing but a fresh namespace: every check cell says "not attempted yet"."""
    cells = jupytext.reads(staged_blocks()[stem], fmt="py:percent").cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith("## Exercises")
    code = cells[1:]
    checks = pairs("".join(c.source for c in code))
    assert [c.cell_type for c in code] == ["code"] * len(code) and len(code) == 2 * len(checks), \
        f"{stem}: after the markdown cell, one stub cell and one check cell per exercise"
    for num in (getattr(ex, c).exercise for c, _ in checks):
        assert f"**Exercise {num} " in cells[0].source, f"{stem}: exercise {num} is not stated"
    ns: dict = {}
    values = []
    for c in code:
        exec(compile(c.source, f"<{stem} exercise cell>", "exec"), ns)
        last = ast.parse(c.source).body[-1]
        if isinstance(last, ast.Expr):
            values.append(eval(compile(ast.Expression(last.value), "<cell value>", "eval"), ns))
    assert values == [False] * len(checks), values
    out = capsys.readouterr().out
    for check, fn in checks:
        assert f"Exercise {getattr(ex, check).exercise}: not attempted yet — fill in `{fn}` above" in out, out


@pytest.mark.parametrize("stem", sorted(staged_blocks()), ids=str)
def test_staged_cells_fit_after_their_notebook(stem):
    """The exercise cells are the notebook's last cells, clash with no name the notebook defines
    before them, and keep the notebook hygiene rules."""
    source, code = split_notebook(stem)
    whole = jupytext.reads((NB_DIR / f"{stem}.py").read_text(), fmt="py:percent").cells
    added = jupytext.reads(code, fmt="py:percent").cells
    assert [(c.cell_type, c.source) for c in whole[-len(added):]] == [(c.cell_type, c.source) for c in added]
    defined = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            defined.add(node.id)
    mine = {f for _, f in pairs(code)}
    assert not mine & defined, f"{stem}: exercise functions shadow names of the notebook: {mine & defined}"
    for bad in FORBIDDEN:
        assert bad not in code, f"{stem}: the exercise cells contain {bad!r}"


def imported_names(source: str) -> set[str]:
    """Names bound by the top-level imports of ``source`` (``import bluebook.x`` binds ``bluebook``)."""
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Import):
            names |= {a.asname or a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names |= {a.asname or a.name for a in node.names}
    return names


@pytest.mark.parametrize("stem", sorted(staged_blocks()), ids=str)
def test_staged_cells_import_what_the_solutions_need_once(stem):
    """After pasting, every name a solution imports is available, and nothing the notebook already
    imports is imported again (a second import of a name the notebook never uses is a lint error)."""
    head, code = split_notebook(stem)
    notebook = imported_names(head)
    cells = imported_names(code) - {"bluebook"}
    needed = imported_names((SOL_DIR / f"{stem}_solutions.py").read_text())
    assert not cells & notebook, f"{stem}: the cells import again {cells & notebook}"
    assert needed <= notebook | cells | {"bluebook"}, f"{stem}: the solutions need {needed - notebook - cells}"


# --------------------------------------------------------------------------------------------
# the solutions are paired notebooks

def test_solutions_are_covered_by_the_pairing_configuration():
    config_file = find_jupytext_configuration_file(str(SOL_DIR))
    assert config_file is not None
    formats = ",".join(load_jupytext_configuration_file(config_file).formats)
    assert "ipynb" in formats and "py:percent" in formats, formats


@pytest.mark.parametrize("src", SOLUTIONS, ids=lambda p: p.stem)
def test_solutions_match_their_ipynb(src):
    text_nb, nb = jupytext.read(src), jupytext.read(src.with_suffix(".ipynb"))
    assert text_nb.metadata["jupytext"]["text_representation"]["format_name"] == "percent"
    cells = lambda b: [(c.cell_type, c.source, list(c.metadata.get("tags", []))) for c in b.cells]
    assert cells(text_nb) == cells(nb), f"{src.name} and its .ipynb differ (sync them)"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    for c in nb.cells:
        assert not c.get("outputs") and c.get("execution_count") is None, f"{src.name}: committed with outputs"
    assert src.read_text().startswith((NB_DIR / "01_key_value_memory.py").read_text().split("\n# %%")[0])
