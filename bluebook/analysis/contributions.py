r"""How much each layer's residual contributes to the edit, and editing one layer only (algorithms.md §10.1, §10.3).

Both run on the **unedited** model and leave it unchanged. With the residuals of
:func:`~bluebook.analysis.residuals.residuals_per_layer`:

* :func:`target_prob` / :func:`contribution_scores` — ``s = P_θ*(o*|p) − P_θ(o*|p)`` with θ* a
  hidden-state intervention adding the distributed ``δ^L/(N_L−i)`` or the direct ``δ^l`` at layer ``l``;
* :func:`single_layer_editing` — update one layer with the distributed or the direct residual and
  score CounterFact efficacy/generalization.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bluebook.analysis.residuals import LayerResiduals, resolve_layers, resolve_templates, subset_targets
from bluebook.core.config import EditConfig, with_overrides
from bluebook.core.distribute import SingleLayer
from bluebook.core.objective import build_rows
from bluebook.core.presets import preset_for
from bluebook.core.templates import validate
from bluebook.data import as_requests
from bluebook.editor import edit
from bluebook.metrics import evaluate_counterfact, summarize
from bluebook.model.device import model_device
from bluebook.model.hooks import add_to_block
from bluebook.model.specs import check_layers
from bluebook.model.tokens import pad_id, right_pad

__all__ = ["target_prob", "ContributionScores", "contribution_scores", "single_layer_editing"]


@torch.no_grad()
def target_prob(model, tok, requests, layer: int, vectors=None, templates=(("{}",),),
                batch_size: int = 64) -> np.ndarray:
    """``P(o*|p)`` per request with ``vectors[j]`` added to block ``layer``'s output at the subject's
    last token of every context-prefixed rewriting prompt of request ``j``.

    ``P`` = mean over the prompts of ``exp(mean token log-prob of target_new)``: the same prompts
    (teacher-forced target prefix) and the same quantity that :func:`~bluebook.editor.targets.optimize_targets`
    logs as ``prob``. ``vectors``: ``(n, d)`` or None (no intervention). Returns ``(n,)`` float64.
    """
    requests = as_requests(requests)
    layer = check_layers(model, [layer], field="layer")[0]
    templates = validate(templates)
    rows = build_rows(tok, requests, templates, "{} is a")
    rw = [r for r in range(len(rows.ids)) if rows.kind[r] == "rw"]
    device = model_device(model)
    n = len(requests)
    if vectors is not None:
        vectors = torch.as_tensor(vectors).float()
        d = model.get_input_embeddings().weight.shape[1]
        if vectors.shape != (n, d):
            raise ValueError(f"vectors must be (n, d) = ({n}, {d}), got {tuple(vectors.shape)}")
    pad = pad_id(tok)
    psum = np.zeros(n)
    pcount = np.zeros(n)
    for s in range(0, len(rw), batch_size):
        chunk = rw[s:s + batch_size]
        ids, mask = right_pad([rows.ids[r] for r in chunk], pad)
        ids, mask = ids.to(device), mask.to(device)
        owner = [rows.req[r] for r in chunk]

        def run():
            return model(input_ids=ids, attention_mask=mask).logits

        if vectors is None:
            logits = run()
        else:
            qs = torch.arange(len(chunk))
            pos = torch.tensor([rows.idx[r] for r in chunk])
            with add_to_block(model, layer, qs, pos, vectors[owner]):
                logits = run()
        for q, r in enumerate(chunk):
            lp = F.log_softmax(logits[q, rows.label_pos[r]].float(), -1)
            tok_lp = lp.gather(1, torch.tensor(rows.labels[r], device=lp.device)[:, None]).squeeze(1)
            psum[owner[q]] += float(torch.exp(tok_lp.mean()))
            pcount[owner[q]] += 1
    return psum / pcount


@dataclass
class ContributionScores:
    """``p0`` ``(n,)`` unedited ``P(o*|p)``; ``p_distributed[l]`` / ``p_direct[l]`` with the intervention;
    ``s_distributed[l] = p_distributed[l] − p0`` and ``s_direct[l] = p_direct[l] − p0``."""
    layers: list[int]
    case_ids: list
    p0: np.ndarray
    p_distributed: dict[int, np.ndarray]
    p_direct: dict[int, np.ndarray]

    @property
    def s_distributed(self) -> dict[int, np.ndarray]:
        return {layer: v - self.p0 for layer, v in self.p_distributed.items()}

    @property
    def s_direct(self) -> dict[int, np.ndarray]:
        return {layer: v - self.p0 for layer, v in self.p_direct.items()}

    def mean(self, kind: str) -> dict[int, float]:
        """Per-layer mean contribution, ``kind`` in ``{"distributed", "direct"}``."""
        s = {"distributed": self.s_distributed, "direct": self.s_direct}[kind]
        return {layer: float(np.mean(v)) for layer, v in s.items()}

    def rows(self) -> list[dict]:
        out = []
        N = len(self.layers)
        for i, layer in enumerate(self.layers):
            for kind, s in (("distributed", self.s_distributed[layer]), ("direct", self.s_direct[layer])):
                for j, cid in enumerate(self.case_ids):
                    out.append({"case_id": cid, "layer": layer, "distance": N - 1 - i, "residual": kind,
                                "score": float(s[j]), "p0": float(self.p0[j])})
        return out


def contribution_scores(model, tok, requests, residuals: LayerResiduals, templates=None,
                        cfg: EditConfig | None = None) -> ContributionScores:
    """Contribution ``s = P_θ*(o*|p) − P_θ(o*|p)`` at every critical layer of ``residuals``, with θ*
    the hidden-state intervention adding the distributed ``δ^L/(N_L−i)`` or the direct ``δ^l``.

    At ``l = L`` both vectors are the same tensor, so both scores are identical.
    """
    requests = as_requests(requests)
    templates = resolve_templates(model, tok, cfg or preset_for(model, "memit"), templates)
    p0 = target_prob(model, tok, requests, residuals.layers[0], None, templates)
    p_dist, p_dir = {}, {}
    for layer in residuals.layers:
        p_dist[layer] = target_prob(model, tok, requests, layer, residuals.distributed[layer], templates)
        if layer == residuals.last_layer:
            p_dir[layer] = p_dist[layer].copy()          # δ^L/(N_L−(N_L−1)) = δ^L: the same intervention
        else:
            p_dir[layer] = target_prob(model, tok, requests, layer, residuals.delta_direct[layer], templates)
    return ContributionScores(residuals.layers, list(residuals.case_ids), p0, p_dist, p_dir)


# --------------------------------------------------------------------------------------------
# §10.3 single-layer editing

def single_layer_editing(model, tok, requests, layers=None, cfg: EditConfig | None = None, layer: int | None = None,
                         *, residuals: LayerResiduals | None = None, templates=None, batch_size: int = 1,
                         method: str = "memit") -> dict:
    """Update only ``layer`` with the distributed (``SingleLayer(layer, direct=False)``) or the direct
    residual (``SingleLayer(layer, direct=True)``) and score CounterFact efficacy/generalization.

    Requests are edited in batches of ``batch_size`` (1: each fact alone, as the paper's analysis),
    each batch evaluated while applied and then undone, so the model is unchanged on return.
    ``residuals`` (from :func:`residuals_per_layer` on the same requests) supplies the v* targets so
    no optimisation is repeated. Returns ``{"distributed": summary, "direct": summary, "unedited":
    summary}`` with :func:`bluebook.metrics.summarize` dicts, plus ``"layer"`` and ``"cases"``
    (``{kind: per-record evaluation dicts}``, for paired comparisons).
    """
    requests = as_requests(requests)
    cfg = cfg or preset_for(model, method)
    layers = resolve_layers(model, cfg, layers)
    cfg = with_overrides(cfg, layers=layers, blue_layers=None)
    if layer is None or layer not in layers:
        raise ValueError(f"layer must be one of the critical layers {layers}, got {layer!r}")
    templates = resolve_templates(model, tok, cfg, templates)
    L = layers[-1]
    unedited = evaluate_counterfact(model, tok, requests)
    out = {"layer": layer, "unedited": summarize(unedited), "cases": {"unedited": unedited}}
    for kind, direct in (("distributed", False), ("direct", True)):
        tl = layer if direct else L
        cases = []
        for s in range(0, len(requests), batch_size):
            idx = list(range(s, min(s + batch_size, len(requests))))
            batch = [requests[j] for j in idx]
            pre = None
            if residuals is not None and tl in residuals.targets:
                pre = {tl: subset_targets(residuals.targets[tl], idx)}
            res = edit(model, tok, batch, method, hparams=cfg, distribution=SingleLayer(layer, direct=direct),
                        templates=templates, precomputed_targets=pre, progress=False)
            with res:
                cases += evaluate_counterfact(model, tok, batch)
        out[kind] = summarize(cases)
        out["cases"][kind] = cases
    return out
