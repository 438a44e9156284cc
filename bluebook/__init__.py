"""bluebook: teaching and replicating "Rethinking Residual Distribution in Locate-then-Edit Model
Editing" (BLUE, NeurIPS 2025).

Public API (everything else lives in submodules)::

    model, tok = bluebook.load_model("smollm2-135m")
    req = bluebook.EditRequest("The capital of {} is", "France", "Rome", "Paris")
    result = bluebook.edit(model, tok, [req], method="memit_blue")   # weights unchanged
    with result:                                                     # applied inside the block
        ...
    result.apply(); result.undo()
"""
from .config import EditConfig, StatsConfig, TargetConfig, load_preset
from .data import EditRequest, load_counterfact, load_zsre, wiki_texts
from .editing import EditResult, SequentialState, edit
from .methods import METHODS, parse_method
from .models import load_model, tiny_model
from .presets import preset_for
from .specs import ModelSpec, spec_for
from .targets import optimize_targets
from .keys import read_states
from .stats import layer_stats

__version__ = "0.1.0"

__all__ = [
    "EditConfig", "StatsConfig", "TargetConfig", "load_preset", "preset_for",
    "EditRequest", "load_counterfact", "load_zsre", "wiki_texts",
    "EditResult", "SequentialState", "edit", "METHODS", "parse_method",
    "load_model", "tiny_model", "ModelSpec", "spec_for",
    "optimize_targets", "read_states", "layer_stats", "__version__",
]
