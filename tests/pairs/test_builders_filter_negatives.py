"""Pair builders, filtering, hard-negative mining and the split, on a SciFact slice with the real MiniLM.

Filtering and mining are checked against a brute-force computation (full score matrix in NumPy).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from embtune.corpus.chunking import max_tokens_for
from embtune.corpus.types import Chunk
from embtune.errors import ConfigError, DataFormatError
from embtune.pairs import EvalQuery, Pair
from embtune.pairs.filtering import filter_pairs, normalise_query
from embtune.pairs.heuristic import HeuristicPairs, heading_query, sentences_of
from embtune.pairs.labels import LabelPairs, text_id
from embtune.pairs.negatives import mine_hard_negatives
from embtune.pairs.split import VERBATIM_BUILDERS, split_by_document


def write_labels(folder: Path, queries: dict[str, str], qrels: list[tuple[str, str]],
                 extra: str = "") -> tuple:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n"
                                                  for q, t in queries.items()))
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n"
                                      + "".join(f"{q}\t{d}\t1\n" for q, d in qrels) + extra)
    return folder / "queries.jsonl", folder / "qrels.tsv"


# ------------------------------------------------------------------------------------------ heuristics


def test_title_pairs_on_scifact(slice_chunks, scifact_slice) -> None:
    pairs = HeuristicPairs(signals=["title"], show_progress=False).build(slice_chunks)
    first_chunk = {}
    for c in slice_chunks:
        first_chunk.setdefault(c.doc_id, c)
    assert len(pairs) == len(first_chunk)
    for p in pairs:
        assert p.builder == "heuristic:title"
        assert p.query == " ".join(scifact_slice.titles[p.doc_id].split())
        assert p.positive_id == first_chunk[p.doc_id].id and p.positive == first_chunk[p.doc_id].text
        assert p.query not in p.positive


def test_heading_path_queries() -> None:
    chunks = [Chunk("c1", "d", "Run pip.", "Guide", ["Guide", "Install"], "g.md"),
              Chunk("c2", "d", "More pip.", "Guide", ["Guide", "Install"], "g.md"),
              Chunk("c3", "d", "Use apt.", "Guide", ["Guide", "Install", "Linux"], "g.md"),
              Chunk("c4", "e", "No title here.", "", [], "e.txt")]
    pairs = HeuristicPairs(signals=["title"], show_progress=False).build(chunks)
    assert [(p.query, p.positive_id) for p in pairs] == [("Guide > Install", "c1"),
                                                         ("Guide > Install > Linux", "c3")]
    assert heading_query("T", ["T", " A  b ", ""]) == "T > A b"


def test_inverse_cloze_pairs(slice_chunks) -> None:
    builder = HeuristicPairs(signals=["cloze"], seed=3, min_words=6, show_progress=False)
    pairs = builder.build(slice_chunks)
    by_id = {c.id: c for c in slice_chunks}
    assert len(pairs) > len(slice_chunks) // 2
    for p in pairs:
        chunk = by_id[p.positive_id]
        sentences = [chunk.text[a:b] for a, b in sentences_of(chunk.text)]
        assert p.query in sentences and len(p.query.split()) >= 6
        assert p.query not in p.positive  # the sentence is removed from the positive ...
        # ... and only it
        assert Counter(p.positive.split()) + Counter(p.query.split()) == Counter(chunk.text.split())
        assert len(p.positive.split()) >= 20
    again = HeuristicPairs(signals=["cloze"], seed=3, min_words=6,
                           show_progress=False).build(slice_chunks[::-1])
    assert sorted((p.query, p.positive_id) for p in again) == sorted((p.query, p.positive_id) for p in pairs)
    other_seed = HeuristicPairs(signals=["cloze"], seed=4, min_words=6,
                                show_progress=False).build(slice_chunks)
    assert [p.query for p in other_seed] != [p.query for p in pairs]


def test_keyword_pairs(slice_chunks) -> None:
    pairs = HeuristicPairs(signals=["keywords"], keywords=4, show_progress=False).build(slice_chunks)
    by_id = {c.id: c for c in slice_chunks}
    assert len(pairs) > len(slice_chunks) // 2
    for p in pairs:
        words = p.query.split()
        assert len(words) == 4 and len(set(words)) == 4
        assert all(w in by_id[p.positive_id].text.lower() for w in words)
        assert not {"the", "and", "of", "with"} & set(words)


def test_heuristic_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="unknown heuristic signal"):
        HeuristicPairs(signals=["title", "magic"])
    with pytest.raises(ConfigError):
        HeuristicPairs(min_words=10, max_words=5)


# ------------------------------------------------------------------------------------------ labels


def test_label_pairs_pick_the_best_chunk(tmp_path, slice_chunks, scifact_slice, minilm, slice_embeddings,
                                         encode_queries) -> None:
    queries_path, qrels_path = write_labels(tmp_path, scifact_slice.queries, scifact_slice.qrels)
    pairs = LabelPairs(queries_path, qrels_path, show_progress=False).build(slice_chunks, minilm,
                                                                           embeddings=slice_embeddings)
    assert [(p.query, p.doc_id) for p in pairs] == [(scifact_slice.queries[q], d)
                                                    for q, d in scifact_slice.qrels]
    rows = {c.id: i for i, c in enumerate(slice_chunks)}
    q_emb = encode_queries([p.query for p in pairs])
    multi = 0
    for p, q in zip(pairs, q_emb):
        candidates = [i for i, c in enumerate(slice_chunks) if c.doc_id == p.doc_id]
        multi += len(candidates) > 1
        best = candidates[int(np.argmax(slice_embeddings[candidates] @ q))]
        assert rows[p.positive_id] == best and p.positive == slice_chunks[best].text and p.builder == "labels"
    assert multi >= 5  # the test exercises the choice, not just one-chunk documents
    few = scifact_slice.qrels[:4]  # without shared embeddings, only the judged documents' chunks are encoded
    queries_path, qrels_path = write_labels(tmp_path, {q: scifact_slice.queries[q] for q, _ in few}, few)
    own = LabelPairs(queries_path, qrels_path, show_progress=False).build(slice_chunks, minilm)
    assert [p.positive_id for p in own] == [p.positive_id for p in pairs[:4]]


def test_label_pairs_one_chunk_documents_need_no_model(tmp_path, scifact_slice) -> None:
    chunks = [Chunk("c1", "d1", "only chunk of d1"), Chunk("c2", "d2", "first of d2"),
              Chunk("c3", "d2", "second")]
    queries_path, qrels_path = write_labels(tmp_path, {"q1": "about d1", "q2": "about d2"}, [("q1", "d1")])
    pairs = LabelPairs(queries_path, qrels_path, show_progress=False).build(chunks)
    assert [(p.query, p.positive_id) for p in pairs] == [("about d1", "c1")]
    write_labels(tmp_path, {"q1": "about d1", "q2": "about d2"}, [("q1", "d1"), ("q2", "d2")])
    with pytest.raises(ConfigError, match="needs the base model"):
        LabelPairs(queries_path, qrels_path, show_progress=False).build(chunks)


def test_label_qrels_graded_two_column_and_zero_lines(tmp_path) -> None:
    """Graded scores are kept; a 2-column line scores 1; 0 and negative scores give no pair. The BEIR
    reader parses the same 3-column file to the same scores (one parser, embtune.data.beir.iter_qrels)."""
    from embtune.data.beir import read_qrels
    from embtune.pairs.labels import read_label_qrels

    chunks = [Chunk("c1", "d1", "text one"), Chunk("c2", "d2", "text two"), Chunk("c3", "d3", "text three")]
    queries_path, qrels_path = write_labels(tmp_path, {"q1": "one", "q2": "two"}, [])
    qrels_path.write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\nq2\td2\nq2\td3\t-1\n")
    queries = {"q1": "one", "q2": "two"}
    assert read_label_qrels(qrels_path, queries, {"d1", "d2", "d3"}) == [("q1", "d1", 2), ("q2", "d2", 1)]
    pairs = LabelPairs(queries_path, qrels_path, show_progress=False).build(chunks)
    assert [(p.query, p.positive_id) for p in pairs] == [("one", "c1"), ("two", "c2")]
    qrels_path.write_text("q1\td1\t3\nq1\td2\t0\nq2\td3\t1\n")
    assert read_qrels(qrels_path, queries, {"d1", "d2", "d3"}) == {"q1": {"d1": 3, "d2": 0}, "q2": {"d3": 1}}
    assert read_label_qrels(qrels_path, queries, {"d1", "d2", "d3"}) == [("q1", "d1", 3), ("q2", "d3", 1)]
    qrels_path.write_text("q1\td2\t0\nq2\td3\t-2\n")
    with pytest.raises(DataFormatError, match=r"qrels.tsv: no relevant judgement \(score > 0\)"):
        read_label_qrels(qrels_path, queries, {"d1", "d2", "d3"})
    qrels_path.write_text("q1\td1\t1\nq1\td1\t2\n")
    with pytest.raises(DataFormatError, match=r"qrels.tsv:2: duplicate judgement for \('q1', 'd1'\)"):
        read_label_qrels(qrels_path, queries, {"d1"})
    qrels_path.write_text("q1\td1\t1\tx\n")
    with pytest.raises(DataFormatError, match=r"qrels.tsv:1: expected 2 or 3 tab-separated columns"):
        read_label_qrels(qrels_path, queries, {"d1"})


def test_label_errors_name_file_and_line(tmp_path) -> None:
    chunks = [Chunk("c1", "d1", "text one"), Chunk("c2", "d2", "text two")]
    queries_path, qrels_path = write_labels(tmp_path, {"q1": "one", "q2": "two"}, [("q1", "d1")],
                                            extra="q2\tnope\t1\n")
    with pytest.raises(DataFormatError) as info:
        LabelPairs(queries_path, qrels_path).build(chunks)
    assert str(info.value).startswith(f"{qrels_path}:3: document id 'nope' is not among the ingested")
    write_labels(tmp_path, {"q1": "one"}, [("q1", "d1")], extra="q9\td2\t1\n")
    with pytest.raises(DataFormatError, match=r"qrels.tsv:3: query id 'q9' is not in the queries file"):
        LabelPairs(queries_path, qrels_path).build(chunks)
    write_labels(tmp_path, {"q1": "one"}, [("q1", "d1")], extra="q1\td2\thigh\n")
    with pytest.raises(DataFormatError, match=r"qrels.tsv:3: score 'high' is not an integer"):
        LabelPairs(queries_path, qrels_path).build(chunks)
    queries_path.write_text('{"_id": "q1", "text": "one"}\n{"_id": "q2"}\n')
    with pytest.raises(DataFormatError, match=r'queries.jsonl:2: missing "text"'):  # embtune.data.beir.read_queries
        LabelPairs(queries_path, qrels_path).build(chunks)
    with pytest.raises(ConfigError):
        LabelPairs(queries_path)


def test_label_pairs_from_a_pairs_file(tmp_path) -> None:
    chunks = [Chunk("c1", "d1", "Chunk one text."), Chunk("c2", "d2", "Chunk two text.")]
    path = tmp_path / "pairs.jsonl"
    rows = [{"anchor": "q one", "positive": "Chunk one text.", "negative": "Chunk two text."},
            {"anchor": "q free", "positive": "Not a chunk.", "negative": "Other."}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = LabelPairs(pairs_path=path).build(chunks)
    assert pairs[0] == Pair("q one", "Chunk one text.", "c1", "d1", "labels", ["Chunk two text."], ["c2"])
    assert pairs[1].positive_id == text_id("Not a chunk.") == pairs[1].doc_id
    assert pairs[1].negative_ids == [text_id("Other.")]


# ------------------------------------------------------------------------------------------ filtering


def brute_force_ranks(pairs, chunks, chunk_emb, q_emb):
    rows = {c.id: i for i, c in enumerate(chunks)}
    scores = q_emb @ chunk_emb.T
    pos = np.array([scores[k, rows[p.positive_id]] for k, p in enumerate(pairs)])
    return 1 + (scores > pos[:, None]).sum(axis=1), pos


@pytest.fixture(scope="module")
def noisy_pairs(slice_chunks) -> list[Pair]:
    """Title pairs (mostly right) plus the same titles paired with another document's chunk (wrong)."""
    good = HeuristicPairs(signals=["title"], show_progress=False).build(slice_chunks)
    shifted = good[1:] + good[:1]
    bad = [Pair(g.query, s.positive, s.positive_id, s.doc_id, "swapped") for g, s in zip(good, shifted)]
    return good + bad


