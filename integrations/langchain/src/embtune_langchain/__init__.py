"""embtune_langchain: an embtune model in LangChain, training pairs from Documents, any retriever scored.

* ``EmbtuneEmbeddings``: ``langchain_core.embeddings.Embeddings`` that applies the model's query
  and document prompts (works in InMemoryVectorStore, FAISS, Chroma...);
* ``documents_to_chunks`` / ``pairs_from_documents`` / ``training_data``: Documents → the same pair
  builders as ``embtune from-corpus`` → data for ``embtune.train``;
* ``evaluate_retriever``: recall@k, MRR, nDCG... of any retriever against qrels.

Needs ``pip install embtune-langchain``.
"""
from embtune_langchain.documents import documents_to_chunks, pairs_from_documents, training_data
from embtune_langchain.embeddings import EmbtuneEmbeddings
from embtune_langchain.evaluation import document_id, evaluate_retriever

__all__ = [
    "EmbtuneEmbeddings",
    "document_id",
    "documents_to_chunks",
    "evaluate_retriever",
    "pairs_from_documents",
    "training_data",
]
