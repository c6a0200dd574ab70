"""`python -m distill.baseline`: the baseline job (same as `python -m distill baseline`)."""

import sys

from distill.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["baseline", *sys.argv[1:]]))
