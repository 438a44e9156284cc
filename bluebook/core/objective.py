"""What v* is optimised on and what the optimisation returns (algorithms.md §1).

For a request (subject ``s``, prompt ``p``, new object ``o*``) and a layer ``l``, v* is
``z = h^l + δ``: the block-``l`` output at the subject's last token plus a vector ``δ`` chosen to

    minimise  L(δ) = mean_j NLL(o* | x_j ⊕ p(s))                       (over the context templates x_j)
                   + kl_factor · KL(P_δ(· | "s is a") ‖ P_0(· | "s is a"))   (keep the subject's essence)
                   + weight_decay · ‖δ‖ / ‖h^l‖²

with Adam (learning rate ``lr``), ``‖δ‖`` clamped to ``clamp_norm_factor · ‖h^l‖`` after each step, and an
early stop once ``L < early_stop``. :class:`PromptRows` lists the token rows that loss reads;
:class:`TargetResult` is what the plain loop (:mod:`bluebook.core.targets`) and the fast engine
(:mod:`bluebook.fast.targets`) both return.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from bluebook.core.templates import flatten
from bluebook.data.requests import EditRequest
from bluebook.model.tokens import subject_last_index


def target_dtype(model) -> torch.dtype:
    """The dtype v* is optimised in: float64 for a float64 model, else float32 (also for half models)."""
    p = next(model.parameters(), None)
    return torch.float64 if p is not None and p.dtype == torch.float64 else torch.float32


@dataclass
class TargetResult:
    """v* for a batch at one layer. Tensors are ``(n, d)``; traces are per request, per iteration."""
    layer: int
    z: torch.Tensor
    delta: torch.Tensor
    h0: torch.Tensor
    steps: list[int]                  # optimisation steps, counted as algorithms.md §10.4
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
    """The token rows of a batch's v* loss: per request one rewriting row per context template
    (``kind="rw"``, the target's tokens as labels) and one KL row (``"{} is a"``, cut after the subject).

    ``idx[r]`` is the subject's last token in row ``r`` (where δ is added), ``label_pos``/``labels`` the
    positions whose next-token predictions the NLL reads, ``first_row[j]`` request ``j``'s bare-template
    row (its subject state is ``h^l``)."""
    ids: list[list[int]]
    idx: list[int]
    req: list[int]
    kind: list[str]          # "rw" or "kl"
    tmpl: list[int]          # index of the row's context template (-1 for the KL prompt)
    label_pos: list[list[int]]
    labels: list[list[int]]
    first_row: list[int]     # per request: its bare-template rewriting row (gives h0)


def target_token_ids(tok, req: EditRequest) -> list[int]:
    """Token ids of `` target_new`` (with its leading space), the labels of the NLL term."""
    ids = tok(req.new_text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"target_new {req.target_new!r} (case_id={req.case_id}) tokenizes to nothing")
    return list(ids)


def build_rows(tok, requests, templates, kl_prompt: str) -> PromptRows:
    """Token rows for ``requests`` under the context-template groups ``templates`` (see :class:`PromptRows`)."""
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
            rows.ids.append(list(ids))
            rows.idx.append(idx)
            rows.req.append(j)
            rows.kind.append("rw")
            rows.tmpl.append(t)
            rows.label_pos.append(list(range(n - T, n)))
            rows.labels.append(tids)
        tmpl = kl_prompt
        idx = subject_last_index(tok, tmpl, r.subject)
        ids = tok(tmpl.replace("{}", r.subject))["input_ids"][:idx + 1]   # later positions are never read
        rows.ids.append(list(ids))
        rows.idx.append(idx)
        rows.req.append(j)
        rows.kind.append("kl")
        rows.tmpl.append(-1)
        rows.label_pos.append([idx])
        rows.labels.append([])
    return rows
