"""Raw readers on hand-written lines of every format, bad lines included."""

from __future__ import annotations

import gzip
import json

import polars as pl
import pytest

from molorec.data.ingest import ingest_domain
from molorec.io.amazon import read_meta, read_reviews
from molorec.io.mooccube import read_mooccube
from molorec.io.rawfile import RawInputError
from molorec.io.titles import clean_title


def write_lines(path, lines, gz=True):
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def review14(user, item, ts, **extra):
    return json.dumps(
        {"reviewerID": user, "asin": item, "overall": 5.0, "unixReviewTime": ts, **extra}
    )


def invariant(section):
    assert section["records"] == section["kept"] + sum(section["dropped"].values())


# --- Amazon 2014 -----------------------------------------------------------------------


def test_2014_reviews_good_and_bad_lines(tmp_path):
    lines = [
        review14("A1", "B1", 100),
        "{not json",
        json.dumps({"reviewerID": "A1", "asin": "B2"}),  # no time
        "",
        review14("A2", "B1", 200),
    ]
    path = write_lines(tmp_path / "reviews_Beauty_5.json.gz", lines)
    events, account = read_reviews(path, "amazon2014", "error", 1.0)
    assert events.select("user", "item", "ts_ms", "line").rows() == [
        ("A1", "B1", 100_000, 1),
        ("A2", "B1", 200_000, 5),
    ]
    assert account.lines == 5
    assert dict(account.dropped) == {"malformed": 2, "blank": 1}
    assert account.first_bad_line == 2


def test_gzip_or_plain_detected_from_content_not_name(tmp_path):
    plain = write_lines(tmp_path / "looks_compressed.json.gz", [review14("A1", "B1", 1)], gz=False)
    packed = write_lines(tmp_path / "looks_plain.json", [review14("A1", "B1", 1)], gz=True)
    for path in (plain, packed):
        events, _ = read_reviews(path, "amazon2014", "error", 0.0)
        assert events.height == 1


def test_2014_meta_literal_never_runs_code(tmp_path):
    witness = tmp_path / "pwned"
    lines = [
        repr({"asin": "B1", "title": "Burt&#39;s Bees  Lip\tBalm", "price": 3.5}),
        f"__import__('pathlib').Path({str(witness)!r}).touch()",
        repr({"asin": "B2", "categories": [["Beauty"]]}),  # no title
        repr({"asin": "B3", "title": '<span class="a-size-large">Foo</span>'}),
        repr({"asin": "B4", "title": "Red||Blue Nail Polish"}),
        repr({"asin": "B1", "title": "Another title for B1"}),  # duplicate asin
        repr({"asin": "B5", "title": "Johnson &amp; Johnson Baby Oil"}),
    ]
    path = write_lines(tmp_path / "meta_Beauty.json.gz", lines)
    titles, account = read_meta(path, "amazon2014", "error", 1.0)
    assert not witness.exists()
    assert account.dropped["malformed"] == 1 and account.first_bad_line == 2
    got: dict = {}
    for item, title in titles.select("item", "title").rows():
        got.setdefault(item, title)
    assert got["B1"] == "Burt's Bees Lip Balm"
    assert got["B2"] is None and got["B3"] is None
    assert got["B4"] == "Red|Blue Nail Polish"
    assert got["B5"] == "Johnson & Johnson Baby Oil"


def test_quality_accounts_for_every_line(tmp_path):
    reviews = [review14(f"A{u}", f"B{i}", 10 * u + i) for u in range(6) for i in range(6)]
    reviews += [review14("A0", "B0", 999), "garbage", review14("A0", "B9", 5)]  # dup, bad, no title
    metas = [repr({"asin": f"B{i}", "title": f"Item {i}"}) for i in range(6)]
    metas += [repr({"asin": "B9"}), repr({"asin": "B0", "title": "Dup"}), "((("]
    metas += [repr({"title": "Never reviewed", "asin": "B7"})]  # skipped unparsed
    spec = {
        "format": "amazon2014",
        "reviews": str(write_lines(tmp_path / "r.json.gz", reviews)),
        "meta": str(write_lines(tmp_path / "m.json.gz", metas)),
    }
    interactions, items, quality = ingest_domain("beauty", spec, kcore=5, max_malformed=0.5)
    rev, meta = quality["reviews"], quality["meta"]
    invariant(rev)
    invariant(meta)
    assert rev["lines"] == len(reviews) and meta["lines"] == len(metas)
    assert rev["dropped"] == {"duplicate": 1, "malformed": 1, "no_title": 1}
    assert meta["dropped"] == {"duplicate": 1, "malformed": 1, "no_title": 1, "unreviewed": 1}
    assert interactions.height == rev["kept"] == 36
    assert items.height == 6 and quality["truncated"] is False


