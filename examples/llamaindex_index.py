"""Use a fine-tuned embtune model in a LlamaIndex VectorStoreIndex, score its retriever, share QA data.

    python examples/llamaindex_index.py                       # demo model (or MiniLM), 300 SciFact docs
    python examples/llamaindex_index.py --model runs/x/merged --max-docs 0

Builds a ``VectorStoreIndex`` over SciFact abstracts with ``EmbtuneEmbedding`` (retrieval only, no
LLM), asks one question, reports hit rate / MRR / recall@k / nDCG, and writes the task as the
``EmbeddingQAFinetuneDataset`` JSON that llama-index-finetuning reads (and reads it back).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from example_data import DEFAULT_DATA, default_model, small_task


def main() -> None:
    """Parse arguments, index, query, evaluate, round-trip the QA dataset."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None,
                        help="model folder or hub id (default: demo output or MiniLM)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="BEIR folder")
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--max-docs", type=int, default=300, help="corpus size (0: all)")
    parser.add_argument("--top-k", type=int, default=10)
    args = parser.parse_args()

    from llama_index.core import Settings, VectorStoreIndex

    from embtune_llamaindex import (EmbtuneEmbedding, QADataset, corpus_to_nodes, evaluate_retriever,
                                    read_qa_dataset)

    model = args.model or default_model()
    print(f"model: {model}")
    corpus, titles, queries, qrels = small_task(args.data, args.queries, args.max_docs)

    Settings.llm = None  # retrieval only
    Settings.embed_model = EmbtuneEmbedding(model, embed_batch_size=32)
    index = VectorStoreIndex(corpus_to_nodes(corpus, titles), show_progress=True)
    retriever = index.as_retriever(similarity_top_k=args.top_k)

    qid = next(iter(qrels))
    print(f"\nquery: {queries[qid]}\nrelevant: {sorted(qrels[qid])}")
    for hit in retriever.retrieve(queries[qid])[:3]:
        print(f"  {hit.score:.3f}  {hit.node.node_id}  {hit.node.get_content()[:90]}")

    dataset = QADataset.from_beir(corpus, queries, qrels)
    metrics = evaluate_retriever(retriever, dataset, ks=(1, 5, args.top_k))
    k = args.top_k
    print(f"\n{metrics['num_queries']} queries: " + ", ".join(
        f"{key}={metrics[key]:.3f}" for key in (f"hit_rate@{k}", f"mrr@{k}", f"recall@{k}", f"ndcg@{k}")))

    with tempfile.TemporaryDirectory() as tmp:
        path = dataset.save_json(Path(tmp) / "qa_dataset.json")
        again = read_qa_dataset(path)
        print(f"\nwrote and re-read {path.name}: {len(again.queries)} queries, {len(again.corpus)} nodes, "
              f"{len(again.to_pairs())} training pairs")


if __name__ == "__main__":
    main()
