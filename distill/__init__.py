"""distill: which 10% of my training data should I fine-tune on?

Flow (one direction): config → data → models → embed → select → train → evaluate → stats → report.
`distill.pipeline` is the only module that talks to Ray; every other module is plain Python.
"""

__version__ = "0.1.0"
