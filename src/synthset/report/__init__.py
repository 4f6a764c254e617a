"""The self-contained HTML report of a run: summary, CAS table and charts, image samples."""

from synthset.report.html import write_report

__all__ = ["write_report"]
