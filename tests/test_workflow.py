"""The sample pipeline through Snakemake: data contracts, determinism, adapters."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from pathlib import Path

import polars as pl
import pytest
import yaml
from conftest import run_workflow, sample_config
from PIL import Image

from molorec.config import check_config
from molorec.plan import eval_dir, variant_dir

TARGETS = ["results/data/general/instructions.parquet"]


def data_targets(config: dict) -> list[str]:
    return [f"results/data/{d}/instructions.parquet" for d in config["domains"]] + TARGETS


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    """The whole default target (`snakemake --cores 2`) on the bundled sample."""
    config = sample_config()
    workdir = tmp_path_factory.mktemp("sample_run")
    proc = run_workflow(workdir, config)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return workdir, config


def test_quality_accounts_for_every_record(sample_run):
    workdir, config = sample_run
    for domain in config["domains"]:
        q = json.loads((workdir / f"results/data/{domain}/quality.json").read_text())
        for section in ("reviews", "meta"):
            s = q[section]
            assert s["records"] == s["kept"] + sum(s["dropped"].values()), (domain, section)
            assert s["truncated"] is False
        assert q["reviews"]["kept"] == q["interactions"]
        inter = pl.read_parquet(workdir / f"results/data/{domain}/interactions.parquet")
        assert inter.height == q["interactions"]
        assert inter.schema == pl.Schema({"user": pl.String, "item": pl.String, "ts": pl.Int64})


def test_examples_contract(sample_run):
    workdir, config = sample_run
    for domain, spec in config["domains"].items():
        base = workdir / f"results/data/{domain}"
        ex = pl.read_parquet(base / "examples.parquet")
        items = pl.read_parquet(base / "items.parquet")
        inter = pl.read_parquet(base / "interactions.parquet")
        columns = {"user", "split", "target", "candidates", "cold", "held_out", "selection"}
        assert set(ex.columns) >= columns
        assert ex["candidates"].list.len().unique().to_list() == [config["data"]["n_candidates"]]
        assert set(ex["target"]) <= set(items["item"])
        users = inter["user"].n_unique()
        splits = ex.group_by("split").len()
        n = dict(splits.rows())
        assert n["val"] == users
        if spec["role"] == "target":
            assert n["test"] == users and n.get("train", 0) > 0
            assert ex.filter(pl.col("split") == "train")["cold"].sum() == 0
        else:
            assert set(n) == {"val"}


def test_instructions_load_with_datasets(sample_run):
    import datasets

    workdir, config = sample_run
    path = workdir / "results/data/courses/instructions.parquet"
    ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
    messages = ds[0]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert "course enrollment history" in messages[1]["content"]
    # Chinese course names survive end to end.
    assert any("\u4e00" <= ch <= "\u9fff" for ch in messages[1]["content"])


def test_general_set_pools_the_general_domains_only(sample_run):
    workdir, config = sample_run
    pooled = pl.read_parquet(workdir / "results/data/general/instructions.parquet")
    general = sorted(d for d, s in config["domains"].items() if s["role"] == "general")
    assert sorted(pooled["domain"].unique()) == general
    assert pooled["split"].unique().to_list() == ["val"]
    assert not pooled["held_out"].any()  # the selection users' examples stay out
    sets = [pl.read_parquet(workdir / f"results/data/{d}/instructions.parquet") for d in general]
    assert pooled.height == sum(s.filter(~pl.col("held_out")).height for s in sets)
    assert sum(s["held_out"].sum() for s in sets) > 0


def test_no_selection_example_reaches_an_adapter(sample_run):
    """The selection set (held-out validation examples) against every adapter's training
    rows: the pooled general set and each domain's rows (molorec.train.training_rows)."""
    from molorec.train import training_rows

    workdir, config = sample_run
    data = workdir / "results/data"
    trained = [pl.read_parquet(data / "general/instructions.parquet")]
    targets = [d for d, s in config["domains"].items() if s["role"] == "target"]
    trained += [training_rows(pl.read_parquet(data / f"{d}/instructions.parquet")) for d in targets]
    trained_pairs = set(pl.concat(trained).select("user", "target").iter_rows())
    for domain in targets:
        examples = pl.read_parquet(data / f"{domain}/examples.parquet")
        selection = examples.filter(pl.col("selection"))
        summary = json.loads((data / f"{domain}/examples.json").read_text())
        assert selection.height == summary["selection_examples"]
        assert selection.filter(~pl.col("cold")).height > 0  # warm selection examples exist
        assert not set(selection.select("user", "target").iter_rows()) & trained_pairs


def digest_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix in {".parquet", ".json"}
    }


def test_two_runs_give_byte_identical_outputs(sample_run, tmp_path):
    workdir, config = sample_run
    proc = run_workflow(tmp_path, config, *data_targets(config))
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = digest_tree(workdir / "results/data")
    assert first and first == digest_tree(tmp_path / "results/data")


