"""distill: which 10% of my training data should I fine-tune on?

Flow (one direction): config → data → model → features (embed, probe) → select → trial (fine-tune, evaluate) → report,
with store/ (storage, records, artifacts) beneath them all. `distill.runtime` is the only package that talks to
Ray and composes the stages (runtime/pipeline.py); every other module is plain Python.
Every module logs to its named logger; the console is the one handler of the `distill` logger, attached by
the entry points (distill/process.py: the CLI in the driver, Ray's worker setup hook in each worker), never
on import.
"""

__version__ = "0.1.0"
