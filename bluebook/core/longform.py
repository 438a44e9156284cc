"""Long targets: a paragraph or more as ``target_new``, edited window by window (docs/algorithms.md §7.2).

A short target (a few tokens) is written at one place: the subject's last token, where a single
``δ`` makes the model continue with ``o*``. A paragraph cannot be carried by one vector there.
The long-form literature (AnyEdit, Jiang et al. 2025) cuts the target into windows of about 40
tokens and edits each window's *key token*, the token just before the window, autoregressively:

    window k = target tokens [k·W, (k+1)·W);   its key token = the token before the window
    v*_k = h^l(key token) + δ_k,  δ_k minimising  mean NLL(window k | prompt ⊕ target[:k·W])
                                                   + weight_decay · ‖δ_k‖ / ‖h^l‖²

with ``δ_1 … δ_{k-1}`` held at their key tokens while ``δ_k`` is optimised (the later windows are
conditioned on the earlier ones already being written). A long request becomes one (key, v*) column
per window; the rest of the edit (keys, residual rule, solver, BLUE or not) is the same loop as for
short targets. What differs from the short-target objective, and why:

* no context templates: a random prefix would move every key token, and the literature uses none;
* no KL term: its prompt ``"{subject} is a"`` protects the subject's next-token distribution, which
  a description rewrites on purpose;
* the key tokens are the prompt's last token and the target tokens before each window, read in the
  one text ``prompt ⊕ target`` (causal attention: later tokens cannot change them).

:func:`optimize_long_plain` is the readable loop (every step runs the whole text so far);
:func:`optimize_long_cached` is the exact alternative the engine uses: the text before window k's key
token runs once, without gradient, into a key/value cache, and each step runs only the window, so
the memory of a step is bounded by the window, not by the target's length.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import DynamicCache

from bluebook.core.config import TargetConfig
from bluebook.core.keys import LayerStates
from bluebook.core.objective import TargetResult, target_dtype
from bluebook.core.optim import adam_clamp_step, finished
from bluebook.core.targets import concat_targets
from bluebook.data.requests import EditRequest
from bluebook.model.cache import cache_kwarg, returned_cache
from bluebook.model.device import model_device
from bluebook.model.hooks import Trace, edit_output
from bluebook.model.specs import check_layers, spec_for

__all__ = ["LONG_FORM_MODES", "Window", "is_long", "long_requests", "target_windows", "optimize_long_plain",
           "optimize_long_cached", "optimize_long_targets", "read_long_states", "column_owners"]

LONG_FORM_MODES = ("auto", "always", "never")
"""``target.long_form``: ``auto`` edits a request window by window when its target has more tokens
than ``target.window``; ``always`` does so for every request; ``never`` for none."""


@dataclass(frozen=True)
class Window:
    """One window of a long target, in the token ids of ``prompt ⊕ target``.

    ``at`` is the key token's position (the token before the window), ``labels`` the window's
    tokens, predicted at positions ``at … at + len(labels) − 1``; ``ids`` the text up to the
    window's last input position (its last label is never an input)."""
    request: int
    index: int
    ids: tuple[int, ...]
    at: int
    labels: tuple[int, ...]


def _target_ids(tok, req: EditRequest) -> list[int]:
    ids = tok(req.new_text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"target_new {req.target_new[:60]!r} (case_id={req.case_id}) tokenizes to no tokens")
    return list(ids)


def is_long(tok, req: EditRequest, cfg: TargetConfig) -> bool:
    """Whether ``req`` is edited window by window under ``cfg`` (see :data:`LONG_FORM_MODES`)."""
    if cfg.long_form == "always":
        return True
    if cfg.long_form == "never":
        return False
    return len(_target_ids(tok, req)) > cfg.window


def long_requests(tok, requests, cfg: TargetConfig) -> bool:
    """True when the batch is long-form, False when it is short; a batch mixing both is refused."""
    flags = [is_long(tok, r, cfg) for r in requests]
    if all(flags):
        return True
    if not any(flags):
        return False
    longs = [r.case_id if r.case_id is not None else i for i, (r, f) in enumerate(zip(requests, flags)) if f]
    raise ValueError(f"target_new: requests {longs} have targets longer than target.window={cfg.window} tokens "
                     "and the others do not; edit long and short targets in separate batches (or set "
                     "target.long_form to 'always' or 'never')")