def test_adapters_are_peft_folders_that_load(sample_run):
    from peft import PeftConfig, PeftModel

    from molorec.model import load_base

    workdir, config = sample_run
    base, tokenizer = load_base(str(workdir / "results/models/tiny-qwen2"))
    targets = [d for d, s in config["domains"].items() if s["role"] == "target"]
    for name in ["general", *targets]:
        folder = workdir / "results/adapters" / name
        for f in ("adapter_model.safetensors", "adapter_config.json", "train_log.csv"):
            assert (folder / f).is_file(), (name, f)
        assert (folder / "tokenizer.json").is_file()
        peft_config = PeftConfig.from_pretrained(folder)
        assert peft_config.r == config["train"].get("lora_r", 16)
        model = PeftModel.from_pretrained(base, folder)
        assert sum("lora_A" in n for n, _ in model.named_parameters()) > 0
        log = pl.read_csv(folder / "train_log.csv")
        assert log.columns == [
            "step",
            "epoch",
            "loss",
            "lr",
            "tokens_per_s",
            "peak_mem_mb",
            "tokens",
        ]
        assert log["loss"].tail(5).mean() < log["loss"].head(5).mean()
        base = model.unload()


def test_fusion_outputs_recompose_from_the_two_adapters(sample_run):
    from safetensors.torch import load_file

    workdir, config = sample_run
    lr_grid = config["fusion"]["lr_grid"]
    for domain, spec in config["domains"].items():
        if spec["role"] != "target":
            continue
        own = [
            load_file(workdir / f"results/adapters/{a}/adapter_model.safetensors")
            for a in ("general", domain)
        ]
        settings = [(s, f"lr{lr:g}") for s in ("warm", "cold") for lr in lr_grid[s]]
        for scenario, lr in [*settings, ("uniform", "")]:
            folder = workdir / "results/fusion" / domain / scenario / lr
            weights = json.loads((folder / "fusion_weights.json").read_text())
            merged = load_file(folder / "adapter/adapter_model.safetensors")
            assert {k.rsplit(".lora_", 1)[0] for k in own[0]} == set(weights)
            for stem, w in weights.items():
                if scenario == "uniform":
                    assert w == pytest.approx([0.5, 0.5])
                # alpha / r = 32 / 16 for both adapters (the default LoRA shape).
                delta = sum(
                    wi * 2.0 * o[f"{stem}.lora_B.weight"] @ o[f"{stem}.lora_A.weight"]
                    for wi, o in zip(w, own, strict=True)
                )
                got = merged[f"{stem}.lora_B.weight"] @ merged[f"{stem}.lora_A.weight"]
                assert (got - delta).abs().max() < 1e-5
            if scenario != "uniform":
                assert (folder / "trajectory.csv").read_text().startswith("step,loss")


def test_every_variant_is_evaluated_on_the_same_examples(sample_run):
    from molorec.metrics import METRICS, per_example, target_rank

    workdir, config = sample_run
    variants = ["base", "general", "domain", "uniform", "molorec"]
    variants += config.get("evaluate", {}).get("baselines", ["random", "pop", "markov", "sasrec"])
    for domain, spec in config["domains"].items():
        if spec["role"] != "target":
            continue
        for scenario in ("warm", "cold"):
            seen = None
            for variant in variants:
                folder = workdir / variant_dir(domain, scenario, variant)
                preds = pl.read_parquet(folder / "predictions.parquet")
                assert preds.columns == [
                    "user",
                    "target",
                    "ranking",
                    "output",
                    "n_invalid",
                    "n_duplicate",
                ]
                keys = preds.select("user", "target").rows()
                assert seen is None or keys == seen, (domain, scenario, variant)
                seen = keys
                metrics = json.loads((folder / "metrics.json").read_text())
                values = per_example(
                    [target_rank(r, t) for r, t in preds.select("ranking", "target").iter_rows()]
                )
                for name in METRICS:
                    assert metrics[name] == pytest.approx(float(values[name].mean()))
                    lo, hi = metrics[f"{name}_ci95"]
                    assert lo <= metrics[name] <= hi
                assert metrics["n"] == preds.height > 0
            # The pipeline carries select_lr's choice through (its behaviour is
            # test_select_lr_chooses_on_the_selection_set_never_on_test): molorec is the chosen
            # lr's test evaluation, and every lr of the grid was a candidate.
            molorec = workdir / variant_dir(domain, scenario, "molorec")
            selection = json.loads((molorec / "selection.json").read_text())
            tested = workdir / eval_dir(domain, scenario, "test")
            assert set(selection["val_scores"]) == {p.name[2:] for p in tested.glob("lr*")}
            chosen = f"lr{selection['selected_lr']}"
            assert (molorec / "predictions.parquet").read_bytes() == (
                tested / chosen / "predictions.parquet"
            ).read_bytes()
            val = json.loads(
                (workdir / eval_dir(domain, scenario, "val") / chosen / "metrics.json").read_text()
            )
            assert selection["selection_examples"] == val["n"]