def test_kcore_reapplied_after_untitled_items_go(tmp_path):
    # A1 has 5 events but one item has no title: after removing it A1 falls below 5.
    reviews = [review14("A1", f"B{i}", i) for i in range(5)]
    reviews += [review14(f"A{u}", f"B{i}", 100 + u) for u in range(2, 8) for i in range(1, 5)]
    reviews += [review14(f"A{u}", "B5", 200 + u) for u in range(2, 8)]
    metas = [repr({"asin": f"B{i}", "title": f"Item {i}"}) for i in range(1, 6)]
    metas.append(repr({"asin": "B0", "title": ""}))
    spec = {
        "format": "amazon2014",
        "reviews": str(write_lines(tmp_path / "r.gz", reviews)),
        "meta": str(write_lines(tmp_path / "m.gz", metas)),
    }
    interactions, _, quality = ingest_domain("d", spec, kcore=5, max_malformed=0.0)
    assert "A1" not in interactions["user"].to_list()
    assert quality["reviews"]["dropped"] == {"no_title": 1, "kcore": 4}
    invariant(quality["reviews"])


def test_duplicates_keep_earliest_and_ties_keep_file_order(tmp_path):
    reviews = [
        review14("A1", "B2", 50),
        review14("A1", "B1", 50),  # same second as B2: file order decides
        review14("A1", "B3", 10),
        review14("A1", "B2", 5),  # earlier duplicate of B2: this one is kept
    ]
    metas = [repr({"asin": f"B{i}", "title": f"Item {i}"}) for i in range(1, 4)]
    spec = {
        "format": "amazon2014",
        "reviews": str(write_lines(tmp_path / "r.gz", reviews)),
        "meta": str(write_lines(tmp_path / "m.gz", metas)),
    }
    interactions, _, quality = ingest_domain("d", spec, kcore=0, max_malformed=0.0)
    assert interactions.rows() == [("A1", "B2", 5), ("A1", "B3", 10), ("A1", "B1", 50)]
    assert quality["reviews"]["dropped"] == {"duplicate": 1}


# --- truncation and malformed limits -----------------------------------------------------


def truncated_gzip(path, lines, keep_fraction=0.6):
    data = gzip.compress("".join(line + "\n" for line in lines).encode(), mtime=0)
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    return path


def test_truncated_gzip_fails_naming_file_and_last_line(tmp_path):
    lines = [review14(f"A{i}", f"B{i}", i, reviewText=f"text {i} " * 20) for i in range(400)]
    path = truncated_gzip(tmp_path / "reviews_Toys_5.json.gz", lines)
    with pytest.raises(RawInputError, match=r"reviews_Toys_5\.json\.gz.*truncated.*line \d+"):
        read_reviews(path, "amazon2014", "error", 0.001)


def test_truncated_gzip_keep_uses_complete_lines(tmp_path):
    lines = [review14(f"A{i}", f"B{i}", i, reviewText=f"text {i} " * 20) for i in range(400)]
    path = truncated_gzip(tmp_path / "r.json.gz", lines)
    events, account = read_reviews(path, "amazon2014", "keep", 0.001)
    assert account.truncated
    assert 0 < events.height < 400
    # Every kept record is a complete original line, in order.
    assert events["user"].to_list() == [f"A{i}" for i in range(events.height)]
    assert account.lines == events.height + sum(account.dropped.values())


def test_malformed_above_limit_fails_with_count_and_first_line(tmp_path):
    lines = [review14("A1", f"B{i}", i) for i in range(100)]
    lines[41] = '{"reviewerID": "A1", "asin": '
    lines[77] = "]]"
    path = write_lines(tmp_path / "r.json.gz", lines)
    with pytest.raises(RawInputError, match=r"2 malformed lines of 100.*first bad line 42"):
        read_reviews(path, "amazon2014", "error", 0.001)
    events, account = read_reviews(path, "amazon2014", "error", 0.05)
    assert events.height == 98 and account.dropped["malformed"] == 2


# --- Amazon 2018 -------------------------------------------------------------------------


