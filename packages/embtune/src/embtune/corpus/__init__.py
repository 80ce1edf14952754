"""From a folder of documents to chunks: ``ingest.read_documents`` then ``chunking.chunk_documents``."""
from embtune.corpus.types import Chunk, Document

__all__ = ["Chunk", "Document"]
