#!/usr/bin/env python
"""Benchmark every registered selector on synthetic clustered embeddings at a 10% budget.

    .venv/bin/python scripts/bench_selectors.py --n 100000 --dim 576 --json docs/bench/selectors_100k.json --quality

Each method runs in a fresh 'spawn' subprocess that loads the pool's features from temporary .npy files
(the embeddings and loss every run has, plus what the method needs), so its peak RSS (resource.getrusage
ru_maxrss, which sees faiss' allocations unlike tracemalloc) is its own: `peak_mb` is the process peak
(its features included), `extra_mb` the peak above the loaded features.

Synthetic pool: 100 Gaussian clusters in a 32-dim latent space mapped to `dim` dims by a random
linear map plus small isotropic noise (embeddings have low intrinsic dimension, like real ones),
2% near-duplicate rows; lognormal lengths with Heaps'-law vocabularies for the text statistics;
gamma-distributed loss. Every model feature a selector needs (the registry's `needs`) has a synthetic
generator in SYNTHETIC, written only when a benchmarked method needs it: embedding_wmean and grad_features
(width --grad-dim, the probe's default) from the same kind of mixture, a query set of --queries fresh rows
of embedding_wmean's mixture in 2 tasks, probe_loss at 3 checkpoints, loss_alone. Each worker loads the
text statistics plus its method's needs. A selector that fails (or needs a feature without a generator)
makes the script exit 1.

--quality (meant for n <= ~100k): exact vs cell-partitioned k-center covering radius, and the
neighbour recall@10 of the approximate kNN graph (the one d2_pruning uses above 20k rows)
against exact search for 2,000 sampled query rows.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_CHUNK = 65536


def write_clustered(path: Path, n: int, dim: int, seed: int, first_row: int = 0) -> None:
    """n rows of the clustered synthetic embedding distribution of `seed` into path (chunkwise, never 2 copies);
    rows from `first_row` on are fresh draws from the same mixture (a query set near the pool)."""
    rng = np.random.default_rng(seed)
    latent, n_centers = 32, 100
    centers = rng.normal(0, 4, (n_centers, latent))
    proj = (rng.normal(0, 1, (latent, dim)) / np.sqrt(latent)).astype(np.float32)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    for a in range(0, n, _CHUNK):
        b = min(n, a + _CHUNK)
        r = np.random.default_rng([seed, first_row + a])
        z = centers[r.integers(n_centers, size=b - a)] + r.normal(0, 1, (b - a, latent))
        blk = (z.astype(np.float32) @ proj) + r.normal(0, 0.05, (b - a, dim)).astype(np.float32)
        dup = np.flatnonzero(r.random(b - a) < 0.02)
        if len(dup):
            blk[dup] = blk[r.integers(b - a, size=len(dup))] + r.normal(0, 0.01, (len(dup), dim)).astype(np.float32)
        out[a:b] = blk
    out.flush()


def _save(folder: Path, name: str, values: np.ndarray) -> None:
    np.save(folder / f"{name}.npy", values)


# How to make each model feature a selector may need (registry `needs`), at n rows: feature -> writer(folder, n, args, rng).
# A selector that needs a feature missing here fails the benchmark (exit 1) instead of being reported as None.
SYNTHETIC = {
    "embeddings": lambda folder, n, args, rng: write_clustered(folder / "embeddings.npy", n, args.dim, args.seed),
    # the embedding pass's response loss, and IFD's loss without the prompt's content: mostly higher (IFD < 1), some lower
    "loss": lambda folder, n, args, rng: _save(folder, "loss", rng.gamma(2.0, 0.8, n).astype(np.float32)),
    "loss_alone": lambda folder, n, args, rng: _save(
        folder, "loss_alone", (rng.gamma(2.0, 0.8, n) * rng.uniform(0.8, 2.0, n)).astype(np.float32)
    ),
    "embedding_wmean": lambda folder, n, args, rng: write_clustered(
        folder / "embedding_wmean.npy", n, args.dim, args.seed + 1
    ),
    # the query set: fresh rows of embedding_wmean's mixture, in two tasks (query files) for the round-robin
    "query_embedding": lambda folder, n, args, rng: (
        write_clustered(folder / "query_embedding.npy", args.queries, args.dim, args.seed + 1, first_row=n),
        _save(folder, "query_task", np.arange(args.queries) % 2),
    ),
    # the probe: response loss at step 0 and 2 checkpoints, mostly falling
    "probe_loss": lambda folder, n, args, rng: _save(
        folder, "probe_loss", np.sort(rng.gamma(2.0, 0.8, (n, 3)), axis=1)[:, ::-1].astype(np.float32)
    ),
    "grad_features": lambda folder, n, args, rng: write_clustered(
        folder / "grad_features.npy", n, args.grad_dim, args.seed + 2
    ),
}
EXTRA_FILES = {"query_embedding": ("query_task",)}  # features that come with a companion array
ALWAYS = ("embeddings", "loss")  # what every pipeline run hands every selector (d2_pruning reads loss when present)


def make_pool(n: int, folder: Path, args, needs: set[str]) -> None:
    """Write the text statistics (folder/stats.npz) and every needed model feature (folder/<name>.npy)."""
    rng = np.random.default_rng(args.seed)
    for name in sorted(needs):
        SYNTHETIC[name](folder, n, args, rng)
    n_words = np.clip(rng.lognormal(5.5, 0.7, n), 5, 20000).astype(np.int64)
    n_sentences = np.maximum(1, n_words // rng.integers(12, 30, n)).astype(np.int64)
    distinct = np.minimum(n_words, np.rint(n_words ** rng.uniform(0.75, 0.9, n)))
    np.savez(
        folder / "stats.npz",
        n_words=n_words,
        n_sentences=n_sentences,
        type_token_ratio=distinct / n_words,
        info_density=distinct / n_sentences,
    )


def load_features(folder: Path, needs: tuple[str, ...]):
    """The text statistics, ALWAYS and the model features one selector needs (loaded into memory)."""
    from distill.features.columns import Features

    st = np.load(folder / "stats.npz")
    wanted = dict.fromkeys([*ALWAYS, *needs])
    names = [*wanted, *(extra for need in wanted for extra in EXTRA_FILES.get(need, ()))]
    return Features(
        n_words=st["n_words"],
        n_sentences=st["n_sentences"],
        type_token_ratio=st["type_token_ratio"],
        info_density=st["info_density"],
        **{name: np.load(folder / f"{name}.npy") for name in names},
    )


def _rss_mb() -> float:
    """Peak resident set of this process in MB: /proc VmHWM (reset by exec, unlike ru_maxrss,
    which a spawned child inherits from its parent), falling back to getrusage."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _worker(folder: str, name: str, k: int, seed: int, queue) -> None:
    from distill.select import registry

    features = load_features(Path(folder), registry.get(name).needs)
    base = _rss_mb()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    registry.select(name, features, k, seed)
    seconds = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    peak = _rss_mb()
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    queue.put(
        {
            "seconds": round(seconds, 3),
            "cpu_seconds": round(cpu, 3),
            "peak_mb": round(peak, 1),
            "extra_mb": round(peak - base, 1),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        }
    )


