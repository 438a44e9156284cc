"""The fast v* engine: the same optimisation as :func:`bluebook.core.targets.plain_targets`, batched.

What changes is only where the arithmetic is spent, never what is computed:

* **Prefix cache.** δ is added to block ``l``'s output (or, for a post-norm family, its MLP output:
  ``ModelSpec.out``) at the subject's last token, so (causal
  attention) every position before it is the same at every step. Those positions run once and are
  kept as a key/value cache; context templates shared by several requests run their common stem once.
* **Block skipping.** The suffix positions' states at and below block ``l`` do not depend on δ
  either: the first step records block ``l``'s output and later steps run only the blocks above it
  (where δ is added to the block output itself).
* **Scored positions only.** The output head runs only where the loss reads logits.
* **Suffix groups.** Rows are grouped by suffix length (little padding); as requests stop early
  the groups are rebuilt from the rows still optimised (``TargetConfig.regroup_below``).
* **Batched Adam.** All requests share one forward/backward pass; each keeps its own Adam moments,
  norm clamp and early stop, so every request ends where optimising it alone would. The step is
  the plain loop's own (:func:`bluebook.core.optim.adam_clamp_step`, one row per request).

Tests hold it equal to the plain loop on GPT-2, GPT-J and Llama (float64, to round-off).
"""
from __future__ import annotations

import contextlib
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bluebook.core.config import TargetConfig
from bluebook.core.objective import TargetResult, build_rows, target_dtype
from bluebook.core.optim import adam_clamp_step, finished
from bluebook.fast.prefix_cache import PrefixCache
from bluebook.model.device import model_device
from bluebook.model.hooks import edit_output
from bluebook.model.specs import get_module, output_logits, spec_for
from bluebook.model.tokens import pad_id


def blocks_return_tensors(model, layer: int) -> bool:
    """Whether block ``layer`` returns a bare hidden-state tensor (checked on a one-token pass)."""
    seen = {}
    name = spec_for(model).block_name(layer)

    def hook(module, args, out):
        seen["bare"] = isinstance(out, torch.Tensor)
    handle = get_module(model, name).register_forward_hook(hook)
    device = model_device(model)
    try:
        with torch.no_grad():
            model.base_model(input_ids=torch.zeros((1, 1), dtype=torch.long, device=device))
    finally:
        handle.remove()
    return bool(seen.get("bare"))


