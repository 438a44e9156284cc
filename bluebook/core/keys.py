"""Keys ``K`` (the edited projection's input at the subject's last token) and current hidden states.

Keys are averaged over context templates as the reference does: mean within each template group,
then mean of the group means (``k = ½ k("{}") + ½ mean(k over the prefixed templates)`` for the
standard two groups). The "current" hidden state of a request at layer ``l`` is the output of the
edit space at ``l`` (block ``l``'s output; for a post-norm family its MLP output, ``ModelSpec.out``)
at the subject's last token of the bare prompt.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bluebook.core.objective import target_dtype
from bluebook.core.templates import flatten, group_index, validate
from bluebook.data import EditRequest
from bluebook.model.device import model_device
from bluebook.model.hooks import Trace
from bluebook.model.specs import check_layers, spec_for
from bluebook.model.tokens import length_groups, pad_id, right_pad, subject_last_index


@dataclass
class LayerStates:
    """``keys[l]`` ``(m, n)``, ``hidden[l]`` ``(d, n)`` on the model's device; float32 (float64 for float64 models)."""
    keys: dict[int, torch.Tensor]
    hidden: dict[int, torch.Tensor]


@torch.no_grad()
def read_states(model, tok, requests: list[EditRequest], key_layers=(), hidden_layers=(),  # noqa: C901 - one batched pass reads keys and states for every template; kept whole to read next to the paper
                templates=(("{}",),), batch_size: int = 128) -> LayerStates:
    """One batched pass (stopped after the deepest layer needed) giving keys and current states.

    Only the tokens up to each prompt's subject's last token are run (causal attention: later
    tokens cannot change what is read there), grouped by length so that batches carry little padding.
    """
    if not requests:
        raise ValueError("requests is empty")
    key_layers = check_layers(model, key_layers, field="key_layers") if key_layers else []
    hidden_layers = check_layers(model, hidden_layers, field="hidden_layers") if hidden_layers else []
    templates = validate(templates)
    spec = spec_for(model)
    device = model_device(model)
    flat, groups = flatten(templates), group_index(templates)
    n_groups = len(templates)
    bare_pos = flat.index("{}") if "{}" in flat else None

    texts, idxs, owner, tmpl_id = [], [], [], []
    for j, r in enumerate(requests):
        for ti, c in enumerate(flat):
            t = c.replace("{}", r.prompt)
            texts.append(t.replace("{}", r.subject))
            idxs.append(subject_last_index(tok, t, r.subject))
            owner.append(j)
            tmpl_id.append(ti)
        if bare_pos is None and hidden_layers:
            texts.append(r.text)
            idxs.append(subject_last_index(tok, r.prompt, r.subject))
            owner.append(j)
            tmpl_id.append(-1)

    pad = pad_id(tok)     # padding is built here from ids: the tokenizer's own padding side is never used
    seqs = [ids[:i + 1] for ids, i in zip(tok(texts)["input_ids"], idxs)]
    groups_by_len = length_groups([len(q) for q in seqs])
    order = [q for g in groups_by_len for q in g]
    seqs, idxs, owner, tmpl_id = ([x[q] for q in order] for x in (seqs, idxs, owner, tmpl_id))
    bounds, start = [], 0
    for g in groups_by_len:
        bounds += [(start + c, start + min(c + batch_size, len(g))) for c in range(0, len(g), batch_size)]
        start += len(g)

    names_in = [spec.proj_name(l) for l in key_layers]
    names_out = [spec.out_name(l) for l in hidden_layers]
    deepest = max(key_layers + hidden_layers)
    stop = spec.block_name(deepest)
    n = len(requests)
    m_sum = {l: None for l in key_layers}
    dt = target_dtype(model)
    g_count = torch.zeros(n, n_groups, device=device, dtype=dt)
    hidden = {l: [None] * n for l in hidden_layers}

    for s, e in bounds:
        ids, mask = right_pad(seqs[s:e], pad)
        enc = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        rows = torch.arange(ids.shape[0], device=device)
        pos = torch.tensor(idxs[s:e], device=device)
        with Trace(model, names_in, inputs=True, outputs=False) as tin, \
                Trace(model, names_out, stop_after=stop) as tout:
            tout.run(model.base_model, **enc)
        own = torch.tensor(owner[s:e], device=device)
        tid = tmpl_id[s:e]
        grp = torch.tensor([groups[t] if t >= 0 else -1 for t in tid], device=device)
        valid = grp >= 0
        for l, name in zip(key_layers, names_in):
            k = tin.inputs[name][rows, pos].to(dt)             # (b, m)
            if m_sum[l] is None:
                m_sum[l] = torch.zeros(n, n_groups, k.shape[1], device=device, dtype=dt)
            m_sum[l].index_put_((own[valid], grp[valid]), k[valid], accumulate=True)
        g_count.index_put_((own[valid], grp[valid]), torch.ones(int(valid.sum()), device=device, dtype=dt),
                           accumulate=True)
        for l, name in zip(hidden_layers, names_out):
            h = tout.outputs[name][rows, pos].to(dt)
            for q, t in enumerate(tid):
                if (bare_pos is not None and t == bare_pos) or (bare_pos is None and t == -1):
                    hidden[l][owner[s + q]] = h[q]
    keys = {}
    for l in key_layers:
        means = m_sum[l] / g_count[:, :, None]                 # (n, groups, m)
        keys[l] = means.mean(1).T.contiguous()                 # (m, n)
    hid = {l: torch.stack(v, 1) for l, v in hidden.items()}    # (d, n)
    return LayerStates(keys, hid)
