"""`python -m distill.all`: the all job (same as `python -m distill all`)."""

import sys

from distill.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["all", *sys.argv[1:]]))