def test_select_lr_chooses_on_the_selection_set_never_on_test():
    """Hand-made metrics where the selection set and the test disagree: the choice is the
    selection set's, the test's best is only reported, labelled optimistic."""
    from molorec.evaluate import select_lr

    def metrics(hr1, hr3, ndcg3, n=10):
        return {"HR@1": hr1, "HR@3": hr3, "NDCG@3": ndcg3, "n": n}

    val = {
        "0.5": metrics(0.1, 0.2, 0.15),
        "2": metrics(0.3, 0.4, 0.35),
        "10": metrics(0.2, 0.3, 0.25),
    }
    test = {
        "0.5": metrics(0.4, 0.6, 0.5),
        "2": metrics(0.05, 0.1, 0.08),
        "10": metrics(0.2, 0.3, 0.25),
    }
    chosen = select_lr(val, test)
    assert chosen["selected_lr"] == "2" and chosen["optimistic_lr"] == "0.5"
    # The figures reported for the choice are its test figures, not its selection-set ones.
    assert chosen["selected_test"] == {"HR@1": 0.05, "HR@3": 0.1, "NDCG@3": 0.08}
    assert chosen["optimistic_test"] == {"HR@1": 0.4, "HR@3": 0.6, "NDCG@3": 0.5}
    assert chosen["optimism_gap"] == pytest.approx(1.5 - 0.23)
    assert chosen["selection_examples"] == 10
    # Test labels never move the choice: give each lr another lr's test metrics.
    shuffled = dict(zip(test, [test["2"], test["10"], test["0.5"]], strict=True))
    again = select_lr(val, shuffled)
    assert again["selected_lr"] == "2" and again["optimistic_lr"] == "10"
    # A tie on the selection set goes to the smaller lr, whatever the order of the keys
    # (the labels "10" < "2" as strings).
    tied = val | {"10": val["2"]}
    for order in (["0.5", "2", "10"], ["10", "2", "0.5"]):
        assert select_lr({lr: tied[lr] for lr in order}, test)["selected_lr"] == "2"


def test_report(sample_run):
    workdir, _ = sample_run
    report = workdir / "results/report"
    table = pl.read_csv(report / "metrics.csv")
    assert {"domain", "scenario", "variant", "HR@1", "HR@1_lo", "HR@1_hi"} <= set(table.columns)
    assert "optimistic_HR@1" in table.columns and "optimism_gap" in table.columns
    summary = (report / "summary.md").read_text()
    for heading in (
        "## Metrics",
        "## Learning-rate selection",
        "## Did it learn? Paired bootstrap tests",
        "## Fusion runs",
        "## Data quality",
        "## Cost per stage",
    ):
        assert heading in summary
    plots = {p.name for p in (report / "plots").iterdir()}
    assert {"training_loss.png", "fusion_trajectories.png", "fusion_weight_entropy.png"} <= plots
    # Every fusion run is accounted for, with its scored tokens and collapse share.
    runs = pl.read_csv(report / "fusion_runs.csv")
    assert runs.height == len(list((workdir / "results/fusion").glob("*/*/lr*")))
    assert {"scored_tokens", "collapsed_share", "flag"} <= set(runs.columns)
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config = check_config(config, base_dir=workdir)  # the defaults, baselines among them
    targets = [d for d, spec in config["domains"].items() if spec["role"] == "target"]
    variants = ["base", "general", "domain", "uniform", "molorec", *config["evaluate"]["baselines"]]
    assert set(table["variant"]) == set(variants)
    # Each plot shows what it should: the panels it was drawn with, from the PNG's text.
    panels = {
        p.name: json.loads(Image.open(p).text["Description"])
        for p in (report / "plots").glob("*.png")
    }
    assert set(panels["training_loss.png"]["series"]) == {"general", *targets}
    # a series per fusion run: domain/scenario/variant/lr (molorec's, without controls here)
    fusion_runs = {
        f"{p.parts[-3]}/{p.parts[-2]}/molorec/{p.name}"
        for p in (workdir / "results/fusion").glob("*/*/lr*")
    }
    for name in ("fusion_trajectories.png", "fusion_weight_entropy.png"):
        assert set(panels[name]["series"]) == fusion_runs
    for domain in targets:
        for scenario in ("warm", "cold"):
            heatmap = panels[f"weights_{domain}_{scenario}.png"]
            assert heatmap["modules"] and len(heatmap["layers"]) == 2  # tiny-qwen2's 2 blocks
    proc = run_workflow(workdir, config, "--report", "report.html")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The HTML embeds the result files (base64): the metrics table names every domain,
    # scenario and variant, and so does the summary.
    embedded = {
        m[1]: base64.b64decode(m[2]).decode()
        for m in re.finditer(
            r"data:text/[a-z]+;charset=utf8;filename=([\w.]+);base64,([A-Za-z0-9+/=]+)",
            (workdir / "report.html").read_text(),
        )
    }
    rows = pl.read_csv(io.StringIO(embedded["metrics.csv"]))
    assert set(rows.select("domain", "scenario", "variant").iter_rows()) == {
        (d, sc, v) for d in targets for sc in ("warm", "cold") for v in variants
    }
    assert all(f"| {v} |" in embedded["summary.md"] for v in variants)
