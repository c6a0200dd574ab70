"""`python -m distill.validate`: the pre-flight checklist (same as `python -m distill validate`)."""

import sys

from distill.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["validate", *sys.argv[1:]]))
