"""Analysis of the paper's argument: residuals per layer, contribution scores, the bounds, steps per layer."""
from bluebook.analysis.residuals import (  # noqa: F401
    subset_targets,
    LayerResiduals,
    residuals_per_layer,
    target_prob,
    ContributionScores,
    contribution_scores,
    single_layer_editing,
    BoundTable,
    spearman,
    bound_checks,
    batch_size_sweep,
    sequential_sweep,
)
from bluebook.analysis.steps import (  # noqa: F401
    PAPER_STEPS,
    LayerSteps,
    steps_per_layer,
    snapshot_weights,
    restore_weights,
    update_norms,
    weights_changed,
)

