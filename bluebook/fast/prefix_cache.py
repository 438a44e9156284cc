"""The key/value cache behind the fast v* engine (:mod:`bluebook.fast.targets`).

Every row's positions before the subject's last token run once (no gradient) and are kept; each
optimisation step then runs only the suffix from that token on, in groups of similar length.
"""
from __future__ import annotations

import torch
from transformers import DynamicCache

from bluebook.core.objective import PromptRows
from bluebook.model.cache import cache_kwarg, returned_cache
from bluebook.model.hooks import skip_blocks
from bluebook.model.tokens import length_groups, right_pad


def shared_stems(rows: PromptRows, min_len: int = 2) -> dict[int, list[int]]:
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


class PrefixCache:
    """KV cache of every row's positions before the subject's last token, plus its suffix tokens.

    Prefixes are run once (no grad), sorted by length in chunks, so little compute goes to padding.
    Suffixes are grouped by length (:func:`length_groups` trades padding against matrix-product
    size); each group keeps its own contiguous copy of its rows' prefix keys/values (left-padded to
    the group's longest prefix, masked). After the first step, :meth:`record` keeps block ``l``'s output for
    the suffix positions (it does not depend on δ), and later steps run only the blocks above ``l``.
    As requests stop early, :meth:`regroup` rebuilds the groups from the rows still optimised.
    """

    def __init__(self, model, rows: PromptRows, pad: int, device):
        R = len(rows.ids)
        self.device = device
        base = model.base_model
        self.cache_kw = cache_kwarg(base)
        self.config = model.config
        self.rows, self.pad = rows, pad
        self.block_out: dict[int, torch.Tensor] = {}
        # One pass over every row's prefix; each group then keeps a contiguous copy of its rows.
        P_all = max(rows.idx)
        kv = self._prefix_kv(base, rows, P_all, pad) if P_all > 0 else None
        # Suffix groups: runs of rows sorted by suffix length, padded (after the real tokens, where
        # causal attention keeps real positions blind to them) to the group's longest suffix.
        self._build_groups(list(range(R)), lambda r: (kv, r), None)

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
            ids = torch.full((len(rs), S), self.pad, dtype=torch.long)
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

    def _prefix_kv(self, base, rows: PromptRows, P: int, pad: int):  # noqa: C901 - the cache's layout cases (per model family) in one place
        """Keys/values of every row's prefix, left-padded to ``P`` with zeros (masked out).

        Rows built from the same context template start with the same tokens (the template's text)
        for every request: that shared stem is run once, and each row runs only the rest of its
        prefix on top of it (same positions, same keys/values; the template is usually most of
        the prefix). The rests are grouped by length (:func:`length_groups`), right-padded (causal
        attention keeps real positions blind to pads after them), each on its stem's keys/values
        left-padded to the group's longest stem and masked.
        """
        stems = shared_stems(rows)
        stem_kv = self._stem_kv(base, stems, pad) if stems else {}
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
                ids = torch.full((n, Lg), pad, dtype=torch.long)
                pos = torch.zeros((n, Lg), dtype=torch.long)
                for a, r in enumerate(rs):
                    ids[a, :rows.idx[r] - s_of[r]] = torch.tensor(rows.ids[r][s_of[r]:rows.idx[r]])
                    pos[a] = torch.arange(s_of[r], s_of[r] + Lg)
                kw = {}
                if S:
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
                layers = returned_cache(out).layers
                if kv is None:
                    kv = out_kv([(layer.keys, layer.values) for layer in layers])
                for a, r in enumerate(rs):
                    i, st = rows.idx[r], s_of[r]
                    for (K, V), layer in zip(kv, layers):   # [stem, left-padded to S | rest, right-padded]
                        K[r, :, P - i:] = torch.cat([layer.keys[a, :, S - st:S], layer.keys[a, :, S:S + i - st]], 1)
                        V[r, :, P - i:] = torch.cat([layer.values[a, :, S - st:S], layer.values[a, :, S:S + i - st]], 1)
        return kv

    def _stem_kv(self, base, stems: dict[int, list[int]], pad: int) -> dict[int, list]:
        """Keys/values of each shared stem, ``{template: [(K, V) per layer]}`` with batch size 1."""
        keys = list(stems)
        ids, _ = right_pad([stems[t] for t in keys], pad)     # pads after the real tokens: never seen
        L = ids.shape[1]
        pos = torch.arange(L, device=self.device).expand(len(keys), L)
        with torch.no_grad():
            out = base(input_ids=ids.to(self.device), position_ids=pos, use_cache=True)
        layers = returned_cache(out).layers
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
            data = self.kv[g] if full else [(k[sel], v[sel]) for k, v in self.kv[g]]
            kw[self.cache_kw] = DynamicCache(ddp_cache_data=data, config=self.config)
        run = lambda: model.base_model(input_ids=self.suf[g][sel], attention_mask=mask,
                                       position_ids=self.spos[g][sel], use_cache=True, **kw).last_hidden_state
        if g not in self.block_out:
            return run()
        rec = self.block_out[g] if full else self.block_out[g][sel]
        with skip_blocks(model, layer, rec):
            return run()
