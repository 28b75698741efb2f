"""The report: metrics table with intervals, paired tests, plots and the run's cost.

Everything is read back from the files the stages wrote; nothing here recomputes a model.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import polars as pl

from molorec.evaluate import decided
from molorec.metrics import (
    HEADLINE,
    METRICS,
    adjust_pvalues,
    min_detectable_effect,
    paired_bootstrap,
    per_example,
    resamples_for,
    target_rank,
)
from molorec.plan import (
    CONTROLS,
    SELECTED,
    adapter_dir,
    control_dir,
    fused_dir,
    fusion_dir,
    is_merge,
    replicate_root,
    variant_dir,
)


def metrics_table(
    results: Path, domains: list[str], scenarios: list[str], variants: list[str]
) -> pl.DataFrame:
    """One row per (domain, scenario, variant): metrics, 95% intervals, and for molorec the
    validation-selected lr beside the optimistic, test-selected one."""
    rows = []
    for domain in domains:
        for scenario in scenarios:
            for variant in variants:
                folder = Path(variant_dir(domain, scenario, variant, root=results))
                m = json.loads((folder / "metrics.json").read_text())
                row = {
                    "domain": domain,
                    "scenario": scenario,
                    "variant": variant,
                    "n": m["n"],
                    "valid_ratio": m["valid_ratio"],
                }
                for name in METRICS:
                    row[name] = m[name]
                    row[f"{name}_lo"], row[f"{name}_hi"] = m[f"{name}_ci95"]
                if (folder / "selection.json").exists():
                    sel = json.loads((folder / "selection.json").read_text())
                    row["selected"] = sel["selected"]
                    row["selected_lr"] = sel.get("selected_lr")
                    row["selection_examples"] = sel["selection_examples"]
                    row["selection_score"] = sel["selection_score"]
                    # false where the selection set could not tell the points apart
                    row["selection_decided"] = decided(sel)
                    # only where every point ran on test too (molorec's lrs)
                    row["optimistic"] = sel.get("optimistic")
                    row["optimistic_lr"] = sel.get("optimistic_lr")
                    for k in HEADLINE:
                        row[f"optimistic_{k}"] = sel.get("optimistic_test", {}).get(k)
                    row["optimism_gap"] = sel.get("optimism_gap")
                rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None)


# Did the recommender learn (the domain adapter against the untuned model and chance), does
# the mixture beat its parts, and does an LLM variant beat the title-only baselines (content,
# brand) and the novelty shortcut (pairs whose variants did not run are skipped)?
PAIRS = (
    ("domain", "base"),
    ("domain", "random"),
    ("molorec", "general"),
    ("molorec", "domain"),
    ("molorec", "uniform"),
    ("domain", "content"),
    ("molorec", "content"),
    ("domain", "brand"),
    ("molorec", "brand"),
    ("domain", "novelty"),
    ("molorec", "novelty"),
)


def comparisons(
    results: Path, domains, scenarios, variants, pairs=PAIRS, replicates=(0,), shared=()
) -> list[dict]:
    """Each pair of variants on the same test examples, per domain, scenario and metric: the
    keys of a test and the two variants' per-example values (``a``, ``b``). With several
    replicates, a variant's value of an example is its mean over the replicates: the test
    pools replicates and examples and still resamples examples, the independent unit.
    ``shared``: the LLM variants evaluated in replicate 0 only (molorec.plan.shared_variants)."""
    out = []
    for domain in domains:
        for scenario in scenarios:
            for variant, other in pairs:
                if variant not in variants or other not in variants:
                    continue
                ours = replicate_mean(results, domain, scenario, variant, replicates, shared)
                theirs = replicate_mean(results, domain, scenario, other, replicates, shared)
                for metric in HEADLINE:
                    out.append(
                        {
                            "domain": domain,
                            "scenario": scenario,
                            "variant": variant,
                            "against": other,
                            "metric": metric,
                            "a": ours[metric],
                            "b": theirs[metric],
                        }
                    )
    return out


def family_tests(
    tests: list[dict], alpha: float, adjust: str, seed: int = 0, n_boot: int = 1000
) -> pl.DataFrame:
    """Paired bootstrap tests of one family (every comparison the report makes), with
    p-values adjusted over the whole family and the minimum detectable effect of each.

    m is the number of tests with examples; each draws molorec.metrics.resamples_for(m)
    resamples. ``p_adj`` is ``adjust`` (holm or bh) over all m; ``mde`` is the smallest
    difference its n detects with 80% power at the strictest adjusted level alpha / m (the
    level Holm's first step, and BH with a single rejection, require; conservative for
    the rest): (z_{1 - alpha/(2m)} + z_0.8) * sd(differences) / sqrt(n)."""
    m = sum(len(t["a"]) > 0 for t in tests)
    boot = resamples_for(max(m, 1), alpha, n_boot)
    rows = []
    for t in tests:
        r = paired_bootstrap(t["a"], t["b"], seed=seed, n_boot=boot)
        keys = {k: v for k, v in t.items() if k not in ("a", "b")}
        rows.append(
            keys
            | {
                "n": r["n"],
                "diff": r["diff"],
                "lo": r["ci95"][0],
                "hi": r["ci95"][1],
                "p": r["p"],
                "mde": min_detectable_effect(r["sd"], r["n"], alpha / max(m, 1)),
            }
        )
    schema = {
        **{k: pl.String for k in ("domain", "scenario", "variant", "against", "metric")},
        **{"n": pl.Int64, "diff": pl.Float64, "lo": pl.Float64, "hi": pl.Float64},
        **{"p": pl.Float64, "mde": pl.Float64},
    }
    table = pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)
    p_adj = adjust_pvalues(table["p"].to_numpy(), adjust) if rows else []
    return table.with_columns(
        p_adj=pl.Series(p_adj, dtype=pl.Float64), resamples=pl.lit(boot, pl.Int64)
    ).select(*[k for k in schema if k != "mde"], "p_adj", "mde", "resamples")


def paired_tests(
    results: Path,
    domains,
    scenarios,
    variants,
    alpha: float,
    adjust: str,
    pairs=PAIRS,
    seed: int = 0,
    n_boot: int = 1000,
    replicates=(0,),
    shared=(),
) -> pl.DataFrame:
    """Each pair of variants compared example by example on the same test examples (their
    means over the replicates), with p-values adjusted over all of them (family_tests)."""
    tests = comparisons(results, domains, scenarios, variants, pairs, replicates, shared)
    return family_tests(tests, alpha, adjust, seed, n_boot)


def pairs_for(variants) -> tuple[tuple[str, str], ...]:
    """PAIRS, and molorec against every grid variant (merges, controls) that ran."""
    grid = [v for v in variants if is_merge(v) or v in CONTROLS]
    return PAIRS + tuple((SELECTED, g) for g in grid)


# "Does mixing help?": molorec against its parts, the equal mixture, the best merge chosen
# on validation, the controls and the content baseline, in this order.
MIXING_AGAINST = ("domain", "general", "uniform", "best merge", *CONTROLS, "content")
SINGLE = ("domain", "general")  # the single adapters the mixture has to beat


def best_merges(metrics: pl.DataFrame) -> dict[tuple[str, str], tuple[str, bool]]:
    """(domain, scenario) -> the merge variant whose chosen point scored best on the
    selection set (validation only; ties go to the first in the table's order), and whether
    validation decided it: its own grid's choice was decided (select_setting) and no other
    merge tied its score."""
    best = {}
    merges = metrics.filter(pl.col("variant").map_elements(is_merge, return_dtype=pl.Boolean))
    for key, group in merges.group_by(["domain", "scenario"], maintain_order=True):
        rows = list(group.iter_rows(named=True))
        top = max(rows, key=lambda r: r["selection_score"])
        ties = [r for r in rows if math.isclose(r["selection_score"], top["selection_score"])]
        by_validation = bool(top.get("selection_decided")) and len(ties) == 1
        best[key] = (top["variant"], by_validation)
    return best


def mixing_table(
    tests: pl.DataFrame, metrics: pl.DataFrame, spread: pl.DataFrame | None = None
) -> pl.DataFrame:
    """One row per (domain, scenario, comparison) of molorec against MIXING_AGAINST: the
    paired tests' differences, intervals, adjusted p-values and mde of HR@1 and NDCG@3
    (paired_tests.csv's rows, the same family), which merge was the best, and from
    ``spread`` (replicate_table) the replicates and both variants' sd over them."""
    best = best_merges(metrics) if "selection_score" in metrics.columns else {}
    sd = {}
    if spread is not None:
        for r in spread.iter_rows(named=True):
            sd[(r["domain"], r["scenario"], r["variant"])] = r
    rows = []
    ours = tests.filter(pl.col("variant") == SELECTED)
    for (domain, scenario), group in ours.group_by(["domain", "scenario"], maintain_order=True):
        for against in MIXING_AGAINST:
            name, by_validation = against, None
            if against == "best merge":
                name, by_validation = best.get((domain, scenario), (None, None))
            found = group.filter(pl.col("against") == name) if name else group.clear()
            if found.is_empty():
                continue
            row = {"domain": domain, "scenario": scenario, "against": against, "variant": name}
            if by_validation is not None:
                # Whether "chosen on validation" holds: the verdict says so only if it does.
                chosen = metrics.filter(
                    (pl.col("domain") == domain)
                    & (pl.col("scenario") == scenario)
                    & (pl.col("variant") == name)
                )
                row["selection_examples"] = chosen["selection_examples"].item()
                row["chosen on validation"] = by_validation
            for metric in ("HR@1", "NDCG@3"):
                t = found.filter(pl.col("metric") == metric).row(0, named=True)
                row["n"] = t["n"]
                for k in ("diff", "lo", "hi", "p_adj", "mde"):
                    row[f"{metric} {k}"] = t[k]
            ours, theirs = sd.get((domain, scenario, SELECTED)), sd.get((domain, scenario, name))
            if ours and theirs:
                row["replicates"] = ours["replicates"]
                for metric in ("HR@1", "NDCG@3"):
                    row[f"{metric} sd molorec"] = ours[f"{metric} sd"]
                    row[f"{metric} sd other"] = theirs[f"{metric} sd"]
            rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None)


def mixing_verdict(rows: pl.DataFrame, alpha: float) -> str:
    """The plain sentence of one (domain, scenario): does molorec beat the single adapters,
    and the simple merges and the content heuristic?"""

    def sign(row) -> int:
        """+1 / -1 where HR@1 or NDCG@3 differs significantly (adjusted), 0 otherwise."""
        signs = {
            (1 if row[f"{m} diff"] > 0 else -1)
            for m in ("HR@1", "NDCG@3")
            if row[f"{m} p_adj"] < alpha
        }
        return 0 if len(signs) != 1 else signs.pop()

    by = {r["against"]: r for r in rows.iter_rows(named=True)}
    single = [by[a] for a in SINGLE if a in by]
    n = max((r["n"] for r in single), default=0)
    signs = [sign(r) for r in single]
    if not single or n == 0:
        return "No test examples: nothing to judge."
    names = " and ".join(f"**{r['against']}**" for r in single)
    if signs and all(s > 0 for s in signs):
        sentence = f"Mixing helps here: molorec is better than {names} (n = {n})."
    elif any(s < 0 for s in signs):
        worse = " and ".join(
            f"**{r['against']}**" for r, s in zip(single, signs, strict=True) if s < 0
        )
        sentence = f"Mixing does not help here: molorec is worse than {worse} (n = {n})."
    elif all(math.isnan(r[f"{m} mde"]) for r in single for m in ("HR@1", "NDCG@3")):
        sentence = (
            f"Not shown at this size: molorec ranks the target where {names} do on every one "
            f"of the n = {n} test examples, so there is no difference to test."
        )
    else:
        mdes = ", ".join(
            f"HR@1 {_mde(r['HR@1 mde'])} / NDCG@3 {_mde(r['NDCG@3 mde'])} against {r['against']}"
            for r in single
        )
        sentence = (
            f"Not shown at this size: molorec's difference from {names} is not significant at "
            f"n = {n} (smallest detectable effect {mdes})."
        )
    for against, what in (
        ("best merge", "the best merge chosen on validation"),
        ("content", "the content (title-overlap) baseline"),
    ):
        if against not in by:
            continue
        r = by[against]
        label = what
        if against == "best merge":
            label = _best_merge_label(r)
        s = sign(r)
        if s > 0:
            sentence += f" It is better than {label}."
        elif s < 0:
            sentence += f" {label[0].upper() + label[1:]} is better than molorec."
        else:
            sentence += f" Against {label} the difference is not significant at n = {r['n']}."
    return sentence


def _best_merge_label(row: dict) -> str:
    """The best merge, and on what its choice rests: validation only where the selection
    set told its points (and the merges) apart."""
    n = row.get("selection_examples")
    if row.get("chosen on validation") is False:
        return (
            f"the best merge (**{row['variant']}**; not a validation choice: its grid's "
            f"points, or the merges, tie on the selection set (n = {n}), so it is the first)"
        )
    on = f", on {n} selection example{'s' * (n != 1)}" if n is not None else ""
    return f"the best merge chosen on validation (**{row['variant']}**{on})"


def _mde(value: float) -> str:
    return "n/a (no example differs)" if math.isnan(value) else f"{value:.2f}"


def mixing_section(mixing: pl.DataFrame, alpha: float) -> list[str]:
    """summary.md's "Does mixing help?": per target domain and scenario, molorec's paired
    differences against MIXING_AGAINST and the verdict in one sentence."""
    parts = [
        "",
        "## Does mixing help?",
        "",
        "molorec against the single adapters (domain, general), the equal mixture (uniform), "
        "the merge that scored best on the selection set, the fusion controls and the content "
        "baseline, on the same test examples: differences (molorec minus the other) with 95% "
        "intervals, p-values adjusted over the report's whole family of paired tests, and the "
        "smallest effect each comparison could detect (mde).",
    ]
    if mixing.is_empty():
        return parts + ["", "No comparison ran (no molorec variant)."]
    for (domain, scenario), rows in mixing.group_by(["domain", "scenario"], maintain_order=True):
        shown = rows.select(
            "against",
            "variant",
            "n",
            *[
                pl.format(
                    "{} [{}, {}]",
                    pl.col(f"{m} diff").round(3),
                    pl.col(f"{m} lo").round(3),
                    pl.col(f"{m} hi").round(3),
                ).alias(f"{m} diff")
                for m in ("HR@1", "NDCG@3")
            ],
            pl.col("HR@1 p_adj").round(3),
            pl.col("NDCG@3 p_adj").round(3),
            pl.col("HR@1 mde").round(3),
            pl.col("NDCG@3 mde").round(3),
            *[
                pl.col(c).round(3)
                for c in ("HR@1 sd molorec", "HR@1 sd other")
                if c in rows.columns and rows["replicates"].max() > 1
            ],
        )
        parts += [
            "",
            f"### {domain} / {scenario}",
            "",
            mixing_verdict(rows, alpha),
            "",
            _markdown(shown),
        ]
    return parts


def replicate_section(spread: pl.DataFrame) -> list[str]:
    """summary.md's replicates: each variant's mean, sd, min and max over the replicates;
    nothing with one replicate."""
    if spread.is_empty() or spread["replicates"].max() < 2:
        return []
    shown = spread.select(
        "domain",
        "scenario",
        "variant",
        "replicates",
        *[
            pl.format(
                "{} ± {} [{}, {}]",
                *[pl.col(f"{m} {k}").round(3) for k in ("mean", "sd", "min", "max")],
            ).alias(m)
            for m in ("HR@1", "NDCG@3")
        ],
    )
    return [
        "",
        "## Replicates",
        "",
        "Each LLM variant trained, mixed and evaluated again with other seeds (replicates); "
        "the data, candidates and baselines are the same in every replicate, and so is a "
        "variant shown with 1 (the base model; the general adapter where the replicates "
        "share it: replicates_share_general), evaluated once. Mean ± sd "
        "[min, max] over the replicates; the paired tests above use each example's mean "
        "over them.",
        "",
        _markdown(shown),
    ]


ADJUSTED = {"holm": "Holm", "bh": "Benjamini-Hochberg"}


def verdicts(tests: pl.DataFrame, alpha: float) -> list[str]:
    """One sentence per compared pair and (domain, scenario): better, worse or not
    significant at the run's n, judged on the adjusted p-values of HR@1 and NDCG@3, each
    given with its raw and adjusted p-value and its minimum detectable effect."""
    lines = []
    if tests.is_empty():
        return lines
    keys = ["domain", "scenario", "variant", "against"]
    for key, group in tests.group_by(keys, maintain_order=True):
        domain, scenario, variant, other = key
        parts, signs = [], set()
        n = group["n"].max()
        if not n:
            lines.append(f"- {domain} / {scenario}: **{variant}** against **{other}**: no examples")
            continue
        for metric in ("HR@1", "NDCG@3"):
            row = group.filter(pl.col("metric") == metric).row(0, named=True)
            mde = "n/a, no example differs" if math.isnan(row["mde"]) else f"{row['mde']:.2f}"
            parts.append(
                f"{metric} {row['diff']:+.3f} (p = {row['p']:.3f}, adjusted {row['p_adj']:.3f};"
                f" mde {mde})"
            )
            signs.add(0 if not row["p_adj"] < alpha else (1 if row["diff"] > 0 else -1))
        head = f"- {domain} / {scenario}: **{variant}**"
        if signs == {0}:
            lines.append(
                f"{head} against **{other}**: not significant at n = {n}: " + "; ".join(parts)
            )
            continue
        if signs == {1}:
            word = "is better than"
        elif signs == {-1}:
            word = "is worse than"
        elif signs == {1, -1}:
            word = "is better on one metric and worse on the other than"
        elif 1 in signs:
            word = "is partly better than"
        else:
            word = "is partly worse than"
        lines.append(f"{head} {word} **{other}** (n = {n}): " + "; ".join(parts))
    return lines


def fusion_health(
    results: Path, domains: list[str], scenarios: list[str], variants=(SELECTED,)
) -> pl.DataFrame:
    """Per fusion run of every learned mixture (molorec and the fusion controls among
    ``variants``): scored tokens, whether the weights moved, the collapsed share of
    modules (general weight < 0.01 or > 0.99), the final mean general weight, overall and
    per layer type (q_proj, up_proj, ...), and the mean entropy of the weights (ln 2:
    equal); a run that learned nothing or collapsed is flagged."""
    from molorec.mixture_stats import collapsed_share, weight_entropy

    rows = []
    for domain, scenario, variant in _learned(domains, scenarios, variants):
        selected = None
        sel_file = Path(variant_dir(domain, scenario, variant, root=results)) / "selection.json"
        if sel_file.exists():
            selected = json.loads(sel_file.read_text())["selected"]
        for folder in _fused(results, domain, scenario, variant):
            weights = json.loads((folder / "fusion_weights.json").read_text())
            general = [w[0] for w in weights.values()]
            traj = pl.read_csv(folder / "trajectory.csv")
            scored = int(traj["scored_tokens"].sum()) if traj.height else 0
            # optimizer steps taken (a trajectory row is a backward; the last may be a
            # remainder that was never applied)
            steps = int(traj["optimizer_steps"].max()) if traj.height else 0
            share = collapsed_share(general)
            flags = []
            if steps == 0:
                flags.append("NO SIGNAL: weights never moved (= uniform)")
            if share > 0:
                flags.append(f"collapsed: {share:.0%} of modules at 0 or 1")
            rows.append(
                {
                    "domain": domain,
                    "scenario": scenario,
                    "variant": variant,
                    "lr": folder.name[2:],
                    "selected": folder.name == selected,
                    "optimizer_steps": steps,
                    "scored_tokens": scored,
                    "general_weight_mean": float(np.mean(general)),
                    **{
                        f"general_weight_{kind}": float(np.mean(values))
                        for kind, values in sorted(_by_layer_type(weights).items())
                    },
                    "weight_entropy": weight_entropy(list(weights.values())),
                    "collapsed_share": share,
                    "flag": "; ".join(flags),
                }
            )
    return pl.DataFrame(rows, infer_schema_length=None)


def _by_layer_type(weights: dict[str, list[float]]) -> dict[str, list[float]]:
    """The general adapter's weight of every wrapped layer, by the layer's type (the last
    part of its name: q_proj, up_proj, ...)."""
    kinds: dict[str, list[float]] = {}
    for stem, w in weights.items():
        kinds.setdefault(stem.rsplit(".", 1)[-1], []).append(w[0])
    return kinds


def is_replicated(variant: str, shared=()) -> bool:
    """An LLM variant is run again in every replicate; a baseline is the same in all, and
    so is a ``shared`` LLM variant (molorec.plan.shared_variants)."""
    from molorec.baselines import BASELINES

    return variant not in BASELINES and variant not in shared


def replicate_roots(results: Path, variant: str, replicates=(0,), shared=()) -> list[Path]:
    """The results roots of a variant's replicates (one for a baseline or shared variant)."""
    if not is_replicated(variant, shared):
        return [results]
    return [Path(replicate_root(r, root=str(results))) for r in replicates]


def replicate_mean(results: Path, domain, scenario, variant, replicates=(0,), shared=()) -> dict:
    """Per metric, a variant's per-example values averaged over its replicates."""
    runs = [
        _per_example(_variant(root, domain, scenario, variant))
        for root in replicate_roots(results, variant, replicates, shared)
    ]
    return {k: np.mean([run[k] for run in runs], axis=0) for k in runs[0]}


def replicate_table(
    results: Path, domains, scenarios, variants, replicates=(0,), shared=()
) -> pl.DataFrame:
    """Per (domain, scenario, variant): each headline metric's mean over the replicates,
    its standard deviation (ddof 1; null for one replicate), min and max."""
    rows = []
    for domain in domains:
        for scenario in scenarios:
            for variant in variants:
                roots = replicate_roots(results, variant, replicates, shared)
                values = [
                    json.loads(
                        (
                            Path(variant_dir(domain, scenario, variant, root=str(r)))
                            / "metrics.json"
                        ).read_text()
                    )
                    for r in roots
                ]
                row = {"domain": domain, "scenario": scenario, "variant": variant}
                row["replicates"] = len(values)
                for k in HEADLINE:
                    v = np.array([m[k] for m in values], dtype=float)
                    row |= {
                        f"{k} mean": float(v.mean()),
                        f"{k} sd": float(v.std(ddof=1)) if len(v) > 1 else None,
                        f"{k} min": float(v.min()),
                        f"{k} max": float(v.max()),
                    }
                rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None)


