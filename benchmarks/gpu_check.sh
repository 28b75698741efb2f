#!/usr/bin/env bash
# One short GPU check (< 8 minutes on one H100/H200): the default pipeline with
# smollm2-135m in bf16 on CUDA, then the vllm backend on one variant against HF generate.
# Prints the wall time per stage, training tokens/s, and training's share of the GPU's
# matmul rate at the model's shapes.
#
#   bash benchmarks/gpu_check.sh [workdir]
#
# Needs a CUDA machine with this package installed (pip install -e .) and, for the vLLM
# part, vllm (pip install -e ".[vllm]"). Without a network, build the model folder
# elsewhere (snakemake results/models/smollm2-135m) and copy it to <workdir>/results/models/.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-/tmp/molorec-gpu}"
export PYTHONUNBUFFERED=1
python - <<'PY'
import torch
assert torch.cuda.is_available(), "gpu_check.sh needs a CUDA device"
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
PY

# 1. The default pipeline, every GPU stage on the GPU in bf16 (precision auto), one GPU
#    per job, several jobs at once on the one device (it has room for many 135M models):
#    4 slots per card for the card claims (molorec.devices), gpu=4 for Snakemake.
export MOLOREC_JOBS_PER_GPU=4
python - "$repo" "$work" <<'PY'
import sys, yaml
from pathlib import Path
repo, work = Path(sys.argv[1]), Path(sys.argv[2])
config = yaml.safe_load((repo / "config.yaml").read_text())
for stage in ("train", "fuse", "evaluate"):
    config["resources"][stage] |= {"gpu": 1, "threads": 2}
work.mkdir(parents=True, exist_ok=True)
(work / "config.gpu.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
PY
python "$repo/benchmarks/bench_pipeline.py" --workdir "$work" --config "$work/config.gpu.yaml" \
    --keep --resources "gpu=4" "mem_mb=64000"
python - "$work" <<'PY'
import sys
from pathlib import Path
import polars as pl
work = Path(sys.argv[1])
for log in sorted((work / "results/adapters").glob("*/train_log.csv")):
    t = pl.read_csv(log)
    print(f"train {log.parent.name}: {t['tokens_per_s'].mean():.0f} tokens/s, "
          f"peak {t['peak_mem_mb'].max():.0f} MB")
PY

# 2. vLLM against HF generate on the same prompts: every variant of beauty's warm test set
#    (fused adapters included) from one engine, as LoRA requests.
python "$repo/benchmarks/vllm_check.py" --workdir "$work" --domain beauty

# 3. Training close to the machine: model FLOP/s of ours (and of transformers.Trainer) as a
#    share of this GPU's own bf16 / fp32 matmul rate at the model's shapes (issue 24's ratio).
python "$repo/benchmarks/bench_train.py" --model smollm2-135m --precision bf16 \
    --cache "$work/bench-train"
