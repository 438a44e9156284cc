"""Method names: the bases, their BLUE variants, the paper's order, and how a name is read."""
from __future__ import annotations

#: Base methods; each also comes as ``<base>_blue`` and ``<base>_blue_dynamic``.
BASES = ("memit", "memit_seq", "alphaedit", "rect", "prune")
#: Every method name of the paper (base, then its BLUE variant).
METHODS = tuple(b + s for b in BASES for s in ("", "_blue"))
#: Beyond the paper: BLUE with the two updated layers chosen per batch (:class:`bluebook.core.distribute.Dynamic`).
DYNAMIC_METHODS = tuple(b + "_blue_dynamic" for b in BASES)
#: The eight variants of the paper's tables, in its order.
PAPER_ORDER = ("memit", "memit_blue", "alphaedit", "alphaedit_blue", "rect", "rect_blue", "prune", "prune_blue")

_SUFFIXES = {"_blue_dynamic": "dynamic", "_blue": "boundary", "": "even"}


def read_method(name) -> tuple[str, str, str]:
    """``"MEMIT-BLUE-dynamic"`` → ``("memit_blue_dynamic", "memit", "dynamic")``: the name, its base
    method and its residual rule (``"even"``, ``"boundary"`` or ``"dynamic"``); an unknown name raises
    ``ValueError``."""
    if not isinstance(name, str):
        raise ValueError(f"method must be a string, got {name!r}")
    key = name.strip().lower().replace("-", "_")
    for suffix, rule in _SUFFIXES.items():
        if key.endswith(suffix):
            base = key[: len(key) - len(suffix)]
            if base in BASES:
                return key, base, rule
    raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS + DYNAMIC_METHODS)}")


def split_method(name) -> tuple[str, str, bool]:
    """``"MEMIT-BLUE"`` → ``("memit_blue", "memit", True)``; ``blue`` is True for every two-layer
    variant (``_blue`` and ``_blue_dynamic``); an unknown name raises ``ValueError``."""
    key, base, rule = read_method(name)
    return key, base, rule != "even"


def is_blue_pair(name: str, base: str) -> bool:
    """Whether ``name`` is the paper's BLUE variant of ``base`` (not the dynamic one)."""
    return name == f"{base}_blue"


def for_method(value, method: str):
    """``value`` is one setting for every method, or a ``{method name: setting}`` mapping (every key
    a method name); then ``method``'s entry, or ``None`` (its preset) when the mapping omits it."""
    if isinstance(value, dict) and value and all(k in METHODS or k in DYNAMIC_METHODS for k in value):
        return value.get(method)
    return value
