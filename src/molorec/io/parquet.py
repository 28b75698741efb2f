"""Parquet and JSON outputs written atomically and byte-for-byte reproducibly.

Every output goes to a temporary name first and is renamed when complete, so a job killed
mid-write never leaves a file that looks finished.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

# Fixed writer settings: the same table always gives the same bytes.
WRITE_OPTIONS = {"compression": "zstd", "compression_level": 3, "write_statistics": True}


def to_arrow(df: pl.DataFrame) -> pa.Table:
    # Plain string/list types, not views: readable by every arrow consumer (datasets, vLLM).
    return df.to_arrow(compat_level=pl.CompatLevel.oldest())


@contextmanager
def parquet_sink(path: str | Path, schema: pa.Schema):
    """A ParquetWriter that only appears at ``path`` once closed without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    writer = pq.ParquetWriter(tmp, schema, **WRITE_OPTIONS)
    try:
        yield writer
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    os.replace(tmp, path)


def write_parquet(df: pl.DataFrame | pa.Table, path: str | Path) -> None:
    table = to_arrow(df) if isinstance(df, pl.DataFrame) else df
    with parquet_sink(path, table.schema) as writer:
        writer.write_table(table)


def write_json(obj: object, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
