"""Grid variants (molorec.plan.grid_variants): peft's merges and the fusion controls run as
variants of their own on the sample, chosen on the selection set only, compared with
molorec in the report's "Does mixing help?" section, and planned job by job; replicates
(the model stages again with other seeds) in the same run."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import polars as pl
import pytest
from conftest import one_target_config, run_workflow
from test_domains import planned_inputs, planned_jobs, rules_of

from molorec.evaluate import decided, select_lr, select_point, select_setting
from molorec.metrics import per_example, target_rank
from molorec.plan import grid_points, grid_variants, merge_grid, replicate_root
from molorec.report import MIXING_AGAINST, best_merges, mixing_verdict
from molorec.settings import fusion_settings, train_settings

GRID_RULES = {"merge_adapters", "fuse_control", "evaluate_grid", "select_grid", "evaluate_selected"}
# The jobs a merge method plans (a control plans fuse_control instead of merge_adapters).
MERGE_JOBS = GRID_RULES - {"fuse_control"} | {"report", "all"}
CONTROL_JOBS = GRID_RULES - {"merge_adapters"} | {"report", "all"}


def in_replicates(rules: set[str]) -> set[str]:
    """The rules and their replicate copies (grid_config runs 2 replicates)."""
    return rules | {f"{r}_replicate" for r in rules - {"report", "all"}}


def assert_plans_only(jobs, rules: set[str], name: str) -> None:
    """The planned jobs are of these rules, and all but the report's are ``name``'s."""
    assert rules_of(jobs) == rules
    assert all(name in w for rule, w in jobs if rule not in ("report", "all"))


def grid_config() -> dict:
    config = one_target_config()
    config["merges"] = {
        "methods": ["ties", "cat"],
        "weights": [[0.5, 0.5], [1, 1]],
        "densities": [0.5],
    }
    config["controls"] = ["molorec_selection", "molorec_supervised"]
    config["evaluate"]["baselines"] = ["pop", "content"]
    config["replicates"] = 2
    return config


@pytest.fixture(scope="module")
def grid_run(one_target_run, tmp_path_factory):
    """The grid config run on a copy of the finished one-target run (timestamps and
    Snakemake's records kept): molorec's own jobs are done there, so only the merges, the
    controls, the new baseline, replicate 1 and the report run, as for a user who adds them
    to a finished run (which the planning tests below check job by job)."""
    workdir = tmp_path_factory.mktemp("grid") / "run"
    shutil.copytree(one_target_run[0], workdir, symlinks=True)
    config = grid_config()
    proc = run_workflow(workdir, config)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return workdir, config


def test_the_grid_of_a_merge_is_the_config_s(tmp_path):
    config = grid_config()
    config["merges"]["densities"] = [0.3, 0.7]
    # ties prunes: every weight pair at every density; cat does not: the pairs only.
    assert grid_points(config, "merge_ties", "warm") == [
        "w0.5_0.5_d0.3",
        "w0.5_0.5_d0.7",
        "w1_1_d0.3",
        "w1_1_d0.7",
    ]
    assert [p["weights"] for p in merge_grid(config, "cat")] == [[0.5, 0.5], [1, 1]]
    assert {p["density"] for p in merge_grid(config, "cat")} == {None}
    # A control's points are molorec's lrs of the scenario.
    assert grid_points(config, "molorec_supervised", "cold") == ["lr0.05"]
    assert grid_variants(config) == [
        "merge_ties",
        "merge_cat",
        "molorec_selection",
        "molorec_supervised",
    ]


def test_every_grid_variant_runs_and_is_chosen_on_the_selection_set(grid_run):
    workdir, config = grid_run
    results = workdir / "results"
    for scenario in ("warm", "cold"):
        for variant in grid_variants(config):
            folder = results / "eval/beauty" / scenario / variant
            selection = json.loads((folder / "selection.json").read_text())
            points = grid_points(config, variant, scenario)
            assert selection["selected"] in points
            assert set(selection["val_scores"]) == set(points)
            # Every point ran on the selection set; only the chosen one on test.
            ran = sorted(p.name for p in (folder / "val").iterdir() if p.is_dir())
            assert ran == sorted(points)
            assert "optimistic" not in selection and not (folder / "test").exists()
            metrics = json.loads((folder / "metrics.json").read_text())
            main = json.loads(
                (results / f"eval/beauty/{scenario}/test/domain/metrics.json").read_text()
            )
            assert metrics["n"] == main["n"] > 0  # the same test examples as every variant
    # Each merged point is a PEFT adapter with its merge recorded beside it.
    info = json.loads((results / "merges/beauty/ties/w1_1_d0.5/merge_info.json").read_text())
    assert info["method"] == "ties" and info["weights"] == [1, 1] and info["density"] == 0.5
    assert (results / "merges/beauty/ties/w1_1_d0.5/adapter/adapter_config.json").is_file()


def test_the_controls_change_only_where_the_mixture_adapts_and_on_what(grid_run):
    results = grid_run[0] / "results"
    main = json.loads((results / "fusion/beauty/warm/lr2/fusion_info.json").read_text())
    selection = json.loads(
        (results / "fusion/beauty/molorec_selection/warm/lr2/fusion_info.json").read_text()
    )
    supervised = json.loads(
        (results / "fusion/beauty/molorec_supervised/warm/lr2/fusion_info.json").read_text()
    )
    assert (main["adapt_on"], main["objective"], main["labels_read"]) == ("test", "entropy", False)
    assert (selection["adapt_on"], selection["objective"]) == ("val", "entropy")
    assert not selection["labels_read"]
    assert (supervised["adapt_on"], supervised["objective"]) == ("val", "answer_nll")
    assert supervised["labels_read"] and supervised["optimizer_steps"] > 0
    # Everything else is molorec's: the same settings but the two the controls change.
    for control in (selection, supervised):
        changed = {k for k in main["settings"] if main["settings"][k] != control["settings"][k]}
        assert changed <= {"adapt_on", "objective"}
    # The mixture statistics of every learned mixture are in the report.
    runs = pl.read_csv(results / "report/fusion_runs.csv")
    assert set(runs["variant"]) == {"molorec", "molorec_selection", "molorec_supervised"}
    assert {"weight_entropy", "collapsed_share", "general_weight_q_proj"} <= set(runs.columns)


def ranks_of(path) -> dict[str, np.ndarray]:
    preds = pl.read_parquet(path)
    return per_example(
        [target_rank(r, t) for r, t in preds.select("ranking", "target").iter_rows()]
    )


def test_does_mixing_help_recomputes_from_the_predictions(grid_run):
    workdir, config = grid_run
    results = workdir / "results"
    mixing = pl.read_csv(results / "report/mixing.csv")
    summary = (results / "report/summary.md").read_text()
    assert "## Does mixing help?" in summary
    for (scenario,), rows in mixing.group_by(["scenario"]):
        assert f"### beauty / {scenario}" in summary
        assert set(rows["against"]) == {a for a in MIXING_AGAINST}
        ours = ranks_of(results / f"eval/beauty/{scenario}/molorec/predictions.parquet")
        for row in rows.iter_rows(named=True):
            other = row["variant"]
            folder = "test/" + other if other in ("domain", "general", "uniform") else other
            theirs = ranks_of(results / f"eval/beauty/{scenario}/{folder}/predictions.parquet")
            for metric in ("HR@1", "NDCG@3"):
                diff = float(np.mean(ours[metric] - theirs[metric]))
                assert row[f"{metric} diff"] == pytest.approx(diff)
                assert row[f"{metric} lo"] <= diff <= row[f"{metric} hi"]
        # The best merge is the merge whose chosen point scored best on validation.
        best = rows.filter(pl.col("against") == "best merge")["variant"].item()
        scores = {
            m: json.loads((results / f"eval/beauty/{scenario}/{m}/selection.json").read_text())[
                "selection_score"
            ]
            for m in ("merge_ties", "merge_cat")
        }
        assert scores[best] == max(scores.values())
        # It is called validation's choice only where its grid's points and the merges did
        # not tie there (the sample's cold selection set is 1 example).
        sel = json.loads((results / f"eval/beauty/{scenario}/{best}/selection.json").read_text())
        tie = not sel["decided"] or list(scores.values()).count(scores[best]) > 1
        said = rows.filter(pl.col("against") == "best merge")["chosen on validation"].item()
        assert said == (not tie)
        assert mixing_verdict(rows, 0.05) in summary


def test_selection_reads_validation_only():
    val = {"lr0.5": {"n": 10, "HR@1": 0.6, "HR@3": 0.8, "NDCG@3": 0.7}}
    val["lr2"] = {"n": 10, "HR@1": 0.2, "HR@3": 0.5, "NDCG@3": 0.3}
    test = {k: dict(v) for k, v in val.items()}
    upside_down = {"lr0.5": test["lr2"], "lr2": test["lr0.5"]}
    assert select_point(val, test)["selected"] == select_point(val, upside_down)["selected"]
    assert select_point(val, upside_down)["optimistic"] == "lr2"
    points = {"w0.5_0.5": val["lr2"], "w1_1": val["lr0.5"]}
    assert select_setting(points, None)["selected"] == "w1_1"
    assert "optimistic" not in select_setting(points, None)


def test_a_tie_on_the_selection_set_is_not_a_choice():
    """The cold selection set of the sample has 1 example on which every merge point scored
    0: the first point is taken, and the selection says it was not chosen on validation."""
    zero = {"n": 1, "HR@1": 0.0, "HR@3": 0.0, "NDCG@3": 0.0}
    points = {p: dict(zero) for p in ("w0.25_0.75", "w0.5_0.5", "w0.75_0.25", "w1_1")}
    tie = select_setting(points, None)
    assert tie["selected"] == "w0.25_0.75" and tie["decided"] is False
    assert "4 of the grid's 4 settings tie" in tie["criterion"]
    # One point ahead on the same single example: a choice, if a thin one.
    ahead = points | {"w0.5_0.5": {"n": 1, "HR@1": 1.0, "HR@3": 1.0, "NDCG@3": 1.0}}
    assert select_setting(ahead, None)["selected"] == "w0.5_0.5"
    assert select_setting(ahead, None)["decided"] is True
    # A tie below the top does not matter.
    assert select_setting(ahead | {"w1_1": dict(zero)}, None)["decided"] is True
    # No example, or a grid of one setting: nothing was chosen either.
    assert select_setting({p: v | {"n": 0} for p, v in ahead.items()}, None)["decided"] is False
    assert select_setting({"w1_1": ahead["w0.5_0.5"]}, None)["decided"] is False
    # molorec's lrs: its selection.json (lr scores, the folder as "selected") reads the same.
    lrs = {"lr0.5": ahead["w0.5_0.5"], "lr2": ahead["w0.5_0.5"]}
    tied_lrs = select_point(lrs, lrs)
    assert tied_lrs["selected_lr"] == "0.5" and tied_lrs["decided"] is decided(tied_lrs) is False
    apart = select_point(lrs | {"lr2": zero}, lrs | {"lr2": zero})
    assert apart["decided"] is decided(apart) is True
    assert (
        "smallest lr among them"
        in select_lr({"0.5": lrs["lr0.5"], "2": lrs["lr2"]}, {"0.5": zero, "2": zero})["criterion"]
    )


def test_the_best_merge_is_validation_s_choice_only_where_validation_decided():
    def merge(variant, score, decided_=True):
        return {
            "domain": "beauty",
            "scenario": "cold",
            "variant": variant,
            "selection_score": score,
            "selection_decided": decided_,
        }

    def best(*rows):
        return best_merges(pl.DataFrame(list(rows)))[("beauty", "cold")]

    assert best(merge("merge_cat", 0.5), merge("merge_ties", 1.0)) == ("merge_ties", True)
    # Its own grid tied, or another merge scored the same: not chosen on validation.
    assert best(merge("merge_cat", 0.5), merge("merge_ties", 1.0, False)) == ("merge_ties", False)
    assert best(merge("merge_cat", 1.0), merge("merge_ties", 1.0)) == ("merge_cat", False)
    rows = mixing_rows({"domain": (0.0, 0.9, 0.2), "best merge": (-0.1, 0.5, 0.2)}, n=32)
    tied = rows.with_columns(
        pl.lit("merge_cat").alias("variant"),
        pl.lit(1).alias("selection_examples"),
        pl.lit(False).alias("chosen on validation"),
    )
    line = mixing_verdict(tied, 0.05)
    assert "chosen on validation" not in line, line
    assert "**merge_cat**; not a validation choice" in line and "(n = 1)" in line
    line = mixing_verdict(tied.with_columns(pl.lit(True).alias("chosen on validation")), 0.05)
    assert "the best merge chosen on validation (**merge_cat**, on 1 selection example)" in line


def test_a_grid_selection_is_given_no_test_file(grid_run):
    workdir, config = grid_run
    out = run_workflow(
        workdir, config, "--dry-run", "--forcerun", "select_grid", "--printshellcmds"
    ).stdout
    jobs = [block for block in out.split("rule select_grid:")[1:]]
    assert jobs, out[-3000:]
    for block in jobs:
        inputs = block.split("input:", 1)[1].split("\n", 1)[0]
        assert inputs.strip().endswith("/val") and "test" not in inputs


def test_adding_a_merge_method_plans_only_its_jobs(grid_run):
    workdir, config = grid_run
    grown = copy.deepcopy(config)
    grown["merges"]["methods"].append("dare_linear")
    assert_plans_only(planned_jobs(workdir, grown), in_replicates(MERGE_JOBS), "dare_linear")


def test_adding_a_control_to_a_finished_run_plans_only_its_jobs(one_target_run):
    workdir, config = one_target_run[0], one_target_run[1]
    grown = copy.deepcopy(config)
    grown["controls"] = ["molorec_selection"]
    assert_plans_only(planned_jobs(workdir, grown), CONTROL_JOBS, "molorec_selection")


def test_changing_a_merge_s_weights_reruns_the_merges_not_molorec(grid_run):
    workdir, config = grid_run
    changed = copy.deepcopy(config)
    changed["merges"]["weights"] = [[0.5, 0.5], [0.75, 0.25]]
    assert rules_of(planned_jobs(workdir, changed)) == in_replicates(MERGE_JOBS)


def mixing_rows(diffs: dict[str, tuple[float, float, float]], n: int = 40) -> pl.DataFrame:
    """mixing.csv rows: against -> (diff, p_adj, mde) for both metrics."""
    return pl.DataFrame(
        [
            {"against": a, "variant": a, "n": n}
            | {
                f"{m} {k}": v
                for m in ("HR@1", "NDCG@3")
                for k, v in zip(("diff", "p_adj", "mde"), d, strict=True)
            }
            for a, d in diffs.items()
        ]
    )


def test_the_verdict_says_what_the_tests_show():
    better = mixing_rows({"domain": (0.2, 0.01, 0.1), "general": (0.3, 0.001, 0.1)})
    assert mixing_verdict(better, 0.05).startswith("Mixing helps here")
    worse = mixing_rows({"domain": (-0.2, 0.01, 0.1), "general": (0.3, 0.001, 0.1)})
    assert mixing_verdict(worse, 0.05).startswith(
        "Mixing does not help here: molorec is worse than **domain**"
    )
    unclear = mixing_rows({"domain": (0.05, 0.4, 0.21), "general": (0.3, 0.001, 0.1)})
    line = mixing_verdict(unclear, 0.05)
    assert line.startswith("Not shown at this size") and "n = 40" in line and "0.21" in line
    content = mixing_rows(
        {"domain": (0.05, 0.4, 0.2), "general": (0.1, 0.3, 0.2), "content": (-0.3, 0.001, 0.1)}
    )
    assert "The content (title-overlap) baseline is better than molorec." in mixing_verdict(
        content, 0.05
    )


# --- replicates ---------------------------------------------------------------------------


def test_replicates_differ_only_in_their_seeds(grid_run):
    workdir, config = grid_run
    from molorec.config import check_config

    full = check_config(copy.deepcopy(config), base_dir=workdir)
    for kind in ("general", "domain"):
        first, second = train_settings(full, kind, 0), train_settings(full, kind, 1)
        assert {k for k in first if first[k] != second[k]} == {"seed"}
        assert second["seed"] == first["seed"] + 1
    for control in (None, "molorec_supervised"):
        first = fusion_settings(full, "beauty", "warm", control, 0)
        second = fusion_settings(full, "beauty", "warm", control, 1)
        assert {k for k in first if first[k] != second[k]} == {"seed"}
    results = workdir / "results"
    other = workdir / replicate_root(1)
    # Other adapters, of the same shape, trained on the same rows.
    for adapter in ("general", "beauty"):
        ours, theirs = results / "adapters" / adapter, other / "adapters" / adapter
        config_file = "adapter_config.json"
        assert (ours / config_file).read_bytes() == (theirs / config_file).read_bytes()
        weights = "adapter_model.safetensors"
        assert (ours / weights).read_bytes() != (theirs / weights).read_bytes()
    # The same examples and candidates: the data stage and the baselines are not repeated,
    # nor the base model's evaluation, which no seed changes.
    assert not (other / "data").exists() and not (other / "eval/beauty/warm/pop").exists()
    assert (results / "eval/beauty/warm/test/base/predictions.parquet").is_file()
    assert not (other / "eval/beauty/warm/test/base").exists()
    assert (other / "eval/beauty/warm/test/general/predictions.parquet").is_file()
    for variant in ("test/domain", "molorec", "merge_cat", "molorec_selection"):
        a = pl.read_parquet(results / f"eval/beauty/warm/{variant}/predictions.parquet")
        b = pl.read_parquet(other / f"eval/beauty/warm/{variant}/predictions.parquet")
        assert a["user"].to_list() == b["user"].to_list()
        assert a["target"].to_list() == b["target"].to_list()
        assert sorted(map(sorted, a["ranking"].to_list())) == sorted(
            map(sorted, b["ranking"].to_list())
        )


def test_the_report_pools_replicates_and_shows_their_spread(grid_run):
    workdir, _ = grid_run
    results = workdir / "results"
    spread = pl.read_csv(results / "report/replicates.csv")
    counts = dict(zip(spread["variant"], spread["replicates"], strict=False))
    assert counts["molorec"] == counts["merge_ties"] == counts["domain"] == 2
    assert counts["pop"] == counts["content"] == 1  # the same in every replicate
    assert counts["base"] == 1 and counts["general"] == 2
    # molorec against domain: each example's value is its mean over the two replicates.
    tests = pl.read_csv(results / "report/paired_tests.csv").filter(
        pl.col("variant") == "molorec", pl.col("against") == "domain", pl.col("scenario") == "warm"
    )
    diffs = []
    for root in (results, workdir / replicate_root(1)):
        ours = ranks_of(root / "eval/beauty/warm/molorec/predictions.parquet")["HR@1"]
        theirs = ranks_of(root / "eval/beauty/warm/test/domain/predictions.parquet")["HR@1"]
        diffs.append(ours - theirs)
    hr1 = tests.filter(pl.col("metric") == "HR@1").row(0, named=True)
    assert hr1["diff"] == pytest.approx(float(np.mean(diffs)))
    assert hr1["n"] == len(diffs[0])  # examples, not replicates x examples
    summary = (results / "report/summary.md").read_text()
    assert "## Replicates" in summary


def test_adding_a_replicate_plans_only_its_jobs(grid_run):
    workdir, config = grid_run
    grown = copy.deepcopy(config)
    grown["replicates"] = 3
    jobs = planned_jobs(workdir, grown)
    others = {(rule, w) for rule, w in jobs if "replicate=2" not in w.split(", ")}
    assert others == {("report", ""), ("all", "")}
    assert {rule for rule, _ in jobs} - {"report", "all"} == {
        "train_general_adapter_replicate",
        "train_domain_adapter_replicate",
        "fuse_adapters_replicate",
        "uniform_adapter_replicate",
        "merge_adapters_replicate",
        "fuse_control_replicate",
        "evaluate_llm_replicate",
        "select_molorec_replicate",
        "evaluate_grid_replicate",
        "select_grid_replicate",
        "evaluate_selected_replicate",
    }


def test_replicates_that_share_the_general_adapter_train_it_once(grid_run):
    """replicates_share_general: a new replicate trains its domain adapter only, mixes
    replicate 0's general adapter, and evaluates neither it nor the base model again."""
    workdir, config = grid_run
    shared = copy.deepcopy(config) | {"replicates": 3, "replicates_share_general": True}
    jobs = planned_inputs(workdir, shared)
    third = {k: v for k, v in jobs.items() if "replicate=2" in k[1].split(", ")}
    assert {rule for rule, _ in third} >= {
        "train_domain_adapter_replicate",
        "fuse_adapters_replicate",
    }
    assert "train_general_adapter_replicate" not in {rule for rule, _ in jobs}
    general, own = "results/adapters/general", f"{replicate_root(2)}/adapters/general"
    for (rule, _), inputs in third.items():
        assert not any(own in path for path in inputs), rule
        if rule in ("fuse_adapters_replicate", "uniform_adapter_replicate"):
            assert general in inputs, (rule, inputs)
        if rule == "evaluate_llm_replicate":  # the general variant is replicate 0's
            assert general not in inputs, inputs
