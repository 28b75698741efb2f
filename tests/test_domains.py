"""Incremental domains: adding or changing a target domain never retrains the general adapter;
changing what the general adapter is built from does. And a general adapter built elsewhere."""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import random
import re
import shutil
from pathlib import Path

import polars as pl
import pytest
import yaml
from conftest import REPO, one_target_config, run_workflow, sample_config, tree_bytes
from test_examples import shown_titles

from molorec.config import check_config
from molorec.data.examples import cold_items
from molorec.settings import example_settings

# One job per (domain, scenario) for fusion and per (domain, scenario, split) for the LLM
# evaluations.
FUSION_RULES = {"fuse_adapters"}
LLM_EVAL_RULES = {"evaluate_llm"}


def general_jobs(jobs, config) -> set[tuple[str, str]]:
    """Jobs that build the general adapter: its domains' data, the pooled set, the training."""
    general = [d for d, spec in config["domains"].items() if spec["role"] == "general"]
    return {
        (rule, w)
        for rule, w in jobs
        if rule in ("pool_general_instructions", "train_general_adapter")
        or any(f"domain={d}" in w.split(", ") for d in general)
    }


def planned_inputs(workdir: Path, config: dict, *extra: str) -> dict[tuple[str, str], list]:
    """(rule, wildcards) -> input files of every job a dry run of ``config`` plans in
    ``workdir``; the workdir's config.yaml stays that of its last real run."""
    config_file = workdir / "config.yaml"
    last_run = config_file.read_text() if config_file.exists() else None
    proc = run_workflow(workdir, config, "--dry-run", *extra)
    if last_run is not None:
        config_file.write_text(last_run)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    jobs = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        if rule:
            wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.M)
            inputs = re.search(r"^\s+input: (.*)$", block, re.M)
            key = (rule.group(1), wildcards.group(1) if wildcards else "")
            jobs[key] = inputs.group(1).split(", ") if inputs else []
    return jobs