def _variant(results: Path, domain: str, scenario: str, variant: str) -> Path:
    return Path(variant_dir(domain, scenario, variant, root=results)) / "predictions.parquet"


def _fused(results: Path, domain: str, scenario: str, variant: str = SELECTED) -> list[Path]:
    """The fused settings' folders (lr<lr>/) of one fusion job of molorec or of a fusion
    control, in lr order of the name."""
    if variant == SELECTED:
        folder = fusion_dir(domain, scenario, root=results)
    else:
        folder = control_dir(domain, variant, scenario, root=results)
    return sorted(Path(folder).glob("lr*"))


def _learned(domains, scenarios, variants) -> list[tuple[str, str, str]]:
    """(domain, scenario, variant) of every learned mixture: molorec and the controls."""
    learned = [v for v in variants if v == SELECTED or v in CONTROLS]
    return [(d, sc, v) for d in domains for sc in scenarios for v in learned]


def _per_example(path: Path) -> dict[str, np.ndarray]:
    preds = pl.read_parquet(path)
    return per_example(
        [target_rank(r, t) for r, t in preds.select("ranking", "target").iter_rows()]
    )


def stage_tokens(
    results: Path, adapters, domains, scenarios, variants=(SELECTED,)
) -> dict[str, int]:
    """Tokens processed: training (all input tokens) and fusion (scored answer tokens of
    molorec and the fusion controls)."""
    logs = [pl.read_csv(Path(adapter_dir(a, root=results)) / "train_log.csv") for a in adapters]
    train = sum(int(log["tokens"].max() or 0) for log in logs if "tokens" in log.columns)
    fusion = sum(
        int(t["scored_tokens"].sum() or 0)
        for d, sc, v in _learned(domains, scenarios, variants)
        for folder in _fused(results, d, sc, v)
        if (t := pl.read_csv(folder / "trajectory.csv")).height
    )
    return {"train": train, "fusion": fusion}


