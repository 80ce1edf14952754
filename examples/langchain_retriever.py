"""Use a fine-tuned embtune model as the embedding of a LangChain vector store and score the retriever.

    python examples/langchain_retriever.py                   # demo model (or MiniLM), 300 SciFact docs
    python examples/langchain_retriever.py --model runs/x/merged --max-docs 0

Indexes SciFact abstracts as LangChain ``Document``s (InMemoryVectorStore, or with ``--store faiss``
the FAISS store of langchain-community), asks one question, reports recall@k / MRR / nDCG of the
retriever against the qrels, and builds training pairs from the same Documents.
"""
from __future__ import annotations

import argparse

from example_data import DEFAULT_DATA, default_model, small_task


def main() -> None:
    """Parse arguments, index, query, evaluate, build pairs."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None,
                        help="model folder or hub id (default: demo output or MiniLM)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="BEIR folder")
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--max-docs", type=int, default=300, help="corpus size (0: all)")
    parser.add_argument("--k", type=int, default=10, help="documents the retriever returns")
    parser.add_argument("--store", choices=("inmemory", "faiss"), default="inmemory",
                        help="InMemoryVectorStore, or langchain-community's FAISS store")
    args = parser.parse_args()

    from langchain_core.documents import Document
    from langchain_core.vectorstores import InMemoryVectorStore

    from embtune_langchain import EmbtuneEmbeddings, evaluate_retriever, pairs_from_documents

    model = args.model or default_model()
    print(f"model: {model}")
    corpus, titles, queries, qrels = small_task(args.data, args.queries, args.max_docs)
    docs = [Document(id=d, page_content=text, metadata={"title": titles[d], "source": d})
            for d, text in corpus.items()]
    embeddings = EmbtuneEmbeddings(model=model, batch_size=32)  # query/document prompts come from the model

    if args.store == "faiss":  # langchain-community (being sunset upstream; kept for existing users)
        from langchain_community.vectorstores import FAISS
        from langchain_community.vectorstores.utils import DistanceStrategy

        store = FAISS.from_documents(docs, embeddings, distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT)
    else:
        store = InMemoryVectorStore.from_documents(docs, embedding=embeddings)
    retriever = store.as_retriever(search_kwargs={"k": args.k})
    print(f"vector store: {type(store).__name__}, {len(docs)} documents")

    qid = next(iter(qrels))
    print(f"\nquery: {queries[qid]}\nrelevant: {sorted(qrels[qid])}")
    for doc in retriever.invoke(queries[qid])[:3]:
        print(f"  {doc.id}  {doc.page_content[:90]}")

    metrics = evaluate_retriever(retriever, queries, qrels, ks=(1, 5, args.k))
    keys = ("hit_rate@1", f"recall@{args.k}", f"mrr@{args.k}", f"ndcg@{args.k}")
    print(f"\n{metrics['num_queries']} queries: " + ", ".join(f"{key}={metrics[key]:.3f}" for key in keys))

    pairs = pairs_from_documents(docs[:50])
    print(f"\n{len(pairs)} training pairs from {len(docs[:50])} Documents, "
          f"e.g. {pairs[0].query!r} -> {pairs[0].positive_id}")


if __name__ == "__main__":
    main()
