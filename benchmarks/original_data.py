"""The original MoLoRec data stage, re-written the plain way as a timing reference.

The original prepares a domain with two scripts (``data/raw_process.py``, then
``data/data_process.py``). This module runs the same steps with the same data structures,
so that ``bench_data.py`` can time them on the files it times ours on:

raw_process
  1. read the reviews: every line parsed into a dict, all of them into a dict of dicts,
     then ``pandas.DataFrame.from_dict(orient="index")``; user and item ids collected row by
     row with ``.loc``; each id list deduplicated through a set and shuffled;
  2. read the metadata the same way and map asin -> title row by row (``meta.loc[i]``),
     written as indented JSON;
  3. map the shuffled item ids to their titles;
  4. read the reviews again; per user (``groupby``), its index found with ``list.index``,
     its rows sorted by time and walked with ``iterrows``, each item's index found with
     ``list.index``.
data_process
  5. per user, in a process pool of one worker per core (the original: joblib's
     multiprocessing backend with 93 jobs): for every train, validation and test example,
     the items outside the history listed by a comprehension over the whole catalog, 29
     negatives and 4 answer-noise items drawn with ``random.sample``, the prompt and answer
     built by string concatenation; the three splits written as JSON lines.

One change, stated: the original parses each line with ``eval``. This reference uses
``ast.literal_eval``, which reads the same literals without running code (the project never
evaluates data). ``line_parse_seconds`` measures, on one file, literal_eval against
``compile`` of the same lines, the part of ``eval`` that precedes running the code: a lower
bound on what eval costs, from which bench_data derives a lower bound on the original's time.
Left out, as they only add time: tqdm's progress bars.
"""

from __future__ import annotations

import ast
import gzip
import json
import os
import random
import time
from pathlib import Path

SYSTEM = "You are a helpful recommendation assistant."
LEAVE_OUT = 3


def parse(path: Path):
    with gzip.open(path, "rb") as fh:
        for line in fh:
            try:
                yield ast.literal_eval(line.decode("utf-8"))
            except (ValueError, SyntaxError):
                continue  # eval would have run it; a literal parse rejects it


def frame(path: Path):
    import pandas as pd

    rows = {}
    for i, rec in enumerate(parse(path)):
        rows[i] = rec
    return pd.DataFrame.from_dict(rows, orient="index")


def raw_process(reviews: Path, meta: Path, out: Path) -> dict:
    seconds = {}
    t = time.perf_counter()
    data = frame(reviews)[["reviewerID", "asin"]]
    user_ids, item_ids = [], []
    for i in range(len(data)):
        user_ids.append(data.loc[i, "reviewerID"])
        item_ids.append(data.loc[i, "asin"])
    user_ids, item_ids = list(set(user_ids)), list(set(item_ids))
    random.shuffle(user_ids)
    random.shuffle(item_ids)
    seconds["ids_s"] = time.perf_counter() - t

    t = time.perf_counter()
    table = frame(meta)[["asin", "title"]]
    asin2title = {}
    for i in range(len(table)):
        asin2title[table.loc[i]["asin"]] = table.loc[i]["title"]
    with open(out / "asin2title.json", "w") as fh:
        json.dump(asin2title, fh, indent=4)
    seconds["titles_s"] = time.perf_counter() - t

    t = time.perf_counter()
    with open(out / "asin2title.json") as fh:
        asin2title = json.load(fh)
    id2title = [asin2title[i] for i in item_ids]
    seconds["id2title_s"] = time.perf_counter() - t

    t = time.perf_counter()
    data = frame(reviews)[["reviewerID", "asin", "unixReviewTime"]]
    sequences = []
    for user, rows in list(data.groupby("reviewerID")):
        seq = str(user_ids.index(user))
        for _, row in rows.sort_values("unixReviewTime").reset_index(drop=True).iterrows():
            seq += " " + str(item_ids.index(row["asin"]))
        sequences.append(seq)
    seconds["sequences_s"] = time.perf_counter() - t
    return {"seconds": seconds, "id2title": id2title, "sequences": sequences}


