"""Which rows a domain adapter should train on, measured one step earlier, on validation.

In the paper's protocol a domain adapter trains on every validation example plus sampled
training examples, so a warm test user's previous step (their validation example: the
same history, one item shorter) is among its training rows. This benchmark repeats that
situation one step earlier, where only validation labels are looked at:

* each user's last training row (the step before validation) plays their validation row:
  the "previous step";
* the validation example plays the test example (warm targets only);
* the training rows before the previous step are the rows to sample from.

Adapters are trained with the real trainer and config.yaml's domain settings on each
composition of rows, then rank the shifted test examples of the users whose previous step
could be trained on:

* ``paper, sample``: every previous step plus ``data.domain_train_samples`` earlier rows
  (the default run's composition);
* ``paper, ratio``: every previous step plus earlier rows at the paper's ratio of sampled
  training rows to validation rows (30,000 to Beauty's 22,363 users);
* ``earlier only``: as many earlier rows, no previous step (training rows only).

Printed: per composition the rows, the share of the evaluated users whose previous step
was trained on, HR@1 / HR@3 / NDCG@3 with 95% intervals, and paired bootstrap p-values.

    python studies/which_rows_to_train_on.py [--workdir /tmp/molorec-domain-rows]
                                           [--domain beauty] [--examples 100]
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import polars as pl
import yaml

from molorec.sample.prepare import REPO, pipeline_workdir

PAPER_TRAIN_PER_VAL = 30000 / 22363  # Beauty: sampled training rows per validation row
KEYS = ["user", "split", "position"]


def shifted_rows(examples: pl.DataFrame, instructions: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """previous (each user's last training row), earlier (the training rows before it) and
    shifted test (the warm validation examples of the users who have a previous step)."""
    val = examples.filter(pl.col("split") == "val").select("user", val_position="position")
    rows = instructions.join(examples.select(*KEYS, "candidates"), on=KEYS, how="left")
    train = rows.filter(pl.col("split") == "train").join(val, on="user")
    previous = train.filter(pl.col("position") == pl.col("val_position") - 1)
    earlier = train.filter(pl.col("position") < pl.col("val_position") - 1)
    test = rows.filter(
        (pl.col("split") == "val")
        & ~pl.col("cold")
        & pl.col("user").is_in(previous["user"].implode())
    )
    return {"previous": previous, "earlier": earlier, "test": test.sort(KEYS)}


def compositions(rows: dict[str, pl.DataFrame], sample_count: int, seed: int) -> dict:
    n_ratio = round(PAPER_TRAIN_PER_VAL * rows["previous"].height)
    earlier = rows["earlier"].sample(fraction=1.0, shuffle=True, seed=seed)
    if earlier.height < n_ratio:
        raise SystemExit(f"only {earlier.height} earlier rows, {n_ratio} wanted")
    return {
        "paper, sample": pl.concat([rows["previous"], earlier.head(sample_count)]),
        "paper, ratio": pl.concat([rows["previous"], earlier.head(n_ratio)]),
        "earlier only": earlier.head(rows["previous"].height + n_ratio),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/molorec-domain-rows"))
    ap.add_argument("--domain", default="beauty")
    ap.add_argument("--examples", type=int, default=100, help="shifted test examples ranked")
    args = ap.parse_args()

    import torch

    from molorec.config import check_config
    from molorec.evaluate import predict_llm
    from molorec.metrics import paired_bootstrap, per_example, summarise, target_rank
    from molorec.model import load_base, model_dtype
    from molorec.settings import train_settings
    from molorec.train import TrainSettings, train

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    sample_count = config["data"]["domain_train_samples"]
    config["data"]["domain_train_samples"] = 10**9  # every training row, sampled here
    cmd = pipeline_workdir(args.workdir, config, fresh=False)  # keeps the built model
    data = Path("results/data", args.domain)
    base = Path("results/models", config["model"]["base"])
    targets = [str(data / "examples.parquet"), str(data / "instructions.parquet"), str(base)]
    subprocess.run([*cmd, *targets], check=True, capture_output=True)
    data, base = args.workdir / data, args.workdir / base
    check_config(config, base_dir=args.workdir)
    settings = TrainSettings.from_dict(train_settings(config, "domain"))
    torch.set_num_threads(2)

    examples = pl.read_parquet(data / "examples.parquet")
    rows = shifted_rows(examples, pl.read_parquet(data / "instructions.parquet"))
    test = rows["test"].head(args.examples)
    titles = dict(pl.read_parquet(data / "items.parquet").select("item", "title").iter_rows())
    print(
        f"{args.domain}: {rows['previous'].height} previous steps, {rows['earlier'].height} "
        f"earlier rows; {test.height} shifted test examples; domain adapter: "
        f"{settings.max_steps} steps at lr {settings.lr}, batch "
        f"{settings.per_device_batch} x {settings.grad_accum}, precision {settings.precision}"
    )

    dtype = model_dtype(settings.precision, False)
    bf16 = dtype == torch.bfloat16

    def ranks_of(model, tokenizer) -> list[int | None]:
        model.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            preds = predict_llm(model, tokenizer, test, titles, "rank")
        return [target_rank(r, t) for r, t in preds.select("ranking", "target").iter_rows()]

    model, tokenizer = load_base(str(base), dtype=dtype)
    results = {"untuned": ("-", "-", ranks_of(model, tokenizer))}
    del model
    for name, pool in compositions(rows, sample_count, config["seed"]).items():
        t0 = time.perf_counter()
        folder = args.workdir / "adapters" / args.domain / name.replace(", ", "-").replace(" ", "-")
        pool_path = folder / "instructions.parquet"
        folder.mkdir(parents=True, exist_ok=True)
        pool.drop("candidates", "val_position").with_columns(held_out=False).write_parquet(
            pool_path
        )
        _, model = train(
            str(base), [str(pool_path)], "domain", folder / "adapter", folder / "ckpt",
            settings, progress=False,
        )  # fmt: skip
        previous = pool.filter(pl.col("position") == pl.col("val_position") - 1)["user"]
        share = test["user"].is_in(previous.implode()).mean()
        results[name] = (pool.height, f"{share:.2f}", ranks_of(model, tokenizer))
        print(f"  {name}: trained and ranked in {time.perf_counter() - t0:.0f} s", flush=True)
        del model

    table = []
    values = {name: per_example(ranks) for name, (_, _, ranks) in results.items()}
    for name, (n_rows, share, ranks) in results.items():
        m = summarise(ranks, 1.0, seed=config["seed"])
        row = {"composition": name, "rows": n_rows, "previous step trained": share}
        for metric in ("HR@1", "HR@3", "NDCG@3"):
            lo, hi = m[f"{metric}_ci95"]
            row[metric] = f"{m[metric]:.3f} [{lo:.2f}, {hi:.2f}]"
        for other in ("untuned", "paper, sample"):
            for metric in ("HR@1", "NDCG@3"):
                a, b = values[name][metric], values[other][metric]
                p = paired_bootstrap(a, b, seed=config["seed"])["p"]
                row[f"{metric} p vs {other}"] = "-" if name == other else f"{p:.3f}"
        table.append(row)
    with pl.Config(
        tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True, tbl_cols=-1,
        tbl_width_chars=250,
    ):  # fmt: skip
        print(pl.DataFrame(table, infer_schema_length=None))


if __name__ == "__main__":
    main()
