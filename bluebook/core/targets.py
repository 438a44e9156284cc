"""Target hidden states v* (a.k.a. z): algorithms.md §1, optimised for a whole batch at once.

The loss is the reference one: mean target NLL over the context-prefixed rewriting prompts,
``kl_factor · KL(P_cur ‖ P_init)`` on "{subject} is a" at the subject's last token, and
``weight_decay · ‖δ‖ / ‖h‖²``; Adam on δ, norm clamp after each step, early stop at loss < 0.05.

Speed without changing the math: δ is added to block ``l``'s output at the subject's last token,
so (causal attention) every position before it is the same at every step. Those positions are run
once and kept as a KV cache; each step runs only the remaining positions, with δ injected at the
first of them, and computes logits only where the loss reads them. Those positions' states at and
below block ``l`` do not depend on δ either: the first step records block ``l``'s output and later
steps run only the blocks above it. Rows are grouped by suffix length, so little padding is
computed. All requests of a batch share one forward/backward pass; each has its own early stop,
clamp and Adam moments, so the result is what optimising each request alone gives (tests check
this against a plain re-implementation).
"""
from __future__ import annotations

import time

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bluebook.core.config import TargetConfig
from bluebook.data import EditRequest
from bluebook.model.hooks import edit_output, skip_blocks
from bluebook.model.specs import check_layers, get_module, num_layers, spec_for
from bluebook.core.templates import flatten, validate
from bluebook.model.tokens import check_tokenizer, length_groups, right_pad, subject_last_index
from bluebook.model.device import model_device

_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8
# Regroup the suffixes once fewer than this share of the grouped rows still belong to requests
# being optimised (each regroup copies the live rows' cached keys/values once).
_REGROUP_BELOW = 0.75


@dataclass
class TargetResult:
    """v* for a batch at one layer. Tensors are ``(n, d)``; traces are per request, per iteration."""
    layer: int
    z: torch.Tensor
    delta: torch.Tensor
    h0: torch.Tensor
    steps: list[int]                  # optimisation steps counted as algorithms.md §10.4
    loss: list[list[float]] = field(default_factory=list)
    nll: list[list[float]] = field(default_factory=list)
    kl: list[list[float]] = field(default_factory=list)
    wd: list[list[float]] = field(default_factory=list)
    prob: list[list[float]] = field(default_factory=list)   # mean over prompts of exp(-mean token NLL)
    # Wall time, one dict per chunk of requests optimised together: {"requests", "prefix_seconds",
    # "step_seconds", "step_active"} (per iteration: seconds, and requests still optimised in it)
    timing: list[dict] = field(default_factory=list)

    @property
    def final_loss(self) -> list[float]:
        return [t[-1] for t in self.loss]

    @property
    def final_prob(self) -> list[float]:
        return [t[-1] for t in self.prob]


@dataclass
class PromptRows:
    ids: list[list[int]]
    idx: list[int]
    req: list[int]
    kind: list[str]          # "rw" or "kl"
    tmpl: list[int]          # index of the row's context template (-1 for the KL prompt)
    label_pos: list[list[int]]
    labels: list[list[int]]
    first_row: list[int]     # per request: its bare-template rewriting row (gives h0)


def target_token_ids(tok, req: EditRequest) -> list[int]:
    ids = tok(req.new_text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"target_new {req.target_new!r} (case_id={req.case_id}) tokenizes to nothing")
    return list(ids)


