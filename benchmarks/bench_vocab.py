"""Where v* time goes on a large vocabulary (Gemma-3-270m: 262,144 tokens): body vs output head.

Runs the fast v* engine (``bluebook.fast.targets``) on the first N shipped CounterFact requests at
the preset's last critical layer under ``torch.profiler`` and splits the CPU time of every operator
by its input shapes: an operator that touches a vocabulary-sized dimension (the output head's
matmul forward and backward, log-softmax, the KL term and the NLL gather over the 262k logits) is
"vocabulary"; everything else (the transformer blocks above the edited layer, forward and
backward, Adam, bookkeeping) is "body"; the vocabulary part is split again into the head's matrix
products and the element-wise work over the logits (log-softmax, KL, gather and their backward),
the only part an exact rewrite of the loss could shrink. The same run without the profiler gives
the wall time per request. Writes benchmarks/results/vocab_<model>.json.

    python benchmarks/bench_vocab.py                      # gemma3-270m (optional wheels), 10 requests
    python benchmarks/bench_vocab.py --model smollm2-135m # the embedded model (49,152 tokens)
    python benchmarks/bench_vocab.py --loss-check-only    # only the fused-loss comparison below

``loss_check`` times, side by side, the engine's loss over the head (full log-softmax, gather, KL)
against a fused target-token log-probability (log-sum-exp forward, softmax − one-hot backward) on
the model's own head with 120 target rows and 20 KL rows: the most an exact rewrite of the
element-wise part could save.
"""
from __future__ import annotations

import argparse
import time

import torch
from common import peak_rss_mb, write
from torch.profiler import ProfilerActivity, profile

import bluebook
from bluebook.core.config import with_overrides
from bluebook.core.templates import context_templates
from bluebook.editor.targets import optimize_targets

#: the output head's matrix products (forward logits, backward input gradient)
MATMULS = ("aten::mm", "aten::addmm", "aten::matmul", "aten::bmm")


def _touches(shapes, v: int) -> bool:
    return any(isinstance(s, (list, tuple)) and v in s for s in shapes)


def breakdown(prof, vocab: int) -> dict:
    """Self CPU seconds of the profiled block: operators touching a vocab-sized dimension vs the rest."""
    vocab_s, matmul_s, other_s, top = 0.0, 0.0, 0.0, []
    for ev in prof.key_averages(group_by_input_shape=True):
        s = ev.self_cpu_time_total / 1e6
        # the token-embedding lookup reads a (vocab, d) table but costs one row per token: body
        if _touches(ev.input_shapes, vocab) and ev.key not in ("aten::embedding", "aten::index_select"):
            vocab_s += s
            matmul_s += s if ev.key in MATMULS else 0.0
            top.append((s, ev.key, str(ev.input_shapes)[:120]))
        else:
            other_s += s
    top.sort(reverse=True)
    total = vocab_s + other_s
    return {"total_s": total, "vocab_s": vocab_s, "vocab_share": vocab_s / total,
            "head_matmul_s": matmul_s, "head_matmul_share": matmul_s / total,
            "vocab_elementwise_s": vocab_s - matmul_s, "vocab_elementwise_share": (vocab_s - matmul_s) / total,
            "body_and_rest_s": other_s, "body_share": other_s / total,
            "top_vocab_ops": [{"s": round(s, 3), "op": k, "shapes": sh} for s, k, sh in top[:10]]}


class FusedTokenLogProb(torch.autograd.Function):
    """log p(label) from logits without a full log-softmax: log-sum-exp forward, and a backward that
    writes softmax − one-hot straight into one new tensor (no zero-filled gather gradient)."""

    @staticmethod
    def forward(ctx, logits, labels):
        lse = torch.logsumexp(logits, -1)
        ctx.save_for_backward(logits, lse, labels)
        return logits.gather(1, labels[:, None]).squeeze(1) - lse

    @staticmethod
    def backward(ctx, grad):
        logits, lse, labels = ctx.saved_tensors
        g = torch.exp(logits - lse[:, None]).mul_(-grad[:, None])
        return g.scatter_add_(1, labels[:, None], grad[:, None]), None