def cost_table(
    results: Path,
    benchmarks: list[Path],
    adapters=(),
    domains=(),
    scenarios=(),
    variants=(SELECTED,),
) -> pl.DataFrame:
    """Wall seconds, peak memory and tokens per stage, from Snakemake's benchmark files
    (``benchmarks``, under results/benchmarks/<stage>/)."""
    rows = []
    root = results / "benchmarks"
    for tsv in sorted(Path(b) for b in benchmarks):
        with open(tsv) as fh:
            rec = next(csv.DictReader(fh, delimiter="\t"))
        stage = tsv.relative_to(root).parts[0]
        rows.append(
            {
                "stage": stage,
                "job": str(tsv.relative_to(root))[:-4],
                "seconds": float(rec["s"]),
                "max_rss_mb": _num(rec.get("max_rss")),
            }
        )
    if not rows:
        return pl.DataFrame(
            schema={
                "stage": pl.String,
                "jobs": pl.UInt32,
                "seconds": pl.Float64,
                "max_rss_mb": pl.Float64,
                "tokens": pl.Int64,
            }
        )
    tokens = stage_tokens(results, adapters, domains, scenarios, variants)
    return (
        pl.DataFrame(rows)
        .group_by("stage", maintain_order=True)
        .agg(jobs=pl.len(), seconds=pl.col("seconds").sum(), max_rss_mb=pl.col("max_rss_mb").max())
        .with_columns(
            tokens=pl.col("stage").replace_strict(tokens, default=None, return_dtype=pl.Int64)
        )
        .sort("stage")
    )


