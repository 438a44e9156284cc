"""Layer statistics ``C = E[k kᵀ]`` of the edited projection's input over a text corpus (§3).

One pass collects several layers and stops right after the deepest hooked projection (the rest
of the model never runs). Results are cached on disk (safetensors, written atomically) under a
key of model fingerprint, layer, corpus id, sample count, truncation and dtype; a cache file whose
checksum, metadata or values do not match is detected and recomputed. A long pass checkpoints its
running sums, so an interrupted pass resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save
from tqdm.auto import tqdm

from bluebook.core.config import StatsConfig
from bluebook.data import corpus_id, wiki_texts
from bluebook.model.device import model_device
from bluebook.model.hooks import Trace
from bluebook.model.loading import model_fingerprint
from bluebook.model.specs import check_layers, key_dim, spec_for
from bluebook.model.tokens import fit_to_context, pad_id, right_pad
from bluebook.runs import atomic_write_bytes, cache_root

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class SecondMoment:
    """Streaming uncentred second moment: ``add(X)`` with rows as samples; ``moment() = Σ xxᵀ / N``."""

    def __init__(self, dim: int, dtype: torch.dtype = torch.float32, device="cpu"):
        self.sum = torch.zeros(dim, dim, dtype=dtype, device=device)
        self.count = 0

    def add(self, X: torch.Tensor) -> None:
        if X.ndim != 2 or X.shape[1] != self.sum.shape[0]:
            raise ValueError(f"expected (N, {self.sum.shape[0]}) samples, got {tuple(X.shape)}")
        Xd = X.to(self.sum.dtype).to(self.sum.device)
        self.sum.addmm_(Xd.T, Xd)
        self.count += X.shape[0]

    def moment(self) -> torch.Tensor:
        if self.count == 0:
            raise ValueError("no samples added")
        return self.sum / self.count

    def state_dict(self) -> dict:
        return {"sum": self.sum, "count": torch.tensor(self.count)}

    def load_state_dict(self, d: dict) -> "SecondMoment":
        self.sum = d["sum"].to(self.sum.dtype)
        self.count = int(d["count"])
        return self


class StatsOnEditedModel(RuntimeError):
    """Statistics were asked for an unedited model's fingerprint while the model holds edited weights."""


@dataclass
class LayerStats:
    layer: int
    C: torch.Tensor          # (m, m) mean second moment
    count: int               # tokens
    key: str                 # cache key


def _tensor_digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().cpu().numpy().tobytes()).hexdigest()


