"""The default quick start, timed: `snakemake --cores all` on the bundled sample in a fresh
working folder, with the wall time, the peak memory of the whole process tree (sampled
every 0.5 s: concurrent jobs add up) and the seconds per stage from the rules' benchmark
files. Then this machine's bf16 ``torch.matmul`` rate at the built model's projection
shapes, on one thread and on all (as the jobs run): the same code's wall time moves with
it, so two runs compare through it.

    python benchmarks/bench_pipeline.py [--workdir /tmp/molorec-quickstart] [--config config.yaml]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import psutil
import yaml

from molorec.sample.prepare import pipeline_workdir

REPO = Path(__file__).resolve().parents[1]


def tree_rss(proc: psutil.Process) -> int:
    """Resident memory of a process and all its descendants, in bytes."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/molorec-quickstart"))
    ap.add_argument("--config", type=Path, default=REPO / "config.yaml")
    ap.add_argument("--keep", action="store_true", help="reuse the workdir's results")
    ap.add_argument("--resources", nargs="*", default=[], help="snakemake --resources")
    args = ap.parse_args()
    cmd = pipeline_workdir(
        args.workdir, yaml.safe_load(args.config.read_text()), fresh=not args.keep
    )
    if args.resources:
        cmd += ["--resources", *args.resources]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss(root))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.join()
    if proc.returncode != 0:
        sys.exit(f"snakemake failed:\n{err[-4000:]}")
    rows = []
    for tsv in sorted((args.workdir / "results/benchmarks").rglob("*.tsv")):
        stage = tsv.relative_to(args.workdir / "results/benchmarks").parts[0]
        b = pl.read_csv(tsv, separator="\t")
        rows.append({"stage": stage, "s": b["s"][0], "max_rss_mb": b["max_rss"][0]})
    stages = (
        pl.DataFrame(rows)
        .group_by("stage", maintain_order=True)
        .agg(
            jobs=pl.len(), job_seconds=pl.col("s").sum(), max_job_rss_mb=pl.col("max_rss_mb").max()
        )
    )
    print(f"wall {wall / 60:.1f} min, peak RSS of the whole run {peak[0] / 2**30:.2f} GB")
    with pl.Config(tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        print(stages)
    print(machine_rates(args.workdir))


def machine_rates(workdir: Path) -> str:
    """The bf16 GEMM rate at the built model's shapes, one thread and all threads."""
    import torch
    from transformers import AutoConfig

    from molorec.flops import Shapes, gemm_rate

    built = sorted((workdir / "results/models").glob("*/config.json"))
    if not built:
        return "no built model in results/models: no GEMM rate"
    shapes = Shapes.of(AutoConfig.from_pretrained(built[0].parent))
    rates = {}
    for threads in (1, psutil.cpu_count(logical=True) or 1):
        torch.set_num_threads(threads)
        rates[threads] = gemm_rate(shapes, torch.bfloat16)
    return f"bf16 GEMM rate at {built[0].parent.name}'s shapes after the run: " + ", ".join(
        f"{rate / 1e9:,.0f} GFLOP/s on {t} thread{'s' if t > 1 else ''}"
        for t, rate in rates.items()
    )


if __name__ == "__main__":
    main()
