"""Edit one fact and look at the model: greedy text and probabilities before and after, per method.

:func:`try_fact` is what a reader types a fact into: one request, edited with each method on the
model as it is, the edit applied only while the model is read, and the weights checked bit-identical
afterwards. :func:`fact_form` wraps it in an ipywidgets form for a notebook open in a browser.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import pandas as pd

from bluebook.data import EditRequest
from bluebook.editor.loop import edit
from bluebook.metrics.longform import greedy_continuations
from bluebook.metrics.scoring import continuation_ids, continuation_nll
from bluebook.model.specs import num_layers
from bluebook.model.weights import snapshot_weights, weights_changed

#: a prompt about something else, read before and after to see what the edit leaves alone
UNRELATED = "The largest planet in the solar system is"


@dataclass
class FactEdit:
    """What :func:`try_fact` saw. ``texts``: one row per prompt (the edit prompt, a paraphrase, an
    unrelated prompt), one column of greedy continuations per model (``unedited`` and each method).
    ``probs``: ``p(new)`` and ``p(true)`` of the whole answer after the edit prompt, per model.
    ``seconds``: edit time per method."""
    request: EditRequest
    texts: pd.DataFrame
    probs: pd.DataFrame
    seconds: dict = field(default_factory=dict)


def _answer_prob(model, tok, prompt: str, answer: str) -> float:
    """``p(answer | prompt)`` of every answer token (teacher forced): ``exp(−Σ token NLL)``."""
    nll, _ = continuation_nll(model, tok, [prompt], [answer])
    n = len(continuation_ids(tok, [answer])[0])
    return float((-nll[0] * n).exp())


def _read(model, tok, prompts: dict, req: EditRequest, max_new_tokens: int) -> tuple[list[str], dict]:
    texts = greedy_continuations(model, tok, list(prompts.values()), max_new_tokens)
    first = next(iter(prompts.values()))
    probs = {"p(new)": _answer_prob(model, tok, first, req.target_new)}
    if req.target_true:
        probs["p(true)"] = _answer_prob(model, tok, first, req.target_true)
    return [t.strip() for t in texts], probs


def try_fact(model, tok, prompt: str, subject: str, new: str, true: str | None = None, *,
             paraphrase: str | None = None, unrelated: str = UNRELATED,
             methods=("memit", "memit_blue"), hparams=None, max_new_tokens: int = 12) -> FactEdit:
    """Edit "``prompt`` → ``new``" (``prompt`` contains ``subject`` once, or ``{}`` where it goes) with
    each of ``methods`` and read the model before and after each edit.

    ``paraphrase``: another way to ask (default: the prompt after a short unrelated sentence, the
    way CounterFact builds its generalisation prompts). The edits are applied only while the model
    is read; the weights are the same bit for bit on return (checked).
    """
    template = prompt if "{}" in prompt else prompt.replace(subject, "{}", 1)
    req = EditRequest(template, subject, new, true)
    filled = req.prompt.replace("{}", subject)
    prompts = {"prompt": filled,
               "paraphrase": paraphrase or f"Here is a fact. {filled}",
               "unrelated": unrelated}
    before = snapshot_weights(model, range(num_layers(model)))
    columns, probs = {}, {}
    columns["unedited"], probs["unedited"] = _read(model, tok, prompts, req, max_new_tokens)
    seconds = {}
    for method in methods:
        t0 = time.perf_counter()
        result = edit(model, tok, [req], method, hparams=hparams, progress=False)
        seconds[method] = time.perf_counter() - t0
        with result:
            columns[method], probs[method] = _read(model, tok, prompts, req, max_new_tokens)
    changed = weights_changed(before, model)
    if changed:   # pragma: no cover - edit() and EditResult guarantee this; a broken guarantee must not pass silently
        raise RuntimeError(f"weights of layers {changed} were left changed")
    texts = pd.DataFrame(columns, index=pd.Index(list(prompts), name="read on"))
    texts.insert(0, "text", list(prompts.values()))
    return FactEdit(req, texts, pd.DataFrame(probs).T.rename_axis("model"), seconds)


def fact_form(model, tok, *, prompt="The Eiffel Tower is located in the city of", subject="The Eiffel Tower",
              new="Rome", true="Paris", methods=("memit", "memit_blue"), **kwargs):
    """An ipywidgets form around :func:`try_fact`: type a fact, press the button, read the tables."""
    import ipywidgets as w  # optional: only notebooks open in a browser need it
    from IPython.display import display  # comes with ipywidgets

    fields = {name: w.Text(value=value, description=name, layout=w.Layout(width="36em"))
              for name, value in (("prompt", prompt), ("subject", subject), ("new", new), ("true", true))}
    button, out = w.Button(description="edit and compare"), w.Output()

    def run(_):
        out.clear_output()
        with out:
            try:
                got = try_fact(model, tok, fields["prompt"].value, fields["subject"].value, fields["new"].value,
                               fields["true"].value or None, methods=methods, **kwargs)
            except ValueError as exc:           # a bad request says which field is wrong
                print(f"not edited: {exc}")
                return
            display(got.texts, got.probs)
    button.on_click(run)
    return w.VBox([*fields.values(), button, out])
