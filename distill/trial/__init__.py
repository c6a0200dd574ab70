"""One trial per subset: run.py fine-tunes the target model on it (model/train.py), then evaluate.py generates
and scores the held-out set (or vllm.py generates for many trials in one vLLM engine)."""
