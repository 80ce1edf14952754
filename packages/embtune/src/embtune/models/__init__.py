"""Model loading, PEFT adapters and merged saving."""
from embtune.models.fast_sentence_transformer import FastSentenceTransformer

__all__ = ["FastSentenceTransformer"]
