"""Deterministic generators of raw review dumps in the formats molorec ingests.

* ``generate_sample`` writes the small bundled sample (``resources/sample``): a few hundred
  users per domain in the real Amazon 2014 / 2018 / 2023 and MOOCCube formats, and a movie
  catalog as MovieLens (100K, 1M, latest), RecBole atomic files and plain CSV. Item titles
  come in ordered product lines (cleanser -> toner -> serum, Halo 3 -> Halo: Reach ->
  Halo 4, ...; the catalogs under ``catalogs/``) so a small model has sequential structure
  to learn, and a handful of deliberate defects give the ingestion's quality accounting
  something to count. The domains are listed in ``domains.yaml``; each Amazon release is
  one entry of ``molorec.sample.amazon.RELEASES``, MOOCCube has ``molorec.sample.mooccube``.
* ``molorec.sample.bulk.write_amazon2014_synthetic`` writes large Amazon-2014 style dumps
  (up to the size of Books) for the benchmarks.

Everything is seeded, so a rerun is byte-identical (tests/test_sample.py regenerates
resources/sample/ and compares it byte for byte).

    python -m molorec.sample resources/sample
"""

from __future__ import annotations

import argparse
import gzip
from collections.abc import Sequence
from pathlib import Path

import yaml

from molorec.sample.amazon import RELEASES, write_release
from molorec.sample.common import HERE, catalog_file
from molorec.sample.mooccube import write_mooccube
from molorec.sample.movielens import WRITERS as MOVIE_WRITERS

DOMAINS = yaml.safe_load((HERE / "domains.yaml").read_text(encoding="utf-8"))


def _line_count(path: Path) -> int:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    return raw.count(b"\n")


def _readme(out_dir: Path, paths: list[Path], notes: list[str], seed: int) -> str:
    files = "\n".join(
        f"| `{p.relative_to(out_dir).as_posix()}` | {_line_count(p)} |" for p in paths
    )
    junk = "\n".join(f"- {note}" for note in notes)
    return f"""# molorec bundled sample

Synthetic data, not real reviews: every user, item, review and course here was
made up by `python -m molorec.sample resources/sample` (seed {seed}), which
rewrites these files byte for byte.  The files use the real raw formats of
the dataset families molorec reads, so the ingestion runs on them unchanged:

- `amazon2014/`: Amazon reviews 2014 (McAuley), 5-core review JSON lines and
  meta as Python dict literals (`ast.literal_eval`, not JSON).
- `amazon2018/`: Amazon reviews 2018 (Ni et al.), 5-core review JSON lines
  whose key order varies per line, strict JSON meta.
- `amazon2023/`: Amazon reviews 2023 (McAuley Lab), JSON lines with
  millisecond timestamps; items keyed by `parent_asin`, some reviews name a
  variant `asin`; not 5-core.
- `mooccube/`: MOOCCube (XuetangX) course and user entities (UTF-8 JSON
  lines) and the tab-separated user-course relation; not 5-core.
- `movielens100k/`, `movielens1m/`, `movielens_latest/`: one made-up movie
  catalog in the three MovieLens layouts (`u.data`/`u.item`, Latin-1;
  `ratings.dat`/`movies.dat` with `::`, Latin-1; `ratings.csv`/`movies.csv`,
  UTF-8, quoted titles), each with its own users.
- `recbole/ml-sample/`: the same catalog as RecBole atomic files
  (`ml-sample.inter`, `ml-sample.item`, typed tab-separated headers).
- `csv/`: the same catalog as a shop's plain CSV export (`interactions.csv`
  with its own column names and ISO times, `items.csv`).

Item titles form ordered product lines (a brand's skin-care routine, a game
franchise in release order, a course followed by its sequel); users mostly
walk one or two lines forward in time, plus about 20% popular extras.
Amazon 2014 and 2018 domains are 5-core before the junk below was added.

| file | lines |
| --- | --- |
{files}

## Injected junk

Deliberate defects for the ingestion's quality accounting:

{junk}
"""


def generate_sample(out_dir: Path, seed: int = 7) -> list[Path]:
    """Write the whole bundled sample under out_dir; returns the written paths."""
    out_dir = Path(out_dir)
    paths: list[Path] = []
    notes: list[str] = []
    amazon = DOMAINS["amazon"]
    for k, domain in enumerate(amazon):
        paths += write_release(
            out_dir,
            RELEASES[domain["release"]],
            domain["category"],
            catalog_file(domain["catalog"]),
            seed=seed * 1000 + k,  # one independent stream per domain
            n_users=domain["users"],
            malformed=domain["malformed"],
            notes=notes,
        )
    paths += write_mooccube(
        out_dir, seed=seed * 1000 + len(amazon), n_users=DOMAINS["mooccube"]["users"], notes=notes
    )
    for k, movies in enumerate(DOMAINS["movies"], start=len(amazon) + 1):
        extra = {"name": movies["name"]} if "name" in movies else {}
        paths += MOVIE_WRITERS[movies["layout"]](
            out_dir, seed=seed * 1000 + k, n_users=movies["users"], notes=notes, **extra
        )
    readme = out_dir / "README.md"
    readme.write_text(_readme(out_dir, paths, notes, seed), encoding="utf-8")
    return [*paths, readme]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m molorec.sample",
        description="Write the deterministic bundled sample of raw dumps.",
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    for path in generate_sample(args.out_dir, seed=args.seed):
        print(path)
