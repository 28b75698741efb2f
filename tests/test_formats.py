"""MovieLens (100K, 1M/10M, latest/20M+), RecBole atomic files and plain CSV: each ingests
its bundled sample with every injected defect counted, and hand-written lines pin the
encodings, ratings, ties, truncation and field lookup."""

from __future__ import annotations

import copy
import gzip
import json

import polars as pl
import pytest
import yaml
from conftest import REPO, one_target_config, run_workflow
from test_io import invariant

from molorec.config import ConfigError, check_config
from molorec.data.ingest import ingest_domain, run
from molorec.io.rawfile import RawInputError

SAMPLE = REPO / "resources/sample"
CSV_COLUMNS = {"user": "customer", "item": "product", "time": "event_time", "rating": "stars"}
SPECS = {
    "movielens100k": {"format": "movielens100k", "path": str(SAMPLE / "movielens100k")},
    "movielens1m": {"format": "movielens1m", "path": str(SAMPLE / "movielens1m")},
    "movielens_csv": {"format": "movielens_csv", "path": str(SAMPLE / "movielens_latest")},
    "recbole": {"format": "recbole", "path": str(SAMPLE / "recbole/ml-sample")},
    "csv": {
        "format": "csv",
        "interactions": str(SAMPLE / "csv/interactions.csv"),
        "items": str(SAMPLE / "csv/items.csv"),
        "columns": CSV_COLUMNS | {"title": "name"},
    },
}
HEADERS = {"movielens_csv", "recbole", "csv"}


def ingest(spec, kcore=5, max_malformed=0.01):
    return ingest_domain("movies", spec, kcore=kcore, max_malformed=max_malformed)


@pytest.mark.parametrize("name", list(SPECS))
def test_each_format_ingests_its_sample_with_every_defect_counted(name, tmp_path):
    interactions, items, quality = ingest(SPECS[name])
    ratings, movies = quality["reviews"], quality["meta"]
    invariant(ratings)
    invariant(movies)
    header = {"header": 1} if name in HEADERS else {}
    # The sample's defects (resources/sample/README.md): one line stopping before its last
    # field, one movie rated twice, one rating of a movie the movie file lacks, one movie
    # with an empty title; the events of that movie go as no_title, the k-core takes more.
    assert {k: ratings["dropped"][k] for k in ("malformed", "duplicate", "unknown_item")} == {
        "malformed": 1,
        "duplicate": 1,
        "unknown_item": 1,
    }
    assert ratings["dropped"]["no_title"] > 0
    assert set(ratings["dropped"]) <= {
        *header,
        "malformed",
        "duplicate",
        "unknown_item",
        "no_title",
        "kcore",
    }
    assert movies["dropped"] == header | {"no_title": 1}
    assert interactions.schema == pl.Schema({"user": pl.String, "item": pl.String, "ts": pl.Int64})
    assert items.schema == pl.Schema({"item": pl.String, "title": pl.String})
    assert interactions.height == ratings["kept"] and items.height <= movies["kept"]
    assert set(interactions["item"]) == set(items["item"])
    assert quality["min_rating"] is None and quality["truncated"] is False
    # The same inputs, the same bytes.
    data = {"kcore": 5, "max_malformed_fraction": 0.01}
    outs = [{k: tmp_path / f"{k}{i}" for k in ("interactions", "items", "quality")} for i in (1, 2)]
    for out in outs:
        run("movies", SPECS[name], data, out)
    for key in outs[0]:
        assert outs[0][key].read_bytes() == outs[1][key].read_bytes(), key


@pytest.mark.parametrize("name", ["movielens100k", "movielens1m"])
def test_latin1_titles_reach_the_items_as_written(name):
    raw = (SAMPLE / name / ("u.item" if name == "movielens100k" else "movies.dat")).read_bytes()
    assert "Misérables".encode("latin-1") in raw and "Misérables".encode() not in raw
    _, items, quality = ingest(SPECS[name])
    titles = set(items["title"])
    assert {"Misérables, Les (1995)", "Léon: The Professional (1994)"} <= titles
    assert quality["meta"]["notes"] == {"encoding": "auto", "latin1_lines": 6}


