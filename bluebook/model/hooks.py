"""Forward hooks as context managers (weight snapshots and patches live in :mod:`bluebook.model.weights`).

Every context manager here removes its hooks (and restores weights) in ``finally``, so nothing is
left behind when the body raises.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable

import torch

from bluebook.model.specs import get_module, spec_for


class StopForward(Exception):
    """Raised inside a hook to end a forward pass early (caught by :class:`Trace`)."""


def output_tensor(output):
    """The hidden-state tensor of a module's output (the first element of a tuple/list output)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def replace_output(output, new):
    """``output`` with its hidden-state tensor replaced by ``new`` (same container type)."""
    if isinstance(output, tuple):
        return (new,) + tuple(output[1:])
    if isinstance(output, list):
        return [new] + list(output[1:])
    return new


class Trace(contextlib.AbstractContextManager):
    """Record the inputs and/or outputs of named modules during forward passes.

    ``inputs[name]`` is the module's first positional input, ``outputs[name]`` its output tensor
    (the hidden-state part when a module returns a tuple). With ``stop_after=name`` the forward pass
    is cut right after that module runs; the ``with`` block swallows the resulting
    :class:`StopForward`, so ``model(...)`` calls inside it simply return ``None``: use
    :meth:`run` for that case.
    """

    def __init__(self, model: torch.nn.Module, names: Iterable[str], *, inputs: bool = False,
                 outputs: bool = True, stop_after: str | None = None, detach: bool = True):
        self.model = model
        self.names = list(dict.fromkeys(names))
        self.keep_inputs, self.keep_outputs = inputs, outputs
        self.stop_after = stop_after
        self.detach = detach
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = []

    def _hook(self, name):
        def fn(module, args, output):
            if self.keep_inputs:
                x = args[0]
                self.inputs[name] = x.detach() if self.detach else x
            if self.keep_outputs:
                y = output_tensor(output)
                self.outputs[name] = y.detach() if self.detach else y
            if name == self.stop_after:
                raise StopForward()
        return fn

    def __enter__(self):
        try:
            for name in self.names:
                self._handles.append(get_module(self.model, name).register_forward_hook(self._hook(name)))
            if self.stop_after is not None and self.stop_after not in self.names:
                self._handles.append(
                    get_module(self.model, self.stop_after).register_forward_hook(self._hook(self.stop_after)))
        except BaseException:
            self.close()
            raise
        return self

    def run(self, fn: Callable, *args, **kwargs):
        """Call ``fn(*args, **kwargs)``; a :class:`StopForward` from ``stop_after`` ends it quietly."""
        try:
            return fn(*args, **kwargs)
        except StopForward:
            return None

    def close(self):
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return exc_type is StopForward


@contextlib.contextmanager
def edit_output(model: torch.nn.Module, name: str, fn: Callable[[torch.Tensor], torch.Tensor]):
    """Replace a module's output tensor by ``fn(output)`` for the duration of the block."""
    def hook(module, args, output):
        return replace_output(output, fn(output_tensor(output)))
    handle = get_module(model, name).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def add_to_block(model: torch.nn.Module, layer: int, rows: torch.Tensor, positions: torch.Tensor,
                 vectors: torch.Tensor):
    """Add ``vectors[i]`` to the edit space of ``layer`` (block ``layer``'s output, or its MLP output
    for a post-norm family: ``ModelSpec.out``) at ``(rows[i], positions[i])``."""
    name = spec_for(model).out_name(layer)

    def fn(h):
        add = torch.zeros_like(h)
        add = add.index_put((rows.to(h.device), positions.to(h.device)), vectors.to(h.dtype).to(h.device),
                            accumulate=True)
        return h + add
    with edit_output(model, name, fn):
        yield


def hook_count(model: torch.nn.Module) -> int:
    """Number of forward hooks currently registered anywhere in ``model`` (0 when clean)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@contextlib.contextmanager
def skip_blocks(model: torch.nn.Module, layer: int, output: torch.Tensor):
    """Inside the block, blocks ``0..layer-1`` pass their input through untouched and block
    ``layer`` returns ``output`` without computing anything.

    For re-running only the blocks above ``layer`` when everything at and below it is known to be
    unchanged (``output`` was recorded from a real pass over the same tokens). Forward hooks on
    block ``layer`` still fire, so :func:`edit_output` can add to the recorded output. Only valid for
    blocks that return a bare tensor (transformers ≥ 5); the original ``forward`` attributes
    (including ones set by accelerate) are put back on exit, also when the body raises.
    """
    spec = spec_for(model)
    mods = [get_module(model, spec.block_name(i)) for i in range(layer + 1)]
    saved = [m.__dict__.get("forward") for m in mods]

    def passthrough(*args, **kwargs):
        return args[0] if args else kwargs["hidden_states"]

    def recorded(*args, **kwargs):
        return output
    try:
        for i, m in enumerate(mods):
            m.forward = recorded if i == layer else passthrough
        yield
    finally:
        for m, old in zip(mods, saved):
            if old is None:
                m.__dict__.pop("forward", None)
            else:
                m.forward = old