def _num(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _markdown(df: pl.DataFrame, digits: int = 4) -> str:
    cols = df.columns
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.iter_rows():
        cells = [
            f"{v:.{digits}f}" if isinstance(v, float) else ("" if v is None else str(v))
            for v in row
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def id_only_baselines(variants) -> list[str]:
    """The baselines among ``variants`` that the registry marks id_only (they score items
    by their training interactions alone)."""
    from molorec.baselines import BASELINES

    return [v for v in variants if getattr(BASELINES.get(v), "id_only", False)]


def cold_footnote(id_only, shown: set[str]) -> str:
    """Why the ID-only baselines' cold figures measure no skill."""
    names = ", ".join(n for n in id_only if n in shown)
    text = (
        f"*ID-only baselines ({names}) score 0 on cold targets by construction* wherever "
        "the negatives are trained items: they know an item only by its training "
        "interactions, and a cold item has none (no popularity, no transition, no "
        "embedding), so a cold target ranks below every trained candidate. Among negatives "
        "as unfamiliar as the target only their seeded tie-break orders it (chance). Their "
        "cold figures measure no recommendation skill."
    )
    if "content" in shown:
        text += " The content baseline (titles only) is the non-LLM reference there."
    if "novelty" in shown:
        text += (
            " novelty picks the candidates no trained row contains: a cold figure shows "
            "skill only above it."
        )
    return text


def statistics_note(tests: pl.DataFrame, alpha: float, adjust: str) -> str:
    """How the paired tests are made and read: the family, the adjustment, the MDE."""
    m = int(tests["p"].is_not_nan().sum()) if tests.height else 0
    boot = int(tests["resamples"].max()) if tests.height else 0
    method = ADJUSTED[adjust]
    control = "family-wise error rate" if adjust == "holm" else "false discovery rate"
    return (
        f"Two-sided paired bootstrap on the same test examples ({boot} resamples, "
        "p = (k + 1) / (resamples + 1)). The family is every comparison in this report: "
        f"m = {m} tests (pairs × HR@1, HR@3, NDCG@3 × domains × scenarios). p_adj is "
        f"{method}'s adjustment over all m ({control} {alpha}); a verdict counts a metric "
        f"as significant only when p_adj < {alpha}, and says *not significant at n = N* "
        "otherwise: no difference was shown, none was proven absent. mde is the smallest "
        "difference the run's n could detect with 80% power at the strictest adjusted "
        f"level α/m = {alpha / max(m, 1):.2g}: MDE = (z_(1−α/(2m)) + z_0.8) · sd(d) / √n, d the "
        "per-example differences (for HR@k, sd(d)² is the discordant-pair rate minus the "
        "squared mean difference); nan where no example differs. A difference smaller "
        "than its mde was not testable at this n."
    )


def summary_markdown(
    metrics: pl.DataFrame,
    tests: pl.DataFrame,
    cost: pl.DataFrame,
    quality: dict[str, dict],
    health: pl.DataFrame | None = None,
    *,
    alpha: float,
    adjust: str,
    id_only: list[str] | tuple[str, ...] = (),
    checks: list[str] | tuple[str, ...] = (),
    mixing: list[str] | tuple[str, ...] = (),
    replicates: list[str] | tuple[str, ...] = (),
) -> str:
    """summary.md. ``id_only``: the baselines that know items only by their training
    interactions (molorec.baselines, id_only), named under the cold table."""
    shown = metrics.select(
        "domain",
        "scenario",
        "variant",
        "n",
        *[
            pl.format(
                "{} [{}, {}]",
                pl.col(m).round(4),
                pl.col(f"{m}_lo").round(4),
                pl.col(f"{m}_hi").round(4),
            ).alias(m)
            for m in HEADLINE
        ],
        "valid_ratio",
    )
    parts = ["# molorec report", "", "## Metrics (test; 95% bootstrap intervals)"]
    for scenario in shown["scenario"].unique(maintain_order=True):
        parts += [
            "",
            f"### {scenario}",
            "",
            _markdown(shown.filter(pl.col("scenario") == scenario)),
        ]
        if scenario == "cold" and id_only:
            parts += ["", cold_footnote(id_only, set(shown["variant"]))]
    if "selected_lr" in metrics.columns:
        sel = metrics.filter(pl.col("variant") == "molorec").select(
            "domain",
            "scenario",
            "selection_examples",
            "selection_decided",
            "selected_lr",
            "HR@1",
            "HR@3",
            "NDCG@3",
            "optimistic_lr",
            "optimistic_HR@1",
            "optimistic_HR@3",
            "optimistic_NDCG@3",
            "optimism_gap",
        )
        parts += [
            "",
            "## Learning-rate selection",
            "",
            "molorec uses the lr chosen on the selection set (HR@1 + HR@3 + NDCG@3): the "
            "validation examples of the selection users (a seeded share of the users, "
            "data.selection_fraction), which no adapter trained on, in the scenario of their "
            "target (warm or cold); selection_examples is how many. selection_decided false: "
            "the selection set did not tell the lrs apart (one lr, no example, or a tie at "
            "the top), so molorec runs at the grid's smallest lr. The original chose on "
            "test labels: that choice is shown as *optimistic*, with the gap (sum of the "
            "three metrics) it adds.",
            "",
            _markdown(sel),
        ]
    parts += list(mixing)
    parts += list(replicates)
    parts += [
        "",
        "## Did it learn? Paired bootstrap tests on the test examples",
        "",
        "The domain adapter against the untuned base model and random ranking (did the "
        "recommender learn?), molorec against its parts (does the mixture help?), and both "
        "against the content and novelty baselines where they ran.",
        "",
        statistics_note(tests, alpha, adjust),
        "",
        *verdicts(tests, alpha),
        "",
        _markdown(tests.drop("resamples", strict=False)),
    ]
    if health is not None and not health.is_empty():
        flagged = health.filter(pl.col("flag") != "")
        parts += [
            "",
            "## Fusion runs",
            "",
            "A run that took no optimizer step (no scored token, or fewer than one step's "
            "worth) never moved its weights: its 'molorec' is the uniform mixture. A collapsed "
            "run has modules whose general weight is below 0.01 or above 0.99 (one adapter "
            "switched off there).",
            "",
            f"**{flagged.height} of {health.height} fusion runs are flagged.**"
            if flagged.height
            else "No fusion run is flagged.",
            "",
            _markdown(health),
        ]
    qrows = [
        {
            "domain": d,
            "reviews/records": q["reviews"]["records"],
            "kept": q["reviews"]["kept"],
            "dropped": ", ".join(f"{k} {v}" for k, v in q["reviews"]["dropped"].items()),
            "users": q["users"],
            "items": q["items"],
        }
        for d, q in quality.items()
    ]
    parts += list(checks)  # evaluation_checks: answers, candidate order, adaptation overlap
    parts += ["", "## Data quality", "", _markdown(pl.DataFrame(qrows))]
    parts += ["", "## Cost per stage", "", _markdown(cost, digits=1), ""]
    return "\n".join(parts)


def plot_weights(fusion_weights: dict[str, list[float]], title: str, path: Path) -> None:
    """Heatmap of the general adapter's weight per transformer block and module."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = {}
    for stem, w in fusion_weights.items():
        parts = stem.split(".")
        layer = int(parts[parts.index("layers") + 1]) if "layers" in parts else -1
        cells[(layer, parts[-1])] = w[0]
    layers = sorted({k[0] for k in cells})
    modules = sorted({k[1] for k in cells})
    grid = np.array([[cells.get((ly, m), np.nan) for m in modules] for ly in layers])
    fig, ax = plt.subplots(figsize=(1.1 * len(modules) + 2, 0.5 * len(layers) + 2))
    im = ax.imshow(grid, vmin=0, vmax=1, cmap="coolwarm", aspect="auto")
    ax.set_xticks(range(len(modules)), modules, rotation=45, ha="right")
    ax.set_yticks(range(len(layers)), [f"layer {ly}" for ly in layers])
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="weight of the general adapter")
    fig.tight_layout()
    panels = {"title": title, "layers": layers, "modules": modules}
    fig.savefig(path, dpi=100, metadata={"Title": title, "Description": json.dumps(panels)})
    plt.close(fig)


def plot_curves(
    series: dict[str, tuple[list, list]], xlabel: str, ylabel: str, title: str, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, (x, y) in series.items():
        ax.plot(x, y, label=label, marker="." if len(x) < 30 else None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if series:
        ax.legend(fontsize="small")
    fig.tight_layout()
    # What the figure shows, in the PNG's text chunks: readable without looking at pixels.
    panels = {"title": title, "xlabel": xlabel, "ylabel": ylabel, "series": list(series)}
    fig.savefig(path, dpi=100, metadata={"Title": title, "Description": json.dumps(panels)})
    plt.close(fig)


def build(
    results: Path,
    out: Path,
    domains: list[str],
    scenarios: list[str],
    variants: list[str],
    adapters: list[str],
    seed: int = 0,
    n_boot: int = 1000,
    *,
    alpha: float,
    adjust: str,
    benchmarks: list[Path] = (),
    replicates=(0,),
    shared=(),
) -> None:
    """Write metrics.csv, paired_tests.csv, replicates.csv, mixing.csv, cost.csv,
    summary.md and the plots; the paired tests (pooled over ``replicates``) are judged at
    ``alpha`` after the ``adjust`` adjustment (holm or bh). metrics.csv is the first
    replicate's (the run under results/); ``shared`` variants are replicate 0's in all."""
    out.mkdir(parents=True, exist_ok=True)
    metrics = metrics_table(results, domains, scenarios, variants)
    metrics.write_csv(out / "metrics.csv")
    pairs = pairs_for(variants)
    tests = paired_tests(
        results,
        domains,
        scenarios,
        variants,
        alpha,
        adjust,
        pairs,
        seed,
        n_boot,
        replicates,
        shared,
    )
    tests.write_csv(out / "paired_tests.csv")
    spread = replicate_table(results, domains, scenarios, variants, replicates, shared)
    spread.write_csv(out / "replicates.csv")
    cost = cost_table(results, benchmarks, adapters, domains, scenarios, variants)
    cost.write_csv(out / "cost.csv")
    health = fusion_health(results, domains, scenarios, variants)
    health.write_csv(out / "fusion_runs.csv")
    mixing = mixing_table(tests, metrics, spread)
    mixing.write_csv(out / "mixing.csv")
    quality = {d: json.loads((results / "data" / d / "quality.json").read_text()) for d in domains}
    summary = summary_markdown(
        metrics,
        tests,
        cost,
        quality,
        health,
        alpha=alpha,
        adjust=adjust,
        id_only=id_only_baselines(variants),
        checks=evaluation_checks(results, domains, scenarios, variants),
        mixing=mixing_section(mixing, alpha),
        replicates=replicate_section(spread),
    )
    (out / "summary.md").write_text(summary)

    # The learned weights of the selected setting, per domain and scenario.
    for domain in domains:
        for scenario in scenarios:
            selected = Path(variant_dir(domain, scenario, SELECTED, root=results))
            lr = json.loads((selected / "selection.json").read_text())["selected_lr"]
            fused = Path(fused_dir(domain, scenario, f"lr{lr}", root=results))
            weights = json.loads((fused / "fusion_weights.json").read_text())
            plot_weights(
                weights,
                f"{domain} / {scenario} (lr {lr})",
                out / f"weights_{domain}_{scenario}.png",
            )
    loss = {}
    for name in adapters:
        log = pl.read_csv(Path(adapter_dir(name, root=results)) / "train_log.csv")
        loss[name] = (log["step"].to_list(), log["loss"].to_list())
    plot_curves(
        loss,
        "optimizer step",
        "loss per answer token",
        "Adapter training",
        out / "training_loss.png",
    )
    traj, entropy = {}, {}
    fused = [
        (f"{d}/{sc}/{v}/{f.name}", f / "trajectory.csv")
        for d, sc, v in _learned(domains, scenarios, variants)
        for f in _fused(results, d, sc, v)
    ]
    for label, path in fused:
        t = pl.read_csv(path)
        if t.height:
            traj[label] = (t["step"].to_list(), t["general_weight_mean"].to_list())
            entropy[label] = (t["step"].to_list(), t["weight_entropy"].to_list())
    plot_curves(
        traj,
        "adaptation step",
        "mean weight of the general adapter",
        "Fusion trajectories",
        out / "fusion_trajectories.png",
    )
    plot_curves(
        entropy,
        "adaptation step",
        "mean entropy of the mixing weights (nats; ln 2 = equal)",
        "Fusion: does the mixture collapse?",
        out / "fusion_weight_entropy.png",
    )


def evaluation_checks(results: Path, domains, scenarios, variants) -> list[str]:
    """summary.md's sections on what the figures rest on, from the evaluations' metrics.json:
    the generated answers' invalid and duplicate entries, the candidate order check
    (evaluate.order_check), and the evaluated examples the fused mixture adapted on."""
    answers, orders, overlap = [], [], []
    for domain in domains:
        for scenario in scenarios:
            for variant in variants:
                folder = Path(variant_dir(domain, scenario, variant, root=results))
                m = json.loads((folder / "metrics.json").read_text())
                key = {"domain": domain, "scenario": scenario, "variant": variant, "n": m["n"]}
                if m.get("invalid_answer_share") is not None:
                    answers.append(
                        key
                        | {
                            "valid_ratio": m["valid_ratio"],
                            "with an invalid entry": m["invalid_answer_share"],
                            "with a duplicate entry": m["duplicate_answer_share"],
                            "empty": m["empty_answer_share"],
                        }
                    )
                check = folder / "order_check" / "metrics.json"
                if check.exists():
                    c = json.loads(check.read_text())
                    orders.append(
                        key
                        | {
                            "order": c["order"],
                            "HR@1 given": m["HR@1"],
                            f"HR@1 {c['order']}": c["HR@1"],
                            "NDCG@3 given": m["NDCG@3"],
                            f"NDCG@3 {c['order']}": c["NDCG@3"],
                            "top-1 agreement": c["top1_agreement"],
                        }
                    )
                if variant == "molorec" and "adapted_examples" in m:
                    overlap.append(
                        {
                            "domain": domain,
                            "scenario": scenario,
                            "evaluated": m["n"],
                            "adapted on": m["adapted_examples"],
                            "share": m["adapted_examples"] / m["n"] if m["n"] else math.nan,
                            "adapted excluded": m["exclude_adapted"],
                        }
                    )
    parts = ["", "## Generated answers: invalid and duplicate entries", ""]
    if answers:
        parts += [
            "The target's rank is its raw position in the answer split on `||`: an entry "
            "that is not a candidate (invalid) or repeats an earlier one (duplicate) keeps "
            "its slot. Shares of the answers with at least one invalid entry, with at least "
            "one duplicate, and empty; valid_ratio: the share of entries that are candidates.",
            "",
            _markdown(pl.DataFrame(answers)),
        ]
    else:
        parts.append(
            "No variant generated its answers (evaluate.backend rank): each ranks every "
            "candidate once, so no entry is invalid or repeated."
        )
    parts += ["", "## Candidate order check", ""]
    if orders:
        parts += [
            "Every LLM variant evaluated a second time on the same examples with the "
            "candidates re-ordered in the prompt (evaluate.order_check). Top-1 agreement: the "
            "share of examples whose first-ranked candidate is the same in both orders (1 "
            "without position bias; an invalid first entry agrees with nothing).",
            "",
            _markdown(pl.DataFrame(orders, infer_schema_length=None)),
        ]
    else:
        parts.append("Not run (evaluate.order_check: none).")
    if overlap:
        excluded = all(row["adapted excluded"] for row in overlap)
        parts += [
            "",
            "## Adaptation overlap",
            "",
            "Fusion adapts on the first fusion.n_prompts prompts of fusion.adapt_on, in the "
            "order evaluation takes its examples. *adapted on*: how many of the evaluated "
            "examples the molorec mixture adapted on (without their labels). "
            + (
                "evaluate.exclude_adapted: those are left out of every variant's evaluation."
                if excluded
                else "They are evaluated, as the paper does; evaluate.exclude_adapted leaves "
                "them out of every variant's evaluation."
            ),
            "",
            _markdown(pl.DataFrame(overlap)),
        ]
    return parts
