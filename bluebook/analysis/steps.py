"""Why two layers suffice: optimisation steps per critical layer (algorithms.md §10.4).

The paper's ablation runs the *direct-residual* procedure over **all** critical layers, one after
the other: at layer ``l_i`` a fresh target v* is optimised on the model that already contains the
updates of ``l_0 … l_{i−1}``, the layer is updated with that full residual, and the next layer
starts from there. If the first layer's update already moves the hidden state where it must go,
the optimisation at the later layers stops almost at once. :func:`steps_per_layer` measures that
with :func:`bluebook.editor.edit` and ``distribution=Direct()``; the model's weights are unchanged on
return.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bluebook.core.distribute import Direct
from bluebook.data import as_requests
from bluebook.editor import edit

#: Reported means (first to last critical layer) of the paper's ablation, for side-by-side tables.
PAPER_STEPS = {
    "GPT2-XL [13-17]": [16.37, 8.43, 1.71, 0.32, 0.10],
    "GPT-J [3-8]": [10.47, 1.68, 0.11, 0.0, 0.0, 0.0],
    "Llama3 [4-8]": [25.0, 11.10, 0.63, 0.0, 0.0],
}


@dataclass
class LayerSteps:
    """Step counts of the direct-residual procedure: ``counts[l][j]`` for layer ``l``, request ``j``."""
    layers: list[int]
    counts: dict[int, list[int]]
    max_steps: int
    early_stop: float
    batch_size: int
    final_loss: dict[int, list[float]] = field(default_factory=dict)
    loss: dict[int, list[list[float]]] = field(default_factory=dict)   # per-iteration loss traces

    @property
    def mean(self) -> list[float]:
        return [float(np.mean(self.counts[layer])) for layer in self.layers]

    @property
    def std(self) -> list[float]:
        """Population standard deviation over requests (``np.std``)."""
        return [float(np.std(self.counts[layer])) for layer in self.layers]

    def drop_after_first(self) -> float | None:
        """Relative drop of the mean step count from the first to the second critical layer."""
        m = self.mean
        if len(m) < 2 or m[0] == 0:
            return None
        return 1.0 - m[1] / m[0]

    def table(self):
        """A ``pandas.DataFrame`` with one row per critical layer (index i, layer, mean, std, min, max)."""
        return pd.DataFrame({"i": range(len(self.layers)), "layer": self.layers, "mean": self.mean,
                             "std": self.std,
                             "min": [int(min(self.counts[layer])) for layer in self.layers],
                             "max": [int(max(self.counts[layer])) for layer in self.layers]})


def steps_per_layer(model, tok, requests, layers=None, hparams=None, batch_size: int | None = None,
                    method: str = "memit", progress: bool = False) -> LayerSteps:
    """Run the direct-residual procedure over all critical layers and count the v* steps per layer.

    For each chunk of ``batch_size`` requests (``None``: all requests in one batch; ``1``: each
    request on its own, as the paper's analysis notebook processes records), on the **unedited**
    model: for every critical layer ``l_i`` in ascending order, optimise a fresh v* at ``l_i`` on the
    model holding the updates of the earlier layers, update ``l_i`` with the full residual, go on.
    This is ``bluebook.edit(model, tok, chunk, method, distribution=Direct())``; the model's weights
    are restored afterwards (the edit is never applied).

    Counting rule (algorithms.md §10.4). The paper's counter code is not public; this rule is
    inferred from its logged statistics (Llama3 first layer: mean 25.0, std 0 with 25 steps):

    * ``steps`` = the number of loop iterations whose total loss was ≥ the early-stop threshold
      (``hparams.target.early_stop``, 0.05);
    * an early stop at iteration ``k`` (loss < threshold there, so ``k`` gradient steps were taken)
      counts ``k``; a request whose loss is already below the threshold at iteration 0 counts 0;
    * a request that never stops counts ``v_num_grad_steps`` (``hparams.target.steps``).

    ``layers``/``hparams`` are passed on to :func:`bluebook.editor.edit` (``hparams=None``: the model's
    preset). ``method`` fixes the solver (``"memit"`` as in the paper). Returns :class:`LayerSteps`.
    """
    requests = as_requests(requests)
    if not requests:
        raise ValueError("requests is empty: give at least one EditRequest")
    bs = len(requests) if batch_size is None else int(batch_size)
    if bs < 1:
        raise ValueError(f"batch_size must be ≥ 1 or None, got {batch_size}")
    counts: dict[int, list[int]] = {}
    final_loss: dict[int, list[float]] = {}
    traces: dict[int, list[list[float]]] = {}
    plan, cfg = None, None
    for s in range(0, len(requests), bs):
        chunk = requests[s:s + bs]
        res = edit(model, tok, chunk, method, layers=layers, hparams=hparams, distribution=Direct(),
                   apply=False, progress=progress)
        plan, cfg = list(res.layers), res.diagnostics["config"]
        for layer in plan:
            tr = res.targets[layer]
            counts.setdefault(layer, []).extend(int(c) for c in tr.steps)
            final_loss.setdefault(layer, []).extend(float(x) for x in tr.final_loss)
            traces.setdefault(layer, []).extend([float(x) for x in t] for t in tr.loss)
    return LayerSteps(layers=plan, counts=counts, max_steps=cfg.target.steps, early_stop=cfg.target.early_stop,
                      batch_size=bs, final_loss=final_loss, loss=traces)
