"""``python -m bluebook``: see :mod:`bluebook.experiments.cli`."""
import sys

from bluebook.experiments.cli import main

if __name__ == "__main__":
    sys.exit(main())