def build_rows(tok, requests, templates, kl_prompt: str) -> PromptRows:
    flat = flatten(templates)
    rows = PromptRows([], [], [], [], [], [], [], [])
    for j, r in enumerate(requests):
        tids = target_token_ids(tok, r)
        T = len(tids)
        tail = tok.decode(tids[:-1]) if T > 1 else ""
        rows.first_row.append(len(rows.ids))
        for t, c in enumerate(flat):
            tmpl = c.replace("{}", r.prompt) + tail
            idx = subject_last_index(tok, tmpl, r.subject)
            ids = tok(tmpl.replace("{}", r.subject))["input_ids"]
            n = len(ids)
            if not (0 <= idx < n - T + 1):
                raise ValueError(f"subject {r.subject!r} last token index {idx} falls outside prompt "
                                 f"{tmpl!r} (case_id={r.case_id})")
            rows.ids.append(list(ids)); rows.idx.append(idx); rows.req.append(j); rows.kind.append("rw")
            rows.tmpl.append(t)
            rows.label_pos.append(list(range(n - T, n))); rows.labels.append(tids)
        tmpl = kl_prompt
        idx = subject_last_index(tok, tmpl, r.subject)
        ids = tok(tmpl.replace("{}", r.subject))["input_ids"][:idx + 1]   # later positions are never read
        rows.ids.append(list(ids)); rows.idx.append(idx); rows.req.append(j); rows.kind.append("kl")
        rows.tmpl.append(-1)
        rows.label_pos.append([idx]); rows.labels.append([])
    return rows


def _base_and_head(model):
    base = model.base_model
    head = model.get_output_embeddings()
    return base, head


def _cache_kwarg(base) -> str:
    """transformers renamed ``past_key_values`` to ``cache`` in late 5.x; support both."""
    import inspect
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _returned_cache(out):
    c = getattr(out, "cache", None)
    return c if c is not None else getattr(out, "past_key_values")


def _shared_stems(rows: PromptRows, min_len: int = 2) -> dict[int, list[int]]:
    """Per context template: the token prefix that all its rows share (within their prefixes).

    Kept only where it is worth running once: at least ``min_len`` tokens and two rows.
    """
    stems: dict[int, list[int]] = {}
    count: dict[int, int] = {}
    for r, t in enumerate(rows.tmpl):
        if t < 0 or rows.idx[r] == 0:
            continue
        pre = rows.ids[r][:rows.idx[r]]
        if t not in stems:
            stems[t] = list(pre)
        else:
            st, n = stems[t], 0
            while n < len(st) and n < len(pre) and st[n] == pre[n]:
                n += 1
            del st[n:]
        count[t] = count.get(t, 0) + 1
    return {t: st for t, st in stems.items() if len(st) >= min_len and count[t] >= 2}