def planned_jobs(workdir: Path, config: dict, *extra: str) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run of ``config`` plans in ``workdir``."""
    return list(planned_inputs(workdir, config, *extra))


def rules_of(jobs, domain: str | None = None) -> set[str]:
    return {rule for rule, w in jobs if domain is None or f"domain={domain}" in w.split(", ")}


def file_states(folder: Path) -> dict[str, tuple[str, int]]:
    """Per file: content hash and mtime, to show a folder was not rewritten."""
    return {
        str(p.relative_to(folder)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def current_config(workdir: Path) -> dict:
    return yaml.safe_load((workdir / "config.yaml").read_text())


def sample_domain(role: str, fmt: str, reviews: str, meta: str) -> dict:
    """A domain of the bundled sample that config.yaml does not list."""
    folder = REPO / "resources/sample" / fmt
    return {
        "role": role,
        "format": fmt,
        "reviews": str(folder / reviews),
        "meta": str(folder / meta),
    }


def test_adding_a_target_domain_runs_only_its_branch(one_target_run):
    """A domain of another raw format (MovieLens 1M, Latin-1 titles) added to a finished
    run: only its branch is planned and run, and its titles reach the prompts as written."""
    workdir, config, metrics, _ = one_target_run
    general = file_states(workdir / "results/adapters/general")
    grown = copy.deepcopy(config)
    movielens = str(REPO / "resources/sample/movielens1m")
    grown["domains"]["movies"] = {"role": "target", "format": "movielens1m", "path": movielens}

    jobs = planned_jobs(workdir, grown)
    others = {job for job in jobs if "domain=movies" not in job[1].split(", ")}
    assert others == {("report", ""), ("all", "")}
    assert rules_of(jobs, "movies") >= {
        "ingest_domain",
        "build_instructions",
        "train_domain_adapter",
        "uniform_adapter",
        *FUSION_RULES,
        *LLM_EVAL_RULES,
        "select_molorec",
        "evaluate_baselines",
    }

    proc = run_workflow(workdir, grown)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert file_states(workdir / "results/adapters/general") == general
    assert (workdir / "results/eval/movies/cold/molorec/metrics.json").is_file()
    assert "movies" in (workdir / "results/report/metrics.csv").read_text()
    prompts = pl.read_parquet(workdir / "results/data/movies/instructions.parquet")["messages"]
    text = "".join(m["content"] for row in prompts.to_list() for m in row)
    assert "Misérables, Les (1995)" in text and "MisÃ©rables" not in text
    # The first domain's results are the same files as before.
    assert tree_bytes(workdir / "results", ["eval/beauty/**/metrics.json"]) == {
        k: v
        for k, v in metrics.items()
        if k.startswith("eval/beauty/") and k.endswith("metrics.json")
    }


def sorted_keys(value):
    """The config as yaml.safe_dump writes it by default, keys sorted at every level."""
    if isinstance(value, dict):
        return {k: sorted_keys(value[k]) for k in sorted(value)}
    return value


def shuffled(value, rng: random.Random):
    """The same settings with the keys of every mapping (domains too) in a random order."""
    if isinstance(value, dict):
        keys = list(value)
        rng.shuffle(keys)
        return {k: shuffled(value[k], rng) for k in keys}
    return value


def test_a_config_rewritten_by_a_program_plans_only_what_changed(one_target_run):
    """A config loaded, edited and dumped again (keys sorted) plans the new target domain
    and the aggregates, not a re-ingest and a retraining of everything."""
    workdir = one_target_run[0]
    config = current_config(workdir)
    assert list(config) != sorted(config)  # the last run's file is in its hand-written order
    grown = copy.deepcopy(config)
    grown["domains"]["beauty_copy"] = copy.deepcopy(config["domains"]["beauty"])

    jobs = planned_jobs(workdir, sorted_keys(grown))
    assert {job for job in jobs if "domain=beauty_copy" not in job[1].split(", ")} == {
        ("report", ""),
        ("all", ""),
    }
    assert {"ingest_domain", "train_domain_adapter", "evaluate_llm"} <= rules_of(
        jobs, "beauty_copy"
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_the_same_settings_in_another_order_plan_nothing(one_target_run, seed):
    workdir = one_target_run[0]
    config = current_config(workdir)
    assert planned_jobs(workdir, shuffled(config, random.Random(seed))) == []
    assert planned_jobs(workdir, sorted_keys(config)) == []
    # Lists whose order means nothing (x-unordered in the schema), and 2 written as 2.0.
    reordered = copy.deepcopy(config)
    warm = reordered["fusion"]["lr_grid"]["warm"]
    reordered["fusion"]["lr_grid"]["warm"] = [int(lr) if lr == int(lr) else lr for lr in warm][::-1]
    assert planned_jobs(workdir, reordered) == []
    # The same setting given again through --config (Snakemake merges it into the dict).
    assert planned_jobs(workdir, config, "--config", f"seed={config['seed']}") == []


def test_a_setting_that_matters_still_reruns_what_depends_on_it(one_target_run):
    workdir = one_target_run[0]
    changed = sorted_keys(current_config(workdir))
    changed["data"]["n_candidates"] += 1
    jobs = planned_jobs(workdir, changed)
    domains = current_config(workdir)["domains"]
    for domain in domains:
        assert {"build_examples", "build_instructions"} <= rules_of(jobs, domain)
        assert "ingest_domain" not in rules_of(jobs, domain)
    assert {"pool_general_instructions", "train_general_adapter", "report"} <= rules_of(jobs)


def test_target_domain_settings_never_rerun_the_general_adapter(one_target_run):
    workdir = one_target_run[0]
    config = current_config(workdir)

    changed = copy.deepcopy(config)
    changed["train"]["domain"]["lr"] = 5.0e-4
    jobs = planned_jobs(workdir, changed)
    assert "train_domain_adapter" in rules_of(jobs)
    assert not general_jobs(jobs, changed)

    changed = copy.deepcopy(config)
    changed["domains"]["beauty"]["prompt"] = {"system": "You recommend beauty products."}
    jobs = planned_jobs(workdir, changed)
    assert {"build_instructions", "train_domain_adapter"} <= rules_of(jobs, "beauty")
    assert "ingest_domain" not in rules_of(jobs)  # the prompt is not read from the dumps
    assert not general_jobs(jobs, changed)
    assert not {job for job in jobs if job[1] and "domain=beauty" not in job[1].split(", ")}


def test_general_settings_rerun_the_general_adapter_and_everything_downstream(one_target_run):
    workdir = one_target_run[0]
    config = current_config(workdir)
    targets = [d for d, spec in config["domains"].items() if spec["role"] == "target"]
    downstream = {"uniform_adapter", *FUSION_RULES, *LLM_EVAL_RULES}

    changed = copy.deepcopy(config)
    changed["train"]["general"]["epochs"] = 1
    jobs = planned_jobs(workdir, changed)
    assert "train_general_adapter" in rules_of(jobs)
    assert not rules_of(jobs) & {"ingest_domain", "pool_general_instructions"}
    for domain in targets:
        assert downstream | {"select_molorec"} <= rules_of(jobs, domain)
        assert "train_domain_adapter" not in rules_of(jobs, domain)

    changed = copy.deepcopy(config)
    changed["domains"]["video_games"] = sample_domain(
        "general", "amazon2018", "Video_Games_5.json.gz", "meta_Video_Games.json.gz"
    )
    jobs = planned_jobs(workdir, changed)
    assert rules_of(jobs, "video_games") >= {"ingest_domain", "build_instructions"}
    assert {"pool_general_instructions", "train_general_adapter", "report"} <= rules_of(jobs)
    for domain in targets:
        assert downstream <= rules_of(jobs, domain)
        # A new general pool: the target's held-out examples are built again against its
        # pairs (test_the_general_pool_shows_no_held_out_pair_and_no_cold_item), and so its
        # adapter; its dumps are not read again.
        assert "build_examples" in rules_of(jobs, domain)
        assert "ingest_domain" not in rules_of(jobs, domain)


def test_a_general_adapter_built_elsewhere_replaces_training(one_target_run, tmp_path):
    workdir, _, metrics, _ = one_target_run
    shared = shutil.copytree(workdir / "results/adapters/general", tmp_path / "shared-general")
    config = one_target_config()
    del config["domains"]["cell_phones"]
    config["general_adapter"] = str(shared)

    run = tmp_path / "run"
    jobs = planned_jobs(run, config)
    assert not rules_of(jobs) & {"pool_general_instructions", "train_general_adapter"}
    assert {w for rule, w in jobs if rule == "ingest_domain"} == {"domain=beauty"}
    # The warm scenario's variants that use the general adapter (the cold ones alike).
    targets = ["results/eval/beauty/warm/test", "results/eval/beauty/warm/molorec/metrics.json"]
    proc = run_workflow(run, config, *targets)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert not (run / "results/adapters/general").exists()
    # The same general adapter, so the same metrics as the run that trained it.
    produced = tree_bytes(run / "results")
    wanted = {f"eval/beauty/warm/{v}/metrics.json" for v in ("test/general", "molorec")}
    assert wanted <= set(produced)
    assert produced == {k: metrics[k] for k in produced}


def test_a_new_warm_lr_reruns_the_warm_scenario_only(one_target_run):
    workdir = one_target_run[0]
    changed = current_config(workdir)
    changed["fusion"]["lr_grid"]["warm"] = [*changed["fusion"]["lr_grid"]["warm"], 0.5]
    jobs = planned_jobs(workdir, changed)
    assert {rule for rule, _ in jobs} == {
        "fuse_adapters",
        "evaluate_llm",
        "select_molorec",
        "report",
        "all",
    }
    assert all("scenario=cold" not in w for _, w in jobs)


def reversed_in_time(reviews: Path, out: Path) -> Path:
    """An Amazon 2014 review dump with every review's time mirrored: each user's sequence
    runs backwards, so the general row of a user shows the item that is their target test
    item in the original (as two categories that share users and asins can). Lines that
    are not JSON are kept as they are."""
    lines = []
    for line in gzip.open(reviews, "rt", encoding="utf-8"):
        try:
            record = json.loads(line)
            record["unixReviewTime"] = 2_000_000_000 - record["unixReviewTime"]
            line = json.dumps(record) + "\n"
        except (ValueError, KeyError, TypeError):
            pass
        lines.append(line)
    with gzip.open(out, "wt", encoding="utf-8") as f:
        f.writelines(lines)
    return out


def test_the_general_pool_shows_no_held_out_pair_and_no_cold_item(tmp_path):
    """The Beauty dump as the target domain and, twice, as a general domain: as itself, and
    mirrored in time. No pooled general row shows a cold Beauty item or, to the same user,
    the target of a held-out Beauty example (test, selection or cold validation); the
    held-out examples the pool showed are left out, and counted in examples.json."""
    config = sample_config()
    beauty = config["domains"]["beauty"]
    mirrored = reversed_in_time(Path(beauty["reviews"]), tmp_path / "reviews_Beauty_5.json.gz")
    config["domains"] = {
        "beauty": beauty,
        "beauty_twin": {**beauty, "role": "general"},
        "beauty_mirrored": {**beauty, "role": "general", "reviews": str(mirrored)},
    }
    run = tmp_path / "run"
    targets = [f"results/data/{d}/instructions.parquet" for d in config["domains"]]
    proc = run_workflow(run, config, *targets, "results/data/general/instructions.parquet")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    data = run / "results/data"
    pooled = pl.read_parquet(data / "general/instructions.parquet")
    assert set(pooled["domain"]) == {"beauty_twin", "beauty_mirrored"}
    items = pl.read_parquet(data / "beauty/items.parquet")
    titles = dict(items.rows())
    shown = {
        (user, title)
        for user, messages in pooled.select("user", "messages").rows()
        for title in shown_titles(messages, titles.values())
    }
    ids = items["item"].to_list()
    settings = example_settings(check_config(copy.deepcopy(config)), "beauty")
    cold = {titles[i] for i, c in zip(ids, cold_items(ids, settings), strict=True) if c}
    assert cold and not cold & {title for _, title in shown}
    examples = pl.read_parquet(data / "beauty/examples.parquet")
    held_out = examples.filter(pl.col("held_out"))
    assert held_out.filter(pl.col("cold")).height > 0
    assert not {(u, titles[t]) for u, t in held_out.select("user", "target").rows()} & shown
    summary = json.loads((data / "beauty/examples.json").read_text())
    users = summary["users"]
    skipped = summary["skipped"]
    # The mirrored rows show the last item of the users with short sequences (the history
    # keeps the most recent max_history items): their test examples go.
    assert skipped["test_pair_in_general_pool"] > 0
    assert summary["examples"]["test"] == users - skipped["test_pair_in_general_pool"]
    assert summary["examples"]["val"] == users - skipped["val_pair_in_general_pool"]
    assert summary["cold_examples_by_warm_negatives"]["test"]  # counted where cold ones are
