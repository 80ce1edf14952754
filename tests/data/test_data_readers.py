"""Tests of embtune.data: real SciFact, round trips, and malformed inputs naming file and line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from embtune.data import BeirData, PairsData, as_pairs_data, load_beir, load_pairs
from embtune.errors import DataFormatError

from tiny_models import scifact_dir  # skips the test when ../shared/data/scifact is absent


def _jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


CORPUS = _jsonl([
    {"_id": "d1", "title": "Title one", "text": "Body one."},
    {"_id": "d2", "title": "", "text": "Body two."},
    {"_id": "d3", "text": "Body three."},
])
QUERIES = _jsonl([{"_id": "q1", "text": "first query"}, {"_id": "q2", "text": "second query"}])
TRAIN = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq2\td3\t0\n"
TEST = "q1\td3\t2\n"  # no header: it is optional


def _beir(root: Path, **override: str | bytes) -> Path:
    """Write a small valid BEIR folder, with some files replaced by ``override`` (name -> content)."""
    files = {
        "corpus.jsonl": CORPUS, "queries.jsonl": QUERIES, "qrels/train.tsv": TRAIN, "qrels/test.tsv": TEST,
    }
    files.update({k.replace("__", "/"): v for k, v in override.items()})
    folder = root / "beir"
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return folder


# ---------------------------------------------------------------- real SciFact


@pytest.fixture(scope="module")
def scifact() -> BeirData:
    return load_beir(scifact_dir())


def test_scifact_counts(scifact):
    assert len(scifact.corpus) == 5183
    assert len(scifact.queries) == 1109
    assert scifact.splits == ["test", "train"]
    assert len(scifact.pairs("train")) == 919
    assert len(scifact.pairs("test")) == 339
    assert sum(len(v) for v in scifact.qrels["test"].values()) == 339


def test_scifact_texts_join_title_and_body(scifact):
    with open(scifact_dir() / "corpus.jsonl", encoding="utf-8") as fh:
        first = json.loads(fh.readline())
    assert scifact.corpus[first["_id"]] == (first["title"] + " " + first["text"]).strip()
    assert scifact.titles[first["_id"]] == first["title"]
    query, doc = scifact.pairs("train")[0]
    assert query == scifact.queries["0"] and doc == scifact.corpus["31715818"]  # first line of train.tsv
    data = as_pairs_data(scifact_dir())
    assert (data.kind, data.columns, len(data)) == ("pairs", ["anchor", "positive"], 919)
    with pytest.raises(DataFormatError, match="no qrels split 'dev'"):
        scifact.pairs("dev")


# ---------------------------------------------------------------- round trips


def test_beir_round_trip(tmp_path):
    data = load_beir(_beir(tmp_path))
    assert data.corpus == {"d1": "Title one Body one.", "d2": "Body two.", "d3": "Body three."}
    assert data.queries == {"q1": "first query", "q2": "second query"}
    assert data.qrels == {"train": {"q1": {"d1": 1}, "q2": {"d2": 1, "d3": 0}}, "test": {"q1": {"d3": 2}}}
    assert data.pairs("train") == [("first query", "Title one Body one."), ("second query", "Body two.")]
    assert data.pairs("test") == [("first query", "Body three.")]


def test_beir_graded_qrels_are_kept_as_integers(tmp_path):
    """Scores 0..3 (and negative) are kept as read, as ints; pairs take score > 0 whatever the grade."""
    graded = "query-id\tcorpus-id\tscore\nq1\td1\t3\nq1\td2\t0\nq1\td3\t2\nq2\td1\t-1\nq2\td2\t1\n"
    data = load_beir(_beir(tmp_path, **{"qrels__train.tsv": graded}))
    train = data.qrels["train"]
    assert train == {"q1": {"d1": 3, "d2": 0, "d3": 2}, "q2": {"d1": -1, "d2": 1}}
    assert all(type(score) is int for docs in train.values() for score in docs.values())
    assert data.pairs("train") == [("first query", "Title one Body one."), ("first query", "Body three."),
                                   ("second query", "Body two.")]


ROWS = {
    "pairs": [{"anchor": "a1", "positive": "p1"}, {"anchor": "a2", "positive": "p2, with comma"}],
    "triplets": [{"anchor": "a", "positive": "p", "negative": "n", "negative_2": "m", "negative_1": "l"}],
    "labelled": [
        {"sentence1": "s", "sentence2": "t", "label": 0.25},
        {"sentence1": "u", "sentence2": "v", "label": 1},
    ],
}
COLUMNS = {
    "pairs": ["anchor", "positive"],
    "triplets": ["anchor", "positive", "negative", "negative_1", "negative_2"],
    "labelled": ["sentence1", "sentence2", "label"],
}


@pytest.mark.parametrize("kind", list(ROWS))
@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".tsv"])
def test_pairs_round_trip(tmp_path, kind, suffix):
    rows, columns = ROWS[kind], COLUMNS[kind]
    path = tmp_path / f"data{suffix}"
    if suffix == ".jsonl":
        path.write_text(_jsonl(rows) + "\n")  # a trailing blank line is fine
    else:
        sep = "," if suffix == ".csv" else "\t"
        quote = (lambda v: f'"{v}"' if "," in str(v) else str(v)) if sep == "," else str
        lines = [sep.join(columns)] + [sep.join(quote(r[c]) for c in columns) for r in rows]
        path.write_text("\n".join(lines) + "\n")
    data = load_pairs(path)
    assert (data.kind, data.columns, len(data)) == (kind, columns, len(rows))
    expected = [{c: (float(r[c]) if c == "label" else r[c]) for c in columns} for r in rows]
    assert data.rows == expected
    ds = data.to_dataset()
    assert ds.column_names == columns and ds.to_list() == expected


def test_csv_with_byte_order_mark_and_crlf(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfanchor,positive\r\na,\"p, q\"\r\n")
    data = load_pairs(path)
    assert (data.columns, data.rows) == (["anchor", "positive"], [{"anchor": "a", "positive": "p, q"}])


def test_as_pairs_data_accepts_every_form(tmp_path):
    import datasets

    dicts = [{"anchor": "q", "positive": "d"}, {"anchor": "r", "positive": "e"}]
    want = as_pairs_data([("q", "d"), ("r", "e")])
    assert (want.kind, want.rows) == ("pairs", dicts)
    assert as_pairs_data(want) is want
    assert as_pairs_data(dicts).rows == want.rows
    assert as_pairs_data(datasets.Dataset.from_list(want.rows)).rows == want.rows
    four = as_pairs_data([("a", "p", "n1", "n2")])
    assert (four.kind, four.columns) == ("triplets", ["anchor", "positive", "negative_1", "negative_2"])
    three = as_pairs_data([("a", "p", "n")])
    assert (three.kind, three.columns) == ("triplets", ["anchor", "positive", "negative"])
    lab = as_pairs_data([("a", "b", 1)])
    assert (lab.kind, lab.rows) == ("labelled", [{"sentence1": "a", "sentence2": "b", "label": 1.0}])
    folder = _beir(tmp_path)
    from_folder = as_pairs_data(folder)
    assert from_folder.rows == as_pairs_data(load_beir(folder)).rows
    assert [(r["anchor"], r["positive"]) for r in from_folder.rows] == load_beir(folder).pairs("train")
    path = tmp_path / "p.jsonl"
    path.write_text(_jsonl(want.rows))
    assert as_pairs_data(str(path)).rows == want.rows
    with pytest.raises(TypeError):
        as_pairs_data(42)


# ---------------------------------------------------------------- malformed inputs: file and line

BAD_UTF8 = b'{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": "caf\xe9"}\n'

# (case id, files to write: name -> content, loader, file named in the error, line)
MALFORMED = [
    ("corpus-bad-json", {"corpus.jsonl": CORPUS.replace('"d2",', '"d2"')}, "beir", "corpus.jsonl", 2),
    ("corpus-no-id", {"corpus.jsonl": CORPUS.replace('"_id": "d3", ', "")}, "beir", "corpus.jsonl", 3),
    ("corpus-no-text", {"corpus.jsonl": CORPUS.replace('"text": "Body one."', '"body": "x"')},
     "beir", "corpus.jsonl", 1),
    ("corpus-duplicate-id", {"corpus.jsonl": CORPUS.replace('"d3"', '"d1"')}, "beir", "corpus.jsonl", 3),
    ("corpus-not-utf8", {"corpus.jsonl": BAD_UTF8}, "beir", "corpus.jsonl", 2),
    ("corpus-not-object", {"corpus.jsonl": '["d1", "text"]\n'}, "beir", "corpus.jsonl", 1),
    ("queries-duplicate-id", {"queries.jsonl": QUERIES.replace('"q2"', '"q1"')}, "beir", "queries.jsonl", 2),
    ("queries-no-text", {"queries.jsonl": QUERIES + '\n{"_id": "q3"}\n'}, "beir", "queries.jsonl", 4),
    ("qrels-float-score", {"qrels/train.tsv": TRAIN.replace("q2\td2\t1", "q2\td2\t1.5")},
     "beir", "train.tsv", 3),
    ("qrels-space-separated", {"qrels/test.tsv": "q1\td3\t2\nq1 d1 1\n"}, "beir", "test.tsv", 2),
    ("qrels-no-score-column", {"qrels/test.tsv": "q1\td3\t2\nq1\td1\n"}, "beir", "test.tsv", 2),
    ("qrels-unknown-doc", {"qrels/train.tsv": TRAIN.replace("q2\td2", "q2\td9")}, "beir", "train.tsv", 3),
    ("qrels-query-not-in-queries", {"qrels/test.tsv": "q1\td1\t1\nq7\td1\t1\nq8\td1\t1\n"},
     "beir", "test.tsv", 2),
    ("qrels-header-not-first", {"qrels/test.tsv": "q1\td3\t2\nquery-id\tcorpus-id\tscore\n"},
     "beir", "test.tsv", 2),
    ("qrels-duplicate-pair", {"qrels/test.tsv": "q1\td3\t2\nq1\td3\t1\n"}, "beir", "test.tsv", 2),
    ("pairs-bad-json", {"p.jsonl": '{"anchor": "a", "positive": "p"}\n\n{"anchor": "a" "positive": "p"}\n'},
     "pairs", "p.jsonl", 3),
    ("pairs-missing-column", {"p.jsonl": '{"anchor": "a", "positive": "p"}\n{"anchor": "b"}\n'},
     "pairs", "p.jsonl", 2),
    ("pairs-empty-text", {"p.jsonl": '{"anchor": "a", "positive": "p"}\n{"anchor": "b", "positive": "  "}\n'},
     "pairs", "p.jsonl", 2),
    ("pairs-inconsistent-columns",
     {"p.jsonl": _jsonl([{"anchor": "a", "positive": "p"}] * 2
                        + [{"anchor": "a", "positive": "p", "negative": "n"}])},
     "pairs", "p.jsonl", 3),
    ("pairs-text-not-string", {"p.jsonl": '{"anchor": 5, "positive": "p"}\n'}, "pairs", "p.jsonl", 1),
    ("pairs-not-utf8",
     {"p.jsonl": b'{"anchor": "a", "positive": "p"}\n{"anchor": "\xff", "positive": "p"}\n'},
     "pairs", "p.jsonl", 2),
    ("pairs-negative-gap", {"p.jsonl": '{"anchor": "a", "positive": "p", "negative_2": "n"}\n'},
     "pairs", "p.jsonl", 1),
    ("csv-non-numeric-label", {"p.csv": "sentence1,sentence2,label\na,b,0.5\nc,d,high\n"},
     "pairs", "p.csv", 3),
    ("csv-label-after-multiline-field",
     {"p.csv": 'sentence1,sentence2,label\n"two\nlines",b,0.5\nc,d,\n'}, "pairs", "p.csv", 4),
    ("csv-wrong-field-count", {"p.csv": "anchor,positive\na,p,extra\n"}, "pairs", "p.csv", 2),
    ("csv-unknown-column", {"p.csv": "anchor,positive,score\na,p,1\n"}, "pairs", "p.csv", 1),
    ("csv-row-of-empty-cells", {"p.csv": "anchor,positive\na,p\n\n,\n"}, "pairs", "p.csv", 4),
    ("tsv-empty-cell", {"p.tsv": "anchor\tpositive\na\tp\nb\tq\n\tr\n"}, "pairs", "p.tsv", 4),
    ("labelled-missing-label", {"p.jsonl": '{"sentence1": "a", "sentence2": "b"}\n'}, "pairs", "p.jsonl", 1),
]


@pytest.mark.parametrize(
    "files,loader,filename,line", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_input_names_file_and_line(tmp_path, files, loader, filename, line):
    if loader == "beir":
        target = _beir(tmp_path, **{k.replace("/", "__"): v for k, v in files.items()})
        call = load_beir
    else:
        (name, content), = files.items()
        target = tmp_path / name
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
        call = load_pairs
    with pytest.raises(DataFormatError) as info:
        call(target)
    message = str(info.value)
    assert f"{filename}:{line}: " in message, message
    assert info.value.line == line and Path(info.value.path).name == filename


@pytest.mark.parametrize(
    "case",
    ["no-folder", "no-corpus", "empty-corpus", "blank-queries", "no-qrels", "header-only-qrels",
     "empty-pairs", "unsupported-ext", "folder-not-beir"],
)
def test_missing_or_empty_input_names_the_path(tmp_path, case):
    folder = _beir(tmp_path)
    if case == "no-folder":
        target, named, call = tmp_path / "nope", "nope", load_beir
    elif case == "no-corpus":
        (folder / "corpus.jsonl").unlink()
        target, named, call = folder, "corpus.jsonl", load_beir
    elif case == "empty-corpus":
        (folder / "corpus.jsonl").write_text("")
        target, named, call = folder, "corpus.jsonl", load_beir
    elif case == "blank-queries":
        (folder / "queries.jsonl").write_text("\n  \n")
        target, named, call = folder, "queries.jsonl", load_beir
    elif case == "no-qrels":
        for f in (folder / "qrels").iterdir():
            f.unlink()
        target, named, call = folder, "qrels", load_beir
    elif case == "header-only-qrels":
        (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n")
        target, named, call = folder, "test.tsv", load_beir
    elif case == "empty-pairs":
        target, named, call = tmp_path / "p.csv", "p.csv", load_pairs
        target.write_text("")
    elif case == "unsupported-ext":
        target, named, call = tmp_path / "p.parquet", "p.parquet", load_pairs
        target.write_text("x")
    else:
        target, named, call = tmp_path, tmp_path.name, as_pairs_data
    with pytest.raises(DataFormatError) as info:
        call(target)
    assert Path(info.value.path).name == named and info.value.line is None
    assert str(info.value).startswith(f"{info.value.path}: ")


def test_in_memory_rows_report_the_row_number():
    with pytest.raises(DataFormatError, match=r"^<list>:2: .*'positive' is empty"):
        as_pairs_data([("a", "p"), ("b", "")])
    with pytest.raises(DataFormatError, match=r"^<list>:3: expected 2 items"):
        as_pairs_data([("a", "p"), ("b", "q"), ("c", "r", "s")])
    with pytest.raises(DataFormatError, match="empty list"):
        as_pairs_data([])
    assert isinstance(as_pairs_data([("a", "p")]), PairsData)


def test_pairs_to_training_data_is_one_conversion_for_objects_and_records(caplog):
    from embtune.data.pairs import pairs_to_training_data
    from embtune.pairs.types import Pair

    objects = [Pair(query="q1", positive="p1", positive_id="c1", doc_id="d1", builder="b", negatives=["n1", "n2"]),
               Pair(query="q2", positive="p2", positive_id="c2", doc_id="d2", builder="b", negatives=["n3"])]
    records = [{"query": p.query, "positive": p.positive, "negatives": list(p.negatives)} for p in objects]
    with caplog.at_level("WARNING"):
        data = pairs_to_training_data(objects, source="run/pairs.jsonl")
    assert "1 to 2 negatives" in caplog.text
    assert (data.columns, data.kind, data.source) == (["anchor", "positive", "negative_1"], "triplets",
                                                      "run/pairs.jsonl")
    assert data.rows == [{"anchor": "q1", "positive": "p1", "negative_1": "n1"},
                         {"anchor": "q2", "positive": "p2", "negative_1": "n3"}]
    assert pairs_to_training_data(records, source="run/pairs.jsonl") == data
    plain = pairs_to_training_data([{"query": "q", "positive": "p"}])
    assert (plain.columns, plain.kind) == (["anchor", "positive"], "pairs")
    with pytest.raises(DataFormatError, match="no pairs to train on"):
        pairs_to_training_data([], source="x.jsonl")
    with pytest.raises(DataFormatError, match="'anchor' is empty"):
        pairs_to_training_data([{"query": " ", "positive": "p"}])