def test_2018_reviews_any_key_order_and_meta_duplicates(tmp_path):
    reviews = [
        json.dumps(
            {"overall": 4.0, "vote": "2", "asin": "B1", "unixReviewTime": 7, "reviewerID": "A"}
        ),
        json.dumps(
            {"reviewerID": "A", "style": {"Format:": " Kindle"}, "unixReviewTime": 8, "asin": "B2"}
        ),
    ]
    events, _ = read_reviews(
        write_lines(tmp_path / "V_5.json.gz", reviews), "amazon2018", "error", 0
    )
    assert events.select("user", "item", "ts_ms").rows() == [("A", "B1", 7000), ("A", "B2", 8000)]
    metas = [
        json.dumps({"asin": "B1", "title": "", "price": ""}),
        json.dumps({"asin": "B1", "title": "Halo 3", "price": "$19.99"}),
        json.dumps({"title": "var aPageStart = (new Date()).getTime();", "asin": "B2"}),
    ]
    titles, account = read_meta(
        write_lines(tmp_path / "meta.json.gz", metas), "amazon2018", "error", 0
    )
    assert titles.select("item", "title").rows() == [("B1", None), ("B1", "Halo 3"), ("B2", None)]
    # Single quotes are not JSON: a 2018 meta file is strict JSON.
    bad = write_lines(tmp_path / "bad.json.gz", [repr({"asin": "B1", "title": "x"})])
    with pytest.raises(RawInputError, match="1 malformed lines of 1"):
        read_meta(bad, "amazon2018", "error", 0.001)


# --- Amazon 2023 -------------------------------------------------------------------------


def test_2023_milliseconds_and_parent_asin(tmp_path):
    reviews = [
        json.dumps(
            {
                "rating": 5.0,
                "asin": "V1",
                "parent_asin": "P1",
                "user_id": "U",
                "timestamp": 1588687728923,
            }
        ),
        json.dumps({"rating": 1.0, "asin": "P2", "user_id": "U", "timestamp": 1588687729000}),
    ]
    events, _ = read_reviews(
        write_lines(tmp_path / "Toys.jsonl.gz", reviews), "amazon2023", "error", 0
    )
    assert events.select("user", "item", "ts_ms").rows() == [
        ("U", "P1", 1588687728923),
        ("U", "P2", 1588687729000),
    ]
    spec_rows = [
        json.dumps({"parent_asin": "P1", "title": "LEGO City Fire Station", "store": "LEGO"})
    ]
    titles, _ = read_meta(
        write_lines(tmp_path / "meta.jsonl.gz", spec_rows), "amazon2023", "error", 0
    )
    assert titles.select("item", "title").rows() == [("P1", "LEGO City Fire Station")]


def test_2023_interactions_are_in_seconds(tmp_path):
    reviews = [
        json.dumps({"user_id": "U", "parent_asin": f"P{i}", "timestamp": 1_600_000_000_000 + i})
        for i in range(3)
    ]
    metas = [json.dumps({"parent_asin": f"P{i}", "title": f"T{i}"}) for i in range(3)]
    spec = {
        "format": "amazon2023",
        "reviews": str(write_lines(tmp_path / "r.jsonl", reviews, gz=False)),
        "meta": str(write_lines(tmp_path / "m.jsonl", metas, gz=False)),
    }
    interactions, _, _ = ingest_domain("toys", spec, kcore=0, max_malformed=0)
    assert interactions["ts"].to_list() == [1_600_000_000] * 3
    assert interactions["item"].to_list() == ["P0", "P1", "P2"]  # ms order survives
    assert interactions.schema["ts"] == pl.Int64


# --- MOOCCube ----------------------------------------------------------------------------


def mooc_folder(tmp_path, users, courses):
    (tmp_path / "entities").mkdir()
    (tmp_path / "relations").mkdir()
    write_lines(tmp_path / "entities" / "user.json", users, gz=False)
    write_lines(tmp_path / "entities" / "course.json", courses, gz=False)
    return tmp_path


def test_mooccube_sequences_and_chinese_names(tmp_path):
    def course(i, name):
        return json.dumps(
            {"id": f"C_course-v1:TsinghuaX+{i}+2015_T2", "name": name}, ensure_ascii=False
        )

    users = [
        json.dumps(
            {
                "id": "U_1",
                "course_order": [
                    "C_course-v1:TsinghuaX+2+2015_T2",
                    "C_course-v1:TsinghuaX+1+2015_T2",
                ],
                "enroll_time": ["2016-03-01 08:00:00", "2015-09-29 16:07:58"],
            }
        ),
        '{"id": "U_2", "course_order": [',
        json.dumps(
            {
                "id": "U_3",
                "course_order": ["C_course-v1:TsinghuaX+1+2015_T2", "C_x"],
                "enroll_time": ["2015-01-01 00:00:00"],
            }
        ),
    ]
    courses = [course(1, "数据结构（上）"), course(2, "数据结构（下）"), course(3, "")]
    root = mooc_folder(tmp_path, users, courses)
    events, titles, accounts = read_mooccube(str(root), "error", 1.0)
    assert events.filter(pl.col("user") == "U_1").sort("ts_ms")["item"].to_list() == [
        "C_course-v1:TsinghuaX+1+2015_T2",
        "C_course-v1:TsinghuaX+2+2015_T2",
    ]
    assert (
        dict(titles.select("item", "title").rows())["C_course-v1:TsinghuaX+1+2015_T2"]
        == "数据结构（上）"
    )
    users_account = accounts["reviews"].as_dict()
    assert users_account["lines"] == 3
    assert users_account["dropped"] == {"malformed": 1, "no_time": 1}
    assert users_account["records"] == 3 + 1 + 1  # 3 timed entries, 1 untimed, 1 bad line


