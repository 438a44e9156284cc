"""The result of one batch edit: per-layer updates with what produced them, appliable and undoable."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from bluebook.core.objective import TargetResult
from bluebook.data.requests import EditRequest
from bluebook.editor.state import SequentialState
from bluebook.model.weights import add_deltas, restore_weights, snapshot_weights


@dataclass
class EditResult:
    """Per-layer updates of one batch (math layout ``d × m``) with everything that produced them.

    ``apply()`` makes the edit permanent (and updates the sequential state), ``undo()`` restores the
    exact previous weights, and ``with result:`` applies it only inside the block.
    """
    method: str
    layers: list[int]
    deltas: dict[int, torch.Tensor]
    residuals: dict[int, torch.Tensor]
    keys: dict[int, torch.Tensor]
    targets: dict[int, TargetResult]
    diagnostics: dict
    state: SequentialState
    requests: list[EditRequest]
    model: object = field(repr=False, default=None)
    _commit: object = field(repr=False, default=None)
    #: layers whose sequential state (C_p) applying this edit updates; None: the updated layers
    state_layers: list[int] | None = field(repr=False, default=None)
    _saved: dict | None = field(repr=False, default=None)
    _saved_cp: dict | None = field(repr=False, default=None)

    @property
    def applied(self) -> bool:
        return self._saved is not None

    def apply(self) -> "EditResult":
        """Add the updates to the model (and record the batch in the sequential state)."""
        if self.applied:
            raise RuntimeError("this edit is already applied")
        saved = snapshot_weights(self.model, self.deltas)
        try:
            add_deltas(self.model, self.deltas)
            self._saved = saved
            self._saved_cp = {l: (t.clone() if t is not None else None)
                              for l, t in ((l, self.state.C_p.get(l)) for l in (self.state_layers or self.deltas))}
            if self._commit is not None:
                self._commit()
        except BaseException:
            restore_weights(self.model, saved)
            self._saved = None
            raise
        return self

    def undo(self) -> "EditResult":
        """Restore the exact (bit-identical) weights and sequential state from before :meth:`apply`."""
        if not self.applied:
            raise RuntimeError("this edit is not applied")
        restore_weights(self.model, self._saved)
        for l, t in (self._saved_cp or {}).items():
            if t is None:
                self.state.C_p.pop(l, None)
            else:
                self.state.C_p[l] = t
        if self._commit is not None:
            self.state.n_batches -= 1
            self.state.n_edits -= len(self.requests)
        self._saved = self._saved_cp = None
        return self

    def __enter__(self):
        self.apply()
        return self

    def __exit__(self, *exc):
        self.undo()
        return False

    def changed_layers(self) -> list[int]:
        return sorted(l for l, d in self.deltas.items() if bool((d != 0).any()))
