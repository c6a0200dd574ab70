"""distill: which 10% of my training data should I fine-tune on?

Flow (one direction): config → data → model → features (embed, probe) → select → trial (fine-tune, evaluate) → report,
with store/ (storage, records, artifacts) beneath them all. `distill.runtime` is the only package that talks to
Ray and composes the stages (runtime/pipeline.py); every other module is plain Python.
Every module logs to its named logger; the console is the one handler of the `distill` logger, attached
here so that Ray's worker processes, which import distill modules but never the CLI, log the same way.
"""

from distill.console import run as _console

__version__ = "0.1.0"

_console.attach()