def test_filter_matches_brute_force_ranks(noisy_pairs, slice_chunks, minilm, slice_embeddings,
                                          encode_queries) -> None:
    ranks, _ = brute_force_ranks(noisy_pairs, slice_chunks, slice_embeddings,
                                 encode_queries([p.query for p in noisy_pairs]))
    kept, stats = filter_pairs(noisy_pairs, minilm, slice_chunks, top_k=3, dedup_cosine=None,
                               embeddings=slice_embeddings, show_progress=False)
    expected = [p for p, r in zip(noisy_pairs, ranks) if r <= 3]
    assert kept == expected
    assert 0 < stats.dropped["not_top_k"] == len(noisy_pairs) - len(expected)
    assert stats.total == len(noisy_pairs) and stats.kept == len(kept)
    assert stats.kept_by_builder.get("heuristic:title", 0) > 3 * stats.kept_by_builder.get("swapped", 0)


def test_filter_min_cosine_rescues_low_ranked_pairs(noisy_pairs, slice_chunks, minilm, slice_embeddings,
                                                    encode_queries) -> None:
    ranks, pos = brute_force_ranks(noisy_pairs, slice_chunks, slice_embeddings,
                                   encode_queries([p.query for p in noisy_pairs]))
    threshold = float(pos[ranks > 1].max()) - 1e-4  # rescues at least the best-scoring low-ranked pair
    assert not np.any(np.abs(pos - threshold) < 1e-5)
    kept, stats = filter_pairs(noisy_pairs, minilm, slice_chunks, top_k=1, min_cosine=threshold,
                               dedup_cosine=None, embeddings=slice_embeddings, show_progress=False)
    expected = [p for p, r, s in zip(noisy_pairs, ranks, pos) if r <= 1 or s >= threshold]
    assert kept == expected
    assert any(r > 1 for p, r in zip(noisy_pairs, ranks) if p in kept)  # rescued by the cosine
    assert any(s < threshold for p, s in zip(noisy_pairs, pos) if p in kept)  # kept by the rank