class _PrefixCache:
    """KV cache of every row's positions before the subject's last token, plus its suffix tokens.

    Prefixes are run once (no grad), sorted by length in chunks, so little compute goes to padding.
    Suffixes are grouped by length (:func:`length_groups` trades padding against matrix-product
    size); each group keeps its own contiguous copy of its rows' prefix keys/values (left-padded to
    the group's longest prefix, masked). After the first step, :meth:`record` keeps block ``l``'s output for
    the suffix positions (it does not depend on δ), and later steps run only the blocks above ``l``.
    As requests stop early, :meth:`regroup` rebuilds the groups from the rows still optimised.
    """

    def __init__(self, model, rows: PromptRows, pad_id: int, device):
        R = len(rows.ids)
        self.device = device
        base = model.base_model
        self.cache_kw = _cache_kwarg(base)
        self.config = model.config
        self.rows, self.pad_id = rows, pad_id
        self.block_out: dict[int, torch.Tensor] = {}
        # One pass over every row's prefix; each group then keeps a contiguous copy of its rows.
        P_all = max(rows.idx)
        kv = self._prefix_kv(base, rows, P_all, pad_id) if P_all > 0 else None
        # Suffix groups: runs of rows sorted by suffix length, padded (after the real tokens, where
        # causal attention keeps real positions blind to them) to the group's longest suffix.
        self._build_groups(list(range(R)), lambda r: (kv, r), None)
        del kv

    def _build_groups(self, rs_all: list[int], kv_src, out_src) -> None:
        """(Re)build the suffix groups over rows ``rs_all``.

        ``kv_src(r)`` gives ``(kv, q)``: the row's prefix keys/values are row ``q`` of ``kv`` (a list of
        per-layer (K, V) pairs, left-padded; None for rows without a prefix). ``out_src(r)`` gives
        ``(tensor, q)`` holding its recorded block output (right-padded), or ``out_src`` is None before
        the first step.
        """
        rows, device = self.rows, self.device
        suf_len = lambda r: len(rows.ids[r]) - rows.idx[r]
        groups = [[rs_all[q] for q in grp] for grp in length_groups([suf_len(r) for r in rs_all])]
        self.groups = dict(enumerate(groups))
        self.suf, self.spos, self.rows_t, self.pmask, self.kv = {}, {}, {}, {}, {}
        block_out = {}
        for g, rs in self.groups.items():
            S = max(suf_len(r) for r in rs)
            ids = torch.full((len(rs), S), self.pad_id, dtype=torch.long)
            for q, r in enumerate(rs):
                tail = rows.ids[r][rows.idx[r]:]
                ids[q, :len(tail)] = torch.tensor(tail)
            self.suf[g] = ids.to(device)
            self.spos[g] = torch.tensor([[rows.idx[r] + q for q in range(S)] for r in rs], device=device)
            self.rows_t[g] = torch.tensor(rs, device=device)
            P = max(rows.idx[r] for r in rs)
            pmask = torch.zeros((len(rs), P), dtype=torch.long)
            for q, r in enumerate(rs):
                if rows.idx[r] > 0:
                    pmask[q, P - rows.idx[r]:] = 1
            self.pmask[g] = pmask.to(device)
            self.kv[g] = self._gather(rs, kv_src, P, time_dim=2, left_pad=True) if P > 0 else None
            if out_src is not None:
                block_out[g] = self._gather(rs, out_src, S, time_dim=1, left_pad=False)
        self.block_out = block_out

    def _gather(self, rs, src, width: int, time_dim: int, left_pad: bool):
        """Stack rows ``rs`` from their sources into one tensor (or a per-layer list of (K, V) pairs),
        each row's real positions kept at the right end (``left_pad``: prefix keys/values) or the left
        end (suffix states), padded to ``width``; one index-copy per source tensor rather than one per row."""
        by_src: dict[int, tuple] = {}
        for a, r in enumerate(rs):
            t, q = src(r)
            if t is None:        # a row without a prefix: its (masked) keys/values stay zero
                continue
            by_src.setdefault(id(t), (t, [], []))[1].append(q)
            by_src[id(t)][2].append(a)

        def one(parts):          # parts: [(source tensor, source rows, destination rows)]
            ref = parts[0][0]
            shape = list(ref.shape)
            shape[0], shape[time_dim] = len(rs), width
            out = torch.zeros(shape, dtype=ref.dtype, device=ref.device)
            for t, qs, as_ in parts:
                m = min(width, t.shape[time_dim])
                src_at, dst_at = (t.shape[time_dim] - m, width - m) if left_pad else (0, 0)
                # narrow first: only the kept positions of the chosen rows are copied
                piece = t.narrow(time_dim, src_at, m).index_select(0, torch.tensor(qs, device=t.device))
                dst = out.narrow(time_dim, dst_at, m)
                dst.index_copy_(0, torch.tensor(as_, device=out.device), piece)
            return out
        srcs = list(by_src.values())
        if isinstance(srcs[0][0], list):                    # per-layer (K, V) pairs
            return [(one([(t[li][0], qs, as_) for t, qs, as_ in srcs]),
                     one([(t[li][1], qs, as_) for t, qs, as_ in srcs])) for li in range(len(srcs[0][0]))]
        return one(srcs)

    def regroup(self, rs_all: list[int]) -> None:
        """Regroup the suffixes of the rows still optimised (``rs_all``): as requests stop, the
        original groups thin out into many small matrix products; regrouping the rest by length
        restores larger ones. Keys/values and recorded block outputs are copied, not recomputed."""
        where = {}
        for g, rs in self.groups.items():
            for q, r in enumerate(rs):
                where[r] = (g, q)
        kv, out = self.kv, self.block_out
        self._build_groups(rs_all, lambda r: (kv[where[r][0]], where[r][1]),
                           (lambda r: (out[where[r][0]], where[r][1])) if out else None)

    def n_rows(self) -> int:
        return sum(len(rs) for rs in self.groups.values())

    def _prefix_kv(self, base, rows: PromptRows, P: int, pad_id: int):
        """Keys/values of every row's prefix, left-padded to ``P`` with zeros (masked out).

        Rows built from the same context template start with the same tokens (the template's text)
        for every request: that shared stem is run once, and each row runs only the rest of its
        prefix on top of it (same positions, same keys/values; the template is usually most of
        the prefix). The rests are grouped by length (:func:`length_groups`), right-padded (causal
        attention keeps real positions blind to pads after them), each on its stem's keys/values
        left-padded to the group's longest stem and masked.
        """
        stems = _shared_stems(rows)
        stem_kv = self._stem_kv(base, stems, pad_id) if stems else {}
        live = [r for r in range(len(rows.ids)) if rows.idx[r] > 0]
        s_of = {r: len(stems[rows.tmpl[r]]) if rows.tmpl[r] in stems else 0 for r in live}
        kv = None

        def out_kv(ref):
            return [(torch.zeros((len(rows.ids), k.shape[1], P, k.shape[3]), dtype=k.dtype, device=self.device),
                     torch.zeros((len(rows.ids), v.shape[1], P, v.shape[3]), dtype=v.dtype, device=self.device))
                    for k, v in ref]

        whole = [r for r in live if rows.idx[r] == s_of[r]]          # prefix = its stem
        if whole:
            kv = out_kv(stem_kv[rows.tmpl[whole[0]]])
            for r in whole:
                i = rows.idx[r]
                for (K, V), (k, v) in zip(kv, stem_kv[rows.tmpl[r]]):
                    K[r, :, P - i:] = k[0]
                    V[r, :, P - i:] = v[0]
        rest = [r for r in live if rows.idx[r] > s_of[r]]
        for grp in length_groups([rows.idx[r] - s_of[r] for r in rest]):
            for c0 in range(0, len(grp), 64):
                rs = [rest[q] for q in grp[c0:c0 + 64]]
                n = len(rs)
                Lg = max(rows.idx[r] - s_of[r] for r in rs)
                S = max(s_of[r] for r in rs)
                ids = torch.full((n, Lg), pad_id, dtype=torch.long)
                pos = torch.zeros((n, Lg), dtype=torch.long)
                for a, r in enumerate(rs):
                    ids[a, :rows.idx[r] - s_of[r]] = torch.tensor(rows.ids[r][s_of[r]:rows.idx[r]])
                    pos[a] = torch.arange(s_of[r], s_of[r] + Lg)
                kw = {}
                if S:
                    from transformers import DynamicCache
                    mask = torch.ones((n, S + Lg), dtype=torch.long)
                    past = None
                    for a, r in enumerate(rs):
                        mask[a, :S - s_of[r]] = 0
                        if s_of[r] == 0:
                            continue
                        src = stem_kv[rows.tmpl[r]]
                        if past is None:
                            past = [(torch.zeros((n, k.shape[1], S, k.shape[3]), dtype=k.dtype, device=self.device),
                                     torch.zeros((n, v.shape[1], S, v.shape[3]), dtype=v.dtype, device=self.device))
                                    for k, v in src]
                        for (pk, pv), (k, v) in zip(past, src):
                            pk[a, :, S - s_of[r]:] = k[0]
                            pv[a, :, S - s_of[r]:] = v[0]
                    kw[self.cache_kw] = DynamicCache(ddp_cache_data=past, config=self.config)
                    kw["attention_mask"] = mask.to(self.device)
                with torch.no_grad():
                    out = base(input_ids=ids.to(self.device), position_ids=pos.to(self.device), use_cache=True, **kw)
                layers = _returned_cache(out).layers
                if kv is None:
                    kv = out_kv([(layer.keys, layer.values) for layer in layers])
                for a, r in enumerate(rs):
                    i, st = rows.idx[r], s_of[r]
                    for (K, V), layer in zip(kv, layers):   # [stem, left-padded to S | rest, right-padded]
                        K[r, :, P - i:] = torch.cat([layer.keys[a, :, S - st:S], layer.keys[a, :, S:S + i - st]], 1)
                        V[r, :, P - i:] = torch.cat([layer.values[a, :, S - st:S], layer.values[a, :, S:S + i - st]], 1)
        return kv

    def _stem_kv(self, base, stems: dict[int, list[int]], pad_id: int) -> dict[int, list]:
        """Keys/values of each shared stem, ``{template: [(K, V) per layer]}`` with batch size 1."""
        keys = list(stems)
        ids, _ = right_pad([stems[t] for t in keys], pad_id)     # pads after the real tokens: never seen
        L = ids.shape[1]
        pos = torch.arange(L, device=self.device).expand(len(keys), L)
        with torch.no_grad():
            out = base(input_ids=ids.to(self.device), position_ids=pos, use_cache=True)
        layers = _returned_cache(out).layers
        return {t: [(layer.keys[a:a + 1, :, :len(stems[t])].contiguous(),
                     layer.values[a:a + 1, :, :len(stems[t])].contiguous()) for layer in layers]
                for a, t in enumerate(keys)}

    def record(self, g: int, out: torch.Tensor):
        """Keep block ``l``'s output (before δ) for every row of group ``g``."""
        self.block_out[g] = out.detach()

    def forward(self, model, g: int, sel: torch.Tensor, layer: int):
        """Run group ``g`` restricted to its rows ``sel`` (indices into the group).

        Once the group's block-``layer`` output is recorded, blocks up to ``layer`` are skipped.
        """
        full = sel.numel() == self.rows_t[g].numel()
        S = self.suf[g].shape[1]
        pm = self.pmask[g] if full else self.pmask[g][sel]
        mask = torch.cat([pm, torch.ones((pm.shape[0], S), dtype=torch.long, device=self.device)], 1)
        kw = {}
        if self.kv[g] is not None:
            from transformers import DynamicCache
            data = self.kv[g] if full else [(k[sel], v[sel]) for k, v in self.kv[g]]
            kw[self.cache_kw] = DynamicCache(ddp_cache_data=data, config=self.config)
        run = lambda: model.base_model(input_ids=self.suf[g][sel], attention_mask=mask,
                                       position_ids=self.spos[g][sel], use_cache=True, **kw).last_hidden_state
        if g not in self.block_out:
            return run()
        rec = self.block_out[g] if full else self.block_out[g][sel]
        with skip_blocks(model, layer, rec):
            return run()


