"""Figures for the notebooks. Every function returns a ``matplotlib.figure.Figure``; none calls
``plt.show()`` or changes global style. Submodules: ``locate``, ``edits``, ``analysis``, ``replication``."""
from __future__ import annotations

from pathlib import Path


def save(fig, output_dir, name: str, dpi: int = 120) -> Path:
    """Save ``fig`` as ``<output_dir>/figures/<name>.png`` and return the path."""
    out = Path(output_dir) / "figures"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