def test_filter_drops_duplicates_and_empty_queries(slice_chunks, minilm, slice_embeddings,
                                                    encode_queries) -> None:
    c, other = slice_chunks[0], slice_chunks[1]
    base = "Effects of aspirin on the risk of heart attack in older adults"
    near = "Effects of aspirin on risk of heart attacks in older adults"
    a, b = encode_queries([base, near])
    assert float(a @ b) > 0.95  # precondition of the near-duplicate case
    pairs = [Pair(base, c.text, c.id, c.doc_id, "x"),
             Pair("effects of ASPIRIN on the risk of heart-attack, in older adults?", c.text, c.id, c.doc_id,
                  "x"),
             Pair(near, c.text, c.id, c.doc_id, "x"),
             Pair(base, other.text, other.id, other.doc_id, "x"),  # same text, other chunk: not a duplicate
             Pair("   ", c.text, c.id, c.doc_id, "x")]
    kept, stats = filter_pairs(pairs, minilm, slice_chunks, top_k=None, embeddings=slice_embeddings,
                               show_progress=False)
    assert kept == [pairs[0], pairs[3]]
    assert stats.dropped == {"empty_query": 1, "not_top_k": 0, "duplicate_query": 1,
                             "near_duplicate_query": 1}
    assert normalise_query(pairs[1].query) == normalise_query(base)
    kept, stats = filter_pairs(pairs, minilm, slice_chunks, top_k=None, dedup_cosine=None,
                               embeddings=slice_embeddings, show_progress=False)
    assert kept == [pairs[0], pairs[2], pairs[3]] and stats.dropped["near_duplicate_query"] == 0
    with pytest.raises(ConfigError):
        filter_pairs(pairs, minilm, slice_chunks, top_k=0)
    with pytest.raises(ConfigError, match="one row per chunk"):
        filter_pairs(pairs, minilm, slice_chunks, embeddings=slice_embeddings[:3], show_progress=False)


