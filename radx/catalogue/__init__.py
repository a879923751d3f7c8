"""The catalogue: what radx stored or found on disk, one row per file, in a SQL database."""
