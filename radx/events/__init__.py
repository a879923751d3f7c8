"""Hooks and events, the pure part: commands and their placeholders, quiet periods, the journal."""