# ------------------------------------------------------------------------------------------ mining


def brute_force_negatives(pair, chunks, chunk_emb, q, n, skip_top, margin, excluded=()):
    """Expected negatives, or None when a score sits within float noise of a decision boundary."""
    scores = chunk_emb @ q
    rows = {c.id: i for i, c in enumerate(chunks)}
    pos_row = rows.get(pair.positive_id)
    limit = scores[pos_row] - margin
    order = sorted(range(len(chunks)), key=lambda i: (-scores[i], i))
    chosen, skipped = [], 0
    for i in order:
        if i == pos_row:
            continue
        if skipped < skip_top:
            skipped += 1
            continue
        if abs(scores[i] - limit) < 1e-4:
            return None
        if scores[i] > limit or chunks[i].doc_id == pair.doc_id or chunks[i].doc_id in excluded:
            continue
        chosen.append(chunks[i].id)
        if len(chosen) == n:
            break
    ranked = sorted(scores, reverse=True)
    if any(abs(x - y) < 1e-6 for x, y in zip(ranked, ranked[1:])):
        return None
    return chosen


@pytest.mark.parametrize("n,skip_top,margin", [(3, 2, 0.05), (2, 0, 0.0)])
def test_mining_matches_brute_force(noisy_pairs, slice_chunks, minilm, slice_embeddings, encode_queries,
                                    n, skip_top, margin) -> None:
    pairs = [p for p in noisy_pairs if p.builder == "heuristic:title"]
    excluded = {slice_chunks[-1].doc_id}
    mined = mine_hard_negatives(pairs, minilm, slice_chunks, n=n, skip_top=skip_top, margin=margin,
                                embeddings=slice_embeddings, exclude_doc_ids=excluded, show_progress=False)
    q_emb = encode_queries([p.query for p in pairs])
    by_id = {c.id: c for c in slice_chunks}
    compared = 0
    for pair, got, q in zip(pairs, mined, q_emb):
        assert (got.query, got.positive_id) == (pair.query, pair.positive_id)
        assert got.negatives == [by_id[i].text for i in got.negative_ids]
        expected = brute_force_negatives(pair, slice_chunks, slice_embeddings, q, n, skip_top, margin,
                                         excluded)
        if expected is not None:
            assert got.negative_ids == expected
            compared += 1
        assert all(by_id[i].doc_id not in excluded | {pair.doc_id} for i in got.negative_ids)
    assert compared >= len(pairs) * 0.8
    assert sum(len(p.negative_ids) == n for p in mined) >= len(mined) * 0.8


