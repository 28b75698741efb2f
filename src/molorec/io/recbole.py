"""RecBole atomic files: ``<name>.inter`` and ``<name>.item`` in the dataset's folder
(``dataset/ml-1m/ml-1m.inter``), tab-separated, UTF-8, each header field typed
(``user_id:token``, ``timestamp:float``, ``movie_title:token_seq``).

The fields are found by their names, whatever their types: the first of each list below
that the header has, or the one the domain's ``columns`` names. quality.json says which
were used (``notes.fields``). A dataset without a time field cannot be ordered into
histories and is refused.
"""

from __future__ import annotations

from pathlib import Path

from molorec.io.delimited import Decoder, Fields, Table, header_fields, read_events, read_titles
from molorec.io.rawfile import RawInputError

TABLE = Table("\t", header=True, encoding="utf-8")
# Our field -> the names RecBole's datasets give it, most common first.
INTER_NAMES = {
    "user": ("user_id",),
    "item": ("item_id",),
    "time": ("timestamp",),
    "rating": ("rating",),
}
ITEM_NAMES = {"item": ("item_id",), "title": ("title", "movie_title", "item_name", "name")}
OPTIONAL = {"rating"}


def find_fields(path: Path, names: dict, columns: dict) -> Fields:
    """Our fields -> the header's typed names, by the name before the type."""
    header = header_fields(path, TABLE, Decoder(TABLE.encoding))
    by_name = {typed.split(":", 1)[0]: typed for typed in header}
    where = {}
    for ours, candidates in names.items():
        wanted = (columns[ours],) if ours in columns else candidates
        found = next((by_name[n] for n in wanted if n in by_name), None)
        if found is None and (ours not in OPTIONAL or ours in columns):
            raise RawInputError(
                f"{path}: line 1 (the header) has no {ours} field (looked for "
                f"{', '.join(wanted)}; it has {', '.join(header)}); name it in the "
                f"domain's columns: {{{ours}: ...}}"
            )
        if found is not None:
            where[ours] = found
    return Fields(where)


def read_recbole(folder: str, on_truncated: str, max_malformed: float, columns=None):
    root = Path(folder)
    inter, item = root / f"{root.name}.inter", root / f"{root.name}.item"
    columns = columns or {}
    events, inter_account = read_events(
        inter, TABLE, find_fields(inter, INTER_NAMES, columns), on_truncated, max_malformed
    )
    item_columns = {k: v for k, v in columns.items() if k in ITEM_NAMES}
    titles, item_account = read_titles(
        item, TABLE, find_fields(item, ITEM_NAMES, item_columns), on_truncated, max_malformed
    )
    return events, titles, {"reviews": inter_account, "meta": item_account}
