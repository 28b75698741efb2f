"""The cost plan (molorec.cost): from the domains' sizes before any data exists, and from
the instruction sets after; its model loads are the GPU jobs Snakemake plans."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml
from conftest import REPO

from molorec.config import check_config
from molorec.cost import main, plan
from molorec.plan import GPU_RULES


def paper_config(**changes) -> dict:
    config = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    config = check_config(config, base_dir=REPO, inputs=False)
    for key, value in changes.items():
        section, name = key.split("__")
        config[section][name] = value
    return config


def test_the_paper_config_is_planned_from_the_domains_sizes(tmp_path, capsys):
    config = paper_config()
    work = plan(config, tmp_path / "no-results")
    # 4 trainings; per target domain (3) 2 fusion jobs, the uniform mixture, a merge job per
    # method (11) and a fusion job per control (2) and scenario; 4 LLM evaluations, and per
    # grid variant (13) and scenario one on the selection set and one on test.
    assert len(config["merges"]["methods"]) == 11 and len(config["controls"]) == 2
    assert [work[s].loads for s in ("train", "fusion", "evaluate")] == [
        4,
        3 * (2 + 1 + 11 + 2 * 2),
        3 * (4 + 13 * 2 * 2),
    ]
    assert work["train"].train > 1e8 and work["evaluate"].prefill > 1e8
    # The order check evaluates every LLM variant twice, in the same jobs.
    for backend in ("rank", "generate"):
        once = plan(paper_config(evaluate__backend=backend), tmp_path)["evaluate"]
        checked = paper_config(evaluate__backend=backend, evaluate__order_check="reversed")
        twice = plan(checked, tmp_path)["evaluate"]
        assert (twice.prefill, twice.decode) == (2 * once.prefill, 2 * once.decode)
        assert twice.loads == once.loads
    main(["--configfile", str(REPO / "config/paper.yaml"), "--results", str(tmp_path)])
    out = capsys.readouterr().out
    assert "a100_80gb_gpu_hours" in out and "total" in out
    assert "github.com/QwenLM/Qwen" in out  # every throughput figure names its source


@pytest.mark.parametrize("share_general", [False, True])
def test_model_loads_are_the_gpu_jobs_snakemake_plans(
    one_target_run, tokenizer, tmp_path, share_general
):
    workdir = one_target_run[0]
    # The run's config with two merge methods, both fusion controls and 2 replicates:
    # every GPU rule and its replicate copy (but the general adapter's where the
    # replicates share it).
    raw = yaml.safe_load((workdir / "config.yaml").read_text())
    raw["replicates"] = 2
    raw["replicates_share_general"] = share_general
    raw["merges"] = {"methods": ["ties", "cat"], "weights": [[0.5, 0.5], [1, 1]]}
    raw["controls"] = ["molorec_selection", "molorec_supervised"]
    configfile = tmp_path / "grid.yaml"
    configfile.write_text(yaml.safe_dump(raw))
    config = check_config(raw, workdir)
    work = plan(config, workdir / "results", tokenizer)
    assert "examples.parquet" in work["train"].notes[0]  # counted from the data
    assert work["train"].train > 0 and work["evaluate"].prefill > 0
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--nolock"]
    cmd += ["--directory", str(workdir), "-n", "--forceall", "--configfile", str(configfile)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    table = out.split("Job stats:", 1)[1].split("total", 1)[0]
    counts = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}
    shared = {"train_general_adapter_replicate"} if share_general else set()
    assert set(GPU_RULES) - shared <= set(counts) and not shared & set(counts)
    assert sum(w.loads for w in work.values()) == sum(counts.get(r, 0) for r in GPU_RULES), counts
