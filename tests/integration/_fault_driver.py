"""Run a small sequential replication and, optionally, SIGKILL this process at a chosen point.

    python _fault_driver.py OUT                     # run (or resume) to the end
    python _fault_driver.py OUT call DOTTED.NAME N  # die at the N-th call of a function
    python _fault_driver.py OUT write FILENAME N    # die at the N-th atomic write of FILENAME, after
                                                    # its temporary file is complete, before the rename

The kill is a real SIGKILL (no cleanup, no finally blocks), as when a machine dies or a job is
killed for memory. Used by tests/integration/test_faults.py.
"""
import importlib
import os
import signal
import sys


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def _patch_call(dotted: str, n: int) -> None:
    parts = dotted.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:-1]:
            owner = getattr(owner, name)
        break
    real = getattr(owner, parts[-1])
    count = {"n": 0}

    def wrapper(*a, **k):
        count["n"] += 1
        if count["n"] == n:
            _die()
        return real(*a, **k)
    setattr(owner, parts[-1], wrapper)


def _patch_write(filename: str, n: int) -> None:
    real = os.replace
    count = {"n": 0}

    def replace(src, dst, *a, **k):
        if os.path.basename(str(dst)) == filename:
            count["n"] += 1
            if count["n"] == n:
                _die()                              # the temporary file is written, the rename never happens
        return real(src, dst, *a, **k)
    os.replace = replace


def main(argv):
    out = argv[0]
    if len(argv) > 1:
        kind, what, n = argv[1], argv[2], int(argv[3])
        (_patch_call if kind == "call" else _patch_write)(what, n)
    import bluebook
    import bluebook.experiments.replicate as rep
    from bluebook.metrics.suite import AbilitySuite
    from bluebook.model.loading import tiny_model

    model, tok = tiny_model("tiny-gpt2")
    reqs = bluebook.load_counterfact(n=6)
    hp = {"target": {"steps": 3}, "stats": {"n_samples": 40, "max_len": 64}, "context_templates": [["{}"]]}
    rep.replicate((model, tok), "counterfact", methods=["memit", "alphaedit_blue"], n=6, batch=2, out=out,
                  hparams=hp, progress=False, requests=reqs, eval_every=2,
                  ability=AbilitySuite(perplexity_texts=3, perplexity_max_len=32, known_facts=3,
                                       probes=("sentiment",), probe_n=6))


if __name__ == "__main__":
    main(sys.argv[1:])
