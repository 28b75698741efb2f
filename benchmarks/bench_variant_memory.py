"""Peak host memory of one evaluation job's variant loop (molorec.evaluate.predict_variants):
the base model loaded once, each adapter merged in turn and its weights put back, beside the
size of the model's own weights. Each run is a fresh process, so its peak RSS is its own.

The adapters have random A and B (only their size matters here); the rows are a few of the
sample's Beauty test examples if --data names a finished run's data folder, else a toy
domain. Run it at two commits to compare:

    python benchmarks/bench_variant_memory.py --base <run>/results/models/smollm2-135m
                                              --data <run>/results/data/beauty
                                              [--precision fp32] [--examples 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

MAKE_ADAPTERS = r"""
import sys
import torch
from peft import LoraConfig, get_peft_model
from molorec.model import load_base

base, tmp = sys.argv[1:3]
for seed, name in enumerate(("general", "domain"), 1):
    model, _ = load_base(base)
    torch.manual_seed(seed)
    config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(f"{tmp}/{name}")
"""

VARIANT_LOOP = r"""
import json, resource, sys
import polars as pl
import yaml
from molorec.config import check_config
from molorec.evaluate import evaluated_rows, predict_variants
from molorec.settings import eval_settings

base, data, tmp, precision, n, repo = sys.argv[1:7]
config = yaml.safe_load(open(f"{repo}/config.yaml"))
check_config(config, base_dir=repo, inputs=False)
config["evaluate"]["max_examples"] = int(n)
s = eval_settings(config) | {"precision": precision}
rows = evaluated_rows(
    pl.read_parquet(f"{data}/examples.parquet"),
    pl.read_parquet(f"{data}/instructions.parquet"),
    "test",
    "warm",
    s,
)
titles = dict(pl.read_parquet(f"{data}/items.parquet").select("item", "title").iter_rows())
adapters = {"general": f"{tmp}/general", "domain": f"{tmp}/domain", "base": None}
for _ in predict_variants(base, adapters, rows, titles, s):
    pass
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

WEIGHTS = r"""
import json, sys
from molorec.model import load_base, model_dtype
model, _ = load_base(sys.argv[1], dtype=model_dtype(sys.argv[2], False))
print(json.dumps(sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20))
"""


def child(code: str, *args: str) -> str:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--examples", type=int, default=4)
    args = ap.parse_args()
    repo = str(Path(__file__).resolve().parents[1])
    with tempfile.TemporaryDirectory() as tmp:
        child(MAKE_ADAPTERS, args.base, tmp)
        loop = json.loads(
            child(VARIANT_LOOP, args.base, args.data, tmp, args.precision, str(args.examples), repo)
        )
    weights = json.loads(child(WEIGHTS, args.base, args.precision))
    print(
        f"{Path(args.base).name}, {args.precision}, 3 variants (2 merged adapters): peak RSS "
        f"{loop['peak_rss_mb']:.0f} MB of the variant loop's process; the model's weights "
        f"{weights:.0f} MB"
    )


if __name__ == "__main__":
    main()
