"""The one way the plotting modules make and save figures.

Figures are plain ``matplotlib.figure.Figure`` objects, never registered with ``pyplot``: nothing is
shown or kept alive behind the caller's back, a notebook displays a returned figure once, and no
global style is touched.
"""
from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure


def new_figure(ncols: int = 1, figsize: tuple[float, float] = (5.0, 3.6), *, layout: str | None = None,
               sharey: bool = False):
    """A new ``Figure`` and its ``ncols`` axes in one row (an array, also for one panel)."""
    fig = Figure(figsize=figsize, layout=layout)
    axes = fig.subplots(1, ncols, squeeze=False, sharey=sharey)[0]
    return fig, axes


def in_notebook() -> bool:
    """Whether this runs inside a Jupyter kernel (JupyterLab, papermill, nbconvert)."""
    try:
        from IPython import get_ipython  # optional: present inside a Jupyter kernel only
    except ImportError:                  # IPython is not a dependency of the package itself
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def show(fig, output_dir, name: str, dpi: int = 120) -> None:
    """Save ``fig`` (:func:`save`) and, in a notebook, display that PNG inline once (returns nothing,
    so a ``show(...)`` ending a cell prints no path).

    The figures are plain ``Figure`` objects that no backend knows about, so nothing else shows
    them: one ``show`` call is one image in the notebook and one file under ``figures/``.
    """
    path = save(fig, output_dir, name, dpi=dpi)
    if in_notebook():
        from IPython.display import Image, display  # optional: present inside a Jupyter kernel only
        display(Image(filename=str(path)))


def save(fig, output_dir, name: str, dpi: int = 120) -> Path:
    """Save ``fig`` as ``<output_dir>/figures/<name>.png`` and return the path."""
    out = Path(output_dir) / "figures"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
