r"""Residuals at every critical layer on the unedited model (algorithms.md §10.2).

Notation as in ``docs/notation.md``: critical layers ``l_0 < … < l_{N_L−1} = L``, ``i`` the index
of layer ``l`` in that list, ``δ^l`` the v* delta optimised directly at block ``l`` (a column of
``R^{l*}``), ``δ^L`` the one at the last critical layer (a column of ``R^L``), and the
*distributed* residual ``δ^L / (N_L − i)`` that MEMIT writes at layer ``l`` (on the unedited model,
where the first layer's share is exactly this; algorithms.md §4).

The analysis experiments built on these residuals (every one runs on the **unedited** model and
leaves it unchanged):

* :mod:`bluebook.analysis.contributions` — contribution scores and single-layer editing (§10.1, §10.3);
* :mod:`bluebook.analysis.bounds` — Theorem 4.1 / Lemma 4.3 on real keys, statistics and
  residuals (§10.5); the pure maths is in :mod:`bluebook.analysis.theory`.

The theorem's distance is taken as the index distance ``D = N_L − 1 − i`` so that ``D + 1 = N_L − i``
is exactly MEMIT's divisor; for the consecutive critical layers of every preset this is ``L − l``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from bluebook.core.config import EditConfig
from bluebook.core.objective import TargetResult
from bluebook.core.presets import preset_for
from bluebook.core.templates import context_templates, validate
from bluebook.data import as_requests
from bluebook.editor.targets import optimize_targets
from bluebook.model.specs import check_layers

__all__ = ["resolve_templates", "resolve_layers", "subset_targets", "LayerResiduals", "residuals_per_layer"]


def resolve_templates(model, tok, cfg: EditConfig, templates=None):
    """``templates`` validated, or (``None``) the context templates the editor would use under ``cfg``."""
    if templates is not None:
        return validate(templates)
    return context_templates(model, tok, seed=cfg.template_seed, fixed=cfg.context_templates)


def resolve_layers(model, cfg: EditConfig, layers=None) -> list[int]:
    """``layers`` (default: ``cfg.layers``) checked against the model and sorted."""
    return sorted(check_layers(model, list(layers if layers is not None else cfg.layers), field="layers"))


def subset_targets(tr: TargetResult, idx) -> TargetResult:
    """The rows ``idx`` of a :class:`TargetResult` (to reuse a batched v* run for sub-batches).

    Per-request fields are subset; the per-chunk ``timing`` does not split by request and is dropped.
    """
    idx = list(idx)
    t = torch.tensor(idx, dtype=torch.long)

    def pick(xs):
        return [xs[j] for j in idx] if xs else []
    return TargetResult(tr.layer, tr.z[t.to(tr.z.device)], tr.delta[t.to(tr.delta.device)], tr.h0[t.to(tr.h0.device)],
                        pick(tr.steps), loss=pick(tr.loss), nll=pick(tr.nll), kl=pick(tr.kl), wd=pick(tr.wd),
                        prob=pick(tr.prob))


@dataclass
class LayerResiduals:
    """Direct and distributed residuals per critical layer (tensors ``(n, d)``, arrays ``(n,)``).

    ``delta_last`` = ``δ^L``; ``delta_direct[l]`` = ``δ^l`` (``delta_direct[L] is delta_last``);
    ``distributed[l]`` = ``δ^L / (N_L − i)``; ``cosine[l]`` = ``cos(δ^L/(N_L−i), δ^l)``;
    ``deviation[l]`` = ``‖δ^l − δ^L‖₂`` (the theory's ``‖R^{l*} − R^L‖`` for one request);
    ``distribution_error[l]`` = ``‖δ^L/(N_L−i) − δ^l‖₂``; ``steps[l]`` the v* optimisation steps;
    ``prob[l]`` the final target probability of the direct optimisation; ``targets[l]`` the full
    :class:`~bluebook.core.objective.TargetResult` (reusable as ``precomputed_targets``).
    """
    layers: list[int]
    case_ids: list
    delta_last: torch.Tensor
    delta_direct: dict[int, torch.Tensor]
    distributed: dict[int, torch.Tensor]
    cosine: dict[int, np.ndarray]
    deviation: dict[int, np.ndarray]
    distribution_error: dict[int, np.ndarray]
    steps: dict[int, np.ndarray]
    prob: dict[int, np.ndarray]
    targets: dict[int, TargetResult] = field(repr=False, default_factory=dict)

    @property
    def last_layer(self) -> int:
        return self.layers[-1]

    def distance(self, layer: int) -> int:
        """``N_L − 1 − i`` (= ``L − l`` for consecutive critical layers)."""
        return len(self.layers) - 1 - self.layers.index(layer)

    def rows(self) -> list[dict]:
        """One dict per (request, layer), e.g. for ``pandas.DataFrame(res.rows())``."""
        out = []
        for layer in self.layers:
            for j, cid in enumerate(self.case_ids):
                out.append({"case_id": cid, "layer": layer, "distance": self.distance(layer),
                            "cosine": float(self.cosine[layer][j]), "deviation": float(self.deviation[layer][j]),
                            "distribution_error": float(self.distribution_error[layer][j]),
                            "norm_direct": float(self.delta_direct[layer][j].norm()),
                            "norm_distributed": float(self.distributed[layer][j].norm()),
                            "steps": int(self.steps[layer][j]), "prob_direct": float(self.prob[layer][j])})
        return out

    def select(self, idx) -> "LayerResiduals":
        """The same quantities for the requests ``idx`` only."""
        idx = list(idx)
        t = torch.tensor(idx, dtype=torch.long)

        def ten(d):
            return {layer: v[t] for layer, v in d.items()}

        def arr(d):
            return {layer: v[idx] for layer, v in d.items()}
        return LayerResiduals(self.layers, [self.case_ids[j] for j in idx], self.delta_last[t],
                              ten(self.delta_direct), ten(self.distributed), arr(self.cosine), arr(self.deviation),
                              arr(self.distribution_error), arr(self.steps), arr(self.prob),
                              {layer: subset_targets(tr, idx) for layer, tr in self.targets.items()})

    def mean(self, name: str) -> dict[int, float]:
        """Per-layer mean of ``cosine``, ``deviation``, ``distribution_error``, ``steps`` or ``prob``."""
        return {layer: float(np.mean(getattr(self, name)[layer])) for layer in self.layers}


def residuals_per_layer(model, tok, requests, layers=None, cfg: EditConfig | None = None, templates=None,
                        *, progress: bool = False) -> LayerResiduals:
    """``δ^L`` and a fresh ``δ^l`` at every critical layer, batched over requests, on the unedited model."""
    requests = as_requests(requests)
    if not requests:
        raise ValueError("requests is empty")
    cfg = cfg or preset_for(model, "memit")
    layers = resolve_layers(model, cfg, layers)
    templates = resolve_templates(model, tok, cfg, templates)
    N, L = len(layers), layers[-1]
    targets = {layer: optimize_targets(model, tok, requests, layer, cfg.target, templates, progress=progress)
               for layer in reversed(layers)}
    dL = targets[L].delta.detach().float().cpu()
    direct, dist, cos, dev, derr, steps, prob = {}, {}, {}, {}, {}, {}, {}
    for i, layer in enumerate(layers):
        dl = targets[layer].delta.detach().float().cpu()
        share = dL / (N - i)
        direct[layer], dist[layer] = dl, share
        cos[layer] = F.cosine_similarity(share, dl, dim=1, eps=1e-12).numpy().astype(np.float64)
        dev[layer] = (dl - dL).norm(dim=1).numpy().astype(np.float64)
        derr[layer] = (share - dl).norm(dim=1).numpy().astype(np.float64)
        steps[layer] = np.asarray(targets[layer].steps, dtype=np.int64)
        prob[layer] = np.asarray(targets[layer].final_prob, dtype=np.float64)
    return LayerResiduals(layers=layers, case_ids=[r.case_id for r in requests], delta_last=dL,
                          delta_direct=direct, distributed=dist, cosine=cos, deviation=dev,
                          distribution_error=derr, steps=steps, prob=prob, targets=targets)
