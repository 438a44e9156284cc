"""Fluency: sampled generations (as the reference's ``generate_fast``) and their n-gram entropy.

Two deliberate deviations from the reference: word tokens come from
``word_tokenize(text, preserve_line=True)`` (no punkt data offline; see :func:`ngram_entropy` for
the measured effect), and generation uses HF ``generate`` with left padding (the reference has its
own right-padded sampling loop; the sampling distribution, the 100-token total length and the "do
not stop at EOS" behaviour are the same, see :func:`generate_texts`).
"""
from __future__ import annotations

import copy
import unicodedata
from collections import Counter
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from transformers import GenerationConfig

from bluebook.metrics.scoring import prefix_ids
from bluebook.model.device import eval_mode, model_device
from bluebook.model.tokens import pad_id

__all__ = ["text_ngram_entropy", "ngram_entropy", "fluency_score", "generate_texts", "word_tokens", "clean_text"]


def word_tokens(text: str, sentence_splitter: Callable[[str], list[str]] | None = None) -> list[str]:
    """Word tokens of ``text`` (``nltk.tokenize.word_tokenize(..., preserve_line=True)``), per
    sentence of ``sentence_splitter(text)`` when a splitter is given (see :func:`ngram_entropy`)."""
    from nltk.tokenize import word_tokenize  # deferred: nltk takes over a second to import, only fluency needs it

    if sentence_splitter is None:
        return word_tokenize(text, preserve_line=True)
    return [w for s in sentence_splitter(text) for w in word_tokenize(s, preserve_line=True)]


def _entropy_bits(tokens: list[str], n: int) -> float:
    counts = Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
    total = sum(counts.values())
    if total == 0:
        return 0.0
    f = np.array(list(counts.values()), dtype=np.float64) / total
    return float(-(f * np.log2(f)).sum())


def text_ngram_entropy(text: str, sentence_splitter: Callable[[str], list[str]] | None = None) -> float:
    """``ent(text) = mean(2/3·H_2, 4/3·H_3)`` with ``H_n = −Σ f log2 f`` over n-gram frequencies.

    A text with fewer than ``n`` word tokens has ``H_n = 0`` (as in the reference).
    """
    toks = word_tokens(text, sentence_splitter)
    return float(np.mean([2 / 3 * _entropy_bits(toks, 2), 4 / 3 * _entropy_bits(toks, 3)]))


def ngram_entropy(texts: Sequence[str], sentence_splitter: Callable[[str], list[str]] | None = None) -> float:
    """Fluency of one record: the arithmetic mean of :func:`text_ngram_entropy` over its texts.

    Word tokens come from ``nltk.tokenize.word_tokenize(text, preserve_line=True)``. The reference
    calls ``nltk.word_tokenize(text)``, which first splits sentences with the Punkt model; that
    needs the ``punkt_tab`` data, which is not available offline. The difference: without the
    split, the Treebank tokenizer only detaches the *final* period of the whole text, so an
    internal "Paris. It" gives the token ``"Paris."`` instead of ``"Paris", "."``. Pass
    ``sentence_splitter=nltk.sent_tokenize`` (when the data is installed) to follow the reference
    exactly. Measured with an untrained ``nltk.tokenize.punkt.PunktSentenceTokenizer()`` as the
    splitter, on two 100-token SmolLM2 samples and two hand-written texts: per-text entropy rose by
    0.03 and 0.08 bits on the SmolLM2 samples (+0.4 % and +1.4 %, i.e. 3 and 8 points on the ×100
    fluency scale) and by 0.16 bits (+3.4 %) on a text of five short sentences, because detached
    periods add distinct n-grams; a one-sentence text was unchanged. (The untrained splitter also
    breaks after abbreviations such as "Mr.", which the English Punkt model would not, so these
    figures are if anything a little high.) Compare fluency numbers only between runs that
    tokenise the same way.
    """
    texts = list(texts)
    if not texts:
        raise ValueError("ngram_entropy needs at least one text")
    return float(np.mean([text_ngram_entropy(t, sentence_splitter) for t in texts]))


