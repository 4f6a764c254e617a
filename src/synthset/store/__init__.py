"""The run folder: atomic files, the manifest of finished items, and ImageFolder export."""
