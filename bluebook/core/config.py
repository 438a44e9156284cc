"""Hyperparameters as small frozen dataclasses, and presets per model family (bluebook/presets/*.yaml).

A preset file holds one model's settings with method variants as overlays; unknown keys are an
error. Paths, devices and model names are never stored here.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from bluebook.core.distribute import boundary_pair
from bluebook.core.names import split_method


@dataclass(frozen=True)
class TargetConfig:
    """v* (z) optimisation, algorithms.md §1."""
    steps: int = 25              # v_num_grad_steps
    lr: float = 0.5              # v_lr (Adam)
    kl_factor: float = 0.0625
    weight_decay: float = 0.5    # v_weight_decay: wd · ‖δ‖ / ‖h‖²  (numerator not squared, as the reference)
    clamp_norm_factor: float = 0.75
    early_stop: float = 5e-2     # stop when the total loss < this
    kl_prompt: str = "{} is a"
    engine: str = "fast"         # "plain": the readable loop; "fast": the batched engine (same result)
    regroup_below: float = 0.75  # fast engine: regroup suffixes when fewer than this share of rows are live
    # long targets (bluebook.core.longform): window by window, ``window`` tokens each, when the
    # target is longer than one window ("auto"), for every request ("always") or never ("never")
    window: int = 40
    long_form: str = "auto"

    def __post_init__(self):
        if self.long_form not in ("auto", "always", "never"):
            raise ValueError(f"target.long_form must be 'auto', 'always' or 'never', got {self.long_form!r}")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"target.window must be a positive integer (tokens), got {self.window!r}")


@dataclass(frozen=True)
class StatsConfig:
    """Layer statistics C = E[k kᵀ], algorithms.md §3."""
    corpus: str = "wiki-offline"
    n_samples: int | None = 1000  # documents (None: the whole corpus)
    seed: int = 1
    max_len: int = 512           # tokens per document (truncation)
    batch_tokens: int = 8192
    dtype: str = "float32"       # accumulation dtype: float32 or float64


@dataclass(frozen=True)
class EditConfig:
    """Everything a method variant needs besides the model and requests."""
    layers: tuple[int, ...] = (4, 5, 6, 7, 8)          # critical layers (MEMIT window)
    blue_layers: tuple[int, ...] | None = None         # boundary layers; default (first, last) of `layers`
    lam: float = 15000.0                               # mom2_update_weight λ
    alpha: float = 10.0                                # AlphaEdit L2
    alpha_blue: float | None = None                    # AlphaEdit-BLUE L2 (reference: 80 / 95 / 1)
    nullspace_threshold: float = 2e-2
    rect_keep_percent: float = 40.0
    prune_reference: bool = False                      # PRUNE: reference apply (W_now + ΔW') vs paper (W0 + ΔW')
    solve_dtype: str = "float64"
    target: TargetConfig = field(default_factory=TargetConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    context_templates: tuple[tuple[str, ...], ...] | None = None   # fixed templates (else sampled, seeded)
    template_seed: int = 0
    # overrides applied when a batch's targets are long (edited window by window, docs/algorithms.md
    # §7.2): a preset's ``long_form:`` section, e.g. {"lam": 300, "target": {"window": 16}}
    long_overrides: dict | None = None

    def boundary_layers(self) -> tuple[int, int]:
        """BLUE's two layers (:func:`bluebook.core.distribute.boundary_pair`)."""
        return boundary_pair(self.layers, self.blue_layers)


def _build(cls, data: dict, where: str):
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(names)}")
    kw = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        v = data[f.name]
        if f.name == "target":
            v = v if isinstance(v, TargetConfig) else _build(TargetConfig, v, f"{where}.target")
        elif f.name == "stats":
            v = v if isinstance(v, StatsConfig) else _build(StatsConfig, v, f"{where}.stats")
        elif f.name in ("layers", "blue_layers") and v is not None:
            v = tuple(int(x) for x in v)
        elif f.name == "context_templates" and v is not None:
            v = tuple(tuple(g) for g in v)
        elif isinstance(f.default, float) and v is not None:
            v = float(v)   # YAML reads 1e-2 as a string; cast
        elif isinstance(f.default, int) and not isinstance(f.default, bool) and v is not None:
            v = int(v)
        kw[f.name] = v
    return cls(**kw)


def merge_dicts(base: dict, over: dict) -> dict:
    """``base`` updated with ``over``, recursively into the dicts both hold (neither is changed)."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_dicts(out[k], v)
        else:
            out[k] = v
    return out


PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str, method: str | None = None, **overrides) -> EditConfig:
    """Load ``presets/<name>.yaml`` (or a path), apply the ``variants[method]`` overlay, then overrides.

    ``overrides`` may hold top-level fields and ``target={...}`` / ``stats={...}`` dicts.
    """
    path = Path(name)
    if not path.suffix:
        path = PRESET_DIR / f"{name}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"preset {name!r} not found; available: {available_presets()}")
    raw = yaml.safe_load(path.read_text()) or {}
    allowed = {"model", "description", "evidence", "base", "variants", "long_form"}
    unknown = set(raw) - allowed
    if unknown:
        raise ValueError(f"{path.name}: unknown top-level key(s) {sorted(unknown)}; allowed {sorted(allowed)}")
    data = dict(raw.get("base") or {})
    variants = raw.get("variants") or {}
    if method is not None:
        name, base, _ = split_method(method)
        for key in (base, name):
            if key in variants:
                data = merge_dicts(data, variants[key])
    if raw.get("long_form"):
        data["long_overrides"] = dict(raw["long_form"])
    data = merge_dicts(data, overrides)
    return _build(EditConfig, data, path.name)


def long_form_config(cfg: EditConfig) -> EditConfig:
    """The configuration a long-target batch runs with: ``cfg`` with its ``long_overrides`` applied."""
    if not cfg.long_overrides:
        return cfg
    over = dict(cfg.long_overrides)
    if "long_overrides" in over:
        raise ValueError("long_overrides cannot itself set long_overrides")
    return with_overrides(cfg, **over, long_overrides=None)


def to_dict(cfg) -> dict:
    return asdict(cfg)


def with_overrides(cfg: EditConfig, **overrides) -> EditConfig:
    return _build(EditConfig, merge_dicts(asdict(cfg), overrides), "overrides")
