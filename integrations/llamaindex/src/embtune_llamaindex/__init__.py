"""embtune_llamaindex: placeholder package; filled by a later step."""
