"""Exports: the synthetic set (its curated view, when there is one) in other tools' formats."""
