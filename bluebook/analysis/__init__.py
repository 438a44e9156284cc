"""Analysis of the paper's argument on a real model, and the theory behind it.

* :mod:`bluebook.analysis.residuals` — ``δ^L`` and ``δ^l`` at every critical layer (§10.2);
* :mod:`bluebook.analysis.contributions` — contribution scores and single-layer editing (§10.1, §10.3);
* :mod:`bluebook.analysis.bounds` — Theorem 4.1 / Lemma 4.3 on real keys, statistics and residuals (§10.5);
* :mod:`bluebook.analysis.steps` — optimisation steps per critical layer (§10.4);
* :mod:`bluebook.analysis.theory` — the pure linear algebra of Theorem 4.1 / Lemma 4.3;
* :mod:`bluebook.analysis.toy` — random toy problems for that theory.
"""
from bluebook.analysis import theory, toy
from bluebook.analysis.bounds import (
    BoundTable,
    applied_sequence_sweep,
    batch_size_sweep,
    bound_checks,
    sequential_sweep,
    spearman,
)
from bluebook.analysis.contributions import ContributionScores, contribution_scores, single_layer_editing, target_prob
from bluebook.analysis.residuals import (
                                             LayerResiduals,
                                             residuals_per_layer,
                                             resolve_layers,
                                             resolve_templates,
                                             subset_targets,
)
from bluebook.analysis.steps import PAPER_STEPS, LayerSteps, steps_per_layer

__all__ = [
    "theory", "toy",
    "resolve_templates", "resolve_layers", "subset_targets", "LayerResiduals", "residuals_per_layer",
    "target_prob", "ContributionScores", "contribution_scores", "single_layer_editing",
    "BoundTable", "spearman", "bound_checks", "batch_size_sweep", "sequential_sweep", "applied_sequence_sweep",
    "PAPER_STEPS", "LayerSteps", "steps_per_layer",
]