# data_process's globals, inherited by the forked workers as in the original.
_ID2TITLE: list = []
_SEQUENCES: list = []


def _prompt(sample: list[str], a: int, b: int) -> tuple[str, str]:
    history, target = sample[a:b], sample[b]
    titles = [_ID2TITLE[int(i)] for i in history]
    # The original's comprehension: history ids are strings, so `not in` never matches and
    # every item but the target stays eligible; the cost is what is reproduced here.
    pool = [i for i in range(len(_ID2TITLE)) if i not in history and i != target]
    negatives = random.sample(pool, 29)
    noise = random.sample(negatives, 4)
    random.shuffle(noise)
    candidates = [int(target)] + negatives
    random.shuffle(candidates)
    q = "Given the following purchase history of a user:["
    for title in titles:
        q += f"{title}||"
    q = q[:-2] + (
        "]. Please select the top 5 most likely products to be purchased by the user based on"
        " the user's purchase history. And sort them from highest to lowest likelihood of"
        " purchasing.Candidates: ["
    )
    for c in candidates:
        q += f"{_ID2TITLE[c]}||"
    q = q[:-2] + "]. The top 5 most likely products to be purchased by the user are:"
    a_text = f"{_ID2TITLE[int(target)]}||"
    for c in noise:
        a_text += f"{_ID2TITLE[c]}||"
    return q, a_text[:-2]


def _messages(q: str, a: str) -> dict:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": q},
            {"role": "assistant", "content": a},
        ]
    }


def _create(index: int) -> dict:
    sample = _SEQUENCES[index].strip().split(" ")
    last = len(sample) - LEAVE_OUT + 1
    d = {"train": [_messages(*_prompt(sample, 1, b)) for b in range(2, last)]}
    d["val"] = [_messages(*_prompt(sample, 1, last))]
    d["test"] = [_messages(*_prompt(sample, 1, last + 1))]
    return d


def data_process(id2title: list, sequences: list, out: Path) -> dict:
    from joblib import Parallel, delayed

    global _ID2TITLE, _SEQUENCES
    _ID2TITLE, _SEQUENCES = id2title, sequences
    t = time.perf_counter()
    jobs = os.cpu_count() or 1
    res = Parallel(n_jobs=jobs, backend="multiprocessing")(
        delayed(_create)(i) for i in range(len(sequences))
    )
    splits = {"train": [], "val": [], "test": []}
    for d in res:
        for split, rows in d.items():
            splits[split] += rows
    for split, rows in splits.items():
        with open(out / f"{split}.jsonl", "w") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
    return {
        "seconds": {"prompts_s": time.perf_counter() - t},
        "examples": {k: len(v) for k, v in splits.items()},
    }


def run(reviews: Path, meta: Path, out: Path) -> dict:
    """Both scripts on one domain's files; seconds per step."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    first = raw_process(Path(reviews), Path(meta), out)
    second = data_process(first["id2title"], first["sequences"], out)
    seconds = first["seconds"] | second["seconds"]
    seconds["total_s"] = sum(seconds.values())
    return {"seconds": seconds, "examples": second["examples"]}


def line_parse_seconds(path: Path, limit: int | None = None) -> dict:
    """Seconds to read a file's lines with ast.literal_eval and with compile() (eval's
    parsing and code generation, without running the code: a lower bound on eval)."""
    with gzip.open(path, "rb") as fh:
        lines = [line.decode("utf-8") for line in fh]
    lines = lines[:limit] if limit else lines
    t = time.perf_counter()
    for line in lines:
        try:
            ast.literal_eval(line)
        except (ValueError, SyntaxError):
            pass
    literal = time.perf_counter() - t
    t = time.perf_counter()
    for line in lines:
        try:
            compile(line, "<line>", "eval")
        except SyntaxError:
            pass
    compiled = time.perf_counter() - t
    return {"lines": len(lines), "literal_eval_s": literal, "compile_s": compiled}
