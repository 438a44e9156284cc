"""Target hidden states v* (a.k.a. z), algorithms.md §1: the plain loop.

:func:`optimize_target_plain` is the canonical implementation, written to be read next to the
paper: for one request, every step runs every prompt through the whole model with δ added to
block ``l``'s output (the edit space, ``ModelSpec.out``: the MLP output for a post-norm family) at
the subject's last token, computes the loss of
:mod:`bluebook.core.objective`, and takes one Adam step (:mod:`bluebook.core.optim`: exactly
``torch.optim.Adam``'s, followed by the norm clamp). :func:`plain_targets`
runs it for a batch. :func:`bluebook.editor.targets.optimize_targets` (``bluebook.optimize_targets``)
chooses between it (``TargetConfig.engine="plain"``) and the fast engine (:mod:`bluebook.fast.targets`,
``engine="fast"``, the default), an exact alternative tested equal to it.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from bluebook.core.config import TargetConfig
from bluebook.core.objective import TargetResult, build_rows, target_dtype
from bluebook.core.optim import adam_clamp_step, finished
from bluebook.core.templates import validate
from bluebook.data.requests import EditRequest
from bluebook.model.device import model_device
from bluebook.model.hooks import edit_output
from bluebook.model.specs import spec_for
from bluebook.model.tokens import pad_id, right_pad


def optimize_target_plain(model, tok, req: EditRequest, layer: int, cfg: TargetConfig | None = None,
                          templates=(("{}",),)) -> TargetResult:
    """Optimise v* for one request at block ``layer``, plainly. Returns a one-row :class:`TargetResult`."""
    cfg = cfg or TargetConfig()
    templates = validate(templates)
    device, dt = model_device(model), target_dtype(model)
    rows = build_rows(tok, [req], templates, cfg.kl_prompt)
    ids, mask = right_pad(rows.ids, pad_id(tok))
    ids, mask = ids.to(device), mask.to(device)
    at = torch.tensor(rows.idx, device=device)                 # the subject's last token in each row
    every_row = torch.arange(len(rows.ids), device=device)
    rewrite_rows = [r for r, k in enumerate(rows.kind) if k == "rw"]
    kl_row = rows.kind.index("kl")
    labels = torch.tensor(rows.labels[rewrite_rows[0]], device=device)     # the same target tokens in every row
    block = spec_for(model).out_name(layer)        # the edit space (ModelSpec.out)

    delta = torch.zeros(model.get_input_embeddings().weight.shape[1], device=device, dtype=dt, requires_grad=True)
    moments = torch.zeros_like(delta), torch.zeros_like(delta)    # Adam's first and second
    h0, kl_init, steps = None, None, cfg.steps
    trace = {k: [] for k in ("loss", "nll", "kl", "wd", "prob")}
    t_start, step_seconds = time.perf_counter(), []
    for it in range(cfg.steps):
        t_step = time.perf_counter()

        def add_delta(h):
            nonlocal h0
            if h0 is None:          # first pass, δ = 0: h^l at the subject of the bare prompt
                h0 = h[rows.first_row[0], rows.idx[0]].detach().to(dt).clone()
            add = torch.zeros_like(h)
            add[every_row, at] = delta.to(h.dtype)
            return h + add

        with edit_output(model, block, add_delta):
            logits = model(input_ids=ids, attention_mask=mask).logits
        logp = F.log_softmax(logits.to(dt), -1)
        # NLL of the target tokens, averaged over tokens, then over the context-template prompts
        row_nll = torch.stack([-logp[r, rows.label_pos[r]].gather(1, labels[:, None]).mean() for r in rewrite_rows])
        nll = row_nll.mean()
        # KL(P_δ ‖ P_0) of the next token after "subject is a", at the subject's last token
        cur = logp[kl_row, rows.idx[kl_row]]
        if kl_init is None:
            kl_init = cur.detach().clone()
        kl = cfg.kl_factor * (cur.exp() * (cur - kl_init)).sum()
        wd = cfg.weight_decay * delta.norm() / h0.norm() ** 2
        loss = nll + kl + wd
        for k, v in zip(trace, (loss, nll, kl, wd, torch.exp(-row_nll).mean())):
            trace[k].append(float(v.detach()))
        step_seconds.append(time.perf_counter() - t_step)
        if (done := finished(loss.item(), it, cfg)) is not None:   # early stop, or the last evaluation
            steps = done
            break
        grad, = torch.autograd.grad(loss, delta)           # one Adam step, then ‖δ‖ ≤ clamp_norm_factor · ‖h^l‖
        adam_clamp_step(delta, *moments, grad, it + 1, cfg.lr, cfg.clamp_norm_factor * h0.norm())
    d = delta.detach()[None]
    timing = {"requests": 1, "prefix_seconds": 0.0, "step_seconds": step_seconds,
              "step_active": [1] * len(step_seconds), "seconds": time.perf_counter() - t_start}
    return TargetResult(layer, h0[None] + d, d, h0[None], [steps], *[[trace[k]] for k in trace], timing=[timing])


def plain_targets(model, tok, requests, layer: int, cfg: TargetConfig, templates,
                  progress: bool = False) -> TargetResult:
    """:func:`optimize_target_plain` for each request, stacked into one :class:`TargetResult`."""
    return concat_targets([optimize_target_plain(model, tok, r, layer, cfg, templates) for r in requests])


def concat_targets(parts: list[TargetResult]) -> TargetResult:
    """Stack the results of consecutive chunks of requests at one layer."""
    if len(parts) == 1:
        return parts[0]
    cat = lambda name: torch.cat([getattr(p, name) for p in parts], 0)            # noqa: E731
    join = lambda name: [x for p in parts for x in getattr(p, name)]              # noqa: E731
    return TargetResult(parts[0].layer, cat("z"), cat("delta"), cat("h0"), join("steps"), join("loss"), join("nll"),
                        join("kl"), join("wd"), join("prob"), join("timing"))
