"""Prompt strategies: from class names to diverse, labeled captions (one file per strategy)."""
