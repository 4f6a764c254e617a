"""Executors decide who runs which items; they never change results, only speed."""
