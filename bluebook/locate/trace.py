"""Causal trace of one prompt (ROME, Meng et al. 2022): which hidden states carry a fact?

For one prompt ``template.format(subject)`` and its expected continuation ``target``:

1. **clean run**: record every traced module's output; ``high`` = p(target's first token).
2. **corrupted runs**: add Gaussian noise to the subject's token embeddings (the output of the
   embedding module, at the subject's token positions only), ``n_samples`` independent draws;
   ``low`` = the mean p(target) over the draws.
3. **restored runs**: in each corrupted run, put back the clean output of *one* module
   (a whole block, its MLP, or its attention) at *one* token position and measure p(target)
   again. ``scores[kind][position, layer]`` is that probability averaged over the noise draws,
   and the *indirect effect* of the state is ``score - low``.

What one restoration computes
-----------------------------
Written as plain code, one cell ``(kind, p, l)`` of the scores is (the slow reference in
``tests/integration/test_locate.py`` is exactly this)::

    for each noise draw s:                       # eps = subject_noise(n_samples, ..., seed)
        run the whole prompt with
            embedding output[subject tokens] += eps[s]
            output of module (kind, j)[p] = its clean-run value, for every j in window(l)
        p_s = softmax(logits at the last position)[target id]
    scores[kind][p, l] = mean over s of p_s

Defaults and their origin
-------------------------
* ``noise``: ``3 ×`` the standard deviation of the embedding matrix (:func:`embedding_noise_scale`).
  ROME uses 3 × the std of the embeddings of the dataset's *subject tokens*; the std over the
  whole matrix is the same idea without needing a dataset pass (the two are close in practice).
* ``n_samples=3`` noise draws per prompt. ROME uses 10; on CPU the cost is linear in it, and
  averages over many prompts already average over ``n_prompts × n_samples`` draws. Pass
  ``n_samples=10`` for ROME's setting, e.g. for a single-prompt figure or on a GPU.
* ``window=1``: mlp/attn states are restored at a single layer. ROME restores 10 consecutive
  layers for mlp/attn on GPT2-XL (48 layers) to make the small per-layer effects visible; pass
  ``window=10`` (or a few layers on a shallow model) to reproduce that view. The window around
  layer ``l`` is ``[l - window//2, l + ceil(window/2))`` clipped to the model, as in ROME.
  Block outputs are always restored at one layer (a block output is the whole residual stream).

How the computation is organised (all exact, only faster)
---------------------------------------------------------
Every (kind, position, layer, noise draw) restoration is one *row* of a batched forward pass.
One forward hook per (kind, layer) writes the clean value into exactly the rows that restore that
module, and the embedding hook adds each row's own noise draw. Two exact shortcuts keep this cheap:

* **causality in positions**: restoring position ``p`` cannot change positions ``< p``, so those
  are computed once for each noise draw (a key/value cache of the corrupted prefix) and each row
  only runs positions ``p..n-1``. Restoring a position before the subject changes nothing at all
  (the clean and corrupted states there are identical), so those cells are set to ``low``.
* **causality in layers**: restoring layer ``l`` cannot change layers ``< l``; rows are sorted by
  the first restored layer and a chunk starting at layer ``l0`` reuses the recorded corrupted
  residual stream leaving block ``l0 - 1`` (:func:`bluebook.model.hooks.skip_blocks`) instead of
  recomputing blocks ``0..l0-1``.

``use_cache=False, skip_layers=False`` switches both off; the tests check that the results agree.
The remaining cost is plain model compute: ``kinds × layers × n_samples`` rows per traced position.
On a CPU shared with other work, ``torch.set_num_threads(1)`` can be several times faster than
more threads (the many small matrix products then wait on busy cores).
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from bluebook.locate.prompts import (
    as_template,
    embedding_noise_scale,
    subject_noise,
    subject_range,
    target_token_id,
    token_ids,
)
from bluebook.model.cache import cache_kwarg, returned_cache
from bluebook.model.device import eval_mode, model_device
from bluebook.model.hooks import Trace, edit_output, skip_blocks
from bluebook.model.specs import get_module, num_layers, spec_for

KINDS = ("block", "mlp", "attn")


@dataclass
class TraceResult:
    """Causal trace of one prompt.

    ``scores[kind]`` has shape ``(len(tokens), n_layers)``: p(target) with that module's clean
    output restored at that position (mean over noise draws). Cells before the subject equal
    ``low`` exactly; cells not traced (see ``positions`` of :func:`trace_prompt`) are NaN.
    ``subject_range`` is ``(first, last)``, both inclusive token indices.
    """

    tokens: list[str]
    subject_range: tuple[int, int]
    low: float
    high: float
    scores: dict[str, np.ndarray]
    target: str
    prompt: str = ""
    target_id: int = -1
    noise: float = float("nan")
    n_samples: int = 0
    seed: int = 0
    window: int = 1

    @property
    def n_layers(self) -> int:
        return next(iter(self.scores.values())).shape[1]

    def indirect_effect(self, kind: str) -> np.ndarray:
        """``scores[kind] - low``: how much of the lost probability restoring each state recovers."""
        return self.scores[kind] - self.low


def _module_name(spec, kind: str, layer: int) -> str:
    names = {"block": spec.block_name, "mlp": spec.mlp_name, "attn": spec.attn_name}
    if kind not in names:
        raise ValueError(f"unknown kind {kind!r}; choose from {KINDS}")
    return names[kind](layer)


def _window_layers(kind: str, layer: int, window: int, n_layers: int) -> range:
    if kind == "block" or window <= 1:
        return range(layer, layer + 1)
    return range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))


def _last_probs(out, target_id: int) -> torch.Tensor:
    return torch.softmax(out.logits[:, -1, :].float(), dim=-1)[:, target_id]


@contextlib.contextmanager
def _output_types(model, names):
    """Collect the output types of the named modules during the block (hooks removed on exit)."""
    types = []

    def hook(module, args, output):
        types.append(torch.Tensor if isinstance(output, torch.Tensor) else type(output))
    handles = []
    try:
        for name in names:
            handles.append(get_module(model, name).register_forward_hook(hook))
        yield types
    finally:
        for h in handles:
            h.remove()


class _Engine:
    """The batched restorations of one tokenised prompt (see the module docstring).

    ``noise_add`` (rows, positions, d) is added to the embedding output; ``restore`` maps
    ``(kind, layer)`` to ``(row indices, clean vector)`` written at input position ``local_pos``.
    Both are set for one forward pass at a time and are empty otherwise.
    """

    def __init__(self, model, ids: torch.Tensor, kinds: tuple[str, ...], window: int, batch_size: int,
                 target_id: int, eps: torch.Tensor, first: int):
        self.model, self.ids, self.kinds, self.window, self.batch_size = model, ids, kinds, window, batch_size
        self.tid, self.eps, self.first = target_id, eps, first
        self.spec, self.L, self.device = spec_for(model), num_layers(model), ids.device
        self.S, self.n = eps.shape[0], ids.shape[1]
        self.block_names = [self.spec.block_name(layer) for layer in range(self.L)]
        self.kw = {"logits_to_keep": 1}
        self.noise_add, self.restore, self.local_pos = None, {}, 0
        self.clean, self.corrupt_blocks = {}, []

    def noise_for(self, samples: torch.Tensor, start: int, stop: int) -> torch.Tensor | None:
        """Embedding noise of input positions ``start..stop-1`` for rows drawing ``samples``."""
        last = self.first + self.eps.shape[1] - 1
        a, b = max(self.first, start), min(last + 1, stop)
        if a >= b:
            return None
        add = torch.zeros(len(samples), stop - start, self.eps.shape[2], device=self.device)
        add[:, a - start: b - start] = self.eps[samples][:, a - self.first: b - self.first]
        return add

    def _add_noise(self, h):
        return h if self.noise_add is None else h + self.noise_add.to(device=h.device, dtype=h.dtype)

    def _writer(self, key):
        def fn(h):
            job = self.restore.get(key)
            if job is None:
                return h
            rows, vec = job
            h = h.clone()
            h[rows.to(h.device), self.local_pos] = vec.to(device=h.device, dtype=h.dtype)
            return h
        return fn

    @contextlib.contextmanager
    def hooks(self):
        """The embedding-noise hook and one restore hook per (kind, layer), all removed on exit."""
        with contextlib.ExitStack() as stack:
            stack.enter_context(edit_output(self.model, self.spec.embed, self._add_noise))
            for k in self.kinds:
                for layer in range(self.L):
                    name = _module_name(self.spec, k, layer)
                    stack.enter_context(edit_output(self.model, name, self._writer((k, layer))))
            try:
                yield
            finally:
                self.noise_add, self.restore = None, {}

    def clean_run(self) -> tuple[float, bool]:
        """Record the clean outputs; returns ``high`` and whether blocks return bare tensors."""
        names = [_module_name(self.spec, k, layer) for k in self.kinds for layer in range(self.L)]
        with Trace(self.model, names + self.block_names) as tr, _output_types(self.model, self.block_names) as types:
            out = self.model(input_ids=self.ids, **self.kw)
        self.clean = {(k, layer): tr.outputs[_module_name(self.spec, k, layer)][0]
                      for k in self.kinds for layer in range(self.L)}
        return float(_last_probs(out, self.tid)[0]), bool(types) and all(t is torch.Tensor for t in types)

    def corrupted_runs(self) -> float:
        """One row per noise draw; records the corrupted residual stream; returns ``low``."""
        self.noise_add = self.noise_for(torch.arange(self.S, device=self.device), 0, self.n)
        try:
            with Trace(self.model, self.block_names) as tr:
                out = self.model(input_ids=self.ids.expand(self.S, -1), **self.kw)
        finally:
            self.noise_add = None
        self.corrupt_blocks = [tr.outputs[name] for name in self.block_names]  # (S, n, d) each
        return float(_last_probs(out, self.tid).mean())

    def _prefix_cache(self, p: int):
        """Keys/values of positions ``< p`` in each corrupted run (restoring ``p`` cannot change them)."""
        self.noise_add = self.noise_for(torch.arange(self.S, device=self.device), 0, p)
        try:
            out = self.model(input_ids=self.ids[:, :p].expand(self.S, -1), use_cache=True, **self.kw)
        finally:
            self.noise_add = None
        cache = returned_cache(out)
        if cache is None:  # pragma: no cover - a model that returns no cache
            raise RuntimeError(f"{type(self.model).__name__} returned no key/value cache; use use_cache=False")
        return cache

    def _jobs(self, chunk, p: int) -> dict:
        jobs = {}
        for k in self.kinds:
            for j in range(self.L):
                idx = [i for i, r in enumerate(chunk)
                       if r[1] == k and j in _window_layers(k, r[2], self.window, self.L)]
                if idx:
                    jobs[(k, j)] = (torch.tensor(idx, device=self.device), self.clean[(k, j)][p])
        return jobs

    def restorations(self, p: int, *, use_cache: bool, skip: bool) -> dict[str, np.ndarray]:
        """Mean p(target) over the draws for every (kind, layer) restored at position ``p``."""
        rows = sorted(((_window_layers(k, layer, self.window, self.L).start, k, layer, s)
                       for k in self.kinds for layer in range(self.L) for s in range(self.S)), key=lambda r: r[0])
        start = p if use_cache else 0
        prefix = self._prefix_cache(p) if use_cache else None
        self.local_pos = p - start
        acc = {k: np.zeros(self.L) for k in self.kinds}
        for c0 in range(0, len(rows), self.batch_size):
            chunk = rows[c0: c0 + self.batch_size]
            samples = torch.tensor([r[3] for r in chunk], device=self.device)
            call = dict(self.kw, use_cache=prefix is not None)
            if prefix is not None:
                cache = copy.deepcopy(prefix)
                cache.batch_select_indices(samples)
                call[cache_kwarg(self.model)] = cache
            l0 = min(r[0] for r in chunk) if skip else 0
            skipping = (skip_blocks(self.model, l0 - 1, self.corrupt_blocks[l0 - 1][samples, start:])
                        if l0 > 0 else contextlib.nullcontext())
            self.restore, self.noise_add = self._jobs(chunk, p), self.noise_for(samples, start, self.n)
            try:
                with skipping:
                    out = self.model(input_ids=self.ids[:, start:].expand(len(chunk), -1), **call)
            finally:
                self.restore, self.noise_add = {}, None
            for (_, k, layer, _), pr in zip(chunk, _last_probs(out, self.tid).double().cpu().numpy()):
                acc[k][layer] += pr
        return {k: v / self.S for k, v in acc.items()}


def _resolve_positions(positions, n_tokens: int, last: int) -> list[int]:
    if positions is None or positions == "all":
        return list(range(n_tokens))
    if positions == "subject_last":
        return [last]
    if isinstance(positions, str):
        raise ValueError(f"positions must be None, 'all', 'subject_last' or a list of ints, got {positions!r}")
    out = []
    for p in positions:
        p = int(p)
        if p < 0:
            p += n_tokens
        if not 0 <= p < n_tokens:
            raise ValueError(f"position {p} out of range for a {n_tokens}-token prompt")
        out.append(p)
    return sorted(set(out))


def _check_kinds(kinds) -> tuple[str, ...]:
    kinds = tuple(dict.fromkeys(kinds))
    if not kinds:
        raise ValueError("kinds is empty")
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"unknown kind {k!r}; choose from {KINDS}")
    return kinds


def trace_prompt(model, tok, template: str, subject: str, target: str | int,
                 kinds: Sequence[str] = KINDS, noise: float | None = None, n_samples: int = 3,
                 seed: int = 0, window: int = 1, positions=None, batch_size: int = 512,
                 use_cache: bool = True, skip_layers: bool = True) -> TraceResult:
    """Causal trace of one prompt (see the module docstring for the method).

    ``template`` has one ``{}`` for the subject (a filled prompt containing ``subject`` is also
    accepted); ``target`` is the expected continuation (first token used) or a token id.
    ``noise`` defaults to :func:`embedding_noise_scale` (3 × embedding std); ``n_samples`` noise
    draws are generated from ``seed``. ``positions``: ``None`` (every token), ``"subject_last"``
    or a list of token indices; other cells are NaN. ``batch_size``: rows per forward pass.
    ``use_cache`` / ``skip_layers`` switch the two exact shortcuts (for checking; results agree).
    """
    kinds = _check_kinds(kinds)
    for name, v in (("n_samples", n_samples), ("window", window), ("batch_size", batch_size)):
        if int(v) < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    n_samples, window, batch_size = int(n_samples), int(window), int(batch_size)
    template = as_template(template, subject)
    prompt = template.replace("{}", subject)
    first, last = subject_range(tok, template, subject)
    tid = target_token_id(tok, prompt, target)
    noise = embedding_noise_scale(model) if noise is None else float(noise)
    if noise < 0 or not math.isfinite(noise):
        raise ValueError(f"noise must be a finite non-negative number, got {noise}")

    ids = torch.tensor([token_ids(tok, prompt)], device=model_device(model))
    n, L = ids.shape[1], num_layers(model)
    emb_dim = get_module(model, spec_for(model).embed).weight.shape[1]
    eps = subject_noise(n_samples, last - first + 1, emb_dim, noise, seed).to(ids.device)
    engine = _Engine(model, ids, kinds, window, batch_size, tid, eps, first)
    scores = {k: np.full((n, L), np.nan) for k in kinds}
    with eval_mode(model), torch.no_grad(), engine.hooks():
        high, plain_blocks = engine.clean_run()
        low = engine.corrupted_runs()
        skip = skip_layers and L > 1 and plain_blocks  # a block can return a recorded tensor only then
        for p in _resolve_positions(positions, n, last):
            if p < first:  # nothing differs before the subject: exactly the corrupted run
                got = {k: np.full(L, low) for k in kinds}
            else:
                got = engine.restorations(p, use_cache=use_cache and p > 0, skip=skip)
            for k in kinds:
                scores[k][p] = got[k]
    return TraceResult(tokens=[tok.decode([i]) for i in ids[0].tolist()], subject_range=(first, last), low=low,
                       high=high, scores=scores, target=target if isinstance(target, str) else tok.decode([tid]),
                       prompt=prompt, target_id=tid, noise=noise, n_samples=n_samples, seed=int(seed), window=window)