class CovarianceStore:
    """Disk cache of layer statistics: ``<root>/<fingerprint>/<module>__<corpus>__<n>__len<L>__<dtype>.safetensors``."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else cache_root() / "stats"

    def path(self, fingerprint: str, module: str, cfg: StatsConfig, corpus: str) -> Path:
        safe = corpus.replace("/", "_").replace(":", "-")
        return self.root / fingerprint / f"{module}__{safe}__len{cfg.max_len}__{cfg.dtype}.safetensors"

    def load(self, path: Path, expect: dict) -> LayerStats | None:
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                C = f.get_tensor("C")
            for k, v in expect.items():
                if meta.get(k) != str(v):
                    raise ValueError(f"metadata {k}={meta.get(k)!r}, expected {v!r}")
            if meta.get("sha256") != _tensor_digest(C):
                raise ValueError("checksum mismatch")
            if C.ndim != 2 or C.shape[0] != C.shape[1] or not torch.isfinite(C).all():
                raise ValueError("not a finite square matrix")
            return LayerStats(int(meta["layer"]), C, int(meta["count"]), path.name)
        except Exception as exc:   # corrupt, truncated, stale: never use it
            warnings.warn(f"layer statistics cache {path} is invalid ({exc}); recomputing", RuntimeWarning)
            return None

    def save(self, path: Path, st: LayerStats, meta: dict) -> None:
        C = st.C.contiguous().cpu()
        m = {k: str(v) for k, v in meta.items()}
        m.update(layer=str(st.layer), count=str(st.count), sha256=_tensor_digest(C))
        atomic_write_bytes(path, save({"C": C}, metadata=m))


def effective_stats_config(model, cfg: StatsConfig) -> StatsConfig:
    """``cfg`` with its per-document truncation ``max_len`` cut to the model's context length where
    that is shorter (a GPT-2-style model with learned positions cannot read past it); the cache key
    and metadata then name the length really used."""
    max_len = fit_to_context(model, cfg.max_len)
    return replace(cfg, max_len=max_len) if max_len != cfg.max_len else cfg


def _batches(tok, texts, max_len: int, batch_tokens: int):
    """Tokenize, truncate and group texts into right-padded batches of ≤ batch_tokens (padded) tokens."""
    enc = [tok(t, truncation=True, max_length=max_len)["input_ids"] for t in texts]
    batch, longest = [], 0
    for ids in enc:
        if not ids:
            continue
        new_long = max(longest, len(ids))
        if batch and new_long * (len(batch) + 1) > batch_tokens:
            yield batch
            batch, new_long = [], len(ids)
        batch.append(ids)
        longest = new_long
    if batch:
        yield batch


@torch.no_grad()
def collect_second_moments(model, tok, layers, texts: list[str], cfg: StatsConfig = StatsConfig(),
                           progress: bool = True, checkpoint: Path | None = None,
                           checkpoint_every: int = 20, early_stop: bool = True) -> dict[int, SecondMoment]:
    """Accumulate ``Σ k kᵀ`` over every non-padding token of ``texts`` at ``layers`` in one pass.

    The forward stops right after the deepest hooked projection. With ``checkpoint``, running sums
    are saved every ``checkpoint_every`` batches and a later call resumes from them.
    ``early_stop=False`` runs the whole model instead (only useful to measure the saving).
    """
    layers = check_layers(model, layers)
    cfg = effective_stats_config(model, cfg)
    if cfg.dtype not in _DTYPES:
        raise ValueError(f"stats dtype must be one of {sorted(_DTYPES)}, got {cfg.dtype!r}")
    spec = spec_for(model)
    device = model_device(model)
    dtype = _DTYPES[cfg.dtype]
    names = [spec.proj_name(l) for l in layers]
    moments = {l: SecondMoment(key_dim(model, l), dtype, device) for l in layers}
    pad = pad_id(tok)
    batches = list(_batches(tok, texts, cfg.max_len, cfg.batch_tokens))
    start = 0
    if checkpoint is not None and Path(checkpoint).exists():
        try:
            state = torch.load(checkpoint, map_location=device, weights_only=True)
            if state["n_batches"] == len(batches) and state["layers"] == layers:
                for l in layers:
                    moments[l].load_state_dict(state["moments"][l])
                start = state["done"]
        except Exception as exc:
            warnings.warn(f"ignoring unreadable statistics checkpoint {checkpoint} ({exc})", RuntimeWarning)
    bar = tqdm(total=sum(len(b) for b in batches), initial=sum(len(b) for b in batches[:start]),
               desc=f"layer stats {layers}", unit="doc", disable=not progress)
    for bi in range(start, len(batches)):
        b = batches[bi]
        ids, mask = right_pad(b, pad)
        ids, mask = ids.to(device), mask.to(device)
        with Trace(model, names, inputs=True, outputs=False,
                   stop_after=names[-1] if early_stop else None) as tr:
            tr.run(model.base_model, input_ids=ids, attention_mask=mask)
        keep = mask.bool()
        for l, name in zip(layers, names):
            moments[l].add(tr.inputs[name][keep])
        bar.update(len(b))
        if checkpoint is not None and ((bi + 1) % checkpoint_every == 0) and bi + 1 < len(batches):
            buf = io.BytesIO()
            torch.save({"n_batches": len(batches), "layers": layers, "done": bi + 1,
                        "moments": {l: moments[l].state_dict() for l in layers}}, buf)
            atomic_write_bytes(checkpoint, buf.getvalue())
    bar.close()
    if checkpoint is not None and Path(checkpoint).exists():
        Path(checkpoint).unlink()
    return moments


def layer_stats(model, tok, layers, cfg: StatsConfig = StatsConfig(), *, store: CovarianceStore | None = None,  # noqa: C901 - the corpus pass with its on-disk cache and provenance checks
                fingerprint: str | None = None, texts: list[str] | None = None, corpus: str | None = None,
                progress: bool = True) -> dict[int, LayerStats]:
    """``C`` for each layer, from the disk cache when valid, else computed in one pass and cached.

    ``fingerprint`` names the unedited model the statistics belong to (default: the model as it is).
    Statistics are only ever computed on weights with that fingerprint, and every cache entry records
    the fingerprint of the weights it was computed from (checked on load): when the model has been
    edited since, cached entries are still used, and a missing one raises :class:`StatsOnEditedModel`.

    ``texts``/``corpus`` override the configured corpus (then ``corpus`` must name it for the key).
    """

    layers = check_layers(model, layers)
    cfg = effective_stats_config(model, cfg)
    store = store or CovarianceStore()
    # the model's own fingerprint is only needed to file its statistics or to check a computation
    current = model_fingerprint(model) if fingerprint is None else None
    fingerprint = fingerprint or current
    if texts is None:
        corpus = corpus_id(cfg.corpus, cfg.n_samples, cfg.seed)
    elif corpus is None:
        corpus = "custom-" + hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:12] + f":n{len(texts)}"
    spec = spec_for(model)
    out, missing = {}, []
    for l in layers:
        module = spec.proj_name(l)
        meta = {"fingerprint": fingerprint, "module": module, "corpus": corpus, "max_len": cfg.max_len,
                "dtype": cfg.dtype, "computed_on": fingerprint}
        p = store.path(fingerprint, module, cfg, corpus)
        st = store.load(p, meta)
        if st is None:
            missing.append(l)
        else:
            out[l] = st
    if missing and current is None:
        current = model_fingerprint(model)
    if missing and fingerprint != current:
        raise StatsOnEditedModel(
            f"layer statistics for layers {missing} must come from the unedited model (fingerprint {fingerprint}), "
            f"but the model's weights now have fingerprint {current} (it has been edited): compute the statistics "
            "before editing (bluebook.editor.prepare_stats), or restore the original weights first")
    if missing:
        if texts is None:
            texts = wiki_texts(n=cfg.n_samples, seed=cfg.seed, source=cfg.corpus)
        safe_corpus = corpus.replace('/', '_').replace(':', '-')
        ck = store.root / fingerprint / f".partial__{safe_corpus}__{'-'.join(map(str, missing))}.pt"
        moments = collect_second_moments(model, tok, missing, texts, cfg, progress=progress, checkpoint=ck)
        for l in missing:
            C = moments[l].moment().to(torch.float32 if cfg.dtype == "float32" else torch.float64)
            if not torch.isfinite(C).all():
                raise ValueError(f"layer statistics at layer {l} contain NaN/inf (corpus {corpus})")
            module = spec.proj_name(l)
            p = store.path(fingerprint, module, cfg, corpus)
            st = LayerStats(l, C.cpu(), moments[l].count, p.name)
            store.save(p, st, {"fingerprint": fingerprint, "module": module, "corpus": corpus,
                               "max_len": cfg.max_len, "dtype": cfg.dtype, "computed_on": current})
            out[l] = st
    return {l: out[l] for l in layers}