def fast_targets(model, tok, requests, layer: int, cfg: TargetConfig, templates,  # noqa: C901 - the batched v* loop, kept in one piece so that it reads against the plain loop
                 progress: bool = False) -> TargetResult:
    """Optimise v* at block ``layer`` for ``requests`` together (one chunk; see the module docstring)."""
    device, dt = model_device(model), target_dtype(model)
    rows = build_rows(tok, requests, templates, cfg.kl_prompt)
    n, R = len(requests), len(rows.ids)
    t_start = time.perf_counter()
    cache = PrefixCache(model, rows, pad_id(tok), device)
    timing = {"requests": n, "prefix_seconds": time.perf_counter() - t_start, "step_seconds": [], "step_active": []}
    spec = spec_for(model)
    space = spec.out_name(layer)          # the edit space: block ``layer``'s output, or its MLP's (ModelSpec.out)
    # After the first step the blocks whose output δ cannot change are skipped: those up to ``layer``
    # when δ is added to the block output itself, up to ``layer - 1`` when it is added inside block
    # ``layer`` (a post-norm MLP output). That needs blocks that return bare tensors (transformers >= 5);
    # otherwise every step runs the whole stack (same result, slower).
    skip = layer if spec.edits_residual_stream else layer - 1
    skippable = skip >= 0 and blocks_return_tensors(model, skip)

    # Flat index tensors over every logit the loss reads ("entries"), built once.
    n_rw = [0] * n
    for j, k in zip(rows.req, rows.kind):
        n_rw[j] += k == "rw"
    e_row, e_pos, e_lab, e_w, e_wt = [], [], [], [], []
    kl_rows = [0] * n
    for r in range(R):
        j = rows.req[r]
        if rows.kind[r] == "rw":
            T = len(rows.labels[r])
            for p, lab in zip(rows.label_pos[r], rows.labels[r]):
                e_row.append(r)
                e_pos.append(p - rows.idx[r])
                e_lab.append(lab)
                e_w.append(1.0 / (T * n_rw[j]))
                e_wt.append(1.0 / T)
        else:
            kl_rows[j] = r
    t = lambda x, dt=torch.long: torch.tensor(x, dtype=dt, device=device)
    e_row, e_pos, e_lab = t(e_row), t(e_pos), t(e_lab)
    e_w, e_wt = t(e_w, dt), t(e_wt, dt)
    row_req = t(rows.req)
    e_req = row_req[e_row]
    kl_rows = t(kl_rows)
    first_rows = t(rows.first_row)
    rw_per_row = torch.tensor([1.0 / n_rw[j] if k == "rw" else 0.0 for j, k in zip(rows.req, rows.kind)],
                              device=device, dtype=dt)

    d = model.get_input_embeddings().weight.shape[1]
    delta = torch.zeros(n, d, device=device, dtype=dt)
    m_adam = torch.zeros_like(delta)
    v_adam = torch.zeros_like(delta)
    h0 = torch.zeros(n, d, device=device, dtype=dt)
    kl_init = None
    steps: list[int | None] = [None] * n
    traces = {k: [[] for _ in range(n)] for k in ("loss", "nll", "kl", "wd", "prob")}
    active = torch.arange(n, device=device)

    bar = tqdm(total=cfg.steps, desc=f"v* @ layer {layer} ({n} requests)", disable=not progress, leave=False)
    try:
        for it in range(cfg.steps):
            if active.numel() == 0:
                break
            t_step = time.perf_counter()
            timing["step_active"].append(int(active.numel()))
            is_active = torch.zeros(n, dtype=torch.bool, device=device)
            is_active[active] = True
            if it > 0:
                live = torch.nonzero(is_active[row_req]).squeeze(1).tolist()
                if len(live) < cfg.regroup_below * cache.n_rows():
                    cache.regroup(live)
            local_req = torch.full((n,), -1, dtype=torch.long, device=device)
            local_req[active] = torch.arange(active.numel(), device=device)
            d_act = delta[active].clone().requires_grad_(True)
            first_pass = it == 0
            # run each suffix-length group; collect the hidden states of the rows into one (R_a, S_max, d)
            hs_parts, hs_rows = [], []
            for g, grp in cache.rows_t.items():
                sel = torch.nonzero(is_active[row_req[grp]]).squeeze(1)
                if sel.numel() == 0:
                    continue
                g_rows = grp[sel]
                owner = local_req[row_req[g_rows]]

                def inject(h, d_act=d_act, owner=owner, g_rows=g_rows, first_pass=first_pass, g=g):
                    if first_pass:   # δ = 0 here: h at the subject's last token of the bare prompt is h0
                        is_first = first_rows[row_req[g_rows]] == g_rows
                        h0[row_req[g_rows][is_first]] = h[is_first, 0].detach().to(dt)
                        if skippable and skip == layer:
                            cache.record(g, h)
                    return torch.cat([h[:, :1] + d_act[owner].to(h.dtype)[:, None, :], h[:, 1:]], 1)

                def keep(h, g=g):             # block ``skip``'s output, below the edit space (post-norm)
                    cache.record(g, h)
                    return h
                with contextlib.ExitStack() as hooks:
                    hooks.enter_context(edit_output(model, space, inject))
                    if first_pass and skippable and skip != layer:
                        hooks.enter_context(edit_output(model, spec.block_name(skip), keep))
                    hs_g = cache.forward(model, g, sel, skip)
                hs_parts.append(hs_g)
                hs_rows.append(g_rows)
            S_max = max(h.shape[1] for h in hs_parts)
            hs = torch.cat([F.pad(h, (0, 0, 0, S_max - h.shape[1])) for h in hs_parts], 0)
            order = torch.cat(hs_rows)
            local_row = torch.full((R,), -1, dtype=torch.long, device=device)
            local_row[order] = torch.arange(order.numel(), device=device)
            row_sel = order
            em = is_active[e_req]
            er, ep, el, ew, ewt, eq = e_row[em], e_pos[em], e_lab[em], e_w[em], e_wt[em], e_req[em]
            kr = kl_rows[active]
            sel = torch.cat([hs[local_row[er], ep], hs[local_row[kr], 0]], 0)
            logp = F.log_softmax(output_logits(model, sel).to(dt), -1)
            n_e = er.numel()
            lp = logp[:n_e].gather(1, el[:, None]).squeeze(1)
            na = active.numel()
            nll = torch.zeros(na, device=device, dtype=dt).index_add(0, local_req[eq], -lp * ew)
            # per-row mean token NLL -> "avg prob" = mean over prompts of exp(-row NLL)
            row_nll = torch.zeros(R, device=device, dtype=dt).index_add(0, er, (-lp * ewt).detach())
            prob = torch.zeros(na, device=device, dtype=dt).index_add(
                0, local_req[row_req[row_sel]], torch.exp(-row_nll[row_sel]) * rw_per_row[row_sel])
            cur = logp[n_e:]
            if first_pass:
                kl_init = cur.detach().clone()      # (n, V): all requests are active at iteration 0
            ref = kl_init[active]
            kl = cfg.kl_factor * (cur.exp() * (cur - ref)).sum(1)
            wd = cfg.weight_decay * d_act.norm(dim=1) / h0[active].norm(dim=1).pow(2)
            loss = nll + kl + wd

            vals = torch.stack([loss, nll, kl, wd, prob]).detach().cpu().tolist()
            act_list = active.tolist()
            for a, j in enumerate(act_list):
                for key, row in zip(("loss", "nll", "kl", "wd", "prob"), vals):
                    traces[key][j].append(row[a])
            keep = []
            for a, j in enumerate(act_list):
                steps[j] = finished(vals[0][a], it, cfg)         # early stop, or the last evaluation
                if steps[j] is None:
                    keep.append(a)
            if keep:
                keep_t = torch.tensor(keep, device=device)
                grad, = torch.autograd.grad(loss[keep_t].sum(), d_act)
                jj = active[keep_t]
                # the plain loop's Adam step and clamp, one row per request
                new, m_rows, v_rows = delta[jj], m_adam[jj], v_adam[jj]
                adam_clamp_step(new, m_rows, v_rows, grad[keep_t].to(dt), it + 1, cfg.lr,
                                cfg.clamp_norm_factor * h0[jj].norm(dim=1, keepdim=True))
                delta[jj], m_adam[jj], v_adam[jj] = new, m_rows, v_rows
                active = jj
            else:
                active = active[:0]
            timing["step_seconds"].append(time.perf_counter() - t_step)
            bar.update(1)
            bar.set_postfix(active=int(active.numel()), loss=f"{sum(vals[0]) / len(vals[0]):.3f}")
    finally:
        bar.close()
    return TargetResult(layer=layer, z=(h0 + delta).detach(), delta=delta.detach(), h0=h0, steps=steps,
                        timing=[timing], **traces)
