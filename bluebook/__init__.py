"""bluebook: teaching and replicating "Rethinking Residual Distribution in Locate-then-Edit Model
Editing" (BLUE, NeurIPS 2025).

Public API (everything else lives in submodules)::

    model, tok = bluebook.load_model("smollm2-135m")
    req = bluebook.EditRequest("The capital of {} is", "France", "Rome", "Paris")
    result = bluebook.edit(model, tok, [req], method="memit_blue")   # weights unchanged
    with result:                                                     # applied inside the block
        ...
    result.apply(); result.undo()

A paragraph as ``target_new`` (no ``target_true``) is edited window by window (docs/algorithms.md
§7.2); ``bluebook.load_longform()`` gives the shipped long-form set.
"""
from bluebook.core.config import EditConfig, StatsConfig, TargetConfig, load_preset
from bluebook.core.keys import read_states
from bluebook.core.methods import DYNAMIC_METHODS, METHODS, PAPER_ORDER, parse_method
from bluebook.core.presets import preset_for
from bluebook.core.stats import layer_stats
from bluebook.data import EditRequest, load_counterfact, load_zsre, wiki_texts
from bluebook.data.longform import load_longform
from bluebook.editor import EditResult, SequentialState, edit
from bluebook.editor.targets import optimize_targets
from bluebook.model.loading import load_model, tiny_model
from bluebook.model.specs import ModelSpec, spec_for

__version__ = "0.1.0"

__all__ = [
    "EditConfig", "StatsConfig", "TargetConfig", "load_preset", "preset_for",
    "EditRequest", "load_counterfact", "load_zsre", "load_longform", "wiki_texts",
    "EditResult", "SequentialState", "edit", "METHODS", "DYNAMIC_METHODS", "PAPER_ORDER", "parse_method",
    "load_model", "tiny_model", "ModelSpec", "spec_for",
    "optimize_targets", "read_states", "layer_stats", "__version__",
]
