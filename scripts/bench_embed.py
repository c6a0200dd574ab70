#!/usr/bin/env python
"""distill's embedding path (distill/features/embed.py EmbedActor, in-process) vs a per-example HF loop.

    .venv/bin/python scripts/bench_embed.py --rows 24 --threads 2
    python scripts/bench_embed.py --device cuda --dtype bfloat16 --rows 80     # on a GPU (not run here)

Both arms produce the same thing for the quick job's pool bills (prompt + response, 256/96 tokens):
the mean-pooled hidden states of the prompt's content and the response loss. The HF arm is what one writes first:
one `model(input_ids, labels=…, output_hidden_states=True)` call per bill (LM head over every
position). distill's arm batches length-sorted rows (embed.batch_size) and applies the LM head to
response positions only. tokens/s counts the real (unpadded) tokens.

Achieved FLOP/s = 2 · parameters · tokens/s (forward only), reported as a share of the machine's
matmul peak measured in the same run (torch.matmul on large square matrices, same dtype, threads
and device). The GPU target (MFU ≥ 40% in bf16) needs `--device cuda --dtype bfloat16` on a GPU;
this repository's machine has none, so only the CPU (fp32) figure is measured here.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import benchlib


def matmul_peak(device: str, dtype, n: int, seconds: float = 3.0) -> float:
    """FLOP/s of repeated n×n @ n×n matmuls (the best of the timed repetitions)."""
    import torch

    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    best, deadline = 0.0, time.perf_counter() + seconds
    torch.matmul(a, b)  # warm-up
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.matmul(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best


def hf_per_example(actor, frame, batch_size: int) -> tuple[object, int]:
    """One full-LM forward per bill: hidden states of the last layer pooled, loss from HF."""
    import numpy as np
    import torch

    from distill.model.train import IGNORE

    embeddings, losses, tokens = [], [], 0
    with torch.no_grad():
        for turns, response in zip(frame["turns"], frame["response"]):
            enc = actor.format.encode(turns, str(response))
            ids = torch.tensor([enc.prompt + enc.target], device=actor.device)
            labels = torch.tensor([[IGNORE] * len(enc.prompt) + enc.target], device=actor.device)
            out = actor.model(input_ids=ids, labels=labels, output_hidden_states=True)
            positions = enc.content_positions() or [len(enc.prompt) - 1]  # EmbedActor's mean pooling
            embeddings.append(out.hidden_states[-1][0, positions].mean(dim=0).float().cpu().numpy())
            losses.append(out.loss.item())
            tokens += ids.shape[1]
    return np.stack(embeddings), tokens


def distill_embed(actor, frame, batch_size: int) -> tuple[object, int]:
    """EmbedActor on length-sorted batches of embed.batch_size rows, as the pipeline feeds it."""
    import numpy as np

    order = np.argsort(-frame["turns"].str.len().to_numpy(), kind="stable")
    rows = frame.assign(row=np.arange(len(frame))).iloc[order]
    out, tokens = [], 0
    for i in range(0, len(rows), batch_size):
        part = rows.iloc[i : i + batch_size]
        batch = {k: part[k].to_numpy() for k in ("row", "turns", "response")}
        out.append(actor(batch))
        tokens += sum(
            len(e.prompt) + len(e.target)
            for e in (actor.format.encode(t, str(r)) for t, r in zip(part["turns"], part["response"]))
        )
    result = np.concatenate([o["embedding"] for o in out])[np.argsort(np.concatenate([o["row"] for o in out]))]
    return result, tokens


ARMS = {"hf-per-example": hf_per_example, "distill": distill_embed}


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import torch

    from distill.features.embed import EmbedActor

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--rows", type=int, default=24, help="pool bills to embed (the quick job embeds 80)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--quick", action="store_true", help="8 bills")
    ap.add_argument("--model", help="another model than the quick job's (e.g. a tiny one for a smoke test)")
    ap.add_argument("--json", type=Path, default=benchlib.ROOT / "docs" / "bench" / "embed.json")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here (the GPU MFU target cannot be measured on this machine)")
    torch.set_num_threads(args.threads)
    setup = benchlib.quick_setup(args.model)
    setup.cfg.model.dtype = args.dtype
    actor = EmbedActor(
        setup.model_path, setup.cfg.model, setup.cfg.prompt, setup.data_format, setup.cfg.embed.pooling, args.threads
    )
    if actor.device != args.device:
        raise SystemExit(f"--device {args.device}, but the embedding actor picked {actor.device}")
    frame = setup.pool.iloc[: 8 if args.quick else args.rows]
    params = sum(p.numel() for p in actor.model.parameters())
    peak = matmul_peak(args.device, getattr(torch, args.dtype), 2048)
    rows, results = [], {}
    for name, arm in ARMS.items():
        start = time.perf_counter()
        results[name], tokens = arm(actor, frame, setup.cfg.embed.batch_size)
        seconds = time.perf_counter() - start
        flops = 2 * params * tokens / seconds
        rows.append(
            {
                "arm": name,
                "bills": len(frame),
                "tokens": tokens,
                "seconds": round(seconds, 2),
                "tokens_per_s": round(tokens / seconds, 1),
                "achieved_gflops": round(flops / 1e9, 2),
                "share_of_matmul_peak": round(flops / peak, 3),
            }
        )
        print(f"  {name}: {seconds:.1f}s", flush=True)
    for row in rows:
        row["speedup_vs_hf"] = round(row["tokens_per_s"] / rows[0]["tokens_per_s"], 2)
    gap = float(np.abs(results["distill"] - results["hf-per-example"]).max())
    benchlib.print_table(
        rows,
        [
            "arm",
            "bills",
            "tokens",
            "seconds",
            "tokens_per_s",
            "achieved_gflops",
            "share_of_matmul_peak",
            "speedup_vs_hf",
        ],
    )
    print(
        f"matmul peak {peak / 1e9:.1f} GFLOP/s ({args.dtype}, {args.threads} threads, {args.device}); "
        f"largest embedding difference between the arms {gap:.2e}"
    )
    benchlib.write_json(
        args.json,
        {
            "benchmark": "embed",
            "machine": benchlib.machine(),
            "threads": args.threads,
            "device": args.device,
            "dtype": args.dtype,
            "parameters": params,
            "matmul_peak_gflops": round(peak / 1e9, 2),
            "max_embedding_difference": gap,
            "gpu_target": "MFU ≥ 40% in bf16: needs --device cuda --dtype bfloat16 on a GPU",
            "rows": rows,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
