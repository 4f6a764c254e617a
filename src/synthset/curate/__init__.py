"""Curation: score every synthetic image, keep what the rules keep (a view, not a deletion)."""
