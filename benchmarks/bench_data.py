"""Data-stage benchmark: synthetic Amazon-2014 dumps of Beauty and Books size.

For each size it writes the raw dumps (cached), then runs the whole data stage of one
target domain -- ingest, examples, instructions -- in a fresh process (``--repeats`` times,
the median quoted) with the schema's default resources.data.threads, and prints wall
seconds per step and the process's peak RSS. Targets on a 2-core machine: Beauty size
<= 30 s; Books size completes with peak RSS <= 8 GB.

At Beauty size it also runs the reference, the original's two data scripts on the same
files (benchmarks/original_data.py: the same steps, ast.literal_eval where the original
calls eval, one process per core where it pooled), and prints the ratio. A lower bound on
the original's own time takes off what literal_eval costs above compile(), the part of eval
that runs before any code, on every line the scripts parse.

    python benchmarks/bench_data.py [--sizes beauty books] [--cache /tmp/molorec-bench]
                                    [--repeats 3] [--no-reference]
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
    from molorec.schema import defaults

    spec = {"format": "amazon2014", "reviews": str(reviews), "meta": str(meta)}
    workers = defaults("resources")["data"]["threads"]
    stage = data_stage(spec, out, "bench", workers=workers)
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
        "workers": workers,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        # The largest of the forked workers (each shares the parent's pages until written).
        "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def run_reference(reviews: Path, meta: Path, out: Path) -> dict:
    """Run in the child process: the original's scripts, and the parse lower bound."""
    import original_data

    result = original_data.run(reviews, meta, out)
    # The scripts parse the reviews twice and the metadata once.
    parse = {"reviews": original_data.line_parse_seconds(reviews)}
    parse["meta"] = original_data.line_parse_seconds(meta)
    excess = sum(
        (2 if name == "reviews" else 1) * (p["literal_eval_s"] - p["compile_s"])
        for name, p in parse.items()
    )
    return result | {"parse": parse, "literal_eval_excess_s": excess}


def child(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/molorec-bench"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-reference", action="store_true", help="skip the original's scripts")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        reviews, meta, out = map(Path, args.child[:3])
        if args.child[3] == "reference":
            print(json.dumps(run_reference(reviews, meta, out)))
        else:
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
        files = [str(raw / f"reviews_{category}_5.json.gz"), str(raw / f"meta_{category}.json.gz")]
        runs = [child(*files, str(out), "-") for _ in range(max(1, args.repeats))]
        runs.sort(key=lambda run: run["total_s"])
        r = runs[len(runs) // 2]
        if name == "beauty":
            r |= {k: v for k, v in child(*files, str(out), "compare").items() if "meta" in k}
        totals = ", ".join(f"{run['total_s']:.2f}" for run in runs)
        print(
            f"[{name}] {r['reviews']:,} reviews -> {r['interactions']:,} interactions, "
            f"{r['instructions']:,} instructions {r['examples']}\n"
            f"[{name}] median of {len(runs)} ({totals} s), {r['workers']} workers: "
            f"ingest {r['ingest_s']:.2f} s | examples {r['examples_s']:.2f} s | "
            f"instructions {r['instructions_s']:.2f} s | total {r['total_s']:.2f} s | "
            f"peak RSS {r['peak_rss_mb'] / 1024:.2f} GB, of a worker "
            f"{r['worker_rss_mb'] / 1024:.2f} GB",
            flush=True,
        )
        if name == "beauty" and not args.no_reference:
            ref = child(*files, str(args.cache / name / "original"), "reference")
            steps = " | ".join(f"{k} {v:.1f} s" for k, v in ref["seconds"].items())
            total = ref["seconds"]["total_s"]
            floor = total - ref["literal_eval_excess_s"]
            print(
                f"[{name}] original's scripts: {steps}; examples {ref['examples']}\n"
                f"[{name}] line parse, literal_eval / compile: "
                + ", ".join(
                    f"{k} {p['literal_eval_s']:.1f} / {p['compile_s']:.1f} s"
                    for k, p in ref["parse"].items()
                )
                + f"; the original with eval: at least {floor:.1f} s\n"
                f"[{name}] ours {total / r['total_s']:.1f}x faster than the reference "
                f"({total:.1f} / {r['total_s']:.2f} s), at least {floor / r['total_s']:.1f}x "
                "than the original with eval",
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
