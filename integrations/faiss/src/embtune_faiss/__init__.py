"""embtune_faiss: placeholder package; filled by a later step."""
