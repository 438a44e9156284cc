"""Small random models of every supported family, built from a config (no download), for tests and
for checking a family's edit-space contract (:mod:`bluebook.model.contract`).

``tiny_family(model_type)`` gives a model with the family's real module layout: Llama's, Mistral's,
Qwen2/3's and Gemma-2/3's decoder layers (Gemma's with its post-feed-forward norm), GPT-2's Conv1D
and GPT-J's parallel block.
"""
from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from bluebook.model.loading import tiny_tokenizer

#: ``config.model_type`` -> the keyword arguments of a small config of that family (vocabulary,
#: width and depth are filled in by :func:`tiny_family`).
FAMILY_CONFIGS: dict[str, dict] = {
    "gpt2": {"n_head": 4},
    "gptj": {"n_head": 4, "rotary_dim": 8},
    "llama": {"num_attention_heads": 4, "num_key_value_heads": 2},
    "mistral": {"num_attention_heads": 4, "num_key_value_heads": 2},
    "qwen2": {"num_attention_heads": 4, "num_key_value_heads": 2},
    "qwen3": {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16},
    # a soft cap small enough to bend a random model's logits, so that code running the output head
    # by itself (bluebook.model.specs.output_logits) is held to the model's own forward
    "gemma2": {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "final_logit_softcapping": 0.5},
    "gemma3_text": {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16},
}


def tiny_family(model_type: str, *, vocab_size: int = 2048, d: int = 64, n_layers: int = 4, seed: int = 0,
                bos_token_id: int | None = None, eos_token_id: int | None = None, pad_token_id: int | None = None):
    """A random model of family ``model_type`` (a key of :data:`FAMILY_CONFIGS`) in eval mode."""
    if model_type not in FAMILY_CONFIGS:
        raise ValueError(f"model_type {model_type!r} has no tiny config; choose one of {sorted(FAMILY_CONFIGS)}")
    kw = dict(FAMILY_CONFIGS[model_type], vocab_size=vocab_size, bos_token_id=bos_token_id,
              eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    if model_type in ("gpt2", "gptj"):
        kw.update(n_embd=d, n_layer=n_layers, n_positions=256)
    else:
        kw.update(hidden_size=d, intermediate_size=2 * d + 32, num_hidden_layers=n_layers,
                  max_position_embeddings=256, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **kw))
    model.eval()
    return model


def tiny_family_with_tokenizer(model_type: str, *, n_layers: int = 4, seed: int = 0):
    """``(model, tok)``: :func:`tiny_family` sized to the shipped tiny tokenizer, which prepends a BOS
    token for the Gemma families (as Gemma's own tokenizer does)."""
    tok = tiny_tokenizer(add_bos=model_type.startswith("gemma"))
    model = tiny_family(model_type, vocab_size=len(tok), n_layers=n_layers, seed=seed, bos_token_id=tok.bos_token_id,
                        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return model, tok