def ml1m(tmp_path, ratings, movies, **spec):
    folder = tmp_path / "ml-1m"
    folder.mkdir(exist_ok=True)
    (folder / "ratings.dat").write_bytes(ratings)
    (folder / "movies.dat").write_bytes(movies)
    return {"format": "movielens1m", "path": str(folder), **spec}


MOVIES = "\n".join(f"{i}::Movie {i} (199{i})::Drama" for i in range(1, 7)).encode() + b"\n"


def test_equal_times_keep_the_file_order(tmp_path):
    """MovieLens has many ratings in one second: they stay in the file's order, whatever
    their ids, so a rerun or another machine orders them the same."""
    lines = ["1::5::4::100", "1::2::4::100", "1::6::4::100", "1::1::4::50"]
    spec = ml1m(tmp_path, ("\n".join(lines) + "\n").encode(), MOVIES)
    interactions, _, _ = ingest(spec, kcore=0)
    assert interactions["item"].to_list() == ["1", "5", "2", "6"]
    reverse = ["1::6::4::100", "1::2::4::100", "1::5::4::100", "1::1::4::50"]
    spec = ml1m(tmp_path, ("\n".join(reverse) + "\n").encode(), MOVIES)
    assert ingest(spec, kcore=0)[0]["item"].to_list() == ["1", "6", "2", "5"]


def test_min_rating_keeps_the_ratings_at_or_above_it_and_says_so():
    spec = SPECS["movielens1m"] | {"min_rating": 4}
    all_ratings = ingest(SPECS["movielens1m"], kcore=0)[2]
    interactions, _, quality = ingest(spec, kcore=0)
    lines = (SAMPLE / "movielens1m/ratings.dat").read_text(encoding="latin-1").splitlines()
    below = sum(1 for line in lines if len(f := line.split("::")) == 4 and int(f[2]) < 4)
    assert quality["min_rating"] == 4
    assert quality["reviews"]["dropped"]["below_min_rating"] == below > 0
    assert interactions.height < all_ratings["interactions"]
    invariant(quality["reviews"])


def test_min_rating_on_amazon_reads_its_star_rating():
    beauty = REPO / "resources/sample/amazon2014"
    spec = {
        "format": "amazon2014",
        "reviews": str(beauty / "reviews_Beauty_5.json.gz"),
        "meta": str(beauty / "meta_Beauty.json.gz"),
        "min_rating": 4,
    }
    quality = ingest(spec, kcore=0)[2]
    with gzip.open(beauty / "reviews_Beauty_5.json.gz", "rt") as reviews:
        stars = []
        for line in reviews:
            try:
                stars.append(json.loads(line)["overall"])
            except ValueError:
                continue  # the sample's one cut-off line
    below = sum(star < 4 for star in stars)
    assert quality["reviews"]["dropped"]["below_min_rating"] == below > 0
    invariant(quality["reviews"])


def test_min_rating_needs_ratings(tmp_path):
    spec = SPECS["csv"] | {
        "columns": {"user": "customer", "item": "product", "time": "event_time", "title": "name"},
        "min_rating": 3,
    }
    with pytest.raises(
        RawInputError, match=r"interactions\.csv: min_rating is set but the file has no rating"
    ):
        ingest(spec)


def test_a_cut_off_plain_file_is_a_truncation(tmp_path):
    ratings = b"1::1::4::10\n1::2::4::20\n1::3::"  # the download stopped mid-line
    with pytest.raises(
        RawInputError,
        match=r"ratings\.dat: the file is truncated \(its last line stops mid-record\).*line 2",
    ):
        ingest(ml1m(tmp_path, ratings, MOVIES), kcore=0)
    interactions, _, quality = ingest(ml1m(tmp_path, ratings, MOVIES, on_truncated="keep"), kcore=0)
    assert interactions.height == 2 and quality["truncated"] is True
    assert quality["reviews"]["dropped"] == {"truncated": 1}
    # A last line without its newline that parses is a complete record.
    interactions, _, quality = ingest(ml1m(tmp_path, b"1::1::4::10\n1::2::4::20", MOVIES), kcore=0)
    assert interactions.height == 2 and quality["truncated"] is False