def loss_check(head: torch.Tensor, n_target: int, n_kl: int, repeat: int = 3, seed: int = 0) -> dict:
    """The engine's head + loss (full log-softmax, gather, KL) against the fused target log-probability,
    side by side on the same shapes: best-of-``repeat`` seconds per forward+backward, their ratio and
    the largest gradient difference."""
    g = torch.Generator().manual_seed(seed)
    V, d = head.shape
    x = (torch.randn(n_target + n_kl, d, generator=g) * 3.0).requires_grad_(True)
    lab = torch.randint(0, V, (n_target,), generator=g)
    w = torch.rand(n_target, generator=g)
    ref = torch.log_softmax(x[n_target:].detach() @ head.T, -1) * 0.9

    def kl(cur):
        return (cur.exp() * (cur - ref)).sum()

    def engine():
        logp = torch.log_softmax(x @ head.T, -1)
        lp = logp[:n_target].gather(1, lab[:, None]).squeeze(1)
        return torch.autograd.grad(-(lp * w).sum() + kl(logp[n_target:]), x)[0]

    def fused():
        lp = FusedTokenLogProb.apply(x[:n_target] @ head.T, lab)
        cur = torch.log_softmax(x[n_target:] @ head.T, -1)
        return torch.autograd.grad(-(lp * w).sum() + kl(cur), x)[0]

    times = {"engine": [], "fused": []}
    for _ in range(repeat):                      # interleaved, so both see the same machine load
        for name, fn in (("engine", engine), ("fused", fused)):
            t0 = time.perf_counter()
            out = fn()
            times[name].append(time.perf_counter() - t0)
            if name == "engine":
                a = out
            else:
                b = out
    te, tf = min(times["engine"]), min(times["fused"])
    return {"rows": [n_target, n_kl], "engine_s": te, "fused_s": tf, "speedup_fused": te / tf,
            "max_abs_grad_diff": float((a - b).abs().max()), "max_abs_grad": float(a.abs().max()),
            "all_s": times}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--n", type=int, default=10, help="requests (first n shipped CounterFact records)")
    ap.add_argument("--steps", type=int, default=10, help="v* steps (early stop off, so every step runs)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--loss-check-only", action="store_true",
                    help="only time the fused target log-probability against the engine's loss (about a minute)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tok = bluebook.load_model(args.model, device="cpu", progress=False)
    vocab = model.get_output_embeddings().weight.shape[0]
    cfg = bluebook.preset_for(model)
    tcfg = with_overrides(cfg, target={"steps": args.steps, "early_stop": 0.0}).target
    L = max(cfg.layers)
    templates = context_templates(model, tok, fixed=cfg.context_templates)
    head = model.get_output_embeddings().weight.detach()
    check = loss_check(head, n_target=120, n_kl=20)
    print("loss check (engine vs fused):", {k: v for k, v in check.items() if k != "all_s"}, flush=True)
    if args.loss_check_only:
        write(f"vocab_loss_check_{args.model.replace('-', '_')}", {"model": args.model, "vocab": vocab, **check})
        return 0
    reqs = bluebook.load_counterfact(n=args.n)
    optimize_targets(model, tok, reqs[:1], L, with_overrides(cfg, target={"steps": 1}).target, templates,
                     progress=False)  # warm-up

    t0 = time.perf_counter()
    res = optimize_targets(model, tok, reqs, L, tcfg, templates, progress=False)
    wall = time.perf_counter() - t0
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        optimize_targets(model, tok, reqs, L, tcfg, templates, progress=False)
    split = breakdown(prof, vocab)
    timing = res.timing[0]
    out = {"model": args.model, "vocab": vocab, "layer": L, "n_requests": args.n, "steps": args.steps,
           "n_templates": sum(len(g) for g in templates), "target": vars(tcfg),
           "wall_s": wall, "wall_s_per_request": wall / args.n,
           "wall_s_per_request_step": wall / (args.n * args.steps),
           "prefix_s": timing["prefix_seconds"], "first_step_s": timing["step_seconds"][0],
           "later_steps_s": sum(timing["step_seconds"][1:]),
           "profiled": split, "loss_check": check, "peak_rss_mb": peak_rss_mb()}
    out["vocab_s_per_request"] = split["vocab_s"] / args.n
    print({k: v for k, v in out.items() if k != "profiled"}, flush=True)
    print({k: v for k, v in split.items() if k != "top_vocab_ops"}, flush=True)
    for row in split["top_vocab_ops"]:
        print(row, flush=True)
    write(f"vocab_{args.model.replace('-', '_')}", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
