"""embtune_langchain: an embtune model in LangChain, training pairs from Documents, any retriever scored.

* ``EmbtuneEmbeddings``: ``langchain_core.embeddings.Embeddings`` that applies the model's query
  and document prompts (works in InMemoryVectorStore, FAISS, Chroma...);
* ``documents_to_chunks`` / ``pairs_from_documents`` / ``training_data``: Documents → the same pair
  builders as ``embtune from-corpus`` → data for ``embtune.train``;
* ``EmbtuneReranker``: a ``BaseDocumentCompressor`` reranking documents with an embtune reranker
  (cross-encoder), for ``ContextualCompressionRetriever``; scores in ``metadata["relevance_score"]``;
* ``evaluate_retriever``: recall@k, MRR, nDCG... of any retriever against qrels.

Needs ``pip install embtune-langchain``.
"""
from embtune_langchain.documents import documents_to_chunks, pairs_from_documents, training_data
from embtune_langchain.embeddings import EmbtuneEmbeddings
from embtune_langchain.evaluation import document_id, evaluate_retriever
from embtune_langchain.reranker import EmbtuneReranker

__all__ = [
    "EmbtuneEmbeddings",
    "EmbtuneReranker",
    "document_id",
    "documents_to_chunks",
    "evaluate_retriever",
    "pairs_from_documents",
    "training_data",
]
