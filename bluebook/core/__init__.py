"""The paper's maths, one step a module. ``plain`` first: MEMIT and BLUE written out side by side on
the primitives below (read them next, in this order):

``config``/``presets`` (hyperparameters) → ``templates`` (context prefixes) → ``stats`` (C = E[k kᵀ]) →
``keys`` (K) → ``targets`` (v*, the plain loop; ``optim``: its Adam step) → ``distribute`` (the residual rule R) →
``solvers`` (Δ in closed form) → ``methods`` (solver + rule + post-processing strategies).
The loop that ties them together is :mod:`bluebook.editor`.
"""
