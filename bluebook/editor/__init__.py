"""The one edit loop (:func:`edit`), its result and the state of a sequential run."""
from bluebook.editor.loop import EditResult, SequentialState, edit

__all__ = ["EditResult", "SequentialState", "edit"]
