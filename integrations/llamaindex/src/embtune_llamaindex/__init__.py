"""embtune_llamaindex: an embtune model in LlamaIndex, pairs from nodes, QA datasets, retrievers scored.

* ``EmbtuneEmbedding``: a ``BaseEmbedding`` applying the model's query/document prompts;
* ``EmbtuneRerank``: a ``BaseNodePostprocessor`` reranking nodes with an embtune reranker
  (cross-encoder), a drop-in for ``SentenceTransformerRerank``;
* ``nodes_to_chunks`` / ``pairs_from_nodes`` / ``training_data``: nodes → the same pair builders as
  ``embtune from-corpus`` → data for ``embtune.train``; ``corpus_to_nodes`` for BEIR corpora;
* ``QADataset`` / ``read_qa_dataset`` / ``write_qa_dataset``: llama-index-finetuning's
  ``EmbeddingQAFinetuneDataset`` JSON ↔ training pairs and BEIR-like evaluation data;
* ``evaluate_retriever``: hit rate, MRR, recall@k, nDCG... of a retriever.

Needs ``pip install embtune-llamaindex``.
"""
from embtune_llamaindex.embedding import EmbtuneEmbedding
from embtune_llamaindex.evaluation import evaluate_retriever, node_id
from embtune_llamaindex.nodes import corpus_to_nodes, nodes_to_chunks, pairs_from_nodes, training_data
from embtune_llamaindex.qa_dataset import QADataset, read_qa_dataset, write_qa_dataset
from embtune_llamaindex.rerank import EmbtuneRerank

__all__ = [
    "EmbtuneEmbedding",
    "EmbtuneRerank",
    "QADataset",
    "corpus_to_nodes",
    "evaluate_retriever",
    "node_id",
    "nodes_to_chunks",
    "pairs_from_nodes",
    "read_qa_dataset",
    "training_data",
    "write_qa_dataset",
]
