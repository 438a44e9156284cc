"""The authors' own code on the embedded model, record by record (docs/algorithms.md §9.4).

The BLUE authors' published code was run once on SmolLM2-135M-Instruct on this kind of machine:
the first 20 CounterFact records, one batch of 20 edits, MEMIT / MEMIT-BLUE / AlphaEdit /
AlphaEdit-BLUE with hyperparameters carried over from their Llama3-8B files, their context
templates fixed by seeding. Below are its per-record outcomes: efficacy as a 0/1 string, the number
of the 2 paraphrases and of the 10 neighbourhood prompts that succeed. bluebook, given the same
hyperparameters, templates and statistics settings through its public API, must reproduce them.

Slow (four 20-edit batches and, on a cold cache, the statistics of five layers): run with
``pytest -m slow tests/integration/test_authors_baseline.py``.
"""

import pytest

import bluebook
from bluebook.metrics import evaluate_counterfact

CASE_IDS = [0, 1, 2, 3, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 17, 18, 19, 20, 21, 22]
TEMPLATES = [
    ["{}"],
    [
        "The-The-Future-Of-The-. {}",
        "Therefore, a positive integer can only be 2. {}",
        "Because, it is a non-local reference frame. {}",
        "I-look-at-the-world-. {}",
        "You-the-world-to-be-. {}",
    ],
]
# The reference's hyperparameters (its Llama3-8B files with this model's layers; λ used by MEMIT only).
HPARAMS = {
    "layers": [4, 5, 6, 7, 8],
    "lam": 15000.0,
    "alpha": 10.0,
    "alpha_blue": 1.0,
    "nullspace_threshold": 2e-2,
    "context_templates": TEMPLATES,
    "target": {"steps": 25, "lr": 0.1, "kl_factor": 0.0625, "weight_decay": 0.5, "clamp_norm_factor": 0.75},
    "stats": {"corpus": "wiki-offline", "n_samples": 1000, "seed": 1, "max_len": 4096, "dtype": "float32"},
}
AUTHORS = {
    "memit": (
        "11000010110000000100",
        "02101000120000000200",
        [10, 3, 10, 10, 7, 5, 5, 10, 7, 3, 10, 10, 8, 8, 8, 10, 10, 8, 10, 1],
    ),
    "memit_blue": (
        "11000010110000000100",
        "02101100120010000200",
        [10, 3, 10, 10, 7, 4, 5, 10, 7, 3, 10, 10, 8, 8, 8, 10, 10, 8, 10, 1],
    ),
    "alphaedit": (
        "11101111111100010101",
        "02102201122020010211",
        [10, 3, 10, 10, 7, 6, 5, 10, 7, 3, 10, 10, 8, 9, 8, 9, 10, 8, 10, 1],
    ),
    "alphaedit_blue": (
        "11111111111111111111",
        "12222212222122222222",
        [10, 3, 10, 10, 6, 5, 5, 10, 7, 3, 10, 10, 8, 8, 8, 9, 10, 8, 10, 2],
    ),
}
AGGREGATES = {
    "memit": (30.0, 22.5, 76.5),
    "memit_blue": (30.0, 27.5, 76.0),
    "alphaedit": (70.0, 50.0, 77.0),
    "alphaedit_blue": (100.0, 92.5, 76.0),
}


def per_record(cases):
    eff = "".join(str(int(c["rewrite_success"] == 1.0)) for c in cases)
    gen = "".join(str(round(c["paraphrase_success"] * 2)) for c in cases)
    spe = [round(c["neighborhood_success"] * 10) for c in cases]
    return eff, gen, spe


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.parametrize("method", list(AUTHORS))
def test_bluebook_reproduces_the_authors_code_record_by_record(smollm2, method):
    model, tok = smollm2
    reqs = bluebook.load_counterfact(n=20)
    assert [r.case_id for r in reqs] == CASE_IDS
    res = bluebook.edit(model, tok, reqs, method, hparams=HPARAMS, progress=False)
    with res:
        cases = evaluate_counterfact(model, tok, reqs)
    eff, gen, spe = per_record(cases)
    want_eff, want_gen, want_spe = AUTHORS[method]
    mismatched = [CASE_IDS[i] for i in range(20) if (eff[i], gen[i], spe[i]) != (want_eff[i], want_gen[i], want_spe[i])]
    summary = (100 * sum(map(int, eff)) / 20, 100 * sum(map(int, gen)) / 40, 100 * sum(spe) / 200)
    print(method, "ours", eff, gen, spe, "aggregates", summary, "mismatched case ids", mismatched)
    assert summary == AGGREGATES[method]
    assert (eff, gen, spe) == AUTHORS[method], f"records differing from the authors' run: {mismatched}"