def _blocks_return_tensors(model, layer: int) -> bool:
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


def optimize_targets(model, tok, requests: list[EditRequest], layer: int, cfg: TargetConfig | None = None,
                     templates=(("{}",),), *, batch_size: int = 64, progress: bool = True,
                     loss_layer: int | None = None) -> TargetResult:
    """Optimise v* at block ``layer`` for every request (batched; same result as one by one).

    ``templates`` are the context-template groups (``bluebook.templates.context_templates``).
    Requests are processed in chunks of ``batch_size``. Returns a :class:`TargetResult`.
    """
    cfg = cfg or TargetConfig()
    if not requests:
        raise ValueError("requests is empty: nothing to optimise")
    layer = check_layers(model, [layer], field="layer")[0]
    check_tokenizer(model, tok)
    if loss_layer is not None and loss_layer != num_layers(model) - 1:
        raise NotImplementedError("only the final layer's logits are supported as the loss layer "
                                  "(the reference's v_loss_layer is always the last block)")
    templates = validate(templates)
    parts = [_optimize_chunk(model, tok, requests[s:s + batch_size], layer, cfg, templates, progress)
             for s in range(0, len(requests), batch_size)]
    if len(parts) == 1:
        return parts[0]
    cat = lambda name: torch.cat([getattr(p, name) for p in parts], 0)
    join = lambda name: [x for p in parts for x in getattr(p, name)]
    return TargetResult(layer, cat("z"), cat("delta"), cat("h0"), join("steps"), join("loss"), join("nll"),
                        join("kl"), join("wd"), join("prob"), join("timing"))