def test_mining_encodes_chunks_itself_and_tops_up_existing_negatives(noisy_pairs, slice_chunks, minilm,
                                                                     slice_embeddings) -> None:
    pair = next(p for p in noisy_pairs if p.builder == "heuristic:title")
    given = Pair(pair.query, pair.positive, pair.positive_id, pair.doc_id, "labels", ["my negative"],
                 ["mine"])
    few = slice_chunks[:40]
    [own] = mine_hard_negatives([given], minilm, few, n=3, show_progress=False)  # encodes the 40 chunks
    [shared] = mine_hard_negatives([given], minilm, few, n=3, embeddings=slice_embeddings[:40],
                                   show_progress=False)
    assert own == shared
    assert own.negative_ids[0] == "mine" and own.negatives[0] == "my negative"
    assert len(own.negative_ids) == 3 and len(set(own.negative_ids)) == 3
    with pytest.raises(ConfigError):
        mine_hard_negatives([given], minilm, slice_chunks, n=0)


# ------------------------------------------------------------------------------------------ split


def test_split_by_document_has_no_overlap(slice_chunks, tmp_path, scifact_slice, minilm,
                                          slice_embeddings) -> None:
    heuristic = HeuristicPairs(signals=["title", "cloze"], show_progress=False).build(slice_chunks)
    queries_path, qrels_path = write_labels(tmp_path, scifact_slice.queries, scifact_slice.qrels)
    labels = LabelPairs(queries_path, qrels_path, show_progress=False).build(slice_chunks, minilm,
                                                                            embeddings=slice_embeddings)
    pairs = heuristic + labels
    train, eval_queries = split_by_document(pairs, eval_fraction=0.25, seed=1)
    chunk_doc = {c.id: c.doc_id for c in slice_chunks}
    held = {chunk_doc[r] for q in eval_queries for r in q.relevant}
    assert held and not held & {p.doc_id for p in train}
    assert len(held) == round(0.25 * len({p.doc_id for p in pairs}))
    assert not {q.query for q in eval_queries} & {p.query for p in train}
    verbatim = {p.query for p in pairs if p.builder in VERBATIM_BUILDERS}
    assert not verbatim & {q.query for q in eval_queries}
    # every held-out pair that may be evaluated is an eval query with its positive among the relevant ids
    by_query = {q.query: q for q in eval_queries}
    for p in pairs:
        if p.doc_id in held and p.builder not in VERBATIM_BUILDERS:
            assert p.positive_id in by_query[p.query].relevant
    assert all(isinstance(q, EvalQuery) and q.query_id.startswith("q-") for q in eval_queries)
    assert len({q.query_id for q in eval_queries}) == len(eval_queries)
    assert split_by_document(pairs, 0.25, seed=1) == (train, eval_queries)
    assert split_by_document(pairs, 0.0) == (pairs, [])


