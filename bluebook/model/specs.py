"""Architecture specs: where the edited projection, blocks and head live in each model family.

The family is chosen from ``config.model_type`` only, never from a model's name or path.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ModelSpec:
    """Module-name templates of one architecture family (``{}`` is the layer index).

    ``proj`` is the edited MLP output projection (keys are its input, values its output);
    ``transposed`` is True when its weight is stored ``(m, d)`` (GPT-2's ``Conv1D``) instead of
    ``nn.Linear``'s ``(d, m)``.

    ``out`` names the module whose output is the **edit space**: where v* is optimised and the
    current hidden state ``h`` is read. The closed form assumes that an update ``Δ`` written into
    ``proj`` moves that output by exactly ``Δk`` at the key's position. In a pre-norm decoder
    (GPT-2, GPT-J, Llama, Mistral, Qwen) the MLP output is added straight into the residual stream,
    so the block output is that space (``out=None``). Gemma-2/3 normalise the MLP output
    (``post_feedforward_layernorm``) before it joins the residual stream: there ``Δk`` moves the
    block output by something else, and the edit space is the MLP's own output, before the norm.
    :func:`bluebook.model.contract.write_space_error` measures the assumption on a real model.
    """

    family: str
    block: str
    mlp: str
    attn: str
    proj: str
    ln_f: str
    embed: str
    transposed: bool
    n_layers_attr: str = "num_hidden_layers"
    out: str | None = None

    def block_name(self, layer: int) -> str:
        return self.block.format(layer)

    def out_name(self, layer: int) -> str:
        """The module whose output is the edit space at ``layer`` (the block itself unless ``out`` says otherwise)."""
        return (self.out or self.block).format(layer)

    @property
    def edits_residual_stream(self) -> bool:
        """True when the edit space is the block output (the residual stream), False for post-norm MLPs."""
        return self.out is None

    def proj_name(self, layer: int) -> str:
        return self.proj.format(layer)

    def mlp_name(self, layer: int) -> str:
        return self.mlp.format(layer)

    def attn_name(self, layer: int) -> str:
        return self.attn.format(layer)


_GPT2 = ModelSpec("gpt2", "transformer.h.{}", "transformer.h.{}.mlp", "transformer.h.{}.attn",
                  "transformer.h.{}.mlp.c_proj", "transformer.ln_f", "transformer.wte", True, "n_layer")
_GPTJ = ModelSpec("gptj", "transformer.h.{}", "transformer.h.{}.mlp", "transformer.h.{}.attn",
                  "transformer.h.{}.mlp.fc_out", "transformer.ln_f", "transformer.wte", False, "n_layer")
_LLAMA = ModelSpec("llama", "model.layers.{}", "model.layers.{}.mlp", "model.layers.{}.self_attn",
                   "model.layers.{}.mlp.down_proj", "model.norm", "model.embed_tokens", False)
# Gemma-2/3: Llama's module names, but the MLP output passes post_feedforward_layernorm before the
# residual sum, so v* and h live at the MLP output (see ModelSpec).
_GEMMA = ModelSpec("gemma", "model.layers.{}", "model.layers.{}.mlp", "model.layers.{}.self_attn",
                   "model.layers.{}.mlp.down_proj", "model.norm", "model.embed_tokens", False,
                   out="model.layers.{}.mlp")

#: ``config.model_type`` -> spec. Each entry is held to the edit-space contract by a test on a
#: small random model of that type (tests/unit/test_families.py).
SPECS: dict[str, ModelSpec] = {
    "gpt2": _GPT2,
    "gptj": _GPTJ,
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "gemma2": _GEMMA,
    "gemma3_text": _GEMMA,
}


def spec_for(model_or_config) -> ModelSpec:
    """Return the :class:`ModelSpec` for a model (or its config), from ``config.model_type``."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type not in SPECS:
        raise ValueError(
            f"unsupported config.model_type={model_type!r}; supported: {sorted(SPECS)}. "
            "Add a ModelSpec for it in bluebook.model.specs.SPECS."
        )
    return SPECS[model_type]


def num_layers(model) -> int:
    spec = spec_for(model)
    return int(getattr(model.config, spec.n_layers_attr))


def check_layers(model, layers, *, field: str = "layers") -> list[int]:
    """Validate a list of layer indices against the model depth; returns them sorted."""
    if layers is None or len(layers) == 0:
        raise ValueError(f"{field} is empty: give at least one layer index")
    n = num_layers(model)
    out = []
    for l in layers:
        if not isinstance(l, (int,)) or isinstance(l, bool):
            try:
                l = int(l)
            except Exception as exc:  # pragma: no cover - defensive
                raise ValueError(f"{field} contains a non-integer layer {l!r}") from exc
        if not 0 <= l < n:
            raise ValueError(f"{field} contains layer {l}, out of range for a {n}-layer model (0..{n - 1})")
        out.append(int(l))
    if len(set(out)) != len(out):
        raise ValueError(f"{field} contains duplicate layers: {list(layers)}")
    return sorted(out)


def get_module(model: torch.nn.Module, name: str) -> torch.nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError as exc:
        raise KeyError(f"module {name!r} not found in {type(model).__name__}") from exc


def proj_weight(model, layer: int) -> torch.nn.Parameter:
    """The edited projection's weight parameter at ``layer`` (raw storage layout)."""
    return get_module(model, spec_for(model).proj_name(layer)).weight


def to_storage(delta_dm: torch.Tensor, model, layer: int) -> torch.Tensor:
    """Convert a math-layout update ``(d, m)`` into the parameter's storage layout/dtype/device."""
    w = proj_weight(model, layer)
    d = delta_dm.T if spec_for(model).transposed else delta_dm
    if d.shape != w.shape:
        raise ValueError(f"update of shape {tuple(d.shape)} does not match weight {tuple(w.shape)} at layer {layer}")
    return d.to(device=w.device, dtype=w.dtype)


def math_weight(model, layer: int) -> torch.Tensor:
    """The projection weight in math layout ``(d, m)`` (a view)."""
    w = proj_weight(model, layer)
    return w.T if spec_for(model).transposed else w


def key_dim(model, layer: int = 0) -> int:
    return math_weight(model, layer).shape[1]


def output_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """The model's logits from final hidden states (after the final norm): the output head, then the
    family's post-processing, as the model's own forward applies it (Gemma-2's
    ``final_logit_softcapping``: ``c · tanh(logits / c)``). For running the head at a few positions only."""
    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits
