"""Instruction stage: examples to chat messages in the paper's prompt template.

Titles are joined with the answer separator; the template's fields are filled with polars
expressions, batch by batch, so a Books-size domain never holds all prompts in memory.
"""

from __future__ import annotations

import string
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from molorec.io.parquet import parquet_sink, to_arrow
from molorec.io.titles import SEPARATOR
from molorec.schema import defaults

# The original's prompt, as the schema's defaults (prompt.system, prompt.user) say.
DEFAULT_PROMPT = defaults("prompt")
TEMPLATE_FIELDS = ("history", "candidates", "answer_size", "n_candidates")
BATCH_ROWS = 20_000


def template_expr(template: str, values: dict[str, pl.Expr]) -> pl.Expr:
    """The template as one string expression; ``{field}`` takes a column, ``{{`` a brace."""
    parts: list[pl.Expr] = []
    for literal, field, spec, conversion in string.Formatter().parse(template):
        if literal:
            parts.append(pl.lit(literal))
        if field is None:
            continue
        if field not in values or spec or conversion:
            raise ValueError(
                f"prompt template field {{{field}}} is not one of "
                f"{', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}"
            )
        parts.append(values[field])
    return pl.concat_str(parts) if parts else pl.lit("")


def messages_expr(prompt: dict, answer_size: int, n_candidates: int) -> pl.Expr:
    def titles(column: str) -> pl.Expr:
        return pl.col(column).list.join(SEPARATOR)

    user = template_expr(
        prompt["user"],
        {
            "history": titles("history"),
            "candidates": titles("candidates"),
            "answer_size": pl.lit(str(answer_size)),
            "n_candidates": pl.lit(str(n_candidates)),
        },
    )
    turn = [
        pl.struct(role=pl.lit("system"), content=pl.lit(prompt["system"])),
        pl.struct(role=pl.lit("user"), content=user),
        pl.struct(role=pl.lit("assistant"), content=titles("answer")),
    ]
    return pl.concat_list(turn).alias("messages")


def build_instructions(
    examples: pl.DataFrame, items: pl.DataFrame, domain: str, prompt: dict, data: dict
) -> pl.DataFrame:
    """One row per example: its keys and the messages (system, user, assistant)."""
    ids, titles = items["item"], items["title"]

    def to_titles(column: str) -> pl.Expr:
        return pl.col(column).list.eval(pl.element().replace_strict(ids, titles))

    return examples.select(
        pl.lit(domain).alias("domain"),
        "user",
        "split",
        "position",
        "target",
        "cold",
        "held_out",
        to_titles("history").alias("history"),
        to_titles("candidates").alias("candidates"),
        to_titles("answer").alias("answer"),
    ).select(
        "domain",
        "user",
        "split",
        "position",
        "target",
        "cold",
        "held_out",
        messages_expr(prompt, data["answer_size"], data["n_candidates"]),
    )


def write_instructions(
    examples_path: str | Path,
    items_path: str | Path,
    out_path: str | Path,
    domain: str,
    prompt: dict,
    data: dict,
) -> int:
    """Stream examples.parquet to instructions.parquet; returns the number of rows."""
    items = pl.read_parquet(items_path)
    source = pq.ParquetFile(examples_path)

    def convert(batch) -> pa.Table:
        return to_arrow(build_instructions(pl.from_arrow(batch), items, domain, prompt, data))

    schema = convert(source.schema_arrow.empty_table()).schema
    rows = 0
    with parquet_sink(out_path, schema) as writer:
        for batch in source.iter_batches(batch_size=BATCH_ROWS):
            writer.write_table(convert(batch).cast(schema))
            rows += batch.num_rows
    return rows


def pool_instructions(
    paths: list[str | Path],
    out_path: str | Path,
    examples_paths: list[str | Path] | None = None,
    pairs_path: str | Path | None = None,
) -> tuple[int, int, int | None]:
    """Concatenate the general domains' instruction sets into one file, in the given order,
    without the held-out rows (the selection users' and the cold targets'). Returns (rows
    kept, rows held out, pairs written or None).

    With ``examples_paths`` (each domain's examples.parquet, in the order of ``paths``),
    also write ``pairs_path``: every (user, item) pair a pooled row shows (its history,
    target and candidates; the answer is drawn from the candidates), unique and sorted. A
    target domain's examples take that file, so that no example it holds out is one the
    general adapter trained on (molorec.data.examples)."""
    rows = held_out = 0
    schema = pq.read_schema(paths[0])
    kept_per_path = []
    with parquet_sink(out_path, schema) as writer:
        for path in paths:
            kept_here = 0
            for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS):
                kept = batch.filter(pc.invert(batch.column("held_out")))
                writer.write_batch(kept)
                kept_here += kept.num_rows
                held_out += batch.num_rows - kept.num_rows
            rows += kept_here
            kept_per_path.append(kept_here)
    pairs = None
    if examples_paths is not None:
        pairs = write_pooled_pairs(examples_paths, kept_per_path, pairs_path)
    return rows, held_out, pairs


def pooled_pairs(examples: pl.LazyFrame) -> pl.LazyFrame:
    """(user, item) of every item a pooled row of one general domain shows: the rows not
    held out, as pool_instructions keeps them."""
    shown = pl.concat_list("history", "target", "candidates")
    return (
        examples.filter(~pl.col("held_out"))
        .select("user", shown.alias("item"))
        .explode("item")
        .unique()
    )


def write_pooled_pairs(
    examples_paths: list[str | Path], kept_per_path: list[int], out_path: str | Path
) -> int:
    """The pooled set's pairs file; checks that each domain's examples give as many pooled
    rows as its instruction set did (the two files describe the same rows). Returns the
    number of pairs."""
    from molorec.io.parquet import write_parquet

    for path, kept in zip(examples_paths, kept_per_path, strict=True):
        n = pl.scan_parquet(path).filter(~pl.col("held_out")).select(pl.len()).collect().item()
        if n != kept:
            raise ValueError(f"{path}: {n} rows not held out, but {kept} pooled instructions")
    frames = [pooled_pairs(pl.scan_parquet(p)) for p in examples_paths]
    pairs = pl.concat(frames).unique().sort("user", "item").collect()
    write_parquet(pairs, out_path)
    return pairs.height
