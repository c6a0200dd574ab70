"""The features selectors read, computed once per (model, data, settings): embed.py (Ray Data actor: pooled hidden
states, response loss), store.py (the memory-mapped feature cache), probe.py (a brief LoRA fine-tune: per-example
losses and gradients, only when a method needs them), columns.py (the Features record selectors receive).

`Features` is importable from here because plugin selectors outside distill type their argument with it
(docs/selectors.md), as they import `register` from distill.select.
"""

from distill.features.columns import Features

__all__ = ["Features"]
