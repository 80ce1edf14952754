"""Index a model's SciFact embeddings with FAISS, save/reload the index, search it, and compare indexes.

    python examples/faiss_eval.py                                   # demo model (or MiniLM), 1,000 docs
    python examples/faiss_eval.py --model runs/x/merged --queries 300 --max-docs 0 --index Flat \
        --index HNSW32 --index IVF64,PQ32 --dims 384,256,128 --hybrid   # all of SciFact test

Prints one search, then a table: nDCG@10, recall@10/100, MRR@10, MAP@100 through each index and
``recall_vs_exact@10`` (how much of the exact top 10 the approximate index finds).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from example_data import DEFAULT_DATA, default_model, small_task


def main() -> None:
    """Parse arguments, build + save + reload one index, then print the evaluation table."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None,
                        help="model folder or hub id (default: demo output or MiniLM)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="BEIR folder")
    parser.add_argument("--queries", type=int, default=100, help="test queries to evaluate")
    parser.add_argument("--max-docs", type=int, default=1000, help="corpus size (0: all)")
    parser.add_argument("--index", action="append",
                        help="FAISS factory string (repeatable; default Flat, HNSW32)")
    parser.add_argument("--dims", default=None, help="Matryoshka sizes, e.g. 384,256")
    parser.add_argument("--hybrid", action="store_true", help="add BM25 + dense fusion rows")
    args = parser.parse_args()

    from embtune.interop import judged_queries
    from embtune.models.inference import encode_texts, load_inference_model
    from embtune_faiss import EmbtuneFaissIndex, bm25_rankings, evaluate_embeddings, rows_table

    model_ref = args.model or default_model()
    print(f"model: {model_ref}")
    model = load_inference_model(model_ref)
    corpus, _, queries, qrels = small_task(args.data, args.queries, args.max_docs)
    doc_ids, (qids, _) = list(corpus), judged_queries(corpus, queries, qrels)
    doc_emb = encode_texts(model, [corpus[d] for d in doc_ids], "document", normalize=False,
                           show_progress=True)
    query_emb = encode_texts(model, [queries[q] for q in qids], "query", normalize=False)

    # One index, saved as index.faiss + index.json (ids, model reference; no pickle), reloaded,
    # searched by text.
    index = EmbtuneFaissIndex.build(doc_emb, doc_ids, "HNSW32", model=model_ref)
    with tempfile.TemporaryDirectory() as tmp:
        loaded = EmbtuneFaissIndex.load(index.save(Path(tmp) / "scifact-hnsw"))
        qid = qids[0]
        scores, ranked = loaded.search_texts([queries[qid]], k=3, model=model)
        print(f"\nquery: {queries[qid]}\nrelevant: {sorted(qrels[qid])}")
        for score, doc_id in zip(scores[0], ranked[0]):
            print(f"  {score:.3f}  {doc_id}  {corpus[doc_id][:90]}")

    # Every index / dims / hybrid setting from the same embeddings.
    lexical = bm25_rankings([corpus[d] for d in doc_ids], doc_ids, [queries[q] for q in qids], k=100) \
        if args.hybrid else None
    dims = [int(d) for d in args.dims.split(",")] if args.dims else None
    rows = evaluate_embeddings(query_emb, doc_emb, doc_ids, qids, qrels,
                               indexes=args.index or ["Flat", "HNSW32"], dims=dims, lexical=lexical)
    print(f"\n{len(qids)} queries, {len(corpus)} documents\n")
    print(rows_table(rows))


if __name__ == "__main__":
    main()
