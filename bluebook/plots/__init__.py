"""Figures for the notebooks. Every function returns a ``matplotlib.figure.Figure``; none calls
``plt.show()``, registers the figure with ``pyplot`` or changes global style.

Submodules: ``locate``, ``edits``, ``analysis``, ``blue``, ``replication``; :mod:`bluebook.plots.figure`
makes and saves the figures. The plotting modules read results by attribute and key only and import
nothing else from bluebook.
"""
from bluebook.plots.figure import in_notebook, new_figure, save, show

__all__ = ["in_notebook", "new_figure", "save", "show"]