def run_method(folder: Path, name: str, k: int, seed: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(str(folder), name, k, seed, queue))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        return {
            "seconds": None,
            "cpu_seconds": None,
            "peak_mb": None,
            "extra_mb": None,
            "error": f"exit code {proc.exitcode}",
        }
    return queue.get()


def quality(emb_path: Path, k: int, seed: int) -> dict:
    from distill.select import neighbors as nb

    faiss = nb.load_faiss()
    from distill.select.semantic import k_center_greedy

    x = np.load(emb_path)
    n = len(x)
    out: dict = {}
    t = time.perf_counter()
    approx = k_center_greedy(x, k, seed)
    t_approx = time.perf_counter() - t
    t = time.perf_counter()
    exact = k_center_greedy(x, k, seed, cell_size=None)
    t_exact = time.perf_counter() - t
    r_approx, r_exact = nb.covering_radius(x, approx), nb.covering_radius(x, exact)
    out["k_center"] = {
        "k": k,
        "approx_radius": round(r_approx, 4),
        "exact_radius": round(r_exact, 4),
        "ratio": round(r_approx / r_exact, 4),
        "approx_seconds": round(t_approx, 2),
        "exact_seconds": round(t_exact, 2),
    }
    nn = 10
    t = time.perf_counter()
    _, idx = nb.knn_graph(x, nn, metric="cosine", exact=False, seed=seed)
    t_graph = time.perf_counter() - t
    rng = np.random.default_rng(seed)
    queries = np.sort(rng.choice(n, size=min(n, 2000), replace=False))
    xn = nb.normalize_rows(x)
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(xn)
    t = time.perf_counter()
    _, ex = index.search(xn[queries], nn + 1)
    t_exact_q = time.perf_counter() - t
    hits = 0
    for row, q in enumerate(queries):
        truth = [j for j in ex[row] if j != q][:nn]
        hits += len(set(truth) & set(idx[q].tolist()))
    out["knn_graph"] = {
        "n_neighbors": nn,
        "metric": "cosine",
        "queries": len(queries),
        "approx": "PCA-64, cells of 1000, nprobe 4, rerank 2 (nb.knn_graph defaults)",
        "recall_at_10": round(hits / (nn * len(queries)), 4),
        "approx_graph_seconds": round(t_graph, 2),
        "exact_graph_seconds_extrapolated": round(t_exact_q * n / len(queries), 1),
    }
    return out


