"""Data-stage benchmark: synthetic Amazon-2014 dumps of Beauty and Books size.

For each size it writes the raw dumps (cached), then runs the whole data stage of one
target domain -- ingest, examples, instructions -- in a fresh process and prints wall
seconds per step and the process's peak RSS. Targets on a 2-core machine: Beauty size
<= 30 s; Books size completes with peak RSS <= 8 GB.

    python benchmarks/bench_data.py [--sizes beauty books] [--cache /tmp/molorec-bench]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

SIZES = {
    # name: (category, users, items, reviews, meta lines) -- the Amazon 2014 figures: 5-core
    # reviews, and the full metadata dump, which lists every product of the category
    "beauty": ("Beauty", 22_363, 12_101, 198_502, 259_204),
    "books": ("Books", 603_668, 367_982, 8_898_041, 2_370_585),
}


def compare_meta_parsing(meta: Path, interactions: Path) -> dict:
    """Metadata read as the original did (every line evaluated) against ours (lines of
    unreviewed items skipped unparsed), same file, same process."""
    import polars as pl

    from molorec.io.amazon import read_meta

    reviewed = set(pl.read_parquet(interactions)["item"].unique().to_list())
    t = time.perf_counter()
    every, _ = read_meta(meta, "amazon2014", "error", 0.001)
    naive = time.perf_counter() - t
    t = time.perf_counter()
    ours, _ = read_meta(meta, "amazon2014", "error", 0.001, reviewed)
    fast = time.perf_counter() - t
    same = every.filter(pl.col("item").is_in(reviewed)).equals(ours)
    return {"meta_every_line_s": naive, "meta_skip_unreviewed_s": fast, "meta_same": same}


def run_stage(reviews: Path, meta: Path, out: Path, compare_meta: bool) -> dict:
    """Runs in the child process: the three steps of the data stage, timed."""
    from molorec.sample.prepare import data_stage

    spec = {"format": "amazon2014", "reviews": str(reviews), "meta": str(meta)}
    stage = data_stage(spec, out, "bench")
    times = dict(stage.seconds)
    times["total_s"] = sum(times.values())
    if compare_meta:
        times.update(compare_meta_parsing(meta, stage.paths["interactions"]))
    return {
        **times,
        "reviews": stage.quality["reviews"]["lines"],
        "interactions": stage.quality["interactions"],
        "examples": stage.summary["examples"],
        "instructions": stage.instructions,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/molorec-bench"))
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        reviews, meta, out = map(Path, args.child[:3])
        print(json.dumps(run_stage(reviews, meta, out, args.child[3] == "compare")))
        return

    from molorec.sample.bulk import write_amazon2014_synthetic

    for name in args.sizes:
        category, users, items, reviews, meta_lines = SIZES[name]
        raw = args.cache / name / "raw"
        done = raw / ".complete"
        if not done.exists():
            t = time.perf_counter()
            raw.mkdir(parents=True, exist_ok=True)
            write_amazon2014_synthetic(
                raw, category, users, items, reviews, seed=0, n_meta_items=meta_lines
            )
            done.touch()
            print(f"[{name}] generated raw dumps in {time.perf_counter() - t:.1f} s", flush=True)
        out = args.cache / name / "out"
        out.mkdir(parents=True, exist_ok=True)
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(raw / f"reviews_{category}_5.json.gz"),
                str(raw / f"meta_{category}.json.gz"),
                str(out),
                "compare" if name == "beauty" else "-",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        r = json.loads(child.stdout.strip().splitlines()[-1])
        print(
            f"[{name}] {r['reviews']:,} reviews -> {r['interactions']:,} interactions, "
            f"{r['instructions']:,} instructions {r['examples']}\n"
            f"[{name}] ingest {r['ingest_s']:.1f} s | examples {r['examples_s']:.1f} s | "
            f"instructions {r['instructions_s']:.1f} s | total {r['total_s']:.1f} s | "
            f"peak RSS {r['peak_rss_mb'] / 1024:.2f} GB",
            flush=True,
        )
        if "meta_every_line_s" in r:
            print(
                f"[{name}] metadata: every line evaluated (original) {r['meta_every_line_s']:.1f} s"
                f" | unreviewed skipped (ours) {r['meta_skip_unreviewed_s']:.1f} s | "
                f"{r['meta_every_line_s'] / r['meta_skip_unreviewed_s']:.1f}x faster, "
                f"same titles: {r['meta_same']}",
                flush=True,
            )


if __name__ == "__main__":
    main()
