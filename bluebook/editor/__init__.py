"""The one edit loop (:func:`edit`), its result and the state of a sequential run."""
from bluebook.editor.loop import RunContext, edit, resolve_config
from bluebook.editor.result import EditResult
from bluebook.editor.state import SequentialState

__all__ = ["EditResult", "RunContext", "SequentialState", "edit", "resolve_config"]
