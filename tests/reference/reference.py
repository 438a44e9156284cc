"""Plain transcriptions of the locate-then-edit algorithms, for checking ``bluebook.edit``.

Written from the algorithm descriptions (algorithms.md, the project's specification, which follows the MEMIT, AlphaEdit
and BLUE papers and their code), not from bluebook: every step is done the slow, obvious way
(full forward passes, ``torch.optim.Adam``, explicit solves). Nothing here imports bluebook.

Conventions: ``K`` is ``m × n`` (one key per column), ``R`` and ``Z`` are ``d × n``, an update
``Δ`` is ``d × m`` (the "math" layout, ``W k``), ``C`` is ``m × m``. Computations run in the
model's dtype; the linear solves run in float64.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

# module names per architecture (algorithms.md §8): the module whose output is where v* is added and
# h is read (the space the edited projection writes into unchanged), and the edited MLP output
# projection. Pre-norm decoders add the MLP output straight into the residual stream, so that is the
# block; Gemma-2/3 normalise the MLP output first (post_feedforward_layernorm), so it is the MLP.
_DECODER = ("model.layers.{}", "model.layers.{}.mlp.down_proj")
ARCH = {
    "gpt2": ("transformer.h.{}", "transformer.h.{}.mlp.c_proj"),
    "gptj": ("transformer.h.{}", "transformer.h.{}.mlp.fc_out"),
    "llama": _DECODER,
    "mistral": _DECODER,
    "qwen2": _DECODER,
    "qwen3": _DECODER,
    "gemma2": ("model.layers.{}.mlp", "model.layers.{}.mlp.down_proj"),
    "gemma3_text": ("model.layers.{}.mlp", "model.layers.{}.mlp.down_proj"),
}


@dataclass(frozen=True)
class TargetHP:
    """v* (compute_z) hyperparameters, algorithms.md §1."""
    steps: int = 25
    lr: float = 0.5
    kl_factor: float = 0.0625
    weight_decay: float = 0.5
    clamp_norm_factor: float = 0.75
    early_stop: float = 5e-2
    kl_prompt: str = "{} is a"


@dataclass
class RefResult:
    deltas: dict = field(default_factory=dict)      # layer -> Δ (d × m)
    keys: dict = field(default_factory=dict)        # layer -> K (m × n), read on the model as it was then
    residuals: dict = field(default_factory=dict)   # layer -> R (d × n)
    targets: dict = field(default_factory=dict)     # target layer -> (Z (d × n), [steps per request])


# ------------------------------------------------------------------------------ model plumbing
def block_name(model, layer):
    return ARCH[model.config.model_type][0].format(layer)


def proj_name(model, layer):
    return ARCH[model.config.model_type][1].format(layer)


def weight(model, layer):
    """The projection weight in math layout (d × m), as a view (GPT-2's Conv1D stores m × d)."""
    w = model.get_submodule(proj_name(model, layer)).weight
    return w.T if model.config.model_type == "gpt2" else w


@contextlib.contextmanager
def added_weights(model, deltas):
    """Temporarily ``W[l] += Δ[l]``; the exact original weights come back on exit."""
    saved = {l: weight(model, l).detach().clone() for l in deltas}
    try:
        with torch.no_grad():
            for l, d in deltas.items():
                weight(model, l).add_(d.to(weight(model, l).dtype))
        yield
    finally:
        with torch.no_grad():
            for l, w in saved.items():
                weight(model, l).copy_(w)


def subject_last_index(tok, template, subject):
    """§0.1: ``len(tok(prefix + subject)) − 1`` with ``prefix`` the text before ``{}``."""
    prefix = template[: template.index("{}")]
    return len(tok(prefix + subject)["input_ids"]) - 1


def fill(template, text):
    return template.replace("{}", text, 1)


def _first(out):
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def read_at(model, tok, templates, subjects, module, what):
    """Run each filled template; return ``what`` ("input" or "output") of ``module`` at the
    subject's last token, one row per template."""
    texts = [fill(t, s) for t, s in zip(templates, subjects)]
    idx = torch.tensor([subject_last_index(tok, t, s) for t, s in zip(templates, subjects)])
    enc = tok(texts, return_tensors="pt", padding=True)
    got = {}
    mod = model.get_submodule(module)
    if what == "input":
        h = mod.register_forward_pre_hook(lambda m, args: got.setdefault("x", args[0]))
    else:
        h = mod.register_forward_hook(lambda m, args, out: got.setdefault("x", _first(out)))
    try:
        model(**enc)
    finally:
        h.remove()
    return got["x"][torch.arange(len(texts)), idx]


# ------------------------------------------------------------------------------ §2 keys, current states
def compute_keys(model, tok, requests, layer, templates):
    """K (m × n): the projection's input at the subject's last token of every context-prefixed
    prompt, averaged within each template group, then over the group means."""
    cols = []
    for r in requests:
        group_means = []
        for group in templates:
            ts = [fill(c, r.prompt) for c in group]
            group_means.append(read_at(model, tok, ts, [r.subject] * len(ts), proj_name(model, layer), "input").mean(0))
        cols.append(torch.stack(group_means).mean(0))
    return torch.stack(cols, 1)


def current_hidden(model, tok, requests, layer):
    """Block ``layer``'s output at the subject's last token of each bare prompt (d × n)."""
    return read_at(model, tok, [r.prompt for r in requests], [r.subject for r in requests],
                   block_name(model, layer), "output").T


# ------------------------------------------------------------------------------ §1 compute_z (v*)
def compute_z(model, tok, req, layer, templates, hp: TargetHP):  # noqa: C901 - a transcription of the reference, kept in its shape
    """Optimise δ added to block ``layer``'s output at the subject's last token so that the model
    predicts ``target_new`` after every context-prefixed prompt, with a KL penalty on "{} is a".
    Returns ``(z = h0 + δ, steps)``; ``steps`` counts as algorithms.md §10.4."""
    target = tok(" " + req.target_new)["input_ids"]
    if target[0] in (tok.bos_token_id, tok.unk_token_id):
        target = target[1:]
    T = len(target)
    tail = tok.decode(target[:-1])
    rewrite = [fill(c, req.prompt) + tail for group in templates for c in group]
    prompts = rewrite + [hp.kl_prompt]                  # last row: the KL prompt
    texts = [fill(p, req.subject) for p in prompts]
    idx = torch.tensor([subject_last_index(tok, p, req.subject) for p in prompts])
    enc = tok(texts, return_tensors="pt", padding=True)
    lens = enc["attention_mask"].sum(1).tolist()
    target_t = torch.tensor(target)

    dtype = model.get_input_embeddings().weight.dtype
    delta = torch.zeros(model.get_input_embeddings().weight.shape[1], dtype=dtype, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=hp.lr)
    rows = torch.arange(len(texts))
    state = {}

    def add_delta(module, args, out):
        h = _first(out)
        if "h0" not in state:                          # first pass, δ = 0: h at prompt 0
            state["h0"] = h[0, idx[0]].detach().clone()
        h = h.clone()
        h[rows, idx] = h[rows, idx] + delta
        return (h,) + tuple(out[1:]) if isinstance(out, tuple) else h

    hook = model.get_submodule(block_name(model, layer)).register_forward_hook(add_delta)
    requires = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    steps = hp.steps
    try:
        for it in range(hp.steps):
            logp = F.log_softmax(model(**enc).logits, dim=-1)
            nll = torch.stack([-logp[i, lens[i] - T: lens[i]].gather(1, target_t[:, None]).sum() / T
                               for i in range(len(rewrite))]).mean()
            kl_now = logp[len(rewrite), idx[-1]]
            if it == 0:
                kl_init = kl_now.detach().clone()
            kl = hp.kl_factor * F.kl_div(kl_init[None], kl_now[None], log_target=True, reduction="batchmean")
            h0 = state["h0"]
            wd = hp.weight_decay * delta.norm() / h0.norm() ** 2
            loss = nll + kl + wd
            if loss.item() < hp.early_stop:
                steps = it
                break
            if it == hp.steps - 1:
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():                      # project back into the norm ball
                max_norm = hp.clamp_norm_factor * h0.norm()
                if delta.norm() > max_norm:
                    delta[...] = delta * max_norm / delta.norm()
    finally:
        hook.remove()
        for p, r in zip(model.parameters(), requires):
            p.requires_grad_(r)
    return (state["h0"] + delta).detach(), steps


def compute_Z(model, tok, requests, layer, templates, hp):
    out = [compute_z(model, tok, r, layer, templates, hp) for r in requests]
    return torch.stack([z for z, _ in out], 1), [s for _, s in out]


def target(model, tok, requests, layer, templates, hp, given=None):
    """v* for every request at ``layer`` (d × n), or ``given[layer]`` when targets are supplied."""
    if given is not None:
        return given[layer].to(weight(model, layer).dtype), None
    return compute_Z(model, tok, requests, layer, templates, hp)


# ------------------------------------------------------------------------------ closed forms
def memit_solve(K, R, C, lam, C_p=None):
    """§4: Δ = R Kᵀ (λC [+ C_p] + K Kᵀ)⁻¹, in float64."""
    K, R = K.double(), R.double()
    A = lam * C.double() + K @ K.T
    if C_p is not None:
        A = A + C_p.double()
    return R @ torch.linalg.solve(A, K).T            # A is symmetric: (A⁻¹K)ᵀ = Kᵀ A⁻¹


def nullspace_projector(C, threshold):
    """§5: P = U₀U₀ᵀ, U₀ the eigenvectors of C with eigenvalue below the threshold."""
    vals, vecs = torch.linalg.eigh(C.double())
    U0 = vecs[:, vals < threshold]
    return U0 @ U0.T


def alphaedit_solve(K, R, P, alpha, C_p=None):
    """§5: Δ = R Kᵀ P ((K Kᵀ + C_p) P + α I)⁻¹, computed as Xᵀ with
    X = solve(P (K Kᵀ + C_p) + α I, P K Rᵀ), in float64."""
    K, R, P = K.double(), R.double(), P.double()
    M = K @ K.T if C_p is None else K @ K.T + C_p.double()
    A = P @ M + alpha * torch.eye(K.shape[0], dtype=torch.float64)
    return torch.linalg.solve(A, P @ K @ R.T).T


# ------------------------------------------------------------------------------ the two layer loops
def even_loop(model, tok, requests, layers, templates, hp, solve, given_targets=None):
    """MEMIT's loop (§4, used unchanged by AlphaEdit §5): v* at the last critical layer L; then for
    each critical layer in ascending order the keys and h^L are re-read on the partly edited model,
    that layer takes R = (Z − h^L) / (number of layers not yet updated), Δ = solve(K, R, layer) is
    added before moving on. The weights are restored at the end; the deltas are returned."""
    res = RefResult()
    L = layers[-1]
    Z, steps = target(model, tok, requests, L, templates, hp, given_targets)
    res.targets[L] = (Z, steps)
    with added_weights(model, {l: torch.zeros_like(weight(model, l)) for l in layers}):
        for i, l in enumerate(layers):
            K = compute_keys(model, tok, requests, l, templates)
            R = (Z - current_hidden(model, tok, requests, L)) / (len(layers) - i)
            D = solve(K, R, l)
            with torch.no_grad():
                weight(model, l).add_(D.to(weight(model, l).dtype))
            res.deltas[l], res.keys[l], res.residuals[l] = D, K, R
    return res


def boundary_loop(model, tok, requests, layers, templates, hp, solve, given_targets=None):
    """BLUE's loop (§7): only the first and the last critical layer, in that order; at each, a
    fresh v* optimised at that layer on the current model, the full residual Z − h^l (measured at
    that same layer), Δ = solve(K, R, layer), applied before the next layer."""
    res = RefResult()
    plan = [layers[0], layers[-1]]
    with added_weights(model, {l: torch.zeros_like(weight(model, l)) for l in plan}):
        for l in plan:
            Z, steps = target(model, tok, requests, l, templates, hp, given_targets)
            K = compute_keys(model, tok, requests, l, templates)
            R = Z - current_hidden(model, tok, requests, l)
            D = solve(K, R, l)
            with torch.no_grad():
                weight(model, l).add_(D.to(weight(model, l).dtype))
            res.targets[l] = (Z, steps)
            res.deltas[l], res.keys[l], res.residuals[l] = D, K, R
    return res


def edit(model, tok, requests, method, layers, templates, hp, C, lam=None, alpha=None,
         threshold=None, C_p=None, given_targets=None):
    """``method``: memit, memit_blue, alphaedit or alphaedit_blue. ``C``: {layer: m × m};
    ``C_p``: {layer: accumulated K Kᵀ of earlier batches} (AlphaEdit; absent = zero).
    ``given_targets``: {layer: Z (d × n)} to use instead of optimising v* (to check the layer loop
    and the closed forms on their own)."""
    C_p = C_p or {}
    if method.startswith("memit"):
        solve = lambda K, R, l: memit_solve(K, R, C[l], lam)
    else:
        P = {l: nullspace_projector(C[l], threshold) for l in layers}
        solve = lambda K, R, l: alphaedit_solve(K, R, P[l], alpha, C_p.get(l))
    loop = boundary_loop if method.endswith("_blue") else even_loop
    return loop(model, tok, requests, sorted(layers), templates, hp, solve, given_targets)