# --- titles ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("  Foo   Bar  ", "Foo Bar"),
        ("Tom &amp;amp; Jerry", "Tom & Jerry"),
        ("A||B", "A|B"),
        ("||A|||", "A"),
        ("<div>junk</div>", None),
        ("<br/>", None),
        ("window.ue_t0 = 1", None),
        ("", None),
        (None, None),
        (["list"], None),
        ("3 < 4 > 2 Stickers", "3 < 4 > 2 Stickers"),
        ("数据结构（上）", "数据结构（上）"),
    ],
)
def test_clean_title(raw, clean):
    assert clean_title(raw) == clean


def test_the_schema_names_every_raw_format_and_the_inputs_it_reads():
    """The schema's format names and the inputs it requires per format follow the registry
    (molorec.io.formats): a domain with exactly the registry's keys for its format
    validates, one without any of them does not."""
    import jsonschema

    from molorec.io.formats import FORMATS
    from molorec.schema import load_schema

    domain = load_schema()["properties"]["domains"]["additionalProperties"]
    assert domain["properties"]["format"]["enum"] == list(FORMATS)
    validator = jsonschema.Draft202012Validator(domain)
    for name, fmt in FORMATS.items():
        spec = {"role": "target", "format": name} | {key: "in/" for key in fmt.keys}
        assert validator.is_valid(spec), name
        for key in fmt.keys:
            assert not validator.is_valid({k: v for k, v in spec.items() if k != key}), name
        assert all(isinstance(f, str) for f in fmt.files(spec))


# --- Block readers: the same records and reasons as line by line ----------------------

# Lines the strict block decoder must not take as they are: each is either dropped with a
# reason by the line-by-line reader or read there by json.loads's rules, not the decoder's.
ODD_REVIEW_LINES = [
    review14(12, "B1", 100),  # a number as id
    review14("A1", "B1", 100.0),  # a float time
    review14("A1", "B1", "100"),  # a digit-string time: json.loads's reader takes it
    review14("A1", "B1", True),
    review14("A1", "B1", -5),
    review14("A1", "B1", 2**70),
    review14("", "B1", 100),
    review14("A\u00e9", "B1", 100),  # printable, not ASCII: _is_id judges it
    review14("A\x01", "B1", 100),
    '{"reviewerID": "A\\ud800", "asin": "B1", "unixReviewTime": 1}',  # lone surrogate
    '{"reviewerID": "A1", "asin": "B1", "unixReviewTime": 1, "overall": NaN}',
    '{"reviewerID": "A1", "asin": "B1", "unixReviewTime": 1, "overall": "5"}',
    '{"asin": "B1", "unixReviewTime": 1}',
    review14("A1", "B1", 1) + " " + review14("A2", "B1", 2),  # two objects on a line
    # ... and then a blank line: as many records as lines
    review14("A1", "B1", 1) + " " + review14("A2", "B1", 2) + "\n",
    "",
    "  \t",
    "[1, 2]",
    "{not json",
]
# A line the decoder reads as json.loads does: a duplicate key, the last one counting.
DUPLICATE_KEY = '{"reviewerID": "A0", "reviewerID": "A1", "asin": "B1", "unixReviewTime": 1}'


