"""Layer statistics: stopping the forward after the hooked layer vs running the whole model,
tokens/s, and cache reload time. Usage: python benchmarks/bench_stats.py [--docs 300]"""
import argparse
import tempfile

from common import peak_rss_mb, timed, write

import bluebook
from bluebook.core.config import with_overrides
from bluebook.core.stats import CovarianceStore, collect_second_moments, layer_stats
from bluebook.data import wiki_texts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    model, tok = bluebook.load_model("smollm2-135m", device=args.device)
    cfg = bluebook.preset_for(model)
    layers = list(cfg.layers)
    texts = wiki_texts(n=args.docs, seed=1)
    early, t_early, _ = timed(lambda: collect_second_moments(model, tok, layers, texts, cfg.stats, progress=False))
    full, t_full, _ = timed(lambda: collect_second_moments(model, tok, layers, texts, cfg.stats, progress=False,
                                                            early_stop=False))
    tokens = early[layers[0]].count
    same = max(float((early[l].moment() - full[l].moment()).abs().max()) for l in layers)
    with tempfile.TemporaryDirectory() as d:
        store = CovarianceStore(d)
        scfg = with_overrides(cfg, stats={"n_samples": args.docs}).stats
        _, t_first, _ = timed(lambda: layer_stats(model, tok, layers, scfg, store=store, progress=False))
        _, t_reload, _ = timed(lambda: layer_stats(model, tok, layers, scfg, store=store, progress=False), repeat=3)
    out = {"layers": layers, "docs": args.docs, "tokens": tokens,
           "early_stop_s": t_early, "full_forward_s": t_full, "speedup": t_full / t_early,
           "tokens_per_s_early": tokens / t_early, "tokens_per_s_full": tokens / t_full,
           "max_abs_diff_C": same, "first_compute_with_cache_write_s": t_first, "cache_reload_s": t_reload,
           "peak_rss_mb": peak_rss_mb()}
    print(out)
    print("wrote", write("stats", out))


if __name__ == "__main__":
    main()