def test_malformed_lines_are_counted_and_above_the_limit_named(tmp_path):
    lines = ["1::1::4::10", "1::2::x::20", "1::3::4", "1::4::4::later", "1::5::4::50"]
    spec = ml1m(tmp_path, ("\n".join(lines) + "\n").encode(), MOVIES)
    _, _, quality = ingest(spec, kcore=0, max_malformed=0.9)
    assert quality["reviews"]["dropped"] == {"malformed": 3}
    with pytest.raises(
        RawInputError,
        match=r"ratings\.dat: 3 malformed lines of 5.*first bad line 2: rating 'x' is not a number",
    ):
        ingest(spec, kcore=0, max_malformed=0.1)


def test_a_title_holding_the_separator_is_joined_back(tmp_path):
    movies = b"1::Alpha::Beta (1999)::Drama\n2::Gamma (2000)::Comedy|Drama\n"
    spec = ml1m(tmp_path, b"1::1::4::10\n1::2::5::20\n", movies)
    items = ingest(spec, kcore=0)[1]
    assert dict(items.iter_rows()) == {"1": "Alpha::Beta (1999)", "2": "Gamma (2000)"}


def test_a_forced_encoding_is_strict(tmp_path):
    movies = "1::Misérables, Les (1995)::Drama\n2::Heat (1995)::Action\n".encode("latin-1")
    spec = ml1m(tmp_path, b"1::1::4::10\n1::2::5::20\n", movies, encoding="utf-8")
    _, items, quality = ingest(spec, kcore=0, max_malformed=0.9)
    assert quality["meta"]["dropped"] == {"malformed": 1}
    assert (
        ingest(spec | {"encoding": "latin-1"}, kcore=0)[1]["title"].to_list()[0]
        == "Misérables, Les (1995)"
    )


def recbole(tmp_path, inter_header, item_header, inter_rows, item_rows, name="ds"):
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.inter").write_text("\n".join([inter_header, *inter_rows]) + "\n")
    (folder / f"{name}.item").write_text("\n".join([item_header, *item_rows]) + "\n")
    return {"format": "recbole", "path": str(folder)}


def test_recbole_fields_are_found_by_name_whatever_their_types(tmp_path):
    spec = recbole(
        tmp_path,
        "timestamp:float\titem_id:token\tuser_id:token",
        "item_name:token_seq\titem_id:token\tprice:float",
        ["1.5e9\tb\tu1", "1500000001\ta\tu1"],
        ["Book B\tb\t3.0", "Book A\ta\t2.0"],
    )
    interactions, items, quality = ingest(spec, kcore=0)
    assert interactions["item"].to_list() == ["b", "a"]
    assert quality["reviews"]["notes"]["fields"] == {
        "user": "user_id:token",
        "item": "item_id:token",
        "time": "timestamp:float",
    }
    assert quality["meta"]["notes"]["fields"]["title"] == "item_name:token_seq"
    assert dict(items.iter_rows()) == {"a": "Book A", "b": "Book B"}


def test_recbole_without_a_time_field_is_refused_naming_what_it_has(tmp_path):
    spec = recbole(
        tmp_path,
        "user_id:token\titem_id:token",
        "item_id:token\ttitle:token_seq",
        ["u\ta"],
        ["a\tA"],
    )
    with pytest.raises(
        RawInputError,
        match=r"ds\.inter: line 1 \(the header\) has no time field \(looked for timestamp; "
        r"it has user_id:token, item_id:token\)",
    ):
        ingest(spec, kcore=0)
    spec = recbole(
        tmp_path,
        "user_id:token\titem_id:token\twhen:float",
        "item_id:token\ttitle:token_seq",
        ["u\ta\t5"],
        ["a\tA"],
    )
    assert ingest(spec | {"columns": {"time": "when"}}, kcore=0)[0].height == 1


