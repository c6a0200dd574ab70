#!/usr/bin/env python
"""A million-row pool through data → embed → every registered selector, measuring driver memory.

    .venv/bin/python scripts/bench_million.py --json docs/bench/million.json

This process is the driver: it calls the pipeline's own stage functions (distill.data.load.load_splits,
embed_pool, select_subsets) and records each stage's wall time and the driver's
peak resident memory during that stage (VmHWM, reset between stages through /proc/self/clear_refs).
The goal is a driver peak of at most 2x one float32 copy of the embeddings.

Stages:
1. data: a synthetic pool of short unique texts (written as Parquet), loaded, validated, deduped
   and split by distill.data, then the text statistics of distill.features.
2. embed (real model): embed_pool, a tiny random Llama (real SmolLM2 tokenizer, hidden
   size --dim) on the first --embed-n pool rows. On 2 CPU cores this model embeds a few hundred
   rows per second, so a million rows would take about an hour: --embed-n is the measured part,
   the full-size rate is extrapolated and said to be.
3. embed stream at full n, side by side: the same Ray Data → driver path at every pool row, with
   a synthetic embedder in place of the model (clustered --dim vectors, rows arriving in a permuted
   order as the length-sorted pipeline delivers them), run twice as the pipeline runs it (streamed,
   not materialized): (a) featstore.stream, today's path, and (b) the old path (list(iter_batches)
   + concatenate + reorder), each with its own driver peak.
4. select: select_subsets, every registered selector as Ray tasks (2 at a time on 2
   CPUs), over memory-mapped features of the full pool (stage 3a's file + stage 1's statistics).
   Then each selector once more, alone in a fresh worker, sampling that worker's private memory
   (RssAnon): growth near one copy of the embeddings means the selector copies them.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VOCAB_SIZE = 5000  # synthetic word list: short texts over it are unique enough for dedup to keep them
CLUSTERS = 100  # synthetic embeddings: Gaussian clusters


def rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


RSS_PARTS = ("RssAnon", "RssFile", "RssShmem")  # private memory, mapped files (the memmap), Ray's object store


class Stage:
    """Wall time and the driver's peak RSS within one stage (peak reset at the start), plus the peak
    growth of each part of the RSS, sampled every `interval` seconds: a copy of the embeddings shows
    up in RssAnon, the memory-mapped cache in RssFile, object-store blocks the driver reads in RssShmem."""

    def __init__(self, results: dict, name: str, interval: float = 0.02):
        self.results, self.name, self.interval = results, name, interval

    def __enter__(self):
        import threading

        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        self.start_rss = rss_mb()
        self.start = {part: rss_mb(part) for part in RSS_PARTS}
        self.peak = dict(self.start)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        self.t0 = time.perf_counter()
        print(f"[bench] {self.name} …", flush=True)
        return self

    def _sample(self) -> None:
        while True:
            for part in RSS_PARTS:
                self.peak[part] = max(self.peak[part], rss_mb(part))
            if self.done.wait(self.interval):
                return

    def __exit__(self, *exc):
        seconds = time.perf_counter() - self.t0
        self.done.set()
        self.thread.join()
        self._sample()  # one last sample at the stage's end
        row = {
            "seconds": round(seconds, 2),
            "rss_start_mb": round(self.start_rss, 1),
            "peak_rss_mb": round(rss_mb("VmHWM"), 1),
        }
        row["peak_growth_mb"] = round(row["peak_rss_mb"] - row["rss_start_mb"], 1)
        row.update({f"{part}_peak_growth_mb": round(self.peak[part] - self.start[part], 1) for part in RSS_PARTS})
        self.results.setdefault("stages", {})[self.name] = row
        print(f"[bench] {self.name}: {row}", flush=True)


def write_pool(path: Path, n: int, seed: int = 0) -> None:
    """n unique short texts (8-16 words + a row number) with 3-5 word summaries, chunkwise to Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(VOCAB_SIZE)])
    writer = None
    for a in range(0, n, 100_000):
        b = min(n, a + 100_000)
        lengths = rng.integers(8, 17, b - a)
        words = vocab[rng.integers(VOCAB_SIZE, size=(b - a, 16))]
        text = [" ".join(words[i, : lengths[i]]) + f" item {a + i}." for i in range(b - a)]
        summary = [" ".join(words[i, : 3 + i % 3]) for i in range(b - a)]
        table = pa.table({"text": text, "summary": summary})
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def synthetic_embedder(dim: int, n: int):
    """Ray Data batch function: ids → (row, clustered embedding, loss), rows permuted by a bijection."""
    centers = np.random.default_rng(1).normal(0, 4, (CLUSTERS, dim)).astype(np.float32)
    stride = next(s for s in range(7919, 2 * n + 7919) if np.gcd(s, n) == 1)  # row = id * stride mod n

    def embed(batch: dict) -> dict:
        rows = (batch["id"].astype(np.int64) * stride) % n
        rng = np.random.default_rng(int(rows[0]))
        emb = centers[rows % CLUSTERS] + rng.normal(0, 1, (len(rows), dim)).astype(np.float32)
        return {"row": rows, "embedding": emb, "loss": rng.gamma(2.0, 0.8, len(rows)).astype(np.float32)}

    return embed


