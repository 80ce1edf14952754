"""embtune_langchain: placeholder package; filled by a later step."""
