"""The one edit loop (:func:`edit`), its result and the state of a sequential run."""
from bluebook.editor.loop import RunContext, critical_and_plan, edit, prepare_stats, resolve_config
from bluebook.editor.result import EditResult
from bluebook.editor.state import SequentialState

__all__ = ["EditResult", "RunContext", "SequentialState", "critical_and_plan", "edit", "prepare_stats",
           "resolve_config"]