def selector_memory(features, name: str, k: int, interval: float = 0.02) -> dict:
    """Run one selector and sample this process' memory: the peak of private (anonymous) memory above
    its start shows copies the selector makes; mapped feature pages are file-backed, not copies."""
    import threading

    from distill.select import registry

    Path("/proc/self/clear_refs").write_text("5")  # this worker's peak starts here
    start_anon, samples, done = rss_mb("RssAnon"), [], threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(rss_mb("RssAnon"))
            time.sleep(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    registry.select(name, features, k, 0)
    seconds = time.perf_counter() - t0
    done.set()
    thread.join()
    return {
        "seconds": round(seconds, 2),
        "private_growth_mb": round(max(samples + [rss_mb("RssAnon")]) - start_anon, 1),
        "peak_rss_mb": round(rss_mb("VmHWM"), 1),
    }


def old_collect(batches) -> tuple[np.ndarray, np.ndarray]:
    """The pre-streaming embed_pool: keep every batch, concatenate, reorder by row (for comparison only)."""
    batches = list(batches)
    rows = np.concatenate([b["row"] for b in batches])
    order = np.argsort(rows)
    embeddings = np.concatenate([b["embedding"] for b in batches])[order]
    loss = np.concatenate([b["loss"] for b in batches])[order]
    return embeddings, loss


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="training pool rows")
    ap.add_argument("--embed-n", type=int, default=20_000, help="rows embedded by the real (tiny) model")
    ap.add_argument("--dim", type=int, default=64, help="hidden size of the tiny model = embedding width")
    ap.add_argument("--fraction", type=float, default=0.01, help="selection budget")
    ap.add_argument("--test-size", type=int, default=1000)
    ap.add_argument("--embed-batch", type=int, default=64)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--tmp", type=Path, default=None)
    ap.add_argument(
        "--stream-only",
        action="store_true",
        help="data + the embed-stream comparison only (e.g. at the real model's width, --dim 576)",
    )
    args = ap.parse_args(argv)

    from distill.config.load import make_config
    from distill.data.load import load_splits
    from distill.features.columns import text_features
    from distill.runtime.session import ray_session
    from distill.select import registry
    from tests.conftest import build_tiny_llama

    copy_mb = args.n * args.dim * 4 / 2**20
    res: dict = {
        "n": args.n,
        "embed_n": args.embed_n,
        "dim": args.dim,
        "fraction": args.fraction,
        "one_float32_copy_mb": round(copy_mb, 1),
        "goal_peak_rss_mb": round(2 * copy_mb, 1),
        "cpus": os.cpu_count(),
        "machine": platform.platform(),
        "load_avg_1m_start": os.getloadavg()[0],
    }
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        tmp = Path(tmp)
        data_file = tmp / "pool.parquet"
        t = time.perf_counter()
        write_pool(data_file, args.n + args.test_size)
        model = str(build_tiny_llama(tmp / "tiny-random-llama", hidden=args.dim))
        res["setup_seconds"] = round(time.perf_counter() - t, 1)
        cfg = make_config(
            "quick",
            {
                "output_dir": str(tmp / "out"),
                "model": {"name": model, "max_source_tokens": 32, "max_target_tokens": 8, "dtype": "float32"},
                "data": {"source": str(data_file), "title_column": None, "test_size": args.test_size},
                "embed": {"batch_size": args.embed_batch},
                "select": {"methods": registry.names(), "fraction": args.fraction},
                "resources": {"num_cpus": 2},
            },
        )
        out = Path(cfg.output_dir)
        res["driver_rss_after_imports_mb"] = round(rss_mb(), 1)

        with Stage(res, "data: load, validate, dedup, split"):
            splits = load_splits(cfg.data)
        res["pool_rows"] = len(splits.train)
        with Stage(res, "data: text statistics"):
            stats = text_features(splits.train["prompt"].tolist())

        with ray_session(cfg.resources):
            if not args.stream_only:
                model_embed(res, cfg, splits, model, out, args.embed_n, args.n)
            emb, loss = stream_side_by_side(res, len(splits.train), args.dim, tmp)
            if not args.stream_only:
                select_all(res, cfg, replace(stats, embeddings=emb, loss=loss), splits.train, out)
    res["load_avg_1m_end"] = os.getloadavg()[0]
    res["peak_rss_mb_all_stages"] = max(s["peak_rss_mb"] for s in res["stages"].values())
    print_table(res)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