def target_windows(tok, req: EditRequest, window: int, request: int = 0) -> list[Window]:
    """The windows of ``req``'s target, each ``window`` tokens long (the last may be shorter)."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"target.window must be a positive integer, got {window!r}")
    prompt = list(tok(req.text)["input_ids"])
    if not prompt:
        raise ValueError(f"prompt {req.prompt!r} (case_id={req.case_id}) tokenizes to no tokens")
    target = _target_ids(tok, req)
    full = prompt + target
    out = []
    for k, s in enumerate(range(0, len(target), window)):
        labels = target[s:s + window]
        at = len(prompt) + s - 1
        out.append(Window(request, k, tuple(full[:at + len(labels)]), at, tuple(labels)))
    return out


def column_owners(tok, requests, cfg: TargetConfig) -> list[int]:
    """For a long-form batch: the request each (key, v*) column belongs to, in column order."""
    return [w.request for j, r in enumerate(requests) for w in target_windows(tok, r, cfg.window, j)]


def _window_loss(logits: torch.Tensor, labels: torch.Tensor, first: int, delta, h0, cfg: TargetConfig, dt):
    """``(loss, nll, wd)``: the mean NLL of the window's tokens (predicted from position ``first`` on)
    plus the weight decay ``weight_decay · ‖δ‖ / ‖h‖²``."""
    logp = F.log_softmax(logits.to(dt), -1)
    pos = torch.arange(first, first + len(labels), device=logits.device)
    nll = -logp[pos, labels].mean()
    wd = cfg.weight_decay * delta.norm() / h0.norm() ** 2
    return nll + wd, nll, wd


def _optimize_window(step_logits, d: int, device, dt, cfg: TargetConfig):
    """Adam on one window's δ, as the short-target loop: clamp ``‖δ‖ ≤ clamp_norm_factor · ‖h‖`` after
    each step, stop early once the loss is below ``early_stop``. ``step_logits(delta)`` runs the model
    with δ added and returns ``(logits, first, labels, h0)``. Returns ``(δ, h0, steps, traces, step_seconds)``."""
    delta = torch.zeros(d, device=device, dtype=dt, requires_grad=True)
    moments = torch.zeros_like(delta), torch.zeros_like(delta)    # Adam's first and second
    trace = {k: [] for k in ("loss", "nll", "kl", "wd", "prob")}
    steps, h0, seconds = cfg.steps, None, []
    for it in range(cfg.steps):
        t0 = time.perf_counter()
        logits, first, labels, got = step_logits(delta)
        h0 = got if h0 is None else h0
        loss, nll, wd = _window_loss(logits, labels, first, delta, h0, cfg, dt)
        for k, v in zip(trace, (loss, nll, torch.zeros(()), wd, torch.exp(-nll))):
            trace[k].append(float(v.detach()))
        seconds.append(time.perf_counter() - t0)
        if (done := finished(loss.item(), it, cfg)) is not None:
            steps = done
            break
        grad, = torch.autograd.grad(loss, delta)
        adam_clamp_step(delta, *moments, grad, it + 1, cfg.lr, cfg.clamp_norm_factor * h0.norm())
    return delta.detach(), h0, steps, trace, seconds


def _check_cfg(cfg: TargetConfig) -> None:
    if cfg.steps < 1:
        raise ValueError(f"target.steps must be at least 1 for a long target, got {cfg.steps}")


def optimize_long_plain(model, tok, req: EditRequest, layer: int, cfg: TargetConfig | None = None,
                        request: int = 0) -> TargetResult:
    """v* for every window of one long request at block ``layer``, plainly: each step runs the whole
    text up to the window, with the earlier windows' δ at their key tokens. One row per window."""
    cfg = cfg or TargetConfig()
    _check_cfg(cfg)
    device, dt = model_device(model), target_dtype(model)
    block = spec_for(model).out_name(layer)   # the edit space (ModelSpec.out)
    d = model.get_input_embeddings().weight.shape[1]
    done: list[tuple[int, torch.Tensor]] = []            # (key position, δ) of the windows optimised so far
    rows = []
    for w in target_windows(tok, req, cfg.window, request):
        ids = torch.tensor([w.ids], device=device)
        labels = torch.tensor(w.labels, device=device)

        def step(delta, w=w, ids=ids, labels=labels):
            seen = {}

            def add(h):
                seen["h0"] = h[0, w.at].detach().to(dt).clone()
                add = torch.zeros_like(h)
                for at, dj in done:
                    add[0, at] = dj.to(h.dtype)
                add[0, w.at] = add[0, w.at] + delta.to(h.dtype)
                return h + add
            with edit_output(model, block, add):
                logits = model(input_ids=ids).logits[0]
            return logits, w.at, labels, seen["h0"]
        delta, h0, steps, trace, secs = _optimize_window(step, d, device, dt, cfg)
        done.append((w.at, delta))
        rows.append((delta, h0, steps, trace, secs))
    return _stack(layer, rows)