def _optimize_chunk(model, tok, requests, layer, cfg: TargetConfig, templates, progress) -> TargetResult:
    device = model_device(model)
    rows = build_rows(tok, requests, templates, cfg.kl_prompt)
    n, R = len(requests), len(rows.ids)
    pad = pad_id(tok)
    t_start = time.perf_counter()
    cache = _PrefixCache(model, rows, pad, device)
    timing = {"requests": n, "prefix_seconds": time.perf_counter() - t_start, "step_seconds": [], "step_active": []}
    _, head = _base_and_head(model)
    block = spec_for(model).block_name(layer)
    # Blocks at and below ``layer`` can be skipped after the first step when they return bare tensors
    # (transformers >= 5); otherwise every step runs the whole stack (same result, slower).
    skippable = _blocks_return_tensors(model, layer)

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
                e_row.append(r); e_pos.append(p - rows.idx[r]); e_lab.append(lab); e_w.append(1.0 / (T * n_rw[j]))
                e_wt.append(1.0 / T)
        else:
            kl_rows[j] = r
    t = lambda x, dt=torch.long: torch.tensor(x, dtype=dt, device=device)
    e_row, e_pos, e_lab = t(e_row), t(e_pos), t(e_lab)
    e_w, e_wt = t(e_w, torch.float32), t(e_wt, torch.float32)
    row_req = t(rows.req)
    e_req = row_req[e_row]
    kl_rows = t(kl_rows)
    first_rows = t(rows.first_row)
    rw_per_row = torch.tensor([1.0 / n_rw[j] if k == "rw" else 0.0 for j, k in zip(rows.req, rows.kind)],
                              device=device)

    d = model.get_input_embeddings().weight.shape[1]
    delta = torch.zeros(n, d, device=device, dtype=torch.float32)
    m_adam = torch.zeros_like(delta)
    v_adam = torch.zeros_like(delta)
    h0 = torch.zeros(n, d, device=device, dtype=torch.float32)
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
                if len(live) < _REGROUP_BELOW * cache.n_rows():
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
                        h0[row_req[g_rows][is_first]] = h[is_first, 0].detach().float()
                        if skippable:
                            cache.record(g, h)
                    return torch.cat([h[:, :1] + d_act[owner].to(h.dtype)[:, None, :], h[:, 1:]], 1)

                with edit_output(model, block, inject):
                    hs_g = cache.forward(model, g, sel, layer)
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
            logp = F.log_softmax(head(sel).float(), -1)
            n_e = er.numel()
            lp = logp[:n_e].gather(1, el[:, None]).squeeze(1)
            na = active.numel()
            nll = torch.zeros(na, device=device).index_add(0, local_req[eq], -lp * ew)
            # per-row mean token NLL -> "avg prob" = mean over prompts of exp(-row NLL)
            row_nll = torch.zeros(R, device=device).index_add(0, er, (-lp * ewt).detach())
            prob = torch.zeros(na, device=device).index_add(
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
                if vals[0][a] < cfg.early_stop:
                    steps[j] = it
                elif it == cfg.steps - 1:
                    steps[j] = cfg.steps
                else:
                    keep.append(a)
            if keep:
                keep_t = torch.tensor(keep, device=device)
                grad, = torch.autograd.grad(loss[keep_t].sum(), d_act)
                g = grad[keep_t].float()
                jj = active[keep_t]
                tt = it + 1
                m_adam[jj] = _BETA1 * m_adam[jj] + (1 - _BETA1) * g
                v_adam[jj] = _BETA2 * v_adam[jj] + (1 - _BETA2) * g * g
                step_size = cfg.lr / (1 - _BETA1 ** tt)
                denom = v_adam[jj].sqrt() / (1 - _BETA2 ** tt) ** 0.5 + _EPS
                new = delta[jj] - step_size * m_adam[jj] / denom
                max_norm = cfg.clamp_norm_factor * h0[jj].norm(dim=1)
                norm = new.norm(dim=1)
                scale = torch.where(norm > max_norm, max_norm / norm, torch.ones_like(norm))
                delta[jj] = new * scale[:, None]
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


def optimize_target_plain(model, tok, req: EditRequest, layer: int, cfg: TargetConfig | None = None,
                          templates=(("{}",),)) -> TargetResult:
    """The reference loop written plainly, for one request: every step runs every prompt through the
    whole model (full-vocabulary logits at every position) with ``torch.optim.Adam``.

    Slow by design; it exists to check :func:`optimize_targets` against (tests) and to measure the
    speed-up (benchmarks). Returns a one-row :class:`TargetResult`.
    """
    cfg = cfg or TargetConfig()
    templates = validate(templates)
    block = spec_for(model).block_name(layer)
    device = model_device(model)
    tids = target_token_ids(tok, req)
    T = len(tids)
    tail = tok.decode(tids[:-1]) if T > 1 else ""
    flat = flatten(templates)
    tmpls = [c.replace("{}", req.prompt) + tail for c in flat] + [cfg.kl_prompt]
    texts = [t.replace("{}", req.subject) for t in tmpls]
    idxs = torch.tensor([subject_last_index(tok, t, req.subject) for t in tmpls], device=device)
    enc = tok(texts, return_tensors="pt", padding=True).to(device)
    lens = enc["attention_mask"].sum(1).tolist()
    delta = torch.zeros(model.get_input_embeddings().weight.shape[1], device=device, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=cfg.lr)
    rows = torch.arange(len(texts), device=device)
    h0, kl0, steps = None, None, cfg.steps
    trace = {k: [] for k in ("loss", "nll", "kl", "wd", "prob")}
    for it in range(cfg.steps):
        seen = {}

        def inject(h):
            if "h0" not in seen:
                seen["h0"] = h[0, idxs[0]].detach().float().clone()
            add = torch.zeros_like(h)
            add[rows, idxs] = delta.to(h.dtype)
            return h + add
        with edit_output(model, block, inject):
            logits = model(**enc).logits
        if h0 is None:
            h0 = seen["h0"]
        logp = F.log_softmax(logits.float(), -1)
        row_nll = torch.stack([-logp[r, lens[r] - T:lens[r]].gather(1, torch.tensor(tids, device=device)[:, None]).mean()
                               for r in range(len(flat))])
        nll = row_nll.mean()
        cur = logp[len(flat), idxs[-1]]
        if kl0 is None:
            kl0 = cur.detach().clone()
        kl = cfg.kl_factor * F.kl_div(kl0[None], cur[None], log_target=True, reduction="batchmean")
        wd = cfg.weight_decay * delta.norm() / h0.norm() ** 2
        loss = nll + kl + wd
        for k, v in zip(trace, (loss, nll, kl, wd, torch.exp(-row_nll).mean())):
            trace[k].append(float(v.detach()))
        if loss.item() < cfg.early_stop:
            steps = it
            break
        if it == cfg.steps - 1:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            max_norm = cfg.clamp_norm_factor * h0.norm()
            if delta.norm() > max_norm:
                delta[...] = delta * max_norm / delta.norm()
    d = delta.detach()[None]
    return TargetResult(layer, (h0[None] + d), d, h0[None], [steps], *[[trace[k]] for k in trace])