def main(argv: list[str] | None = None) -> int:
    from distill.config.schema import ProbeConfig
    from distill.select import registry

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=576)
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", nargs="*", default=None, help="default: every registered selector")
    ap.add_argument("--quality", action="store_true", help="measure approximation quality (k-center, kNN recall)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--grad-dim", type=int, default=ProbeConfig().grad_dim, help="width of the synthetic grad_features")
    ap.add_argument("--queries", type=int, default=100, help="rows of the synthetic query set (rds_plus), in 2 tasks")
    ap.add_argument("--tmp", type=Path, default=None, help="folder for the temporary pool files")
    args = ap.parse_args(argv)

    methods = args.methods or registry.names()
    needs = registry.needs_of(methods) | set(ALWAYS)
    if missing := sorted(needs - set(SYNTHETIC)):
        print(f"no synthetic input for feature(s) {', '.join(missing)}: add them to SYNTHETIC", file=sys.stderr)
        return 1
    k = max(1, int(args.n * args.fraction))
    result: dict = {
        "n": args.n,
        "dim": args.dim,
        "k": k,
        "grad_dim": args.grad_dim,
        "queries": args.queries,
        "threads": os.environ.get("DISTILL_THREADS") or len(os.sched_getaffinity(0)),
        "methods": {},
    }
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        t = time.perf_counter()
        make_pool(args.n, Path(tmp), args, needs)
        print(
            f"pool {args.n} x {args.dim} ({', '.join(sorted(needs))}) written in {time.perf_counter() - t:.1f}s; "
            f"k = {k}",
            flush=True,
        )
        for name in methods:
            result["methods"][name] = r = run_method(Path(tmp), name, k, args.seed)
            print(
                f"  {name:20s} {r['seconds']}s (cpu {r['cpu_seconds']}s)  peak {r['peak_mb']} MB "
                f"(+{r['extra_mb']})" + (f"  FAILED: {r['error']}" if "error" in r else ""),
                flush=True,
            )
        result["total_seconds"] = round(sum(r["seconds"] or 0 for r in result["methods"].values()), 2)
        result["total_cpu_seconds"] = round(sum(r["cpu_seconds"] or 0 for r in result["methods"].values()), 2)
        result["peak_mb"] = max((r["peak_mb"] or 0) for r in result["methods"].values())
        if args.quality:
            result["quality"] = quality(Path(tmp) / "embeddings.npy", k, args.seed)
    _print_table(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    failed = [name for name, r in result["methods"].items() if "error" in r]
    if failed:
        print(f"{len(failed)} selector(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _print_table(result: dict) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain fallback
        for name, r in result["methods"].items():
            print(f"{name:20s} {r['seconds']:>8} s {r['peak_mb']:>10} MB")
        print(f"total {result['total_seconds']} s")
        return
    table = Table(title=f"selectors, n={result['n']:,} d={result['dim']} k={result['k']:,}")
    for col in ("method", "seconds", "CPU s", "peak MB", "extra MB", "load"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for name, r in result["methods"].items():
        table.add_row(
            name,
            str(r["seconds"]),
            str(r.get("cpu_seconds")),
            str(r["peak_mb"]),
            str(r["extra_mb"]),
            str(r.get("load_avg_1m")),
        )
    table.add_row(
        "total", str(result["total_seconds"]), str(result["total_cpu_seconds"]), str(result["peak_mb"]), "", ""
    )
    console = Console()
    console.print(table)
    if "quality" in result:
        console.print_json(json.dumps(result["quality"]))


if __name__ == "__main__":
    raise SystemExit(main())
