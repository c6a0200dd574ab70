#!/usr/bin/env python
"""distill's evaluation generation (distill/trial/evaluate.py generate) vs per-example HF `generate`.

    .venv/bin/python scripts/bench_generate.py --threads 1

At the quick job's settings: the real SmolLM2-135M with the quick job's LoRA adapters attached (as
in a trial), its 10 held-out bills cut to 256 source tokens, greedy, up to 96 new tokens, the
trial's thread count (1). Both arms get the same model object; each arm's outputs are checked
against the per-example ones. tokens/s counts the new tokens up to each response's EOS.

An arm is one function `arm(bench) -> list[str]` in ARMS (another engine, e.g. vLLM, is one more
function and one more entry).

`floor` measures, in the same run, what no batching of this model can beat: the batched prefill (the
prompts' forward pass, which batching does not shrink) plus one single-sequence decode step per new
token (a batched step reads every weight once, as a single-sequence step does, and computes more). The
per-example time over that floor is the largest speed-up any batched generate could reach here.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import benchlib


@dataclass
class Bench:
    """What every arm gets: the setup, the LoRA-wrapped model, the prompts' turns, the eval settings."""

    setup: benchlib.QuickSetup
    model: object
    turns: list[str]  # each held-out example's prompt turns (the `turns` column: JSON text)
    device: str


def hf_per_example(bench: Bench) -> list[str]:
    """The plain way: one `model.generate` call per bill, no batching."""
    import torch

    from distill.trial.evaluate import _until_eos

    tok, cfg, outputs = bench.setup.tokenizer, bench.setup.cfg.eval, []
    for turns in bench.turns:
        ids = torch.tensor([bench.setup.fmt.encode(turns).prompt], device=bench.device)
        with torch.no_grad():
            gen = bench.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=cfg.max_new_tokens,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
        outputs.append(
            tok.decode(_until_eos(gen[0, ids.shape[1] :].tolist(), tok.eos_token_id), skip_special_tokens=True).strip()
        )
    return outputs


def distill_generate(bench: Bench) -> list[str]:
    """distill's evaluation path, at the job's eval settings."""
    from distill.trial.evaluate import generate

    return generate(
        bench.model, bench.setup.tokenizer, bench.setup.fmt, bench.turns, bench.setup.cfg.eval, bench.device
    )


ARMS = {"hf-per-example": hf_per_example, "distill": distill_generate}


def floor(bench: Bench, steps: int) -> dict:
    """prefill_s (one batched forward of every prompt = generate 1 token), decode_step_s (a single sequence's
    step: generate 1 + 16 tokens minus generate 1) and their sum over `steps` decode steps, floor_s."""
    import torch

    from distill.trial.evaluate import pad

    tok, extra = bench.setup.tokenizer, 16
    prompts = [bench.setup.fmt.encode(t).prompt for t in bench.turns]

    def timed(rows: list[list[int]], new: int) -> float:
        padded, mask = pad(rows, tok.pad_token_id, side="left")
        ids, mask = torch.tensor(padded, device=bench.device), torch.tensor(mask, device=bench.device)
        start = time.perf_counter()
        with torch.no_grad():
            bench.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )
        return time.perf_counter() - start

    prefill = timed(prompts, 1)
    step = (timed(prompts[:1], 1 + extra) - timed(prompts[:1], 1)) / extra
    return {
        "prefill_s": round(prefill, 2),
        "decode_step_s": round(step, 4),
        "decode_steps": steps,
        "floor_s": round(prefill + steps * step, 2),
    }


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--arms", default=",".join(ARMS))
    benchlib.quick_arguments(ap, benchlib.ROOT / "docs" / "bench" / "generate.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    setup = benchlib.quick_setup(args.model)
    model = benchlib.lora_model(setup, args.device)
    turns = setup.test["turns"].tolist()[: 4 if args.quick else None]
    bench = Bench(setup, model, turns, args.device)
    rows, reference = [], None
    for name in args.arms.split(","):
        start = time.perf_counter()
        outputs = ARMS[name](bench)
        seconds = time.perf_counter() - start
        reference = reference or outputs
        new_tokens = sum(len(setup.tokenizer(o, add_special_tokens=False)["input_ids"]) for o in outputs)
        rows.append(
            {
                "arm": name,
                "bills": len(turns),
                "seconds": round(seconds, 2),
                "new_tokens": new_tokens,
                "tokens_per_s": round(new_tokens / seconds, 1),
                "same_outputs_as_first_arm": sum(a == b for a, b in zip(outputs, reference)),
            }
        )
        print(f"  {name}: {seconds:.1f}s", flush=True)
    for row in rows:
        row["speedup_vs_first_arm"] = round(rows[0]["seconds"] / row["seconds"], 2)
    longest = max(len(setup.tokenizer(o, add_special_tokens=False)["input_ids"]) for o in reference)
    bound = floor(bench, min(setup.cfg.eval.max_new_tokens, longest + 1))  # the batch runs until its longest row ends
    bound["ceiling_speedup"] = round(rows[0]["seconds"] / bound["floor_s"], 2)
    benchlib.print_table(
        rows,
        ["arm", "bills", "seconds", "new_tokens", "tokens_per_s", "same_outputs_as_first_arm", "speedup_vs_first_arm"],
    )
    print(
        f"floor: prefill {bound['prefill_s']}s + {bound['decode_steps']} steps × {bound['decode_step_s']}s "
        f"= {bound['floor_s']}s, so no batched generate beats {bound['ceiling_speedup']}× {rows[0]['arm']} here"
    )
    benchlib.write_json(
        args.json,
        {
            "benchmark": "generate",
            "machine": benchlib.machine(),
            "threads": args.threads,
            "device": args.device,
            "max_new_tokens": setup.cfg.eval.max_new_tokens,
            "eval_batch_size": setup.cfg.eval.batch_size,
            "goal": "≥5× hf-per-example on CPU",
            "rows": rows,
            "floor": bound,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