def optimize_long_cached(model, tok, req: EditRequest, layer: int, cfg: TargetConfig | None = None,
                         request: int = 0) -> TargetResult:
    """:func:`optimize_long_plain` with the text before each key token run once into a key/value
    cache (no gradient flows there: δ_k only changes positions from its key token on). Same result."""
    cfg = cfg or TargetConfig()
    _check_cfg(cfg)
    device, dt = model_device(model), target_dtype(model)
    block = spec_for(model).out_name(layer)   # the edit space (ModelSpec.out)
    kw = cache_kwarg(model.base_model)
    d = model.get_input_embeddings().weight.shape[1]
    done: list[tuple[int, torch.Tensor]] = []
    rows = []
    for w in target_windows(tok, req, cfg.window, request):
        P = w.at                                          # positions before the key token
        kv = None
        if P > 0:
            def add_done(h):
                add = torch.zeros_like(h)
                for at, dj in done:
                    add[0, at] = dj.to(h.dtype)
                return h + add
            with torch.no_grad(), edit_output(model, block, add_done):     # no LM head: only the cache is kept
                out = model.base_model(input_ids=torch.tensor([w.ids[:P]], device=device), use_cache=True)
            kv = [(layer.keys.detach(), layer.values.detach()) for layer in returned_cache(out).layers]
        suffix = torch.tensor([w.ids[P:]], device=device)
        positions = torch.arange(P, len(w.ids), device=device)[None]
        labels = torch.tensor(w.labels, device=device)

        def step(delta, kv=kv, suffix=suffix, positions=positions, labels=labels):
            seen = {}

            def add(h):
                seen["h0"] = h[0, 0].detach().to(dt).clone()
                add = torch.zeros_like(h)
                add[0, 0] = delta.to(h.dtype)
                return h + add
            # a fresh cache object per step over the same prefix tensors (a forward appends to its cache)
            extra = {kw: DynamicCache(ddp_cache_data=kv, config=model.config)} if kv is not None else {}
            with edit_output(model, block, add):
                logits = model(input_ids=suffix, position_ids=positions, use_cache=kv is not None, **extra).logits[0]
            return logits, 0, labels, seen["h0"]
        delta, h0, steps, trace, secs = _optimize_window(step, d, device, dt, cfg)
        done.append((w.at, delta))
        rows.append((delta, h0, steps, trace, secs))
    return _stack(layer, rows)


def _stack(layer: int, rows) -> TargetResult:
    delta = torch.stack([r[0] for r in rows])
    h0 = torch.stack([r[1] for r in rows])
    timing = [{"requests": 1, "windows": len(rows), "prefix_seconds": 0.0,
               "step_seconds": [s for r in rows for s in r[4]], "step_active": [1] * sum(len(r[4]) for r in rows),
               "seconds": sum(sum(r[4]) for r in rows)}]
    return TargetResult(layer, h0 + delta, delta, h0, [r[2] for r in rows],
                        *[[r[3][k] for r in rows] for k in ("loss", "nll", "kl", "wd", "prob")], timing=timing)


def optimize_long_targets(model, tok, requests, layer: int, cfg: TargetConfig | None = None,
                          progress: bool = False) -> TargetResult:
    """v* for every window of every request (``cfg.engine``: ``plain`` or the cached ``fast``), one
    row per window in request order (:func:`column_owners` maps rows to requests)."""
    cfg = cfg or TargetConfig()
    layer = check_layers(model, [layer], field="layer")[0]
    run = optimize_long_cached if cfg.engine == "fast" else optimize_long_plain
    it = enumerate(requests)
    if progress and len(requests) > 1:
        it = tqdm(list(it), desc=f"long v* layer {layer}", leave=False)
    return concat_targets([run(model, tok, r, layer, cfg, j) for j, r in it])


@torch.no_grad()
def read_long_states(model, tok, requests, window: int, key_layers=(), hidden_layers=()):
    """Keys (the edited projection's input) and block outputs at every window's key token, read in
    the text ``prompt ⊕ target`` of each request: ``keys[l]`` ``(m, n_windows)``, ``hidden[l]`` ``(d, n_windows)``."""
    key_layers = check_layers(model, key_layers, field="key_layers") if key_layers else []
    hidden_layers = check_layers(model, hidden_layers, field="hidden_layers") if hidden_layers else []
    spec, device, dt = spec_for(model), model_device(model), target_dtype(model)
    names_in = [spec.proj_name(l) for l in key_layers]
    names_out = [spec.out_name(l) for l in hidden_layers]
    stop = spec.block_name(max(key_layers + hidden_layers))
    keys = {l: [] for l in key_layers}
    hidden = {l: [] for l in hidden_layers}
    for j, r in enumerate(requests):
        ws = target_windows(tok, r, window, j)
        ids = torch.tensor([ws[-1].ids], device=device)     # the last window's text holds every key token
        pos = torch.tensor([w.at for w in ws], device=device)
        with Trace(model, names_in, inputs=True, outputs=False) as tin, \
                Trace(model, names_out, stop_after=stop) as tout:
            tout.run(model.base_model, input_ids=ids)
        for l, name in zip(key_layers, names_in):
            keys[l].append(tin.inputs[name][0, pos].to(dt))
        for l, name in zip(hidden_layers, names_out):
            hidden[l].append(tout.outputs[name][0, pos].to(dt))
    return LayerStates({l: torch.cat(v).T.contiguous() for l, v in keys.items()},
                       {l: torch.cat(v).T.contiguous() for l, v in hidden.items()})
