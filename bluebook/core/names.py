"""Method names: the bases, their BLUE variants, the paper's order, and how a name is read."""
from __future__ import annotations

#: Base methods; each also comes as ``<base>_blue``.
BASES = ("memit", "memit_seq", "alphaedit", "rect", "prune")
#: Every method name (base, then its BLUE variant).
METHODS = tuple(b + s for b in BASES for s in ("", "_blue"))
#: The eight variants of the paper's tables, in its order.
PAPER_ORDER = ("memit", "memit_blue", "alphaedit", "alphaedit_blue", "rect", "rect_blue", "prune", "prune_blue")


def split_method(name) -> tuple[str, str, bool]:
    """``"MEMIT-BLUE"`` → ``("memit_blue", "memit", True)``; an unknown name raises ``ValueError``."""
    if not isinstance(name, str):
        raise ValueError(f"method must be a string, got {name!r}")
    key = name.strip().lower().replace("-", "_")
    blue = key.endswith("_blue")
    base = key[: -len("_blue")] if blue else key
    if base not in BASES:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return key, base, blue
