"""v* for a batch of requests, on the engine ``TargetConfig.engine`` names.

The engines are the plain loop (:func:`bluebook.core.targets.plain_targets`, the canonical
implementation) and the fast engine (:func:`bluebook.fast.targets.fast_targets`, the same
optimisation batched, tested equal to it). The choice sits here, above both, so that ``core``
never imports ``fast``.
"""
from __future__ import annotations

from bluebook.core.config import TargetConfig
from bluebook.core.objective import TargetResult
from bluebook.core.targets import concat_targets, plain_targets
from bluebook.core.templates import validate
from bluebook.data.requests import EditRequest
from bluebook.fast.targets import fast_targets
from bluebook.model.specs import check_layers
from bluebook.model.tokens import check_tokenizer

ENGINES = {"plain": plain_targets, "fast": fast_targets}


def optimize_targets(model, tok, requests: list[EditRequest], layer: int, cfg: TargetConfig | None = None,
                     templates=(("{}",),), *, batch_size: int = 64, progress: bool = True) -> TargetResult:
    """Optimise v* at block ``layer`` for every request; the same result as one request at a time.

    ``templates`` are the context-template groups (:func:`bluebook.core.templates.context_templates`).
    ``cfg.engine`` picks the plain loop or the fast engine; requests go in chunks of ``batch_size``.
    """
    cfg = cfg or TargetConfig()
    if not requests:
        raise ValueError("requests is empty: nothing to optimise")
    if cfg.engine not in ENGINES:
        raise ValueError(f"target.engine must be one of {tuple(ENGINES)}, got {cfg.engine!r}")
    layer = check_layers(model, [layer], field="layer")[0]
    check_tokenizer(model, tok)
    templates = validate(templates)
    run = ENGINES[cfg.engine]
    return concat_targets([run(model, tok, requests[s:s + batch_size], layer, cfg, templates, progress)
                           for s in range(0, len(requests), batch_size)])