def test_csv_with_its_own_columns_separator_and_quotes(tmp_path):
    (tmp_path / "events.csv").write_text(
        "who;what;when\nu1;i2;2020-01-02T10:00:00\nu1;i1;2020-01-01\nu2;i1;1577836800000\n"
    )
    (tmp_path / "things.csv").write_text('what;label\ni1;"Bread; rye"\ni2;Milk\n')
    spec = {
        "format": "csv",
        "interactions": str(tmp_path / "events.csv"),
        "items": str(tmp_path / "things.csv"),
        "columns": {"user": "who", "item": "what", "time": "when", "title": "label"},
        "separator": ";",
    }
    interactions, items, _ = ingest(spec, kcore=0)
    assert interactions.rows() == [
        ("u1", "i1", 1577836800),
        ("u1", "i2", 1577959200),
        ("u2", "i1", 1577836800),
    ]
    assert dict(items.iter_rows()) == {"i1": "Bread; rye", "i2": "Milk"}
    with pytest.raises(
        RawInputError, match=r"events\.csv: line 1 \(the header\) has no field 'user' for the user"
    ):
        ingest(spec | {"columns": {}}, kcore=0)


@pytest.fixture
def sample_config():
    return yaml.safe_load((REPO / "config.yaml").read_text())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"format": "amazon2014", "separator": ";"},
            r"domains\.movies\.separator: format amazon2014 takes no separator "
            r"\(the formats that do: csv\)",
        ),
        (
            {"format": "mooccube", "path": "resources/sample/mooccube", "min_rating": 4},
            r"domains\.movies\.min_rating: format mooccube has no ratings",
        ),
        (
            {"format": "recbole", "path": "resources/sample/movielens1m"},
            r"domains\.movies\.path: resources/sample/movielens1m has no movielens1m\.inter",
        ),
    ],
)
def test_the_config_check_knows_each_format_s_options(sample_config, tmp_path, change, message):
    config = copy.deepcopy(sample_config)
    config["domains"]["movies"] = {
        "role": "target",
        "format": "movielens1m",
        "path": "resources/sample/movielens1m",
    }
    check_config(copy.deepcopy(config), base_dir=REPO)
    spec = config["domains"]["movies"] | change
    if spec["format"].startswith("amazon"):
        spec |= {k: config["domains"]["beauty"][k] for k in ("reviews", "meta")}
        spec.pop("path")
    config["domains"]["movies"] = spec
    with pytest.raises(ConfigError, match=message):
        check_config(config, base_dir=REPO)


def test_the_movielens_config_is_the_sample_s_with_a_movielens_target():
    """config/movielens.yaml: config.yaml's settings and general domains, a MovieLens-1M
    target, valid as it is on the bundled sample."""
    movielens = yaml.safe_load((REPO / "config/movielens.yaml").read_text())
    sample = yaml.safe_load((REPO / "config.yaml").read_text())

    def general(config):
        return {d: s for d, s in config["domains"].items() if s["role"] == "general"}

    assert {k: v for k, v in movielens.items() if k != "domains"} == {
        k: v for k, v in sample.items() if k != "domains"
    }
    assert general(movielens) == general(sample)
    targets = {d: s["format"] for d, s in movielens["domains"].items() if s["role"] == "target"}
    assert targets == {"movies": "movielens1m"}
    check_config(movielens, base_dir=REPO)


def test_a_domain_s_reader_options_reach_its_ingest_job(tmp_path):
    """The workflow passes a domain's format options (columns, min_rating) to its job."""
    config = one_target_config()
    config["domains"]["shop"] = {"role": "target", **SPECS["csv"], "min_rating": 3}
    target = "results/data/shop/quality.json"
    proc = run_workflow(tmp_path, config, target)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    quality = json.loads((tmp_path / target).read_text())
    assert quality["reviews"]["notes"]["fields"]["user"] == "customer"
    assert quality["min_rating"] == 3 and quality["reviews"]["dropped"]["below_min_rating"] > 0