@pytest.mark.parametrize("fmt", ["amazon2014", "amazon2023"])
@pytest.mark.parametrize("odd", [*ODD_REVIEW_LINES, DUPLICATE_KEY])
def test_block_reader_gives_the_line_by_line_records_and_reasons(tmp_path, monkeypatch, fmt, odd):
    """Small chunks make blocks of a few lines: the odd line's block is read line by line,
    the clean blocks around it whole, and the records and account equal reading every line
    one by one."""
    import molorec.io.rawfile as rawfile
    from molorec.io.amazon import LAYOUTS, review_extractor

    def line(user, item, ts):
        if fmt == "amazon2014":
            return review14(user, item, ts)
        rec = {"user_id": user, "asin": item, "rating": 4, "timestamp": ts}
        return json.dumps(rec | ({"parent_asin": "P" + item} if ts % 2 else {}))

    odd = odd if fmt == "amazon2014" else odd.replace("reviewerID", "user_id")
    odd = odd.replace("unixReviewTime", "timestamp") if fmt == "amazon2023" else odd
    lines = [line(f"A{i}", f"B{i % 7}", 1000 + i) for i in range(40)]
    path = write_lines(tmp_path / "r.json.gz", lines[:20] + [odd] + lines[20:])
    monkeypatch.setattr(rawfile, "CHUNK_BYTES", 300)
    blocks, plain = (
        read_reviews(path, fmt, "error", 1.0),
        rawfile.read_records(
            path,
            json.loads,
            review_extractor(LAYOUTS[fmt]),
            rawfile.RATED_EVENT_SCHEMA,
            "error",
            1.0,
        ),
    )
    assert blocks[0].equals(plain[0])
    assert blocks[1].as_dict() == plain[1].as_dict()
    assert (blocks[1].first_bad_line, blocks[1].first_bad_reason) == (
        plain[1].first_bad_line,
        plain[1].first_bad_reason,
    )


def test_block_reader_reads_a_clean_block_whole_and_refuses_an_odd_one():
    from molorec.io.amazon import LAYOUTS, review_block_reader

    read = review_block_reader(LAYOUTS["amazon2014"])
    clean = "".join(review14(f"A{i}", "B1", i) + "\n" for i in range(3)).encode()
    records = read(clean)
    assert records.to_dicts() == [
        {"user": f"A{i}", "item": "B1", "ts_ms": i * 1000, "rating": 5.0} for i in range(3)
    ]
    for odd in ODD_REVIEW_LINES:
        assert read(clean + (odd + "\n").encode()) is None, odd


def test_unreviewed_filter_skips_the_same_lines_matched_at_once_or_one_by_one(tmp_path):
    """The meta filter over a block's lines at once (polars), and one by one as bytes where
    a block is not UTF-8: the same lines go unparsed, and lines without the key are parsed."""
    from molorec.io.amazon import LAYOUTS, unreviewed_filter

    lines = [
        b"{'asin': 'B1', 'title': 'kept'}",
        b"{'asin': 'B2', 'title': 'unreviewed'}",
        b'{"asin" :  "B3", "title": "double quotes, spaces"}',
        b"{'title': 'no asin key: parsed in full'}",
        b"{'asin': 'B\\'4', 'title': 'escaped quote: no match, parsed'}",
        b"{'title': 'x', 'asin': 'B5'}",
        "{'asin': 'B\u00e96', 'title': 'caf\u00e9'}".encode(),
    ]
    skip = unreviewed_filter(LAYOUTS["amazon2014"], {"B1", "B3", "B\u00e96"})
    expected = [None, "unreviewed", None, None, None, "unreviewed", None]
    assert skip(lines) == expected
    assert skip(lines + [b"{'asin': 'B7', 'title': '\xff'}"]) == expected + ["unreviewed"]


def test_lines_parsed_in_forked_workers_give_the_same_records_and_account(tmp_path, monkeypatch):
    """Metadata lines (literal parse, unreviewed skip, malformed and titleless lines) parsed
    in 2 forked workers, in blocks of a few lines: the titles and the account of one
    process."""
    import molorec.io.rawfile as rawfile
    from molorec import parallel

    lines = []
    for i in range(300):
        lines.append(repr({"asin": f"B{i:03d}", "title": f"Title {i}"}))
        if i % 37 == 0:
            lines += ["{'asin': 'B000', 'title': 'x'", "__import__('os')", "{'asin': 'B1'}", ""]
    path = write_lines(tmp_path / "meta.json.gz", lines)
    reviewed = {f"B{i:03d}" for i in range(0, 300, 2)}
    monkeypatch.setattr(rawfile, "CHUNK_BYTES", 2000)
    one = read_meta(path, "amazon2014", "error", 1.0, reviewed)
    monkeypatch.setattr(rawfile, "PARALLEL_LINES", 1)
    with parallel.workers(2):
        two = read_meta(path, "amazon2014", "error", 1.0, reviewed)
    assert two[0].equals(one[0])
    assert two[1].as_dict() == one[1].as_dict()
    assert two[1].first_bad_line == one[1].first_bad_line == 2
    # The reason names the rejected node, by its address in the process that parsed it.
    assert two[1].first_bad_reason.split(" at 0x")[0] == one[1].first_bad_reason.split(" at 0x")[0]
    assert one[1].as_dict()["dropped"]["malformed"] == 2 * 9
