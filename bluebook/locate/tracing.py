"""Causal tracing (ROME, Meng et al. 2022): which hidden states carry a fact?

For one prompt ``template.format(subject)`` and its expected continuation ``target``:

1. **clean run**: record every traced module's output; ``high`` = p(target's first token).
2. **corrupted runs**: add Gaussian noise to the subject's token embeddings (the output of the
   embedding module, at the subject's token positions only), ``n_samples`` independent draws;
   ``low`` = the mean p(target) over the draws.
3. **restored runs**: in each corrupted run, put back the clean output of *one* module
   (a whole block, its MLP, or its attention) at *one* token position and measure p(target)
   again. ``scores[kind][position, layer]`` is that probability averaged over the noise draws,
   and the *indirect effect* of the state is ``score - low``.

Restoring a state that lets the model recover the fact means the fact's information passes
through it. ROME found a peak of MLP indirect effect at the subject's last token in the
early-middle layers; MEMIT edits a window of layers around/ending at that peak. This module
computes the traces (:func:`trace_prompt`), averages them over known facts (:func:`trace_many`)
and turns the MLP curve into a layer window (:func:`propose_critical_layers`).

Defaults and their origin
-------------------------
* ``noise``: ``3 ×`` the standard deviation of the embedding matrix (:func:`embedding_noise_scale`).
  ROME uses 3 × the std of the embeddings of the dataset's *subject tokens*; the std over the
  whole matrix is the same idea without needing a dataset pass (the two are close in practice).
* ``n_samples=3`` noise draws per prompt. ROME uses 10; on CPU the cost is linear in it (a
  30-layer model needs ~2 s per draw per prompt for the subject's last token alone on 2 cores), and
  averages over many prompts already average over ``n_prompts × n_samples`` draws. Pass
  ``n_samples=10`` for ROME's setting, e.g. for a single-prompt figure or on a GPU.
* ``window=1``: mlp/attn states are restored at a single layer. ROME restores 10 consecutive
  layers for mlp/attn on GPT2-XL (48 layers) to make the small per-layer effects visible; pass
  ``window=10`` (or a few layers on a shallow model) to reproduce that view. The window around
  layer ``l`` is ``[l - window//2, l + ceil(window/2))`` clipped to the model, as in ROME.
  Block outputs are always restored at one layer (a block output is the whole residual stream).

How the computation is organised (all exact, only faster)
----------------------------------------------------------
Every (kind, position, layer, noise draw) restoration is one *row* of a batched forward pass.
One forward hook per (kind, layer) writes the clean value into exactly the rows that restore that
module, and the embedding hook adds each row's own noise draw. Two exact shortcuts keep this cheap:

* **causality in positions**: restoring position ``p`` cannot change positions ``< p``, so those
  are computed once for each noise draw (a key/value cache of the corrupted prefix) and each row
  only runs positions ``p..n-1``. Restoring a position before the subject changes nothing at all
  (the clean and corrupted states there are identical), so those cells are set to ``low``.
* **causality in layers**: restoring layer ``l`` cannot change layers ``< l``; rows are sorted by
  the first restored layer and a chunk starting at layer ``l0`` reuses the recorded corrupted
  residual stream entering layer ``l0`` instead of recomputing blocks ``0..l0-1``.

Both are checked against a one-cell-at-a-time reference in ``tests/integration/test_locate.py``.
The remaining cost is plain model compute: ``kinds × layers × n_samples`` rows per traced position.
On a CPU shared with other work, ``torch.set_num_threads(1)`` can be several times faster than
more threads (the many small matrix products then wait on busy cores).
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import math
import time
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from bluebook.model.hooks import Trace, output_tensor, replace_output
from bluebook.model.specs import get_module, num_layers, spec_for
from bluebook.model.tokens import check_template, subject_in_prompt, subject_last_index
from bluebook.model.device import model_device

KINDS = ("block", "mlp", "attn")

#: Row labels of the token-position summary (the six groups of ROME's average-effect figures).
ROW_LABELS = (
    "first subject token",
    "middle subject tokens",
    "last subject token",
    "first subsequent token",
    "further tokens",
    "last token",
)


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------

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


@dataclass
class TraceSummary:
    """Indirect effects averaged over prompts.

    ``curves[kind][l]``: mean indirect effect (restored - corrupted probability) at the subject's
    last token when restoring ``kind`` at layer ``l``. ``grid[kind]``: ``(6, n_layers)`` mean
    indirect effect per token group (``row_labels``); a prompt with no token in a group (e.g. a
    one-token subject has no middle tokens) does not count toward that row, ``row_counts`` says
    how many prompts did. ``low``/``high``: mean corrupted / clean probability.
    """

    kinds: tuple[str, ...]
    layers: list[int]
    curves: dict[str, np.ndarray]
    grid: dict[str, np.ndarray]
    row_labels: tuple[str, ...]
    n_prompts: int
    per_prompt: list[TraceResult]
    row_counts: np.ndarray | None = None
    low: float = float("nan")
    high: float = float("nan")
    noise: float = float("nan")
    n_samples: int = 0
    seed: int = 0
    window: int = 1
    seconds: float = 0.0

    def to_dict(self, per_prompt: bool = False) -> dict:
        """JSON-friendly dict (lists instead of arrays)."""
        out = {
            "kinds": list(self.kinds), "layers": list(self.layers), "n_prompts": self.n_prompts,
            "curves": {k: v.tolist() for k, v in self.curves.items()},
            "grid": {k: v.tolist() for k, v in self.grid.items()},
            "row_labels": list(self.row_labels),
            "row_counts": None if self.row_counts is None else self.row_counts.tolist(),
            "low": self.low, "high": self.high, "noise": self.noise, "n_samples": self.n_samples,
            "seed": self.seed, "window": self.window, "seconds": self.seconds,
        }
        if per_prompt:
            out["per_prompt"] = [
                {"prompt": r.prompt, "tokens": r.tokens, "subject_range": list(r.subject_range),
                 "target": r.target, "low": r.low, "high": r.high,
                 "scores": {k: v.tolist() for k, v in r.scores.items()}} for r in self.per_prompt]
        return out


# --------------------------------------------------------------------------------------------
# tokenisation helpers
# --------------------------------------------------------------------------------------------

def _ids(tok, text: str) -> list[int]:
    return list(tok(text)["input_ids"])


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def as_template(prompt: str, subject: str) -> str:
    """A one-``{}`` template, from a template or from a filled prompt that contains ``subject``.

    Raises ``ValueError`` when the subject is empty or does not occur (exactly once) in a filled prompt.
    """
    if not isinstance(subject, str) or not subject.strip():
        raise ValueError(f"subject must be a non-empty string, got {subject!r}")
    if "{}" in prompt:
        return check_template(prompt)
    return subject_in_prompt(prompt, subject)


def subject_range(tok, template: str, subject: str) -> tuple[int, int]:
    """``(first, last)`` token indices (inclusive) of the subject in ``tok(template with subject)``.

    Cumulative tokenisation: ``last = len(tok(prefix + subject)) - 1`` (see
    :func:`bluebook.tokens.subject_last_index`) and ``first`` = the number of leading tokens the
    full prompt shares with ``tok(prefix)``, where ``prefix`` is the text before ``{}``. The shared
    count handles a BOS token and a prefix whose trailing space is merged into the subject's first
    token (``"of "`` + ``"Danielle"`` gives ``" of"``, ``" Dan"...``).
    """
    template = check_template(template)
    last = subject_last_index(tok, template, subject)
    prefix = template[: template.index("{}")]
    full = _ids(tok, template.replace("{}", subject))
    first = _common_prefix(full, _ids(tok, prefix))
    first = min(first, last)
    if last >= len(full):  # pragma: no cover - tokenizer inconsistency
        raise ValueError(f"could not locate subject {subject!r} in the tokenised prompt")
    return first, last


def target_token_id(tok, prompt: str, target: str | int) -> int:
    """First token id of ``target`` as a continuation of the filled ``prompt``.

    ``target`` is given without its leading space (CounterFact's convention); one space is
    prepended unless it already starts with whitespace. The id is taken cumulatively: the first
    token of ``tok(prompt + " " + target)`` after the tokens it shares with ``tok(prompt)``. An
    ``int`` is taken as the token id itself.
    """
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        return int(target)
    if not isinstance(target, str) or not target.strip():
        raise ValueError(f"target must be a non-empty string or a token id, got {target!r}")
    text = target if target[:1].isspace() else " " + target
    pre = _ids(tok, prompt)
    full = _ids(tok, prompt + text)
    k = _common_prefix(full, pre)
    if k >= len(full):  # pragma: no cover - target tokenised to nothing
        raise ValueError(f"target {target!r} adds no token to {prompt!r}")
    return int(full[k])


def embedding_noise_scale(model, factor: float = 3.0) -> float:
    """``factor ×`` the std of the input-embedding matrix (ROME's default noise is 3 × a subject-embedding std).

    Models whose embedding module scales its output (``embed_scale``, e.g. Gemma) get the same scale.
    """
    emb = get_module(model, spec_for(model).embed)
    w = emb.weight.detach()
    std = float(w.float().std())
    scale = getattr(emb, "embed_scale", 1.0)
    scale = float(scale.float().mean()) if isinstance(scale, torch.Tensor) else float(scale)
    return factor * std * scale


def subject_noise(n_samples: int, n_subject_tokens: int, dim: int, noise: float, seed: int) -> torch.Tensor:
    """The ``(n_samples, n_subject_tokens, dim)`` noise added to the subject's embeddings.

    Drawn on the CPU from a ``torch.Generator`` seeded with ``seed`` (device-independent and
    reproducible), then scaled by ``noise``.
    """
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(n_samples, n_subject_tokens, dim, generator=gen, dtype=torch.float32) * float(noise)


# --------------------------------------------------------------------------------------------
# the batched engine
# --------------------------------------------------------------------------------------------

def _module_name(spec, kind: str, layer: int) -> str:
    if kind == "block":
        return spec.block_name(layer)
    if kind == "mlp":
        return spec.mlp_name(layer)
    if kind == "attn":
        return spec.attn_name(layer)
    raise ValueError(f"unknown kind {kind!r}; choose from {KINDS}")


def _window_layers(kind: str, layer: int, window: int, n_layers: int) -> range:
    if kind == "block" or window <= 1:
        return range(layer, layer + 1)
    return range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))


def _supports(model, arg: str) -> bool:
    try:
        return arg in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


class _State:
    """What the hooks of the current forward pass must do (set per chunk)."""

    def __init__(self):
        self.noise_add = None          # (rows, n_local, d) added to the embedding output, or None
        self.restore = {}              # (kind, layer) -> (row index tensor, clean vector)
        self.local_pos = 0             # position (in the current input) being restored
        self.skip_until = 0            # blocks < skip_until return ``start_h`` instead of running
        self.start_h = None


@contextlib.contextmanager
def _engine_hooks(model, spec, kinds, n_layers, state: _State, skip_ok: bool):
    """Register the embedding-noise hook, one restore hook per (kind, layer), and block skipping.

    Everything is removed (and every patched ``forward`` put back) on exit, also on exceptions.
    """
    handles = []
    patched = []  # (module, had_instance_forward, previous)

    def noise_hook(module, args, output):
        if state.noise_add is None:
            return None
        h = output_tensor(output)
        return replace_output(output, h + state.noise_add.to(device=h.device, dtype=h.dtype))

    def restore_hook(key):
        def fn(module, args, output):
            job = state.restore.get(key)
            if job is None:
                return None
            rows, vec = job
            h = output_tensor(output).clone()
            h[rows.to(h.device), state.local_pos] = vec.to(device=h.device, dtype=h.dtype)
            return replace_output(output, h)
        return fn

    def skipping_forward(layer, original):
        def forward(*args, **kwargs):
            if layer < state.skip_until:
                return state.start_h
            return original(*args, **kwargs)
        return forward

    try:
        handles.append(get_module(model, spec.embed).register_forward_hook(noise_hook))
        for kind in kinds:
            for l in range(n_layers):
                mod = get_module(model, _module_name(spec, kind, l))
                handles.append(mod.register_forward_hook(restore_hook((kind, l))))
        if skip_ok:
            for l in range(n_layers):
                blk = get_module(model, spec.block_name(l))
                had = "forward" in blk.__dict__
                prev = blk.__dict__.get("forward")
                patched.append((blk, had, prev))
                blk.forward = skipping_forward(l, blk.forward)
        yield
    finally:
        for h in handles:
            h.remove()
        for blk, had, prev in reversed(patched):
            if had:
                blk.forward = prev
            else:
                blk.__dict__.pop("forward", None)


def _last_probs(model, out, target_id: int) -> torch.Tensor:
    logits = out.logits[:, -1, :].float()
    return torch.softmax(logits, dim=-1)[:, target_id]


def _resolve_positions(positions, n_tokens: int, first: int, last: int) -> list[int]:
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
    kinds = tuple(dict.fromkeys(kinds))
    if not kinds:
        raise ValueError("kinds is empty")
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"unknown kind {k!r}; choose from {KINDS}")
    if int(n_samples) < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if int(window) < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n_samples, window, batch_size = int(n_samples), int(window), int(batch_size)
    template = as_template(template, subject)
    prompt = template.replace("{}", subject)
    spec = spec_for(model)
    L = num_layers(model)
    device = model_device(model)
    first, last = subject_range(tok, template, subject)
    tid = target_token_id(tok, prompt, target)
    noise = embedding_noise_scale(model) if noise is None else float(noise)
    if noise < 0 or not math.isfinite(noise):
        raise ValueError(f"noise must be a finite non-negative number, got {noise}")

    ids = torch.tensor([_ids(tok, prompt)], device=device)
    n = ids.shape[1]
    tokens = [tok.decode([i]) for i in ids[0].tolist()]
    traced = _resolve_positions(positions, n, first, last)
    kw = {"logits_to_keep": 1} if _supports(model, "logits_to_keep") else {}
    emb_dim = get_module(model, spec.embed).weight.shape[1]
    eps = subject_noise(n_samples, last - first + 1, emb_dim, noise, seed).to(device)

    def noise_for(rows_sample: torch.Tensor, start: int, stop: int) -> torch.Tensor | None:
        """Additive embedding noise for input positions ``start..stop-1`` of each row."""
        a, b = max(first, start), min(last + 1, stop)
        if a >= b:
            return None
        add = torch.zeros(len(rows_sample), stop - start, emb_dim, device=device)
        add[:, a - start: b - start] = eps[rows_sample][:, a - first: b - first]
        return add

    scores = {k: np.full((n, L), np.nan) for k in kinds}
    state = _State()
    block_names = [spec.block_name(l) for l in range(L)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            # clean run: every traced module's output
            names = [_module_name(spec, k, l) for k in kinds for l in range(L)]
            with Trace(model, list(dict.fromkeys(names + block_names))) as tr, \
                    _output_types(model, block_names) as types:
                out = model(input_ids=ids, **kw)
            clean = {(k, l): tr.outputs[_module_name(spec, k, l)][0] for k in kinds for l in range(L)}
            high = float(_last_probs(model, out, tid)[0])
            # a block can be replaced by a tensor only when blocks return plain tensors
            skip_ok = skip_layers and L > 1 and bool(types) and all(t is torch.Tensor for t in types)

            # corrupted runs (one row per noise draw): low, and the residual stream for skipping
            samples = torch.arange(n_samples, device=device)
            state.noise_add = noise_for(samples, 0, n)
            with Trace(model, block_names) as tr:
                with _engine_hooks(model, spec, (), L, state, False):
                    out = model(input_ids=ids.expand(n_samples, -1), **kw)
            low = float(_last_probs(model, out, tid).mean())
            corrupt_blocks = [tr.outputs[name] for name in block_names]  # (S, n, d) each
            state.noise_add = None

            for k in kinds:
                for p in traced:
                    if p < first:  # nothing differs before the subject: exactly the corrupted run
                        scores[k][p, :] = low
            todo = [p for p in traced if p >= first]

            acc = {k: np.zeros((n, L)) for k in kinds}
            with _engine_hooks(model, spec, kinds, L, state, skip_ok):
                for p in todo:
                    _trace_position(model, ids, p, kinds, L, window, n_samples, batch_size, state,
                                    clean, corrupt_blocks, noise_for, tid, acc, kw,
                                    use_cache=use_cache and p > 0, skip_ok=skip_ok)
            for k in kinds:
                for p in todo:
                    scores[k][p, :] = acc[k][p] / n_samples
    finally:
        state.noise_add = None
        state.restore = {}
        if was_training:
            model.train()

    return TraceResult(tokens=tokens, subject_range=(first, last), low=low, high=high, scores=scores,
                       target=target if isinstance(target, str) else tok.decode([tid]), prompt=prompt,
                       target_id=tid, noise=noise, n_samples=n_samples, seed=int(seed), window=window)


def _cache_kwarg(model) -> str:
    """Name of the key/value-cache argument (``cache`` in recent transformers, ``past_key_values`` before)."""
    return "cache" if _supports(model, "cache") else "past_key_values"


def _output_cache(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


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


def _trace_position(model, ids, p, kinds, L, window, S, batch_size, state, clean, corrupt_blocks,
                    noise_for, tid, acc, kw, *, use_cache: bool, skip_ok: bool):
    """All restorations at token position ``p``: rows = (kind, layer, draw), sorted by first restored layer."""
    device = ids.device
    n = ids.shape[1]
    rows = []  # (start layer, kind, layer, sample)
    for k in kinds:
        for l in range(L):
            w = _window_layers(k, l, window, L)
            for s in range(S):
                rows.append((w.start, k, l, s))
    rows.sort(key=lambda r: r[0])

    start = p if use_cache else 0
    prefix_cache = None
    if use_cache:
        # keys/values of positions < p in each corrupted run (restoring p cannot change them)
        samples = torch.arange(S, device=device)
        state.noise_add = noise_for(samples, 0, p)
        state.restore, state.skip_until = {}, 0
        out = model(input_ids=ids[:, :p].expand(S, -1), use_cache=True, **kw)
        prefix_cache = _output_cache(out)
        if prefix_cache is None:  # pragma: no cover - a model that returns no cache
            raise RuntimeError(f"{type(model).__name__} returned no key/value cache; use use_cache=False")
        state.noise_add = None
    local_ids = ids[:, start:]
    state.local_pos = p - start

    for c0 in range(0, len(rows), batch_size):
        chunk = rows[c0: c0 + batch_size]
        sample_idx = torch.tensor([r[3] for r in chunk], device=device)
        restore = {}
        for k in kinds:
            for j in range(L):
                idx = [i for i, r in enumerate(chunk) if r[1] == k and j in _window_layers(k, r[2], window, L)]
                if idx:
                    restore[(k, j)] = (torch.tensor(idx, device=device), clean[(k, j)][p])
        l0 = min(r[0] for r in chunk) if skip_ok else 0
        state.restore = restore
        state.noise_add = noise_for(sample_idx, start, n)
        state.skip_until = l0
        state.start_h = corrupt_blocks[l0 - 1][sample_idx, start:] if l0 > 0 else None
        call = dict(kw)
        if prefix_cache is not None:
            cache = copy.deepcopy(prefix_cache)
            cache.batch_select_indices(sample_idx)
            call.update({_cache_kwarg(model): cache, "use_cache": True})
        else:
            call.update(use_cache=False)
        try:
            out = model(input_ids=local_ids.expand(len(chunk), -1), **call)
        finally:
            state.restore, state.noise_add, state.skip_until, state.start_h = {}, None, 0, None
        probs = _last_probs(model, out, tid).double().cpu().numpy()
        for (_, k, l, _), pr in zip(chunk, probs):
            acc[k][p, l] += pr


# --------------------------------------------------------------------------------------------
# many prompts
# --------------------------------------------------------------------------------------------

def _as_triple(item) -> tuple[str, str, str | int]:
    """``(template, subject, target)`` from a tuple, an EditRequest, a bluebook dict or a CounterFact record.

    For edit requests and CounterFact records the traced target is the *true* object
    (``target_true``): tracing asks where the model's existing knowledge lives.
    """
    if isinstance(item, (tuple, list)):
        if len(item) != 3:
            raise ValueError(f"expected (template, subject, target), got {item!r}")
        t, s, y = item
        return as_template(t, s), s, y
    if isinstance(item, dict):
        rec = item.get("requested_rewrite", item)
        if isinstance(rec, list):
            rec = rec[0]
        t, s = rec["prompt"], rec["subject"]
        y = rec.get("target_true", rec.get("target"))
        if isinstance(y, dict):
            y = y["str"]
        if y is None:
            raise ValueError(f"record has no target_true / target: {item!r}")
        return as_template(t, s), s, y
    if hasattr(item, "prompt") and hasattr(item, "subject"):
        y = getattr(item, "target_true", None)
        if y is None:
            raise ValueError(f"request {item!r} has no target_true to trace")
        return as_template(item.prompt, item.subject), item.subject, y
    raise TypeError(f"cannot read (template, subject, target) from {type(item).__name__}")


def _last_token_logits(model, batch_ids: list[list[int]]) -> torch.Tensor:
    """Next-token logits after each of several prompts, ``(len(batch_ids), vocab)``, in one forward.

    Right padding with an attention mask; only the needed positions go through the output head
    (``logits_to_keep`` with a tensor of positions) when the model supports it.
    """
    device = model_device(model)
    lengths = [len(x) for x in batch_ids]
    T = max(lengths)
    ids = torch.zeros(len(batch_ids), T, dtype=torch.long, device=device)
    mask = torch.zeros(len(batch_ids), T, dtype=torch.long, device=device)
    for i, x in enumerate(batch_ids):
        ids[i, : len(x)] = torch.tensor(x, device=device)
        mask[i, : len(x)] = 1
    last = torch.tensor([n - 1 for n in lengths], device=device)
    with torch.no_grad():
        if _supports(model, "logits_to_keep"):
            keep = torch.unique(last)
            logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits
            col = torch.searchsorted(keep, last)
        else:
            logits = model(input_ids=ids, attention_mask=mask).logits
            col = last
    return logits[torch.arange(len(batch_ids), device=device), col].float()


def known_ranks(model, tok, items: Sequence, batch_size: int = 32) -> list[int]:
    """Rank (0 = argmax) of each item's target first token in the clean next-token distribution."""
    ranks = []
    for b0 in range(0, len(items), batch_size):
        prompts, tids = [], []
        for item in items[b0: b0 + batch_size]:
            t, s, y = _as_triple(item)
            prompt = t.replace("{}", s)
            prompts.append(_ids(tok, prompt))
            tids.append(target_token_id(tok, prompt, y))
        logits = _last_token_logits(model, prompts)
        tgt = logits[torch.arange(len(tids)), torch.tensor(tids, device=logits.device)]
        ranks += (logits > tgt[:, None]).sum(dim=1).tolist()
    return [int(r) for r in ranks]


def known_rank(model, tok, template: str, subject: str, target) -> int:
    """Rank (0 = argmax) of the target's first token in the clean next-token distribution."""
    return known_ranks(model, tok, [(template, subject, target)])[0]


def filter_known(model, tok, items: Iterable, top_k: int = 1, limit: int | None = None,
                 batch_size: int = 32) -> list:
    """Keep the items whose target's first token is in the top ``top_k`` of the clean prediction.

    ``top_k=1``: the target must be the argmax (ROME's "known facts"). Items keep their original
    form and order; ``limit`` stops after that many kept items (items are read in order, checked
    ``batch_size`` prompts per forward pass).
    """
    if int(top_k) < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    items = list(items)
    kept = []
    for b0 in range(0, len(items), batch_size):
        batch = items[b0: b0 + batch_size]
        for item, rank in zip(batch, known_ranks(model, tok, batch, batch_size)):
            if rank < top_k:
                kept.append(item)
                if limit is not None and len(kept) >= limit:
                    return kept
    return kept


def _summary_rows(ie: np.ndarray, first: int, last: int) -> list[np.ndarray | None]:
    """The six token groups of one prompt's ``(n_tokens, L)`` indirect effects (None = empty group)."""
    n = ie.shape[0]

    def mean(a, b):
        if b <= a:
            return None
        block = ie[a:b]
        if np.isnan(block).all():
            return None
        return np.nanmean(block, axis=0)

    return [
        mean(first, first + 1),
        mean(first + 1, last),
        mean(last, last + 1),
        mean(last + 1, min(last + 2, n)),
        mean(last + 2, n - 1),
        mean(n - 1, n),
    ]


def summarize(results: Sequence[TraceResult], kinds: Sequence[str] | None = None) -> TraceSummary:
    """Average per-prompt traces into a :class:`TraceSummary` (indirect effect = score - low)."""
    if not results:
        raise ValueError("no trace results to summarise")
    kinds = tuple(kinds or results[0].scores.keys())
    L = results[0].n_layers
    curves, grid = {}, {}
    counts = np.zeros((len(kinds), len(ROW_LABELS)), dtype=int)
    for ki, k in enumerate(kinds):
        at_last = np.stack([r.indirect_effect(k)[r.subject_range[1]] for r in results])
        curves[k] = np.nanmean(at_last, axis=0) if not np.isnan(at_last).all() else np.full(L, np.nan)
        sums = np.zeros((len(ROW_LABELS), L))
        for r in results:
            rows = _summary_rows(r.indirect_effect(k), *r.subject_range)
            for i, row in enumerate(rows):
                if row is not None:
                    sums[i] += np.nan_to_num(row)
                    counts[ki, i] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            grid[k] = np.where(counts[ki][:, None] > 0, sums / np.maximum(counts[ki][:, None], 1), np.nan)
    r0 = results[0]
    return TraceSummary(kinds=kinds, layers=list(range(L)), curves=curves, grid=grid, row_labels=ROW_LABELS,
                        n_prompts=len(results), per_prompt=list(results), row_counts=counts,
                        low=float(np.mean([r.low for r in results])),
                        high=float(np.mean([r.high for r in results])),
                        noise=r0.noise, n_samples=r0.n_samples, seed=r0.seed, window=r0.window)


def trace_many(model, tok, requests_or_tuples: Iterable, kinds: Sequence[str] = KINDS,
               noise: float | None = None, n_samples: int = 3, seed: int = 0, window: int = 1,
               positions=None, batch_size: int = 512, known_only: bool = False, top_k: int = 1,
               progress: bool = False) -> TraceSummary:
    """Trace every prompt and average the indirect effects (:func:`summarize`).

    Items are ``(template, subject, target)`` tuples, :class:`~bluebook.data.EditRequest` s, or
    CounterFact records (their ``target_true`` is traced). Prompt ``i`` uses noise seed ``seed + i``.
    ``known_only=True`` first drops the prompts the model does not know (:func:`filter_known`);
    tracing only makes sense for facts the model predicts, so pass already-filtered items or set it.
    """
    items = list(requests_or_tuples)
    if known_only:
        items = filter_known(model, tok, items, top_k=top_k)
    if not items:
        raise ValueError("no prompts to trace" + (" (none is known to the model)" if known_only else ""))
    noise = embedding_noise_scale(model) if noise is None else float(noise)
    t0 = time.perf_counter()
    results = []
    for i, item in enumerate(items):
        t, s, y = _as_triple(item)
        results.append(trace_prompt(model, tok, t, s, y, kinds=kinds, noise=noise, n_samples=n_samples,
                                    seed=seed + i, window=window, positions=positions, batch_size=batch_size))
        if progress:
            print(f"  traced {i + 1}/{len(items)} ({time.perf_counter() - t0:.0f} s)", flush=True)
    summary = summarize(results, kinds)
    summary.seed = int(seed)
    summary.seconds = time.perf_counter() - t0
    return summary


# --------------------------------------------------------------------------------------------
# from curves to layers
# --------------------------------------------------------------------------------------------

def _curve(summary_or_curve, kind: str) -> np.ndarray:
    if isinstance(summary_or_curve, TraceSummary):
        if kind not in summary_or_curve.curves:
            raise ValueError(f"summary has no {kind!r} curve (kinds: {summary_or_curve.kinds})")
        c = summary_or_curve.curves[kind]
    else:
        c = summary_or_curve
    c = np.asarray(c, dtype=float)
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"expected a 1-d curve over layers, got shape {c.shape}")
    if np.isnan(c).all():
        raise ValueError("the curve is all NaN (was the subject's last token traced?)")
    return c


def _check_min_layer(c: np.ndarray, min_layer: int) -> int:
    min_layer = int(min_layer)
    if not 0 <= min_layer < c.size:
        raise ValueError(f"min_layer must be between 0 and {c.size - 1}, got {min_layer}")
    return min_layer


def peak_layer(summary, kind: str = "mlp", min_layer: int = 0) -> int:
    """Layer (``>= min_layer``) with the largest mean indirect effect of ``kind`` at the subject's last token."""
    c = _curve(summary, kind)
    lo = _check_min_layer(c, min_layer)
    return lo + int(np.nanargmax(c[lo:]))


def propose_critical_layers(summary, kind: str = "mlp", width: int = 5, min_layer: int = 0) -> list[int]:
    """The ``width`` consecutive layers with the largest summed indirect effect at the subject's last token.

    This is the data-driven version of MEMIT's choice: MEMIT edits a band of consecutive MLP layers
    where causal tracing shows the MLP effect at the subject's last token is concentrated (layers
    3-8 of GPT-J, 13-17 of GPT2-XL, a window ending at/around the peak in the early-middle layers).
    Here the band is the sliding window maximising the summed curve (earliest on ties); compare
    it with :func:`peak_layer` and with the published presets before editing.

    ``min_layer`` excludes the first layers from the search. With single-layer restoration
    (``window=1``) the first MLP often shows a spike of its own: its output at a token largely
    re-encodes that token's identity (an extension of the embedding), so restoring it undoes part
    of the corruption whatever the fact is; ``min_layer=1`` looks past it. Works on a
    :class:`TraceSummary` or a plain curve (one value per layer).
    """
    c = np.nan_to_num(_curve(summary, kind), nan=-np.inf)
    lo = _check_min_layer(c, min_layer)
    width = int(width)
    if not 1 <= width <= c.size - lo:
        raise ValueError(f"width must be between 1 and the number of searchable layers ({c.size - lo}), got {width}")
    sums = np.convolve(c[lo:], np.ones(width), mode="valid")
    start = lo + int(np.argmax(sums))
    return list(range(start, start + width))


__all__ = [
    "KINDS", "ROW_LABELS", "TraceResult", "TraceSummary", "trace_prompt", "trace_many", "summarize",
    "filter_known", "known_rank", "known_ranks", "propose_critical_layers", "peak_layer", "subject_range",
    "target_token_id", "embedding_noise_scale", "subject_noise", "as_template",
]
