"""PS3.10 files: file meta, layout, durable writes."""