def fluency_score(records: Iterable[Sequence[str]],
                  sentence_splitter: Callable[[str], list[str]] | None = None) -> float:
    """Table value of Fluency: ``100 × mean over records of ngram_entropy(record texts)`` (unrounded)."""
    vals = [ngram_entropy(texts, sentence_splitter) for texts in records]
    if not vals:
        raise ValueError("fluency_score needs at least one record")
    return 100.0 * float(np.mean(vals))



def clean_text(text: str) -> str:
    """A generated text as the reference stores it: NFKD-normalised, ``"\\n\\n"`` -> ``" "``, no ``"<|endoftext|>"``."""
    return unicodedata.normalize("NFKD", text).replace("\n\n", " ").replace("<|endoftext|>", "")


@torch.no_grad()
def generate_texts(model, tok, prompts: Sequence[str], max_out_len: int = 100, top_k: int = 5,
                   seed: int = 0, batch_size: int = 32, do_sample: bool = True) -> list[str]:
    """One sampled continuation per prompt, as the reference's ``generate_fast``.

    * top-k sampling with ``k = top_k`` at temperature 1, no top-p (HF's top-k warper followed by
      a softmax is the reference's renormalised top-k distribution);
    * ``max_out_len`` counts **all** tokens including the prompt (and its BOS): each prompt gets
      ``max_out_len − len(tok(prompt))`` new tokens, never fewer than 0;
    * sampling does not stop at EOS (the reference loop ignores EOS); EOS and other special tokens
      are dropped when decoding (``skip_special_tokens=True``, as in the BLUE fork);
    * the text includes the prompt, is NFKD-normalised, ``"\\n\\n"`` becomes ``" "`` and
      ``"<|endoftext|>"`` is removed.

    Prompts are batched with LEFT padding built from ids (the tokenizer itself is not modified,
    so its padding side stays as it was). Rows of a batch are generated to the longest need and
    each is cut to its own length: sampling is sequential, so the cut sequence has exactly the
    distribution of a shorter generation. The random stream is seeded with ``seed`` inside
    ``torch.random.fork_rng`` (the global RNG is untouched), so a fixed seed, batch size and
    prompt list reproduce the same texts. ``do_sample=False`` gives greedy decoding (for tests).
    """
    prompts = list(prompts)
    if not prompts:
        return []
    dev = model_device(model)
    pad = pad_id(tok)
    enc = prefix_ids(tok, prompts)
    texts: list[str | None] = [None] * len(prompts)
    # generation_config.eos_token_id would make HF stop at EOS; the reference never stops early
    saved_gc = getattr(model, "generation_config", None)
    # fork every visible GPU's RNG too (torch.manual_seed seeds them all; a model may span several)
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with eval_mode(model), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if saved_gc is not None:
            gc_model = copy.deepcopy(saved_gc)
            gc_model.eos_token_id = None
            model.generation_config = gc_model
        try:
            for start in range(0, len(prompts), max(1, int(batch_size))):
                chunk = list(range(start, min(start + batch_size, len(prompts))))
                need = {i: max(0, max_out_len - len(enc[i])) for i in chunk}
                width = max(len(enc[i]) for i in chunk)
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for r, i in enumerate(chunk):
                    ids[r, width - len(enc[i]):] = torch.tensor(enc[i], dtype=torch.long)
                    mask[r, width - len(enc[i]):] = 1
                n_new = max(need.values())
                new = torch.zeros((len(chunk), 0), dtype=torch.long)
                if n_new > 0:
                    cfg = GenerationConfig(do_sample=do_sample, top_k=top_k if do_sample else None,
                                           top_p=1.0 if do_sample else None,
                                           temperature=1.0 if do_sample else None,
                                           max_new_tokens=n_new, min_new_tokens=0, num_beams=1,
                                           pad_token_id=pad, eos_token_id=None)
                    out = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev),
                                         generation_config=cfg)
                    new = out[:, width:].cpu()
                for r, i in enumerate(chunk):
                    full = list(enc[i]) + new[r, :need[i]].tolist()
                    texts[i] = clean_text(tok.decode(full, skip_special_tokens=True))
        finally:
            if saved_gc is not None:
                model.generation_config = saved_gc
    return texts  # type: ignore[return-value]