def model_embed(res: dict, cfg, splits, model: str, out: Path, embed_n: int, n: int) -> None:
    """embed_pool with the tiny model on the first embed_n pool rows; rate extrapolated to n."""
    from distill.config.sections import FeatureSettings
    from distill.data.load import Splits
    from distill.runtime.features import embed_pool

    part = Splits(splits.train.iloc[:embed_n].reset_index(drop=True), splits.test, splits.source, splits.format)
    name = f"embed: tiny model, {len(part.train):,} rows (embed_pool)"
    with Stage(res, name):
        real, _ = embed_pool(cfg.name, FeatureSettings.of(cfg), cfg.resources.max_failures, part, model, out)
    res["stages"][name]["rows_per_second"] = round(len(part.train) / res["stages"][name]["seconds"], 1)
    res["embed_extrapolated_seconds_at_n"] = round(n / res["stages"][name]["rows_per_second"])
    res["embed_real_is_memmap"] = isinstance(real.embeddings, np.memmap)


def stream_side_by_side(res: dict, n: int, dim: int, tmp: Path) -> tuple[np.memmap, np.memmap]:
    """The Ray Data → driver collection at n rows: featstore.stream, then the old path; returns the memmaps."""
    import ray

    from distill.features import store as featstore

    dataset = ray.data.range(n, override_num_blocks=max(16, n // 20_000)).map_batches(
        synthetic_embedder(dim, n), batch_size=4096, batch_format="numpy"
    )
    dataset.limit(4096).take_all()  # warm up the Ray Data workers, so neither path pays their start
    with Stage(res, f"embed stream, {n:,} rows: featstore.stream (new)"):
        stored = featstore.stream(
            dataset.iter_batches(batch_size=None, batch_format="numpy"), tmp / "features-synthetic", n
        )
    emb, loss = stored["embedding"], stored["loss"]
    with Stage(res, f"embed stream, {n:,} rows: list + concatenate (old)"):
        old_emb, old_loss = old_collect(dataset.iter_batches(batch_size=None, batch_format="numpy"))
    res["old_equals_new"] = bool(np.array_equal(old_emb, emb) and np.array_equal(old_loss, loss))
    return emb, loss


def select_all(res: dict, cfg, features, pool, out: Path) -> None:
    """select_subsets over the memory-mapped pool, then each selector alone for its memory."""
    import ray

    from distill.runtime import preflight
    from distill.runtime.selection import select_subsets

    res["pickled_features_bytes"] = len(pickle.dumps(features))
    res["embeddings_bytes"] = int(features.embeddings.nbytes)
    k = preflight.budget(cfg.select, len(features))
    with Stage(res, f"select: {len(cfg.select.methods)} selectors, k={k:,} (select_subsets)"):
        specs = select_subsets(
            cfg.name, cfg.select, cfg.seeds, cfg.include_baseline, features, pool, out, f"synthetic-{len(features)}"
        )
    res["selectors"] = {s.method: {"seconds": round(s.select_seconds, 2), "k": len(s.indices)} for s in specs}
    # each selector again, alone, in a fresh worker (same pickled-by-path features): its own memory
    probe = ray.remote(num_cpus=2, max_calls=1)(selector_memory)
    for name in cfg.select.methods:
        res["selectors"][name].update(
            {f"alone_{key}": v for key, v in ray.get(probe.remote(features, name, k)).items()}
        )
        print(f"[bench] {name} alone: {res['selectors'][name]}", flush=True)


def print_table(res: dict) -> None:
    print(
        f"\npool n={res['n']:,}  d={res['dim']}  one float32 copy {res['one_float32_copy_mb']} MB  "
        f"goal: driver peak <= {res['goal_peak_rss_mb']} MB"
    )
    print(
        f"{'stage':62s} {'seconds':>9s} {'RSS start MB':>13s} {'peak MB':>9s} {'growth MB':>10s}"
        " | growth of: private  mapped files  object store"
    )
    for name, row in res["stages"].items():
        print(
            f"{name:62s} {row['seconds']:>9} {row['rss_start_mb']:>13} {row['peak_rss_mb']:>9} {row['peak_growth_mb']:>10}"
            f" | {row['RssAnon_peak_growth_mb']:>18} {row['RssFile_peak_growth_mb']:>13} {row['RssShmem_peak_growth_mb']:>13}"
        )
    if "selectors" not in res:
        return
    print(
        f"\n{'selector':22s} {'s (2 at a time)':>16s} {'s (alone)':>10s} {'private MB':>11s} {'task peak RSS MB':>17s}"
    )
    for name, row in res["selectors"].items():
        print(
            f"{name:22s} {row['seconds']:>16} {row['alone_seconds']:>10} {row['alone_private_growth_mb']:>11} "
            f"{row['alone_peak_rss_mb']:>17}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
