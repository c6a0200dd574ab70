"""`python -m distill.quick`: the quick job (same as `python -m distill quick`)."""

import sys

from distill.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["quick", *sys.argv[1:]]))