def test_split_errors() -> None:
    one_doc = [Pair("q", "p", "c", "d", "labels")]
    with pytest.raises(ConfigError, match="cannot hold out"):
        split_by_document(one_doc, 0.5)
    with pytest.raises(ConfigError, match=r"eval_fraction must be in \[0, 1\)"):
        split_by_document(one_doc, 1.0)
    cloze_only = [Pair("q1", "p", "c1", "d1", "heuristic:cloze"),
                  Pair("q2", "p", "c2", "d2", "heuristic:cloze")]
    with pytest.raises(ConfigError, match="0 with pairs usable"):
        split_by_document(cloze_only, 0.5)
    train, eval_queries = split_by_document(cloze_only, 0.5, eval_builders={"heuristic:cloze"})
    assert len(train) == 1 and len(eval_queries) == 1


def test_max_tokens_for_the_real_model(minilm) -> None:
    assert max_tokens_for(minilm) == minilm.max_seq_length - 2 == 254


def test_labels_naming_documents_without_text(tmp_path) -> None:
    """A judged document that exists but holds no text (``empty_doc_ids``) gives no pair and no error; an
    id that is nowhere is still a file:line error."""
    from embtune.pairs.labels import read_label_qrels

    chunks = [Chunk("c1", "d1", "text one"), Chunk("c2", "d2", "text two")]
    queries_path, qrels_path = write_labels(tmp_path, {"q1": "one", "q2": "two"}, [("q1", "d1"), ("q2", "d2")],
                                            extra="q2\tblank\t1\n")
    queries = {"q1": "one", "q2": "two"}
    with pytest.raises(DataFormatError, match="document id 'blank' is not among the ingested"):
        LabelPairs(queries_path, qrels_path, show_progress=False).build(chunks)
    assert read_label_qrels(qrels_path, queries, {"d1", "d2"}, {"blank"})[-1] == ("q2", "blank", 1)
    pairs = LabelPairs(queries_path, qrels_path, show_progress=False, empty_doc_ids={"blank"}).build(chunks)
    assert [(p.query, p.positive_id) for p in pairs] == [("one", "c1"), ("two", "c2")]
    write_labels(tmp_path, {"q1": "one"}, [("q1", "d1")], extra="q1\tnope\t1\n")
    with pytest.raises(DataFormatError, match=r"qrels.tsv:3: document id 'nope'"):
        LabelPairs(queries_path, qrels_path, empty_doc_ids={"blank"}).build(chunks)


def test_ingest_reports_documents_without_text(tmp_path) -> None:
    from embtune.corpus.ingest import read_documents

    beir = tmp_path / "beir"
    beir.mkdir()
    (beir / "corpus.jsonl").write_text('{"_id": "a", "text": "some text"}\n{"_id": "b", "text": ""}\n'
                                       '{"_id": 7, "title": "t", "text": " "}\n')
    empty: list[str] = []
    assert [d.doc_id for d in read_documents(beir, show_progress=False, empty=empty)] == ["a"]
    assert empty == ["b", "7"]
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "full.md").write_text("# T\n\nbody\n")
    (folder / "blank.txt").write_text("\n  \n")
    empty = []
    docs = read_documents(folder, warn=lambda m: None, show_progress=False, empty=empty)
    assert [d.doc_id for d in docs] == ["full.md"] and empty == ["blank.txt"]
