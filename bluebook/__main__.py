"""Command line: ``python -m bluebook {prepare,run-notebooks,replicate}``."""
from __future__ import annotations

import argparse
import sys


def main(argv=None):
    p = argparse.ArgumentParser(prog="bluebook", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("prepare", help="convert the embedded model once (idempotent)")
    sp.add_argument("--force", action="store_true")
    sr = sub.add_parser("run-notebooks", help="execute every notebook into an output folder")
    sr.add_argument("--out", default="outputs")
    sr.add_argument("--profile", default="ci", choices=["ci", "full"])
    sr.add_argument("--only", nargs="*", default=None, help="notebook stems or numbers, e.g. 00 03")
    try:
        from bluebook.experiments.replicate import add_cli
        add_cli(sub)
    except ImportError:
        pass
    args = p.parse_args(argv)
    if args.cmd == "prepare":
        from bluebook.model.loading import prepare_embedded_model
        print(prepare_embedded_model(force=args.force))
    elif args.cmd == "run-notebooks":
        from bluebook.notebooks import run_all
        run_all(args.out, args.only, args.profile)
    else:
        return args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
